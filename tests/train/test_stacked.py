"""Parity of the stacked engine: each run trained in a stack equals the run trained alone.

For ``fashion_cnn`` (real Fashion-MNIST, raw pixels, Adam, the seed's dropout 0.2) and
``circles_mlp`` (seed 004's SGD with momentum), a stack of K = 4 runs with BN (two momenta)
and K = 4 without BN gives, run by run, the weights, the BN moving statistics and every
per-epoch metric of ``bnlab.train.fit`` with the same seed, within 1e-4 (``|a - b| <= 1e-4 +
1e-4 |b|``; the moving variances of raw-pixel inputs are ~1e3, hence the relative part). On
CPU with the default per-run kernels the runs are in fact equal bit for bit
(``test_fashion_cnn_bit_for_bit_over_ten_steps``); the tolerance covers the GPU path's
stacked kernels. Dropout is on: the stack draws each run's masks from that run's own
generator, seeded like ``fit``'s dropout stream.
"""

from __future__ import annotations

import math

import pytest
import torch

from bnlab import models
from bnlab.data import load
from bnlab.train import fit, seeded
from bnlab.train.stacked import fit_stacked

TOL = 1e-4


def build(preset: str, seed: int, **options) -> torch.nn.Module:
    with seeded(seed):
        return models.build(preset, **options)


def assert_same_run(alone: torch.nn.Module, h_alone, stacked: torch.nn.Module, h_stacked):
    """Weights, BN statistics (every state_dict entry) and every History metric."""
    s1, s2 = alone.state_dict(), stacked.state_dict()
    assert s1.keys() == s2.keys()
    for key in s1:
        torch.testing.assert_close(
            s2[key].double(), s1[key].double(), rtol=TOL, atol=TOL, msg=lambda m, k=key: f"{k}: {m}"
        )
    assert h_stacked.epoch == h_alone.epoch
    assert h_stacked.diverged_at_epoch == h_alone.diverged_at_epoch
    assert set(h_stacked.history) == set(h_alone.history)
    for key, values in h_alone.history.items():
        for epoch, (a, b) in enumerate(zip(values, h_stacked.history[key], strict=True), 1):
            assert math.isclose(b, a, rel_tol=TOL, abs_tol=TOL) or (
                math.isnan(a) and math.isnan(b)
            ), f"{key} epoch {epoch}: stacked {b} vs alone {a}"
    for key in ("seed", "lr", "batch_size", "val_source", "task", "steps"):
        assert h_stacked.params[key] == h_alone.params[key]


def check_parity(preset, dataset, runs, fit_options, **stack_options):
    """Train ``runs`` = [(seed, model_options, lr)] alone and stacked; compare run by run."""
    alone = []
    for seed, options, lr in runs:
        model = build(preset, seed, **options)
        alone.append((model, fit(model, dataset, seed=seed, lr=lr, **fit_options)))
    stacked = [build(preset, seed, **options) for seed, options, _ in runs]
    histories = fit_stacked(
        stacked, dataset, seeds=[r[0] for r in runs], lr=[r[2] for r in runs],
        **fit_options, **stack_options,
    )
    for (model, history), model_s, history_s in zip(alone, stacked, histories, strict=True):
        assert history_s.params["engine"] == "stacked"
        assert history_s.params["stack_size"] == len(runs)
        assert_same_run(model, history, model_s, history_s)
    return alone, histories


@pytest.fixture(scope="module")
def fashion(shared_data):
    """Fashion-MNIST, raw 0-255 pixels as in seed 002: 192 training and 128 test images."""
    return load(
        "fashion_mnist", data_dir=str(shared_data), scale="raw",
        train_range=[0, 192], test_from="train", test_range=[1000, 1128],
    )


@pytest.fixture(scope="module")
def circles():
    return load("circles")


FASHION_FIT = {"epochs": 2, "batch_size": 64, "optimizer": "adam", "progress": False}
CIRCLES_FIT = {
    "epochs": 3, "batch_size": 32, "optimizer": "sgd", "optimizer_options": {"momentum": 0.9},
    "progress": False,
}


def test_fashion_cnn_with_bn_two_momenta(fashion):
    runs = [(0, {"bn_momentum": 0.99}, None), (1, {"bn_momentum": 0.99}, None),
            (2, {"bn_momentum": 0.8}, None), (3, {"bn_momentum": 0.8}, None)]
    alone, histories = check_parity("fashion_cnn", fashion, runs, FASHION_FIT)
    # Not a vacuous comparison: the runs learned, and differ from each other.
    assert all(h.history["loss"][-1] < h.history["loss"][0] for _, h in alone)
    assert len({h.history["loss"][-1] for h in histories}) == 4


def test_fashion_cnn_without_bn(fashion):
    runs = [(seed, {"norm": "none"}, None) for seed in range(4)]
    check_parity("fashion_cnn", fashion, runs, FASHION_FIT)


def test_circles_mlp_with_bn_two_momenta(circles):
    runs = [(0, {"bn_momentum": 0.99}, 0.01), (1, {"bn_momentum": 0.99}, 0.01),
            (2, {"bn_momentum": 0.8}, 0.01), (3, {"bn_momentum": 0.8}, 0.01)]
    check_parity("circles_mlp", circles, runs, CIRCLES_FIT)


