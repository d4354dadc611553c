"""Cases for the traps of real-world BN threads: wrong data, untrained or never-updated
statistics, broken buffers (PyTorch and Keras 3). Each id has a case that triggers it here;
the healthy cases (which forbid every id) are the models that must not trigger it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import Setup, case
from .data import digits, nhwc
from .keras_cases import _keras, fresh_trained_mlp
from .torch_cases import mlp, trained_mlp
from .train import train_keras, train_torch


def unit_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.BatchNorm2d(8), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 10),
    )  # fmt: skip
    x, y = digits("unit", "nchw")
    return train_torch(net, x, y, epochs=2, batch_size=64, lr=1e-2)


# ------------------------------------------------------------------ torch
@case(
    "torch-data-mismatch-raw-pixels", "torch",
    expect=["data-mismatch"], forbid=["stale-running-stats", "train-eval-gap", "unnormalized-inputs"],
)  # fmt: skip
def _torch_raw_for_unit():
    """Trained on 0-1 pixels, diagnosed with raw 0-255 ones (``--data digits`` default)."""
    return Setup(unit_cnn(), digits("raw", "nchw"))


@case(
    "torch-untrained-model", "torch",
    expect=["untrained-model"],
    forbid=["stale-running-stats", "momentum-too-high-for-steps", "data-mismatch", "train-eval-gap",
            "stats-never-updated"],
)  # fmt: skip
def _torch_untrained():
    """A module:factory model diagnosed without its weights (fresh initialisation)."""
    torch.manual_seed(0)
    return Setup(mlp(), digits())


@case(
    "torch-stats-never-updated", "torch",
    expect=["stats-never-updated"], forbid=["untrained-model", "data-mismatch"],
)  # fmt: skip
def _torch_never_updated():
    """A custom loop that kept the model in eval mode: the weights learn, BN never updates."""
    torch.manual_seed(0)
    net = mlp()
    x, y = digits()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.eval()
    for _ in range(2):
        for i in range(0, 1792, 64):
            loss = F.cross_entropy(net(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return Setup(net, (x, y))


@case(
    "torch-nan-running-stats", "torch",
    expect=["nan-running-stats"], forbid=["data-mismatch", "untrained-model"],
)  # fmt: skip
def _torch_nan():
    """A diverged step left NaN in one channel's running variance (and an Inf mean)."""
    net = copy.deepcopy(trained_mlp())
    with torch.no_grad():
        net[1].running_var[3] = float("nan")
        net[1].running_mean[5] = float("inf")
    return Setup(net, digits())


# ------------------------------------------------------------------ keras
@case(
    "keras-data-mismatch-raw-pixels", "keras",
    expect=["data-mismatch"], forbid=["stale-running-stats", "train-eval-gap", "unnormalized-inputs"],
)  # fmt: skip
def _keras_raw_for_unit():
    """A Keras CNN trained on 0-1 pixels, diagnosed with raw 0-255 ones."""
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
    return Setup(model, digits("raw", "nchw"))


@case(
    "keras-untrained-model", "keras",
    expect=["untrained-model"],
    forbid=["stale-running-stats", "data-mismatch", "train-eval-gap", "stats-never-updated"],
)  # fmt: skip
def _keras_untrained():
    """A Keras model built by its create_model() and diagnosed without weights."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)), layers.Dense(32, activation="relu"),
        layers.BatchNormalization(), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    return Setup(model, digits())


@case(
    "keras-stats-never-updated", "keras",
    expect=["stats-never-updated"], forbid=["untrained-model", "data-mismatch"],
)  # fmt: skip
def _keras_never_updated():
    """Trained weights whose BN moving statistics were never updated (a custom loop calling
    ``model(x)`` without ``training=True``): the optimizer counted steps, BN holds 0/1."""
    import numpy as np

    model = fresh_trained_mlp()
    bn = model.layers[1]
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
    bn.moving_variance.assign(np.ones(bn.moving_variance.shape, "float32"))
    return Setup(model, digits(), {"steps": 56})


@case(
    "keras-nan-running-stats", "keras",
    expect=["nan-running-stats"], forbid=["data-mismatch", "untrained-model"],
)  # fmt: skip
def _keras_nan():
    """Mixed-precision overflow: one moving variance became Inf, one NaN."""
    import numpy as np

    model = fresh_trained_mlp()
    bn = model.layers[1]
    var = np.array(bn.moving_variance.numpy())
    var[2], var[4] = np.inf, np.nan
    bn.moving_variance.assign(var)
    return Setup(model, digits())
