"""The BN doctor on cases reproduced from public bug reports (Keras, TensorFlow, PyTorch,
Lightning, timm and other issue threads), in PyTorch and Keras 3.

Each case rebuilds, at the size of 8x8 digits, the model state a public thread describes
(its docstring names the thread), and is labelled with the finding ids a correct doctor
must report (``expect``) and must not report (``forbid``). Precision and recall are counted
over those labels as in ``benchmarks/doctor_cases.py``; seconds are per model (building and
training it included). For context, NeuraLint (Nikanjam et al., 2021) reports precision
100 % and recall 70.5 % on its own set of faulty models — a different set and task (static
graph checks), so the numbers sit side by side, not head to head. Run from the repository
root::

    python benchmarks/doctor_public_cases.py             # every case, one JSON line
    python benchmarks/doctor_public_cases.py --framework torch --verbose
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from doctor_cases import load_cases  # noqa: E402

NEURALINT = {"precision": 1.0, "recall": 0.705, "source": "Nikanjam et al., 2021 (own set)"}


@dataclass(frozen=True)
class PublicCase:
    name: str
    framework: str
    source: str
    build: Callable
    expect: frozenset
    forbid: frozenset


PUBLIC: dict[str, PublicCase] = {}


def public(name, framework, source, *, expect, forbid=()):
    def register(fn):
        PUBLIC[name] = PublicCase(name, framework, source, fn, frozenset(expect), frozenset(forbid))
        return fn

    return register


def _h():
    """The doctor's labelled-case helpers: digits data and seeded training loops."""
    return load_cases()


def _keras():
    import keras

    return keras


def _torch():
    import torch
    from torch import nn

    return torch, nn


def _mlp(nn, **bn):
    return nn.Sequential(nn.Linear(64, 32, bias=False), nn.BatchNorm1d(32, **bn), nn.ReLU(),
                         nn.Linear(32, 10))  # fmt: skip


def _trained_mlp(**bn):
    torch, nn = _torch()
    h = _h()
    torch.manual_seed(0)
    x, y = h.data.digits()
    return h.train.train_torch(_mlp(nn, **bn), x, y, epochs=2, batch_size=64, lr=1e-2), (x, y)


def _keras_mlp(momentum=0.9):
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((64,)), layers.Dense(32, activation="relu"),
        layers.BatchNormalization(momentum=momentum), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip


def _keras_cnn(momentum=0.99):
    keras = _keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(8, 3, activation="relu"),
        layers.BatchNormalization(momentum=momentum), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])  # fmt: skip


STATS = {"stale-running-stats", "momentum-too-high-for-steps"}


# ---------------------------------------------------------------------------- Keras
@public("keras-7005-val-differs-on-same-data", "keras",
        "https://github.com/keras-team/keras/issues/7005",
        expect={"stale-running-stats"}, forbid={"data-mismatch", "train-eval-gap"})  # fmt: skip
def _keras_7005():
    """'Different training and validation results on same dataset using batch normalization':
    a Conv -> BN(default momentum 0.99) CNN trained briefly; evaluate() on the training data
    scores far below fit()."""
    h = _h()
    model = _keras_cnn(0.99)
    x, y = h.data.digits("unit", "nchw")
    h.train.train_keras(model, h.data.nhwc(x), y.numpy(), epochs=1, batch_size=32, lr=1e-2)
    return model, (x, y), {}


@public("keras-10214-finetune-frozen-variables", "keras",
        "https://github.com/keras-team/keras/issues/10214",
        expect={"frozen-bn-in-train-mode", "frozen-bn-drift"},
        forbid={"data-mismatch", "untrained-model"})  # fmt: skip
def _keras_10214():
    """'Extremely low accuracy after finetuning InceptionV3': the base's BN variables frozen
    but the layers still trainable, so fine-tuning moved the pretrained statistics."""
    h = _h()
    pre = h.keras_cases.fresh_trained_mlp()
    model = h.keras_cases.fresh_trained_mlp()
    bn = model.layers[1]
    bn.gamma.trainable = bn.beta.trainable = False
    x, y = h.data.digits()
    h.train.train_keras(model, (x * 1.5 + 0.2).numpy()[:512], y.numpy()[:512], epochs=1,
                        batch_size=64)  # fmt: skip
    return model, (x, y), {"reference": pre}


