"""PyTorch cases (``torch.nn.BatchNorm*d`` and ``bnlab.BatchNorm``) for the BN doctor.

PyTorch momentum is the weight of the new batch: ``BatchNorm2d(momentum=0.01)`` is Keras's
0.99, the week-9 setting.
"""

from __future__ import annotations

import copy
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

import bnlab
from bnlab.nn import Dense
from bnlab.nn.regularizers import L2

from . import Setup, case
from .data import circles, digits
from .train import train_torch


def mlp(momentum: float = 0.1, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, 32, bias=bias), nn.BatchNorm1d(32, momentum=momentum), nn.ReLU(),
        nn.Linear(32, 10),
    )  # fmt: skip


def week9_net(torch_momentum: float) -> nn.Sequential:
    """Seed 001's layout scaled to 8x8 digits: Conv(ReLU) -> BN -> pool, twice, then Dense."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.ReLU(), nn.BatchNorm2d(16, momentum=torch_momentum),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 2), nn.ReLU(), nn.BatchNorm2d(16, momentum=torch_momentum),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
    )  # fmt: skip


@cache
def trained_mlp() -> nn.Module:
    torch.manual_seed(0)
    x, y = digits()
    return train_torch(mlp(), x, y, epochs=2, batch_size=64, lr=1e-2)


@cache
def week9(keras_momentum: float) -> nn.Module:
    """The week-9 model trained 3 epochs (batch 128, 42 steps) on raw 0-255 digits."""
    torch.manual_seed(0)
    x, y = digits("raw", "nchw")
    return train_torch(week9_net(1 - keras_momentum), x, y, epochs=3, batch_size=128)


# ------------------------------------------------------------------ healthy
@case("torch-healthy-mlp", "torch", healthy=True)
def _healthy_mlp():
    """Linear(no bias) -> BN -> ReLU -> Linear on unit-scale digits, 56 steps at momentum 0.1."""
    return Setup(trained_mlp(), digits())


@case("torch-healthy-cnn", "torch", healthy=True)
def _healthy_cnn():
    """Conv(no bias) -> BN -> ReLU -> pool -> Linear on unit-scale 1x8x8 digits."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 10),
    )  # fmt: skip
    x, y = digits("unit", "nchw")
    return Setup(train_torch(net, x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))


@case("torch-healthy-bnlab-layers", "torch", healthy=True)
def _healthy_bnlab():
    """bnlab Dense(use_bias=False) -> bnlab.BatchNorm(momentum=0.9, Keras convention) -> ReLU -> Dense."""
    torch.manual_seed(0)
    net = nn.Sequential(
        Dense(64, 32, use_bias=False), bnlab.BatchNorm(momentum=0.9, num_features=32), nn.ReLU(),
        Dense(32, 10),
    )  # fmt: skip
    x, y = digits()
    return Setup(train_torch(net, x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))


@case("torch-healthy-no-bn", "torch", healthy=True)
def _healthy_no_bn():
    """A plain MLP without BN: nothing for the BN doctor to report."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = digits()
    return Setup(train_torch(net, x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))


@case("torch-healthy-circles-binary", "torch", healthy=True)
def _healthy_circles():
    """Seed 004's MLP with BN (2 -> 50 -> 1 logit) on circles: the binary path."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(2, 50, bias=False), nn.BatchNorm1d(50), nn.ReLU(), nn.Linear(50, 1)
    )
    x, y = circles()
    return Setup(train_torch(net, x, y, epochs=4, batch_size=32, lr=1e-2), (x, y))


@case("torch-healthy-frozen-in-eval", "torch", healthy=True)
def _frozen_eval():
    """Fine-tuning done right: every parameter frozen and the model in eval mode."""
    net = copy.deepcopy(trained_mlp())
    for p in net.parameters():
        p.requires_grad_(False)
    return Setup(net.eval(), digits())


@case("torch-bias-before-bn", "torch", healthy=True, expect=["bias-before-bn"])
def _bias_before_bn():
    """Linear(bias=True) -> BN: a remark (wasted parameters), still healthy."""
    torch.manual_seed(0)
    x, y = digits()
    return Setup(train_torch(mlp(bias=True), x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))


# ---------------------------------------------------------------- problems
@case(
    "torch-week9-momentum-0.99", "torch",
    expect=["stale-running-stats", "momentum-too-high-for-steps", "unnormalized-inputs"],
    forbid=["train-eval-gap", "torch-momentum-looks-like-keras", "bn-before-output"],
)  # fmt: skip
def _week9_stale():
    """Seed 001 in PyTorch: Keras momentum 0.99 (torch 0.01), 42 steps, raw 0-255 pixels."""
    return Setup(week9(0.99), digits("raw", "nchw"))


@case(
    "torch-week9-momentum-0.8", "torch",
    expect=["unnormalized-inputs"],
    forbid=["stale-running-stats", "momentum-too-high-for-steps", "train-eval-gap"],
)  # fmt: skip
def _week9_fixed():
    """The same model with seed 001's fix, Keras momentum 0.8: the statistics keep up."""
    return Setup(week9(0.8), digits("raw", "nchw"))


@case(
    "torch-week9-unlabelled", "torch",
    expect=["stale-running-stats"], forbid=["train-eval-gap"],
)  # fmt: skip
def _week9_unlabelled():
    """The stale week-9 model diagnosed on inputs alone (agreement between modes)."""
    return Setup(week9(0.99), digits("raw", "nchw")[0])