def test_circles_mlp_without_bn_per_run_lr_and_l2(circles):
    # Values that may differ inside a stack: learning rate and L2 strength, per run.
    runs = [(0, {"norm": "none"}, 0.01), (1, {"norm": "none", "l2": 0.01}, 0.02),
            (2, {"norm": "none"}, 0.005), (3, {"norm": "none", "l2": 0.001}, 0.01)]
    _, histories = check_parity("circles_mlp", circles, runs, CIRCLES_FIT)
    assert histories[0].history["reg_loss"] == [0.0] * 3
    assert all(v > 0 for v in histories[1].history["reg_loss"])


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_circles_mlp_stacked_kernels(circles, norm):
    """The GPU path's layers (one batched matmul for all runs) on CPU: with SGD the few
    rounding differences of bmm vs addmm stay far below 1e-4 over 3 epochs."""
    runs = [(s, {"norm": norm, "bn_momentum": m}, 0.01) for s, m in
            ((0, 0.99), (1, 0.99), (2, 0.8), (3, 0.8))]
    check_parity("circles_mlp", circles, runs, CIRCLES_FIT, kernels="stacked",
                 dropout_rng="shared")


def test_fashion_cnn_stacked_kernels_one_step_equal(fashion):
    """Grouped convolutions and batched matmuls compute the per-run function: logits and
    gradients of one training step agree with per-run kernels (float32 sums of up to 800
    terms in another order: 1e-5 relative)."""
    from bnlab.train.losses import per_sample_loss
    from bnlab.train.stacked import StackedModel

    k, b = 4, 32
    idx = torch.stack([torch.randperm(192, generator=torch.Generator().manual_seed(i))[:b]
                       for i in range(k)], 1)
    xb, yb = fashion.x_train[idx].flatten(1, 2), fashion.y_train[idx]
    grads = {}
    for kernels in ("per_run", "stacked"):
        ms = [build("fashion_cnn", s, bn_momentum=m, dropout=0.0)
              for s, m in zip(range(k), (0.99, 0.99, 0.8, 0.8), strict=True)]
        model = StackedModel(ms, input_shape=(1, 28, 28), kernels=kernels).train()
        logits = model(xb)
        loss = per_sample_loss(logits.reshape(b * k, 10), yb.reshape(-1)).sum()
        loss.backward()
        grads[kernels] = [logits.detach()] + [p.grad for p in model.parameters()]
    for a, s in zip(grads["per_run"], grads["stacked"], strict=True):
        torch.testing.assert_close(s, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))


def test_dropout_parity_needs_the_run_generators(fashion):
    """With ``dropout_rng="shared"`` the masks are drawn for the stack at once: the runs are
    no longer the runs trained alone (this is what the per-run generators buy)."""
    runs = [(0, {}, None), (1, {}, None)]
    fit_options = dict(FASHION_FIT, epochs=1)
    stacked = [build("fashion_cnn", s) for s, _, _ in runs]
    shared = fit_stacked(stacked, fashion, seeds=[0, 1], dropout_rng="shared", **fit_options)
    alone = fit(build("fashion_cnn", 0), fashion, seed=0, **fit_options)
    assert abs(shared[0].history["loss"][0] - alone.history["loss"][0]) > 1e-4


def test_augmentation_parity(fashion):
    runs = [(0, {"dropout": 0.0}, None), (1, {"dropout": 0.0}, None)]
    options = dict(FASHION_FIT, epochs=1, augment={"rotation": 15, "width_shift": 0.1})
    check_parity("fashion_cnn", fashion, runs, options)


@pytest.mark.parametrize("k", [1, 2])
def test_fashion_cnn_bit_for_bit_over_ten_steps(shared_data, k):
    """On CPU (channels-last, per-run kernels, per-run dropout streams) each stacked run *is*
    its ``fit`` run: every weight, BN statistic and metric identical after 10 Adam steps.

    Two past differences this pins down: the stack's Adam step size came from ``torch.pow``
    and ``fit``'s from ``np.power`` (they round ``0.9**4`` differently); and a stack of one
    held the 1-input-channel ``conv1`` weight NCHW-strided, so oneDNN ran another kernel.
    """
    data = load(
        "fashion_mnist", data_dir=str(shared_data), scale="raw",
        train_range=[0, 640], test_from="train", test_range=[1000, 1128],
    )
    seeds = [5, 6][:k]
    options = {"epochs": 1, "batch_size": 64, "progress": False, "precise_eval": True}
    alone = []
    for seed in seeds:
        model = build("fashion_cnn", seed)
        alone.append((model, fit(model, data, seed=seed, **options)))
    stacked = [build("fashion_cnn", seed) for seed in seeds]
    histories = fit_stacked(stacked, data, seeds=seeds, **options)
    for (model, history), model_s, history_s in zip(alone, stacked, histories, strict=True):
        assert history.params["channels_last"] and history_s.params["channels_last"]
        for key, value in model.state_dict().items():
            assert torch.equal(model_s.state_dict()[key], value), key
        assert history_s.history == history.history