@public("keras-8794-shared-bn-siamese", "keras",
        "https://github.com/keras-team/keras/issues/8794",
        expect={"shared-bn"}, forbid={"data-mismatch", "graph-not-traced"})  # fmt: skip
def _keras_8794():
    """'When BatchNormalization layer is shared Siamese-style, moving_variance is calculated
    incorrectly': one BN layer called on two branches."""
    keras, h = _keras(), _h()
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    bn = layers.BatchNormalization(momentum=0.9)
    a = bn(layers.Dense(16, use_bias=False, activation="relu")(inp))
    b = bn(layers.Dense(16, use_bias=False, activation="relu")(inp))
    model = keras.Model(inp, layers.Dense(10, activation="softmax")(layers.Concatenate()([a, b])))
    x, y = h.data.digits()
    h.train.train_keras(model, x.numpy(), y.numpy(), epochs=2, batch_size=64, lr=1e-2)
    return model, (x, y), {}


@public("keras-3477-rescale-missing-at-predict", "keras",
        "https://github.com/keras-team/keras/issues/3477",
        expect={"data-mismatch"}, forbid={"stale-running-stats", "train-eval-gap"})  # fmt: skip
def _keras_3477():
    """'Why the return of predict and predict generator are different?': trained through
    ImageDataGenerator(rescale=1./255), predicted on raw 0-255 pixels."""
    h = _h()
    model = _keras_cnn(0.9)
    x, y = h.data.digits("unit", "nchw")
    h.train.train_keras(model, h.data.nhwc(x), y.numpy(), epochs=2, batch_size=64, lr=1e-2)
    return model, h.data.digits("raw", "nchw"), {}


@public("tf-11965-moving-stats-never-updated", "keras",
        "https://github.com/tensorflow/tensorflow/issues/11965",
        expect={"stats-never-updated"}, forbid={"untrained-model", "data-mismatch"})  # fmt: skip
def _tf_11965():
    """'Moving average and moving variance in Batchnorm aren't updated': after training all
    moving means are 0 and variances 1 (the update ops never ran)."""
    import numpy as np

    h = _h()
    model = h.keras_cases.fresh_trained_mlp()
    bn = model.layers[1]
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
    bn.moving_variance.assign(np.ones(bn.moving_variance.shape, "float32"))
    return model, h.data.digits(), {"steps": 56}


@public("tf-32864-gradient-tape-without-training-true", "keras",
        "https://github.com/tensorflow/tensorflow/issues/32864",
        expect={"stats-never-updated"}, forbid={"untrained-model", "data-mismatch"})  # fmt: skip
def _tf_32864():
    """'BatchNormalization update ops with gradient tape': a custom loop calling model(x)
    without training=True; the CNN's weights learn, its BN statistics stay 0/1."""
    import numpy as np

    h = _h()
    model = _keras_cnn(0.9)
    x, y = h.data.digits("unit", "nchw")
    h.train.train_keras(model, h.data.nhwc(x), y.numpy(), epochs=1, batch_size=64, lr=1e-2)
    bn = model.layers[1]
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
    bn.moving_variance.assign(np.ones(bn.moving_variance.shape, "float32"))
    return model, (x, y), {}


@public("keras-8837-batch-size-1", "keras",
        "https://github.com/keras-team/keras/issues/8837",
        expect={"small-batch"}, forbid={"data-mismatch"})  # fmt: skip
def _keras_8837():
    """'Fit_generator: Trained model not usable for predictions': trained with batch_size=1,
    so every BN batch is one sample (diagnosed with train_batch_size=1)."""
    h = _h()
    model = _keras_mlp(0.9)
    x, y = h.data.digits()
    h.train.train_keras(model, x.numpy()[:200], y.numpy()[:200], epochs=1, batch_size=1)
    return model, (x, y), {"train_batch_size": 1}