@case(
    "torch-momentum-pasted-from-keras", "torch",
    expect=["torch-momentum-looks-like-keras"],
    forbid=["momentum-too-high-for-steps", "bias-before-bn"],
)  # fmt: skip
def _torch_momentum():
    """BatchNorm1d(momentum=0.99): Keras's number in PyTorch keeps 1% per step."""
    torch.manual_seed(0)
    x, y = digits()
    return Setup(train_torch(mlp(momentum=0.99), x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))


@case(
    "torch-bn-before-output", "torch",
    expect=["bn-before-output"], forbid=["bias-before-bn", "dropout-before-bn"],
)  # fmt: skip
def _bn_before_output():
    """Linear -> ReLU -> Linear(no bias) -> BatchNorm1d(10): BN on the logits."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10, bias=False), nn.BatchNorm1d(10)
    )
    x, y = digits()
    return Setup(train_torch(net, x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))


@case(
    "torch-dropout-before-bn", "torch",
    expect=["dropout-before-bn"], forbid=["bias-before-bn", "bn-before-output"],
)  # fmt: skip
def _dropout_before_bn():
    """Linear -> ReLU -> Dropout(0.3) -> BN -> Linear: variance shift."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.BatchNorm1d(32), nn.Linear(32, 10)
    )
    x, y = digits()
    return Setup(train_torch(net, x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))


@case(
    "torch-l2-with-bn", "torch",
    expect=["l2-with-bn"], forbid=["bias-before-bn", "stale-running-stats"],
)  # fmt: skip
def _l2_with_bn():
    """Seed 003 in bnlab layers: Dense(kernel_regularizer=L2(0.01)) -> ReLU -> BatchNorm."""
    torch.manual_seed(0)
    net = nn.Sequential(
        Dense(64, 32, kernel_regularizer=L2(0.01)), nn.ReLU(),
        bnlab.BatchNorm(momentum=0.9, num_features=32), Dense(32, 10),
    )  # fmt: skip
    x, y = digits()
    return Setup(train_torch(net, x, y, epochs=2, batch_size=64, lr=1e-2, regularized=True), (x, y))


@case(
    "torch-frozen-bn-in-train-mode", "torch",
    expect=["frozen-bn-in-train-mode"], forbid=["stale-running-stats", "degenerate-channels"],
)  # fmt: skip
def _frozen_train():
    """The fine-tuning trap: all parameters frozen, but model.train() left BN updating."""
    net = copy.deepcopy(trained_mlp())
    for p in net.parameters():
        p.requires_grad_(False)
    return Setup(net.train(), digits())


@case(
    "torch-degenerate-channels", "torch",
    expect=["degenerate-channels"], forbid=["frozen-bn-in-train-mode"],
)  # fmt: skip
def _degenerate():
    """Half of the BN channels with gamma = 0 (pruned or collapsed during training)."""
    net = copy.deepcopy(trained_mlp())
    with torch.no_grad():
        net[1].weight[:16] = 0.0
    return Setup(net, digits())


@case(
    "torch-small-batch", "torch",
    expect=["small-batch"], forbid=["torch-momentum-looks-like-keras", "bn-before-output"],
)  # fmt: skip
def _small_batch():
    """The MLP trained with batches of 4 samples (diagnose told train_batch_size=4)."""
    torch.manual_seed(0)
    x, y = digits()
    net = train_torch(mlp(), x[:400], y[:400], epochs=1, batch_size=4, lr=1e-3)
    return Setup(net, (x, y), {"train_batch_size": 4})


class _Shifted(torch.utils.data.IterableDataset):
    """Batches that each carry their own constant offset (one source per batch)."""

    def __init__(self, x, y, batch_size: int = 128):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __iter__(self):
        for step, i in enumerate(range(0, self.x.shape[0], self.batch_size)):
            yield _offset(step, self.x[i : i + self.batch_size]), self.y[i : i + self.batch_size]


def _offset(step: int, xb: torch.Tensor) -> torch.Tensor:
    return xb + (((step * 7) % 9) - 4) * 0.5  # offsets -2.0 ... +2.0, fixed per step


@case(
    "torch-train-eval-gap-shifted-batches", "torch",
    expect=["train-eval-gap"], forbid=["stale-running-stats", "momentum-too-high-for-steps"],
)  # fmt: skip
def _shifted_batches():
    """Input BN trained on batches with per-batch offsets: batch statistics remove them,
    population statistics cannot, so recalibration does not close the gap."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.BatchNorm1d(64), nn.Linear(64, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Linear(32, 10),
    )  # fmt: skip
    x, y = digits()
    net = train_torch(net, x, y, epochs=3, batch_size=128, lr=1e-2, shift=_offset)
    loader = torch.utils.data.DataLoader(_Shifted(x, y), batch_size=None)
    return Setup(net, loader)


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it (registration order is used)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32, bias=False)
        self.bn1 = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 10, bias=False)
        self.bn_out = nn.BatchNorm1d(10)

    def forward(self, x):
        h = F.relu(self.bn1(self.fc1(x)))
        if h.mean() > 10:  # never true; a Python branch on data
            h = h / 2
        return self.bn_out(self.fc2(h))


@case(
    "torch-untraceable-bn-before-output", "torch",
    expect=["bn-before-output"], forbid=["bias-before-bn", "dropout-before-bn"],
)  # fmt: skip
def _untraceable():
    """BN on the logits in a model fx cannot trace: found through registration order."""
    torch.manual_seed(0)
    x, y = digits()
    return Setup(train_torch(_Branchy(), x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))
