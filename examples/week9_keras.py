"""Seed 001's trap in miniature: a Keras CNN with BatchNormalization(momentum=0.99), fed raw
0-255 pixels and trained for 45 steps, saved as ``week9.keras`` for ``bnlab doctor``.

    KERAS_BACKEND=torch python examples/week9_keras.py
    bnlab doctor week9.keras --data digits -O scale=raw
    bnlab fix week9.keras --data digits -O scale=raw -o week9_fixed.keras
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

try:
    import keras  # noqa: E402
except ImportError:
    sys.exit("week9_keras.py needs Keras 3: pip install 'bnlab[keras]'")

import bnlab.data  # noqa: E402

momentum = float(sys.argv[1]) if len(sys.argv) > 1 else 0.99
data = bnlab.data.load("digits", scale="raw")  # 8x8 pixels in 0-255, NCHW tensors
x = data.x_train.permute(0, 2, 3, 1).numpy()  # Keras wants NHWC
y = data.y_train.numpy()

keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((8, 8, 1)),
    keras.layers.Conv2D(16, 3, activation="relu"),
    keras.layers.BatchNormalization(momentum=momentum),
    keras.layers.MaxPooling2D(2),
    keras.layers.Conv2D(16, 2, activation="relu"),
    keras.layers.BatchNormalization(momentum=momentum),
    keras.layers.Flatten(),
    keras.layers.Dense(10, activation="softmax"),
])  # fmt: skip
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=3, batch_size=128, verbose=0)
_, train_acc = model.evaluate(x, y, verbose=0)
print(f"inference-mode accuracy on the training data: {train_acc:.3f}")
model.save("week9.keras")
print("saved week9.keras")