@public("keras-swa-4-bn-not-recomputed", "keras",
        "https://github.com/kristpapadopoulos/keras-stochastic-weight-averaging/issues/4",
        expect={"ema-stale-bn"}, forbid={"data-mismatch"})  # fmt: skip
def _keras_swa():
    """'should we do something special for BN layers?' (Keras SWA): the averaged weights of
    the initial and the trained model carry the trained model's BN statistics."""
    keras, h = _keras(), _h()
    x, y = h.data.digits()
    model = _keras_mlp(0.9)
    start = [w.copy() for w in model.get_weights()]
    h.train.train_keras(model, x.numpy(), y.numpy(), epochs=2, batch_size=64, lr=1e-2)
    averaged = keras.models.clone_model(model)
    names = [v.path for v in model.weights]
    mixed = [
        w if "moving" in n else (w + s) / 2
        for n, w, s in zip(names, model.get_weights(), start, strict=True)
    ]
    averaged.set_weights(mixed)
    return model, (x, y), {"averaged": averaged}


# ---------------------------------------------------------------------------- PyTorch
@public("torch-86590-requires-grad-does-not-freeze-stats", "torch",
        "https://github.com/pytorch/pytorch/issues/86590",
        expect={"frozen-bn-drift", "frozen-bn-in-train-mode"}, forbid={"data-mismatch"})  # fmt: skip
def _torch_86590():
    """'Easy way to freeze BatchNorm running_mean/running_var': every parameter set to
    requires_grad=False, then model.train() for the new head; the statistics still move."""
    torch, nn = _torch()
    h = _h()
    pre, (x, y) = _trained_mlp()
    net = copy.deepcopy(pre)
    for p in list(net[0].parameters()) + list(net[1].parameters()):
        p.requires_grad_(False)
    h.train.train_torch(net, (x * 1.5 + 0.2)[:512], y[:512], epochs=1, batch_size=64)
    net.train()  # left as the fine-tuning loop left it
    return net, (x, y), {"reference": pre.state_dict()}


@public("lightning-15062-basefinetuning-train-bn-false", "torch",
        "https://github.com/Lightning-AI/pytorch-lightning/issues/15062",
        expect={"frozen-bn-drift"}, forbid={"data-mismatch", "untrained-model"})  # fmt: skip
def _lightning_15062():
    """'BaseFinetuning freeze method doesn't freeze track_running_stats in BatchNorm':
    freeze(train_bn=False) stops gamma/beta, but fit() still rewrites the statistics."""
    h = _h()
    pre, (x, y) = _trained_mlp()
    net = copy.deepcopy(pre)
    for p in net[1].parameters():
        p.requires_grad_(False)
    h.train.train_torch(net, (x * 2.0 - 0.3)[:640], y[:640], epochs=1, batch_size=64)
    return net, (x, y), {"reference": pre}


@public("torch-88474-amp-nan-running-mean", "torch",
        "https://github.com/pytorch/pytorch/issues/88474",
        expect={"nan-running-stats"}, forbid={"data-mismatch", "untrained-model"})  # fmt: skip
def _torch_88474():
    """'Mixed precision training fails due to NaN in batch norm running_mean': one overflowing
    fp16 batch wrote NaN into every channel's running mean."""
    torch, _ = _torch()
    net, data = _trained_mlp()
    with torch.no_grad():
        net[1].running_mean.fill_(float("nan"))
    return net, data, {}


@public("torch-96798-amp-nan-conv-bn", "torch",
        "https://github.com/pytorch/pytorch/issues/96798",
        expect={"nan-running-stats"}, forbid={"data-mismatch"})  # fmt: skip
