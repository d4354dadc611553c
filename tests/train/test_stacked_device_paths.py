"""The stacked engine's CUDA-only paths, checked on CPU where they can be: Adam's device
scalars made once, an exact fallback when CUDA-graph capture fails, the autocast cache off
under graphs, the TF32/cuDNN flags restored, the bf16 dropout mask drawn in float32, and a
cumulative-average BN refused before training."""

from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest
import torch

from bnlab import models
from bnlab.data import load
from bnlab.nn import BatchNorm
from bnlab.train import seeded
from bnlab.train.stacked import (
    StackedDropout,
    StackedModel,
    StackedOptimizer,
    StackingError,
    _prepare,
    _Stack,
    fit_stacked,
    stack_signature,
)
from bnlab.train.stacked import graphs as graphs_module
from bnlab.train.stacked.loop import _precision


def build(preset: str, seed: int, **options) -> torch.nn.Module:
    with seeded(seed):
        return models.build(preset, **options)


def mlp_with_dropout(seed: int) -> torch.nn.Module:
    """Dense, BN (buffers the warm-up writes), ReLU, dropout (the shared generator), Dense."""
    with seeded(seed):
        model = torch.nn.Sequential(
            torch.nn.Linear(2, 16), BatchNorm(), torch.nn.ReLU(), torch.nn.Dropout(0.3),
            torch.nn.Linear(16, 1),
        )
        model(torch.zeros(2, 2))  # builds the BN layer
    return model


@pytest.fixture(scope="module")
def circles():
    return load("circles", n_samples=200)


# ------------------------------------------------------------------------------ Adam
def test_adam_step_makes_no_tensor_from_python_numbers(monkeypatch):
    """``torch.tensor`` in a step is a blocking host-to-device copy on CUDA and illegal in
    a graph capture: the betas are device tensors made by the constructor."""
    model = StackedModel([build("circles_mlp", s) for s in (0, 1)], input_shape=(2,))
    opt = StackedOptimizer("adam", model, [1e-3, 2e-3])
    assert opt.beta_1.device == opt.flat.device and opt.beta_1.dtype == opt.flat.dtype
    assert float(opt.beta_1) == pytest.approx(0.9) and float(opt.beta_2) == pytest.approx(0.999)
    calls = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: calls.append(a) or real(*a, **k))
    before = opt.flat.clone()
    for _ in range(3):
        opt.grad.normal_()
        opt.step()
    assert calls == []
    assert not torch.equal(opt.flat, before)
    assert float(opt.t) == 3.0


# ------------------------------------------------------------- CUDA-graph fallback
def _pretend_capture_fails(monkeypatch, fail_in: str):
    """Graphs "enabled" on CPU, the warm-up on the current stream; then the capture raises
    half-way (``"record"``: the step ran, as a capture that got that far) or the warm-up
    does, after its three steps (``"warm_up"``), as CUDA capture errors would."""
    real_init = graphs_module.StepGraphs.__init__

    def init(self, step, mutable, k, device, enabled):
        real_init(self, step, mutable, k, device, True)

    @contextlib.contextmanager
    def warm_up(self):
        yield
        if fail_in == "warm_up":
            raise RuntimeError("warm-up failed")

    def record(self, static):
        self.step(static)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs_module.StepGraphs, "__init__", init)
    monkeypatch.setattr(graphs_module.StepGraphs, "_warm_up_stream", warm_up)
    monkeypatch.setattr(graphs_module.StepGraphs, "_record", record)


@pytest.mark.parametrize("fail_in", ["record", "warm_up"])
def test_failed_capture_falls_back_exactly(circles, monkeypatch, fail_in):
    """A failed capture restores every tensor the warm-up and capture wrote and the dropout
    generator: the run equals one that never tried, bit for bit."""
    kw = dict(seeds=[0, 1], epochs=2, batch_size=32, optimizer="adam", lr=0.02, progress=False,
              dropout_rng="shared")

    plain_models = [mlp_with_dropout(s) for s in (0, 1)]
    torch.manual_seed(7)
    plain = fit_stacked(plain_models, circles, **kw)

    _pretend_capture_fails(monkeypatch, fail_in)
    tried_models = [mlp_with_dropout(s) for s in (0, 1)]
    torch.manual_seed(7)
    with pytest.warns(RuntimeWarning, match="capture failed"):
        tried = fit_stacked(tried_models, circles, **kw)

    for a, b in zip(plain, tried, strict=True):
        assert a.history == b.history
    for a, b in zip(plain_models, tried_models, strict=True):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key
    assert plain[0].history["loss"][1] < plain[0].history["loss"][0]


