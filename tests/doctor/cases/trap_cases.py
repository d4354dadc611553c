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


# ------------------------------------------------- batch-dependent inference
@case(
    "torch-batch-dependent-inference", "torch",
    expect=["batch-dependent-inference"], forbid=["stale-running-stats", "data-mismatch"],
)  # fmt: skip
def _torch_untracked():
    """BatchNorm1d(track_running_stats=False): inference normalises with the batch's statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(64, 32, bias=False), nn.BatchNorm1d(32, track_running_stats=False), nn.ReLU(),
        nn.Linear(32, 10),
    )  # fmt: skip
    x, y = digits()
    return Setup(train_torch(net, x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))


# ------------------------------------------------------------- shared BN
class _SharedBN(nn.Module):
    """Two branches (left/right half of the digit) through one BatchNorm1d (Siamese style)."""

    def __init__(self):
        super().__init__()
        self.left, self.right = nn.Linear(32, 16, bias=False), nn.Linear(32, 16, bias=False)
        self.bn = nn.BatchNorm1d(16)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        a = F.relu(self.bn(self.left(x[:, :32])))
        b = F.relu(self.bn(self.right(x[:, 32:])))
        return self.head(torch.cat([a, b], dim=1))


@case(
    "torch-shared-bn", "torch", expect=["shared-bn"], forbid=["graph-not-traced", "data-mismatch"]
)
def _torch_shared():
    """One BN module called on two branches: its statistics mix both."""
    torch.manual_seed(0)
    x, y = digits()
    return Setup(train_torch(_SharedBN(), x, y, epochs=2, batch_size=64, lr=1e-2), (x, y))


@case(
    "keras-shared-bn", "keras", expect=["shared-bn"], forbid=["data-mismatch", "graph-not-traced"]
)
def _keras_shared():
    """A shared Keras BatchNormalization layer on two Dense branches (functional API)."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    bn = layers.BatchNormalization(momentum=0.9, name="shared_bn")
    a = bn(layers.Dense(16, use_bias=False, activation="relu")(inp))
    b = bn(layers.Dense(16, use_bias=False, activation="relu")(inp))
    model = keras.Model(inp, layers.Dense(10, activation="softmax")(layers.Concatenate()([a, b])))
    x, y = digits()
    train_keras(model, x.numpy(), y.numpy(), epochs=2, batch_size=64, lr=1e-2)
    return Setup(model, (x, y))


# ------------------------------------------------- optimizer weight decay
@case(
    "torch-weight-decay-with-bn", "torch",
    expect=["l2-with-bn"], forbid=["bias-before-bn", "data-mismatch"],
)  # fmt: skip
def _torch_weight_decay():
    """AdamW(weight_decay=0.05) on a Linear(no bias) -> BN MLP, passed as optimizer=."""
    net = copy.deepcopy(trained_mlp())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    return Setup(net, digits(), {"optimizer": opt})


@case("torch-healthy-decay-on-output-only", "torch", healthy=True)
def _torch_decay_output_only():
    """Weight decay only on the BN-free output layer (a parameter group with 0 elsewhere)."""
    net = copy.deepcopy(trained_mlp())
    opt = torch.optim.SGD(
        [{"params": net[0].parameters(), "weight_decay": 0.0},
         {"params": net[3].parameters(), "weight_decay": 1e-4}], lr=0.1,
    )  # fmt: skip
    return Setup(net, digits(), {"optimizer": opt})


@case(
    "keras-weight-decay-with-bn", "keras",
    expect=["l2-with-bn"], forbid=["data-mismatch", "stale-running-stats"],
)  # fmt: skip
def _keras_weight_decay():
    """keras.optimizers.AdamW(weight_decay=0.004) on Dense -> BN, passed as optimizer=."""
    keras = _keras()
    return Setup(fresh_trained_mlp(), digits(), {"optimizer": keras.optimizers.AdamW(1e-3)})


# ----------------------------------------------- fine-tuning: frozen BN drift
def _fine_tuned_with_frozen_affine():
    """The MLP fine-tuned 1 epoch on shifted data with gamma/beta requires_grad=False."""
    pre = trained_mlp()
    net = copy.deepcopy(pre)
    for p in net[1].parameters():
        p.requires_grad_(False)
    x, y = digits()
    train_torch(net, (x * 1.5 + 0.2)[:512], y[:512], epochs=1, batch_size=64, lr=1e-3)
    return pre, net


@case(
    "torch-frozen-bn-drift", "torch",
    expect=["frozen-bn-drift"], forbid=["data-mismatch", "untrained-model"],
)  # fmt: skip
def _torch_drift():
    """Fine-tuning with BN's gamma/beta frozen but the module in train mode (reference=)."""
    pre, net = _fine_tuned_with_frozen_affine()
    return Setup(net, digits(), {"reference": pre.state_dict()})