def _torch_96798():
    """'NAN of batchnorm in AMP': Conv2d -> BatchNorm2d(eps=1e-3) whose running variance got
    Inf/NaN in some channels after an fp16 overflow."""
    torch, nn = _torch()
    h = _h()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 6 * 6, 10))  # fmt: skip
    x, y = h.data.digits("unit", "nchw")
    net = h.train.train_torch(net, x, y, epochs=1, batch_size=64, lr=1e-2)
    with torch.no_grad():
        net[1].running_var[:3] = float("inf")
        net[1].running_var[3] = float("nan")
    return net, (x, y), {}


@public("torch-16793-track-running-stats-false", "torch",
        "https://github.com/pytorch/pytorch/issues/16793",
        expect={"batch-dependent-inference"}, forbid={"data-mismatch", "stale-running-stats"})  # fmt: skip
def _torch_16793():
    """'batchnorm1d inference behavior is incorrect': with track_running_stats=False the
    layer normalises with the batch's statistics in eval mode too."""
    net, data = _trained_mlp(track_running_stats=False)
    return net, data, {}


@public("iic-49-test-batch-statistics", "torch",
        "https://github.com/xu-ji/IIC/issues/49",
        expect={"batch-dependent-inference"}, forbid={"data-mismatch"})  # fmt: skip
def _iic_49():
    """'MNIST training accuracy' (IIC): BatchNorm2d(track_running_stats=False), so test
    accuracy depends on the test batch."""
    torch, nn = _torch()
    h = _h()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False),
                        nn.BatchNorm2d(8, track_running_stats=False), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 6 * 6, 10))  # fmt: skip
    x, y = h.data.digits("unit", "nchw")
    return h.train.train_torch(net, x, y, epochs=1, batch_size=64, lr=1e-2), (x, y), {}


@public("simsiam-1-shared-encoder-bn", "torch",
        "https://github.com/PatrickHua/SimSiam/issues/1",
        expect={"shared-bn"}, forbid={"data-mismatch", "graph-not-traced"})  # fmt: skip
def _simsiam_1():
    """'A mistake caused by batch norm layers' (SimSiam): one encoder, BN included, applied to
    two views; its statistics mix both call sites."""
    torch, _ = _torch()
    h = _h()
    torch.manual_seed(0)
    x, y = h.data.digits()
    net = h.train.train_torch(h.trap_cases._SharedBN(), x, y, epochs=2, batch_size=64, lr=1e-2)
    return net, (x, y), {}


@public("composer-624-swa-bn-not-updated", "torch",
        "https://github.com/mosaicml/composer/issues/624",
        expect={"ema-stale-bn"}, forbid={"data-mismatch"})  # fmt: skip
def _composer_624():
    """'Update SWA batch norm statistics': a torch.optim.swa_utils.AveragedModel whose BN
    statistics were never recomputed after averaging."""
    h = _h()
    setup = h.CASES["torch-ema-stale-bn"].builder()
    return setup.model, setup.data, {}


@public("deeplab-79-momentum-0999-in-torch", "torch",
        "https://github.com/kazuto1011/deeplab-pytorch/issues/79",
        expect={"torch-momentum-looks-like-keras"}, forbid={"data-mismatch"})  # fmt: skip
def _deeplab_79():
    """'BatchNorm Momentum Setting in Pytorch': momentum=0.999 meant as TensorFlow's decay;
    in PyTorch it keeps 0.1 % of the running statistics per step."""
    net, data = _trained_mlp(momentum=0.999)
    return net, data, {}


@public("asl-424-pixels-divided-twice", "torch",
        "https://github.com/GoogleCloudPlatform/asl-ml-immersion/pull/424",
        expect={"data-mismatch"}, forbid={"stale-running-stats", "train-eval-gap"})  # fmt: skip
def _asl_424():
    """'Fixed wrong pixel scales': trained on [0, 1] pixels, predicted on [0, 1/255] ones
    (divided by 255 twice)."""
    h = _h()
    net = h.trap_cases.unit_cnn()
    x, y = h.data.digits("unit", "nchw")
    return net, (x / 255.0, y), {}


