"""The memory layout ``fit`` trains in (``bnlab.train.layout``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bnlab.data import load
from bnlab.errors import ConfigError
from bnlab.models import build
from bnlab.train import fit, seeded
from bnlab.train.layout import model_layout, wants_channels_last


@pytest.fixture(scope="module")
def digits():
    return load("digits", scale="raw")


def _strides(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: t.stride() for n, t in [*model.named_parameters(), *model.named_buffers()]}


def test_fit_trains_a_cnn_channels_last_on_cpu_and_hands_back_its_strides(digits):
    with seeded(0):
        model = build("digits_cnn")
    before = _strides(model)
    history = fit(model, digits, epochs=1, batch_size=32, progress=False)
    assert history.params["channels_last"] is True
    # conv1's weight has one input channel: NCHW- and NHWC-contiguous at once, but its
    # strides differ, and oneDNN reads the strides.
    assert _strides(model) == before


def test_channels_last_changes_only_rounding(digits):
    """One training step from the same weights: loss and every gradient agree to float32
    rounding (1e-5 of the largest gradient). Over many steps the layouts part ways, as any
    two kernels would: an argmax of max pooling over near-equal values flips on a rounding
    difference and routes that gradient elsewhere."""
    x, y = digits.x_train[:32] / 255.0, digits.y_train[:32]
    with seeded(0):
        nchw = build("digits_cnn", dropout=0.0).train()
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    losses = []
    for model, batch in ((nchw, x), (nhwc, x.contiguous(memory_format=torch.channels_last))):
        loss = torch.nn.functional.cross_entropy(model(batch), y)
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    grad = nhwc.conv2.weight.grad  # the two runs really used two layouts
    assert grad.is_contiguous(memory_format=torch.channels_last) and not grad.is_contiguous()
    for (name, a), b in zip(nchw.named_parameters(), nhwc.parameters(), strict=True):
        scale = float(a.grad.abs().max())
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-5 * scale, msg=name)


class ViewNet(nn.Module):
    """Flattens with ``.view``, which channels-last activations do not allow."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.dense = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.dense(x.view(x.shape[0], -1))


def test_a_model_that_cannot_run_channels_last_trains_nchw(digits):
    model = ViewNet()
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        with torch.no_grad(), model_layout(model, True):
            model(digits.x_train[:2].contiguous(memory_format=torch.channels_last))
    history = fit(model, digits, epochs=1, progress=False)
    assert history.params["channels_last"] is False
    assert history.history["val_accuracy"][0] > 0.2  # it trained (chance is 0.1)


def test_choice_is_checked():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"channels_last: 'yes' is not None, True or False"):
        wants_channels_last("yes", model, torch.zeros(4, 2), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"channels_last: True needs 4-D inputs .* \(4, 2\)"):
        wants_channels_last(True, model, torch.zeros(4, 2), torch.device("cpu"))
    assert wants_channels_last(None, model, torch.zeros(4, 2), torch.device("cpu")) is False
    conv = nn.Sequential(nn.Conv2d(1, 2, 3))
    assert wants_channels_last(None, conv, torch.zeros(4, 1, 5, 5), torch.device("cpu"))
    assert not wants_channels_last(None, conv, torch.zeros(4, 1, 5, 5), torch.device("meta"))


def test_the_probe_runs_on_inputs_cast_to_the_models_dtype(digits):
    """A float64 model trains on float32 data cast to float64; the probe must see that cast,
    or every float64 CNN would fall back to NCHW (here 8x slower per epoch)."""
    with seeded(0):
        model = build("digits_cnn").double()
    history = fit(model, digits, epochs=1, batch_size=32, progress=False)
    assert history.params["channels_last"] is True
    assert next(model.parameters()).dtype == torch.float64
