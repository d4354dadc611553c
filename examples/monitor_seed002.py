"""Seed 002's Keras code with bnlab's BN monitor: the stale moving averages, epoch by epoch.

Real Fashion-MNIST (``../shared/data/fashion_mnist.npz`` or ``BNLAB_SHARED_DATA``), first
1,000 training images / next 1,000 for validation, pixels / 255, Adam, batch 64::

    KERAS_BACKEND=torch python examples/monitor_seed002.py
"""

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")
import keras  # noqa: E402
from keras import layers  # noqa: E402

import bnlab.keras  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def create_model(input_shape=(28, 28, 1), num_classes=10):
    """Seed 002's ``create_model(batch_norm=True)`` in Keras 3."""
    relu = keras.activations.relu
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Convolution2D(32, kernel_size=5, activation=relu),
        layers.MaxPooling2D(pool_size=2),
        layers.BatchNormalization(),
        layers.Convolution2D(32, kernel_size=4, activation=relu, padding="same"),
        layers.MaxPooling2D(pool_size=2),
        layers.BatchNormalization(),
        layers.Convolution2D(32, kernel_size=3, activation=relu),
        layers.Flatten(),
        layers.BatchNormalization(),
        layers.Dropout(rate=0.2),
        layers.Dense(num_classes),
        layers.Activation("softmax"),
    ])  # fmt: skip


def main():
    d = np.load(Path(os.environ.get("BNLAB_SHARED_DATA", SHARED)) / "fashion_mnist.npz")
    x = d["x_train"][:2000, :, :, None] / 255.0
    y = keras.utils.to_categorical(d["y_train"][:2000], 10)
    x_train, y_train, x_val, y_val = x[:1000], y[:1000], x[1000:], y[1000:]
    keras.utils.set_random_seed(0)
    model = create_model()
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    monitor = bnlab.keras.BNMonitor(validation_data=(x_val, y_val))
    model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=64, epochs=3,
              verbose=2, callbacks=[monitor])  # fmt: skip
    columns = ["epoch", "val_accuracy_moving_bn", "val_accuracy_exact_bn", "bn_stale_weight"]
    print(monitor.history[columns + ["findings"]].to_string(index=False))


if __name__ == "__main__":
    main()