@public("robustar-165-weights-not-loaded", "torch",
        "https://github.com/PaulCCCCCCH/Robustar_implementation/pull/165",
        expect={"untrained-model"},
        forbid={"stale-running-stats", "data-mismatch", "stats-never-updated"})  # fmt: skip
def _robustar_165():
    """'fixed wrong accuracy issue when loading a trained model': test accuracy the same as a
    randomly initialised model (the factory's fresh weights were diagnosed)."""
    torch, nn = _torch()
    h = _h()
    torch.manual_seed(0)
    return _mlp(nn), h.data.digits(), {}


@public("autrainer-166-weight-decay-with-bn", "torch",
        "https://github.com/autrainer/autrainer/pull/166",
        expect={"l2-with-bn"}, forbid={"data-mismatch", "bias-before-bn"})  # fmt: skip
def _autrainer_166():
    """'Skip Optimizer Weight Decay for Biases and Normalization Layers': AdamW weight decay
    on every weight, including the Linear layer BN follows (given as optimizer=)."""
    torch, _ = _torch()
    net, data = _trained_mlp()
    return net, data, {"optimizer": torch.optim.AdamW(net.parameters(), weight_decay=0.05)}


@public("timm-106-healthy-ema-control", "torch",
        "https://github.com/huggingface/pytorch-image-models/issues/106",
        expect=set(), forbid={"ema-stale-bn", "stale-running-stats", "data-mismatch"})  # fmt: skip
def _timm_106():
    """'EMA BN vars updating with another FF': an EMA over the last steps only (decay 0.5)
    with its BN buffers averaged too (use_buffers=True) fits its weights: no finding."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch, nn = _torch()
    import torch.nn.functional as F

    h = _h()
    torch.manual_seed(0)
    net = _mlp(nn)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    x, y = h.data.digits()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(2):
        for i in range(0, 1792, 64):
            loss = F.cross_entropy(net(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema.update_parameters(net)
    return ema.eval(), (x, y), {}


# --------------------------------------------------------------------------- running
def run(case: PublicCase) -> dict:
    from bnlab.doctor import diagnose

    start = time.perf_counter()
    model, data, kwargs = case.build()
    produced = diagnose(model, data, **kwargs).ids
    return {
        "name": case.name,
        "framework": case.framework,
        "source": case.source,
        "produced": sorted(produced),
        "tp": len(case.expect & produced),
        "fn": len(case.expect - produced),
        "fp": len(case.forbid & produced),
        "seconds": round(time.perf_counter() - start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["torch", "keras"], action="append")
    parser.add_argument("--verbose", action="store_true", help="one line per case on stderr")
    args = parser.parse_args(argv)
    frameworks = set(args.framework or ("torch", "keras"))
    if "keras" in frameworks and not _h().keras_available():
        frameworks.discard("keras")
    results = []
    start = time.perf_counter()
    for case in PUBLIC.values():
        if case.framework not in frameworks:
            continue
        r = run(case)
        results.append(r)
        if args.verbose:
            ok = "ok  " if not (r["fp"] or r["fn"]) else "FAIL"
            print(f"{ok} {r['name']:48s} {r['seconds']:6.2f}s {r['produced']}", file=sys.stderr)
    tp, fp, fn = (sum(r[k] for r in results) for k in ("tp", "fp", "fn"))
    seconds = [r["seconds"] for r in results]
    out = {
        "cases": len(results),
        "torch": sum(r["framework"] == "torch" for r in results),
        "keras": sum(r["framework"] == "keras" for r in results),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "seconds_per_model_mean": round(sum(seconds) / len(seconds), 2) if seconds else 0.0,
        "seconds_per_model_max": max(seconds, default=0.0),
        "seconds": round(time.perf_counter() - start, 2),
        "neuralint_published": NEURALINT,
        "failures": [
            {"case": r["name"], "produced": r["produced"], "source": r["source"]}
            for r in results
            if r["fp"] or r["fn"]
        ],
    }
    print(json.dumps(out))
    return 0 if out["precision"] == 1.0 and out["recall"] >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
