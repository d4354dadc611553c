"""Keras 3 cases (torch backend) for the BN doctor; Keras is imported only when a case is built.

Keras's momentum is the fraction kept (0.99 by default); ``layer.trainable = False`` on a
BatchNormalization layer freezes it *and* runs it in inference mode.
"""

from __future__ import annotations

from functools import cache

from . import Setup, case
from .data import circles, digits, nhwc
from .train import train_keras


def _keras():
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def _mlp_layers(keras, momentum: float = 0.9):
    layers = keras.layers
    return [
        keras.Input((64,)),
        layers.Dense(32, activation="relu"),
        layers.BatchNormalization(momentum=momentum),
        layers.Dense(10, activation="softmax"),
    ]


@cache
def trained_mlp_weights():
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(_mlp_layers(keras))
    x, y = digits()
    train_keras(model, x.numpy(), y.numpy(), epochs=2, batch_size=64, lr=1e-2)
    return model


def fresh_trained_mlp():
    """An independent copy of the trained Keras MLP (so cases can alter it)."""
    keras = _keras()
    base = trained_mlp_weights()
    model = keras.models.clone_model(base)
    model.set_weights(base.get_weights())
    return model


@cache
def week9(momentum: float):
    """Seed 001's Keras model on 8x8 raw digits, 3 epochs of batch 128 (45 steps)."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(16, 3, activation="relu"),
        layers.BatchNormalization(momentum=momentum),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 2, activation="relu"),
        layers.BatchNormalization(momentum=momentum),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    x, y = digits("raw", "nchw")
    train_keras(model, nhwc(x), y.numpy(), epochs=3, batch_size=128)
    return model


def _train(model, *, epochs=1, batch_size=64, lr=1e-2):
    """One epoch (28 steps): enough for momentum 0.9 (0.9 ** 28 = 0.05 of the initial values)."""
    x, y = digits()
    train_keras(model, x.numpy(), y.numpy(), epochs=epochs, batch_size=batch_size, lr=lr)
    return Setup(model, (x, y))


# ------------------------------------------------------------------ healthy
@case("keras-healthy-mlp", "keras", healthy=True)
def _healthy_mlp():
    """Dense(ReLU) -> BN(momentum 0.9) -> Dense(softmax) on unit digits, 56 steps."""
    return Setup(trained_mlp_weights(), digits())


@case("keras-healthy-cnn", "keras", healthy=True)
def _healthy_cnn():
    """Conv2D(ReLU) -> BN(0.9) -> pool -> Dense(softmax) on unit digits, NHWC converted."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(8, 3, activation="relu"),
        layers.BatchNormalization(momentum=0.9), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    x, y = digits("unit", "nchw")
    train_keras(model, nhwc(x), y.numpy(), epochs=2, batch_size=64, lr=1e-2)
    return Setup(model, (x, y))


@case("keras-healthy-bn-trainable-false", "keras", healthy=True)
def _trainable_false():
    """bn.trainable = False (Keras semantics: frozen and inference mode): no trap."""
    model = fresh_trained_mlp()
    model.layers[1].trainable = False
    return Setup(model, digits())


@case("keras-healthy-circles-binary", "keras", healthy=True)
def _circles():
    """Seed 004: Dense(50, ReLU) -> BN -> Dense(1, sigmoid) on circles (probabilities read as logits)."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((2,)), layers.Dense(50, activation="relu"),
        layers.BatchNormalization(momentum=0.9), layers.Dense(1, activation="sigmoid"),
    ])  # fmt: skip
    x, y = circles()
    train_keras(model, x.numpy(), y.numpy(), epochs=2, batch_size=32, lr=1e-2, binary=True)
    return Setup(model, (x, y))


@case("keras-bias-before-bn", "keras", healthy=True, expect=["bias-before-bn"])
def _bias_before_bn():
    """Dense(32) (linear, with bias) -> BN -> ReLU: a remark, still healthy."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)), layers.Dense(32), layers.BatchNormalization(momentum=0.9),
        layers.Activation("relu"), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    return _train(model)


# ---------------------------------------------------------------- problems
@case(
    "keras-week9-momentum-0.99", "keras",
    expect=["stale-running-stats", "momentum-too-high-for-steps", "unnormalized-inputs"],
    forbid=["train-eval-gap", "bias-before-bn", "bn-before-output"],
)  # fmt: skip
def _week9_stale():
    """Seed 001 in Keras: momentum 0.99, 45 steps, raw 0-255 pixels; val accuracy collapses."""
    return Setup(week9(0.99), digits("raw", "nchw"))


@case(
    "keras-week9-momentum-0.8", "keras",
    expect=["unnormalized-inputs"],
    forbid=["stale-running-stats", "momentum-too-high-for-steps", "train-eval-gap"],
)  # fmt: skip
def _week9_fixed():
    """Seed 001's final model: momentum 0.8 keeps the statistics current."""
    return Setup(week9(0.8), digits("raw", "nchw"))


@case(
    "keras-l2-with-bn", "keras",
    expect=["l2-with-bn"], forbid=["bias-before-bn", "stale-running-stats"],
)  # fmt: skip
def _l2():
    """Seed 003: Conv2D(ReLU, kernel_regularizer=L2(0.01)) -> BN -> pool -> Dense(softmax)."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(8, 3, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01)),
        layers.BatchNormalization(momentum=0.9), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    x, y = digits("unit", "nchw")
    train_keras(model, nhwc(x), y.numpy(), epochs=1, batch_size=64, lr=1e-2)
    return Setup(model, (x, y))


@case(
    "keras-bn-before-output", "keras",
    expect=["bn-before-output"], forbid=["bias-before-bn", "dropout-before-bn"],
)  # fmt: skip
def _bn_before_output():
    """Dense(10, no bias) -> BN -> softmax: BN on the logits."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)), layers.Dense(32, activation="relu"), layers.Dense(10, use_bias=False),
        layers.BatchNormalization(momentum=0.9), layers.Activation("softmax"),
    ])  # fmt: skip
    return _train(model)


@case(
    "keras-dropout-before-bn", "keras",
    expect=["dropout-before-bn"], forbid=["bias-before-bn", "bn-before-output"],
)  # fmt: skip
def _dropout_before_bn():
    """Dense(ReLU) -> Dropout(0.3) -> BN -> Dense(softmax)."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)), layers.Dense(32, activation="relu"), layers.Dropout(0.3),
        layers.BatchNormalization(momentum=0.9), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    return _train(model)


@case(
    "keras-frozen-variables-trap", "keras",
    expect=["frozen-bn-in-train-mode"], forbid=["stale-running-stats", "degenerate-channels"],
)  # fmt: skip
def _frozen_trap():
    """gamma/beta variables frozen one by one while the layer stays trainable: BN still updates."""
    model = fresh_trained_mlp()
    bn = model.layers[1]
    bn.gamma.trainable = False
    bn.beta.trainable = False
    return Setup(model, digits())


@case(
    "keras-degenerate-channels", "keras",
    expect=["degenerate-channels"], forbid=["frozen-bn-in-train-mode"],
)  # fmt: skip
def _degenerate():
    """Half of the BN channels with gamma = 0."""
    import numpy as np

    model = fresh_trained_mlp()
    bn = model.layers[1]
    gamma = np.array(bn.gamma.numpy())
    gamma[:16] = 0.0
    bn.gamma.assign(gamma)
    return Setup(model, digits())
