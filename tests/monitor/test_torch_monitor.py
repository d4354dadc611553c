"""``bnlab.torch.BNMonitor`` in plain PyTorch loops: the traps it must name, and that it never
changes training."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from monitor_helpers import all_weights, evaluate, mlp, train_epoch

import bnlab.torch
from bnlab.doctor import rules


def _monitor(model, digits, **kw):
    _, _, xv, yv = digits
    return bnlab.torch.BNMonitor(model, (xv, yv), warn=lambda line: None, **kw)


def test_forgetting_model_train_after_evaluation_is_named_at_the_next_epoch(digits):
    x, y, xv, yv = digits
    model = mlp(momentum=0.3)  # fast averages: nothing stale to report
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    monitor = _monitor(model, digits)
    model.train()
    for epoch in (1, 2, 3):
        train_epoch(model, opt, x, y, generator=gen)  # epochs 2, 3: still in eval mode
        monitor.epoch_end()
        evaluate(model, xv, yv)  # model.eval() ... and no model.train() afterwards
        if epoch == 1:
            assert monitor.findings == {}
    first = {fid: monitor.watcher.first_epoch[fid] for fid in monitor.findings}
    assert first == {rules.EVAL_MODE_IN_TRAINING: "epoch 2", rules.STATS_NEVER_UPDATED: "epoch 2"}
    assert len(monitor.lines) == 2 and all(line.startswith("epoch 2: ") for line in monitor.lines)
    assert "model.train()" in monitor.lines[0]
    assert "eval mode (model.eval() not undone)" in monitor.lines[1]
    hist = monitor.history
    assert list(hist["bn_unchanged_layers"]) == [0.0, 1.0, 1.0]
    # the counts behind it: epoch 1 ran BN in train mode, epoch 2 in eval mode
    f = monitor.findings[rules.EVAL_MODE_IN_TRAINING]
    assert f.evidence["calls"]["1"] == {"train": 0, "eval": 21}
    assert f.evidence["switched"] == ["1"]
    monitor.close()


def test_nan_running_variance_is_named_at_the_epoch_it_appears(digits):
    x, y, _, _ = digits
    model = mlp(momentum=0.3)  # fast averages: nothing stale to report
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    monitor = _monitor(model, digits)
    model.train()
    for epoch in (1, 2):
        train_epoch(model, opt, x, y, generator=gen, poison=epoch == 2)
        monitor.epoch_end()
    assert not torch.isfinite(model[1].running_var).all()
    assert monitor.watcher.first_epoch == {rules.NAN_RUNNING_STATS: "epoch 2"}
    assert monitor.lines[0].startswith("epoch 2: BN moving statistics are NaN/Inf in 1")
    assert monitor.history["bn_nonfinite"].tolist()[0] == 0.0
    assert monitor.history["bn_nonfinite"].tolist()[1] > 0


def _run(with_monitor: bool, digits):
    x, y, xv, yv = digits
    model = mlp(seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(11)  # dropout masks come from the global stream
    gen = torch.Generator().manual_seed(5)
    monitor = _monitor(model, digits) if with_monitor else None
    for _ in range(3):
        model.train()
        if monitor is None:
            train_epoch(model, opt, x, y, generator=gen)
        else:
            with monitor:
                train_epoch(model, opt, x, y, generator=gen)
        evaluate(model, xv, yv)
    if monitor is not None:
        monitor.step()
        monitor.close()
    return all_weights(model), torch.rand(3), monitor


def test_the_monitor_never_changes_training_bit_for_bit(digits):
    plain, rng_plain, _ = _run(False, digits)
    watched, rng_watched, monitor = _run(True, digits)
    assert plain.keys() == watched.keys()
    for k in plain:
        np.testing.assert_array_equal(plain[k], watched[k], err_msg=k)
    assert torch.equal(rng_plain, rng_watched)  # the global stream is where it would be
    assert len(monitor.history) == 4 and monitor.history["step"].tolist()[-1] == 63
    assert not monitor.model._forward_pre_hooks  # close() removed its hooks


def test_moving_and_exact_accuracy_measure_what_they_say(digits):
    """momentum 0.001 (torch convention) after few steps: the moving averages are still ~0/1."""
    x, y, xv, yv = digits
    model = mlp(momentum=0.001)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    monitor = _monitor(model, digits, sample_fraction=None, train_samples=1297)
    model.train()
    train_epoch(model, opt, x, y, generator=gen)
    logs = monitor.epoch_end()
    assert logs["val_accuracy_moving_bn"] == pytest.approx(evaluate(model, xv, yv), abs=0)
    recalibrated = bnlab.recalibrate(model, (x, y), batch_size=1297)
    assert logs["val_accuracy_exact_bn"] == pytest.approx(evaluate(recalibrated, xv, yv), abs=1e-9)
    assert logs["bn_stale_weight"] == pytest.approx(0.999**21)
    assert rules.STALE_RUNNING_STATS in monitor.findings
    assert rules.MOMENTUM_TOO_HIGH in monitor.findings


def test_import_bnlab_imports_neither_keras_nor_lightning():
    code = (
        "import sys, bnlab, bnlab.torch, bnlab.monitor; "
        "print(any(m.split('.')[0] in ('keras', 'lightning', 'tensorflow') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_regression_targets_are_scored_by_their_loss(digits):
    """Float targets: mean squared error in both modes, no accuracy keys."""
    x, _, xv, _ = digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16, momentum=0.001),
                                torch.nn.ReLU(), torch.nn.Linear(16, 2))  # fmt: skip
    target = lambda a: torch.stack([a.mean(1), a[:, :32].mean(1)], 1) * 10  # noqa: E731
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    monitor = bnlab.torch.BNMonitor(model, (xv, target(xv)), warn=lambda line: None,
                                    sample_fraction=None, train_samples=1280)  # fmt: skip
    model.train()
    for i in range(0, 1280, 64):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[i : i + 64]), target(x[i : i + 64])).backward()
        opt.step()
    logs = monitor.epoch_end()
    assert "val_accuracy_moving_bn" not in logs
    model.eval()
    with torch.no_grad():
        moving = float(torch.nn.functional.mse_loss(model(xv), target(xv)))
    assert logs["val_loss_moving_bn"] == pytest.approx(moving, rel=1e-5)
    recalibrated = bnlab.recalibrate(model, x[:1280], batch_size=1280).eval()
    with torch.no_grad():
        exact = float(torch.nn.functional.mse_loss(recalibrated(xv), target(xv)))
    assert logs["val_loss_exact_bn"] == pytest.approx(exact, rel=1e-5)
