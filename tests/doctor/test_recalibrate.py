"""recalibrate: exact population statistics (PreciseBN), on a copy, for PyTorch and Keras."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import bnlab
from bnlab.doctor import recalibrate
from bnlab.doctor.moments import PooledMoments
from bnlab.doctor.recalibrate import population_stats, recalibration_targets, repair
from bnlab.doctor.sources import as_sources
from bnlab.doctor.torch_adapter import TorchAdapter


def test_pooled_moments_equal_one_big_batch_even_far_from_zero():
    gen = torch.Generator().manual_seed(0)
    # raw-pixel-like activations: mean 1e4, std 3 -> naive sum of squares loses digits
    parts = [1e4 + 3 * torch.randn(n, 5, 4, 4, generator=gen) for n in (7, 64, 1, 30)]
    acc = PooledMoments()
    for p in parts:
        acc.update(p.float(), channel_axis=1)
    full = torch.cat(parts).double().permute(1, 0, 2, 3).reshape(5, -1).numpy()
    mean, var = acc.numpy()
    np.testing.assert_allclose(mean, full.mean(1), rtol=1e-6)
    # float32 inputs carry ~1e-3 absolute error at 1e4; the variance (~9) keeps 4 digits
    np.testing.assert_allclose(var, full.var(1), rtol=2e-3)
    assert acc.count == 102 * 16


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(4, 4, 3, padding=1), bnlab.BatchNorm(momentum=0.99, num_features=4), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    )  # fmt: skip


def _reference_stats(model: nn.Module, batches: list[torch.Tensor]) -> dict:
    """Each BN's inputs over all batches (train-mode BN, dropout off), concatenated in float64."""
    work = copy.deepcopy(model)
    seen: dict[str, list] = {}
    bns = [
        (n, m) for n, m in work.named_modules() if isinstance(m, (nn.BatchNorm2d, bnlab.BatchNorm))
    ]
    for name, m in bns:
        m.register_forward_pre_hook(
            lambda mod, a, name=name: seen.setdefault(name, []).append(a[0])
        )
    work.eval()
    for _, m in bns:
        m.train()
    with torch.no_grad():
        for b in batches:
            work(b)
    out = {}
    for name, xs in seen.items():
        v = torch.cat(xs).double().transpose(0, 1).reshape(xs[0].shape[1], -1)
        out[name] = (v.mean(1), v.var(1, correction=0), v.shape[1])
    return out


def test_recalibrate_torch_gives_exact_population_statistics_on_a_copy():
    model = _net()
    model.train()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(350, 1, 8, 8, generator=gen) * 255
    y = torch.randint(0, 3, (350,), generator=gen)
    original = {k: v.clone() for k, v in model.state_dict().items()}

    fixed = recalibrate(model, (x, y), batch_size=100)

    assert fixed is not model and fixed.training  # flags kept, on the copy
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k])
    ref = _reference_stats(model, list(x.split(100)))
    mean, var, n = ref["1"]
    torch.testing.assert_close(fixed[1].running_mean.double(), mean, rtol=1e-5, atol=1e-4)
    # torch's convention: the unbiased variance
    torch.testing.assert_close(
        fixed[1].running_var.double(), var * n / (n - 1), rtol=1e-5, atol=1e-3
    )
    mean, var, _ = ref["5"]
    torch.testing.assert_close(fixed[5].moving_mean.double(), mean, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        fixed[5].moving_variance.double(), var, rtol=1e-5, atol=1e-3
    )  # biased
    assert int(fixed[1].num_batches_tracked) == int(model[1].num_batches_tracked)


def test_the_doctors_estimator_agrees_with_precise_bn_stats():
    model = _net()
    x = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 255
    via_precise = recalibrate(model, x, batch_size=64)  # PyTorch path: bnlab.nn.precise
    adapter = TorchAdapter(copy.deepcopy(model))
    source, _ = as_sources(x, 64)
    stats = population_stats(adapter, source)
    adapter.set_running_stats(stats)
    for name in ("1", "5"):
        a = dict(via_precise.named_buffers())
        b = dict(adapter.model.named_buffers())
        for buf in ("running_mean", "running_var", "moving_mean", "moving_variance"):
            key = f"{name}.{buf}"
            if key in a:
                torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-4)


def test_frozen_bnlab_layers_are_not_recalibrated():
    model = _net()
    model[5].trainable = False  # Keras semantics: frozen and in inference mode
    assert recalibration_targets(TorchAdapter(model)) == {"1"}
    fixed = recalibrate(model, torch.rand(64, 1, 8, 8))
    assert torch.equal(fixed[5].moving_mean, model[5].moving_mean)
    assert not torch.equal(fixed[1].running_mean, model[1].running_mean)


def test_repair_reports_before_and_after(cases):
    x, y = cases.data.digits("raw", "nchw")
    model = cases.torch_cases.week9(0.99)
    result = repair(model, (x, y))
    assert result.model is not model and result.bn_layers == 2
    assert result.before.samples == result.after.samples == 1797
    assert result.after.accuracy > result.before.accuracy + 0.05


def test_recalibrate_keras_first_layer_matches_its_conv_outputs(keras):
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(3, 3, activation="relu"), layers.BatchNormalization(),
        layers.Dropout(0.5), layers.Conv2D(3, 3), layers.BatchNormalization(),
        layers.Flatten(), layers.Dense(2, activation="softmax"),
    ])  # fmt: skip
    x = np.random.default_rng(0).uniform(0, 255, (130, 8, 8, 1)).astype("float32")
    before = [w.copy() for w in model.get_weights()]

    fixed = recalibrate(model, x, batch_size=50)  # channels-last arrays are taken as given

    conv = keras.Model(model.inputs[0], model.layers[0].output)(x, training=False)
    conv = keras.ops.convert_to_numpy(conv).reshape(-1, 3).astype(np.float64)
    bn = fixed.layers[1]
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), conv.var(0), rtol=1e-4)  # biased
    assert not np.allclose(fixed.layers[4].moving_mean.numpy(), 0.0)
    for w, w0 in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, w0)


def test_recalibrate_skips_keras_layers_with_trainable_false(keras):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(),
        keras.layers.Dense(2),
    ])  # fmt: skip
    model.layers[1].trainable = False
    fixed = recalibrate(model, np.random.default_rng(0).normal(5, 2, (40, 4)).astype("float32"))
    np.testing.assert_array_equal(fixed.layers[1].moving_mean.numpy(), np.zeros(3))


def test_recalibrate_rejects_bad_arguments():
    with pytest.raises(bnlab.ConfigError, match="batches"):
        recalibrate(_net(), torch.rand(8, 1, 8, 8), batches=0)
    with pytest.raises(bnlab.ConfigError, match="model"):
        recalibrate("not a model", torch.rand(8, 1, 8, 8))