@case("torch-healthy-frozen-with-bnlab-freeze", "torch", healthy=True)
def _torch_freeze():
    """The same fine-tuning after bnlab.freeze(model, 'all'): nothing moved (reference=)."""
    import bnlab

    pre = trained_mlp()
    net = bnlab.freeze(copy.deepcopy(pre), what="all")
    x, y = digits()
    train_torch(net, (x * 1.5 + 0.2)[:512], y[:512], epochs=1, batch_size=64, lr=1e-3)
    return Setup(net, digits(), {"reference": pre})


@case(
    "keras-frozen-bn-drift", "keras",
    expect=["frozen-bn-drift"], forbid=["data-mismatch", "untrained-model"],
)  # fmt: skip
def _keras_drift():
    """Keras fine-tuning that froze gamma/beta variables only: fit() still moves the statistics."""
    pre = fresh_trained_mlp()
    model = fresh_trained_mlp()
    bn = model.layers[1]
    bn.gamma.trainable = False
    bn.beta.trainable = False
    x, y = digits()
    train_keras(model, (x * 1.5 + 0.2).numpy()[:512], y.numpy()[:512], epochs=1, batch_size=64)
    return Setup(model, digits(), {"reference": pre})


# ------------------------------------------------------------- EMA / SWA
@case(
    "torch-ema-stale-bn", "torch",
    expect=["ema-stale-bn"], forbid=["data-mismatch", "untrained-model"],
)  # fmt: skip
def _torch_swa():
    """SWA: AveragedModel of the MLP started at init and averaged over training, BN never
    recomputed (no swa_utils.update_bn)."""
    from torch.optim.swa_utils import AveragedModel

    torch.manual_seed(0)
    net = mlp()
    swa = AveragedModel(net)
    x, y = digits()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for i in range(0, 1792, 64):
        loss = F.cross_entropy(net(x[i : i + 64]), y[i : i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
        swa.update_parameters(net)
    return Setup(swa, (x, y))


@case("torch-healthy-swa-with-update-bn", "torch", healthy=True)
def _torch_swa_fixed():
    """The same SWA model after torch.optim.swa_utils.update_bn on the training data."""
    from torch.optim.swa_utils import update_bn

    swa = copy.deepcopy(_torch_swa().model)
    x, _ = digits()
    update_bn([x[i : i + 64] for i in range(0, 1792, 64)], swa)
    return Setup(swa.eval(), digits())


# ---------------------------------------------------------------- wrappers
@case(
    "torch-dataparallel-week9", "torch",
    expect=["stale-running-stats", "momentum-too-high-for-steps"], forbid=["data-mismatch"],
)  # fmt: skip
def _torch_dp():
    """The week-9 model inside nn.DataParallel (as saved by a multi-GPU script)."""
    from .torch_cases import week9

    return Setup(nn.DataParallel(copy.deepcopy(week9(0.99))), digits("raw", "nchw"))


@case("torch-compiled-bn-before-output", "torch", expect=["bn-before-output"])
def _torch_compiled():
    """torch.compile(model) (never run, so no compiler is needed): BN on the logits."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10, bias=False),
                        nn.BatchNorm1d(10))  # fmt: skip
    x, y = digits()
    return Setup(torch.compile(train_torch(net, x, y, epochs=2, batch_size=64, lr=1e-2)), (x, y))


@case(
    "keras-nested-sequential-bn-before-output", "keras",
    expect=["bn-before-output"], forbid=["graph-not-traced", "dropout-before-bn"],
)  # fmt: skip
def _keras_nested():
    """A Sequential head (Dense -> BN) nested inside a functional model: walked as one graph."""
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    head = keras.Sequential(
        [
            keras.Input((32,)),
            layers.Dense(10, use_bias=False),
            layers.BatchNormalization(momentum=0.9),
        ],
        name="head",
    )
    inp = keras.Input((64,))
    model = keras.Model(inp, head(layers.Dense(32, activation="relu")(inp)))
    x, y = digits()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(x.numpy(), y.numpy(), epochs=2, batch_size=64, verbose=0)
    return Setup(model, (x, y))


@case(
    "torch-untraceable-says-so", "torch",
    expect=["graph-not-traced", "bn-before-output"], forbid=["shared-bn", "data-mismatch"],
)  # fmt: skip
def _torch_untraceable_note():
    """Data-dependent control flow: the doctor says the structural checks read a chain."""
    from .torch_cases import _untraceable

    return _untraceable()