# --------------------------------------------------------------------------- autocast
def test_bf16_autocast_cache_off_when_the_step_may_be_captured(circles):
    models_ = [build("circles_mlp", s) for s in (0, 1)]
    cfg, data, lrs = _prepare(models_, circles, [0, 1], epochs=1, precision="bf16",
                              progress=False)
    stack = _Stack(models_, [0, 1], lrs, cfg, data)
    assert stack.autocast()._cache_enabled is True
    cfg.cuda_graphs = True  # what a CUDA stack with graphs has
    assert stack.autocast()._cache_enabled is False
    cfg.precision = "float32"
    assert isinstance(stack.autocast(), contextlib.nullcontext)


# -------------------------------------------------------------------- backend flags
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("precision", ["float32", "tf32", "bf16"])
def test_tf32_and_cudnn_flags_set_and_restored(precision, device):
    backends = torch.backends
    saved = (torch.get_float32_matmul_precision(), backends.cudnn.allow_tf32,
             backends.cudnn.benchmark)
    try:
        # Not the defaults, so a restore to the defaults would be caught.
        torch.set_float32_matmul_precision("medium")
        backends.cudnn.allow_tf32 = True
        backends.cudnn.benchmark = False
        cfg = types.SimpleNamespace(precision=precision, device=torch.device(device))
        with _precision(cfg):
            tf32 = precision == "tf32"
            assert backends.cuda.matmul.allow_tf32 is tf32
            assert backends.cudnn.allow_tf32 is tf32
            assert backends.cudnn.benchmark is (device == "cuda")
        assert torch.get_float32_matmul_precision() == "medium"
        assert backends.cudnn.allow_tf32 is True
        assert backends.cudnn.benchmark is False
        with pytest.raises(KeyError), _precision(cfg):
            raise KeyError("training failed")
        assert torch.get_float32_matmul_precision() == "medium"
        assert backends.cudnn.allow_tf32 is True and backends.cudnn.benchmark is False
    finally:
        torch.set_float32_matmul_precision(saved[0])
        backends.cudnn.allow_tf32, backends.cudnn.benchmark = saved[1:]


# -------------------------------------------------------------------------- dropout
def test_shared_dropout_mask_is_drawn_in_float32_under_bf16():
    """bf16 would round the keep probability 0.8 to 0.80078: the mask is float32's."""
    layer = StackedDropout([torch.nn.Dropout(0.2), torch.nn.Dropout(0.5)], (3, 4, 4))
    layer.train()
    x = torch.randn(64, 6, 4, 4).to(torch.bfloat16)
    torch.manual_seed(5)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    torch.manual_seed(5)
    keep = torch.tensor([0.8] * 3 + [0.5] * 3).view(1, 6, 1, 1)
    mask = torch.empty(x.shape).bernoulli_(keep.expand(x.shape)).div_(keep)
    torch.testing.assert_close(out, (x.float() * mask).to(torch.bfloat16), rtol=0, atol=0)
    # The bf16 draw of the old code differs from it: the test tells the two apart.
    torch.manual_seed(5)
    keep16 = keep.to(torch.bfloat16)
    old = torch.empty_like(x).bernoulli_(keep16.expand_as(x))
    assert not torch.equal(old.bool(), mask.bool())


# ------------------------------------------------------------------ cumulative BN
def test_cumulative_average_bn_is_refused_naming_the_layer(circles):
    model = build("circles_mlp", 0)
    bn_name = next(n for n, m in model.named_modules() if isinstance(m, BatchNorm))
    model.get_submodule(bn_name).momentum = None
    with pytest.raises(StackingError, match=f"layer '{bn_name}'.*momentum=None") as info:
        stack_signature(model)
    assert "\n" not in str(info.value)
    with pytest.raises(StackingError, match="momentum=None"):
        fit_stacked([model, build("circles_mlp", 1)], circles, seeds=[0, 1], epochs=1,
                    progress=False)


# ------------------------------------------------------------------------ host syncs
@pytest.mark.parametrize("precise_eval", [False, True])
def test_epoch_logs_read_the_device_once(circles, monkeypatch, precise_eval):
    """The stacked (device) path of the epoch's logs: one ``tolist`` and no other read of a
    tensor's value (``item``, ``float``, ``bool``, ``int``), precise BN statistics included."""
    models_ = [build("circles_mlp", s) for s in (0, 1)]
    cfg, data, lrs = _prepare(models_, circles, [0, 1], epochs=1, kernels="stacked",
                              precise_eval=precise_eval, progress=False)
    stack = _Stack(models_, [0, 1], lrs, cfg, data)
    stack.train_epoch(1)
    reads = []
    for name in ("tolist", "item", "__float__", "__bool__", "__int__", "numpy", "cpu"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name,
            lambda self, *a, _n=name, _f=real, **k: reads.append(_n) or _f(self, *a, **k),
        )
    logs = stack.epoch_logs()
    monkeypatch.undo()
    assert reads == ["tolist"]
    assert len(logs) == 2 and all(np.isfinite(e["val_loss"]) for e in logs)
    assert ("precise_val_accuracy" in logs[0]) is precise_eval
