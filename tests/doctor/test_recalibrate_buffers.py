"""Recalibration changes BN statistics only: every other module's buffers stay exactly as they were."""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

import bnlab
from bnlab.nn.precise import precise_bn_stats


class Counter(nn.Module):
    """Counts the samples it has seen in a buffer (a custom stateful module)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.seen += x.shape[0]
        return x


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        MinMaxObserver(), nn.Linear(8, 6), Counter(), PerChannelMinMaxObserver(ch_axis=1),
        nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3),
    )  # fmt: skip


def _calibrated(model: nn.Module) -> nn.Module:
    # observers hold a calibration, the counter a count: the state recalibration must keep
    with torch.no_grad():
        model.eval()(torch.randn(32, 8))
    return model


def test_recalibrate_keeps_observer_and_counter_buffers():
    model = _calibrated(_model())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert int(before["2.seen"]) == 32 and before["3.min_val"].shape == (6,)
    x = torch.randn(200, 8) * 5 + 3  # other data: an observer would widen its range on it
    fixed = bnlab.recalibrate(model, (x, torch.zeros(200, dtype=torch.long)))
    after = fixed.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"4.running_mean", "4.running_var"}
    for k, v in model.state_dict().items():  # and the user's model is untouched
        assert torch.equal(v, before[k]), k


def test_precise_bn_stats_keeps_buffers_created_or_resized_by_forward():
    model = _model()  # observers never ran: per-channel min/max are empty tensors
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert before["3.min_val"].numel() == 0
    buffer = model[3].min_val
    seen = precise_bn_stats(model, [torch.randn(16, 8) for _ in range(3)])
    assert seen == 48
    after = model.state_dict()
    assert model[3].min_val is buffer and model[3].min_val.numel() == 0
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"4.running_mean", "4.running_var"}
    assert int(after["4.num_batches_tracked"]) == 0 and int(after["2.seen"]) == 0
