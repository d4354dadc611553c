"""Seed 002's ``create_model``, as the seed wrote it, with ``keras`` for ``tf.keras``.

A study trains it as the user's own model (``studies``-style TOML beside it)::

    [model]
    keras_factory = "seed002_model.py:create_model"

    [variants.no_bn]
    batch_norm = false
    [variants.bn]
    batch_norm = true
"""

import keras

tfk = keras
tfkl = keras.layers

input_shape = (28, 28, 1)
num_classes = 10


def create_model(batch_norm):
    model = tfk.Sequential()
    model.add(
        tfkl.Convolution2D(
            32,
            kernel_size=5,
            input_shape=input_shape,
            activation=tfk.activations.relu,
        )
    )
    model.add(tfkl.MaxPooling2D(pool_size=2))
    if batch_norm:
        model.add(tfkl.BatchNormalization())
    model.add(tfkl.Convolution2D(32, kernel_size=4, activation=tfk.activations.relu, padding="same"))
    model.add(tfkl.MaxPooling2D(pool_size=2))
    if batch_norm:
        model.add(tfkl.BatchNormalization())
    model.add(tfkl.Convolution2D(32, kernel_size=3, activation=tfk.activations.relu))
    model.add(tfkl.Flatten())
    if batch_norm:
        model.add(tfkl.BatchNormalization())
    model.add(tfkl.Dropout(rate=0.2))
    model.add(tfkl.Dense(num_classes))
    model.add(tfkl.Activation("softmax"))
    return model
