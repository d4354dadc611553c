"""Diagnose reads a 10,000-image set at most 3 times and never changes the model."""

from __future__ import annotations

import copy

import numpy as np
import torch

from bnlab.doctor import diagnose


class CountingLoader:
    """Batches of (x, y); counts passes (``iter`` calls) and samples handed out."""

    def __init__(self, x, y, batch_size: int = 500):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.passes = 0
        self.samples = 0

    def __iter__(self):
        self.passes += 1
        for i in range(0, self.x.shape[0], self.batch_size):
            xb = self.x[i : i + self.batch_size]
            self.samples += xb.shape[0]
            yield xb, self.y[i : i + self.batch_size]


def ten_thousand_images(cases):
    """10,000 raw-pixel 1x8x8 digit images: the 1,797 digits repeated with a little noise."""
    x, y = cases.data.digits("raw", "nchw")
    reps = -(-10_000 // x.shape[0])
    gen = torch.Generator().manual_seed(0)
    big = x.repeat(reps, 1, 1, 1)[:10_000]
    big = (big + torch.randn(big.shape, generator=gen) * 4).clamp(0, 255)
    return big, y.repeat(reps)[:10_000]


def _torch_state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {name: m.training for name, m in model.named_modules()},
        {name: p.requires_grad for name, p in model.named_parameters()},
    )


def test_diagnose_uses_at_most_three_passes_and_leaves_the_model_alone(cases):
    # the stale week-9 model: the worst case, where the intervention pass runs too
    model = copy.deepcopy(cases.torch_cases.week9(0.99)).train()  # left in train mode by its user
    x, y = ten_thousand_images(cases)
    loader = CountingLoader(x, y)
    before = _torch_state(model)

    diag = diagnose(model, loader)

    assert "stale-running-stats" in diag.ids  # so the confirmation pass did run
    assert loader.passes <= 3
    assert loader.passes == diag.passes == 2
    assert loader.samples == loader.passes * 10_000
    assert diag.model_info["samples"] == 10_000
    state, flags, grads = _torch_state(model)
    assert flags == before[1] and grads == before[2]
    assert state.keys() == before[0].keys()
    for k, v in state.items():
        assert torch.equal(v, before[0][k]), k


def test_a_healthy_model_costs_one_pass(cases):
    x, y = cases.data.digits()
    loader = CountingLoader(x, y, batch_size=256)
    diag = diagnose(cases.torch_cases.trained_mlp(), loader)
    assert diag.healthy and loader.passes == diag.passes == 1


def test_diagnose_leaves_a_keras_model_alone(cases, keras):
    model = cases.keras_cases.week9(0.99)
    weights = [w.copy() for w in model.get_weights()]
    trainable = [v.trainable for v in model.weights]
    calls = {
        name: "call" in lay.__dict__ for name, lay in ((lay.name, lay) for lay in model.layers)
    }
    x, y = cases.data.digits("raw", "nchw")
    loader = CountingLoader(x, y, batch_size=300)

    diag = diagnose(model, loader)

    assert "stale-running-stats" in diag.ids and loader.passes == diag.passes == 2
    for w, w0 in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(w, w0)
    assert [v.trainable for v in model.weights] == trainable
    assert {lay.name: "call" in lay.__dict__ for lay in model.layers} == calls
