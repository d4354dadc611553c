"""The week-9 case (seed 001) in PyTorch and in Keras 3.

Seed 001's student added BatchNormalization (Keras momentum 0.99) to a CNN fed raw 0-255
pixels, trained briefly and saw train 0.99 / validation 0.44. Here the same layout on 8x8
raw digits, 3 epochs of batch 128 (42 steps in PyTorch, 45 in Keras): the doctor must confirm stale running
statistics, recalibration must bring inference accuracy on the training data within 0.02 of
train-mode accuracy, and momentum 0.8 (the seed's fix) must not get the finding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bnlab
from bnlab.doctor import diagnose

# 3 epochs of 1797 samples in batches of 128: the torch loop drops the last partial batch,
# Keras's fit() trains on it.
STEPS = {"torch": 3 * (1797 // 128), "keras": 3 * -(-1797 // 128)}


def _torch_accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def _keras_accuracy(model, x, y) -> float:
    probs = model.predict(x.permute(0, 2, 3, 1).numpy(), verbose=0, batch_size=512)
    return float((probs.argmax(1) == y.numpy()).mean())


def _check_stale(diag, framework):
    (stale,) = diag.get("stale-running-stats")
    assert stale.confirmed is True and stale.severity == "error"
    ev = stale.evidence
    assert ev["train_mode_accuracy"] - ev["inference_accuracy"] >= 0.05
    assert ev["closed_fraction"] >= 0.5
    assert abs(ev["recalibrated_accuracy"] - ev["train_mode_accuracy"]) <= 0.02
    (momentum,) = diag.get("momentum-too-high-for-steps")
    for layer in momentum.evidence["layers"].values():
        steps = STEPS[framework]
        assert layer["steps"] == steps
        assert layer["initial_weight"] == pytest.approx(0.99**steps)
        # the weight estimated from the statistics alone agrees with momentum ** steps
        assert layer["estimated_initial_weight"] == pytest.approx(0.99**steps, abs=0.1)
    assert diag.model_info["framework"] == framework
    return ev["train_mode_accuracy"]


def test_torch_week9_stale_statistics_confirmed_and_fixed(cases):
    x, y = cases.data.digits("raw", "nchw")
    model = cases.torch_cases.week9(0.99)
    before = _torch_accuracy(model, x, y)
    diag = diagnose(model, (x, y))
    train_mode = _check_stale(diag, "torch")
    assert diag.model_info["inference_accuracy"] == pytest.approx(before)

    fixed = bnlab.recalibrate(model, (x, y))
    assert fixed is not model
    assert abs(_torch_accuracy(fixed, x, y) - train_mode) <= 0.02
    assert _torch_accuracy(model, x, y) == before  # the user's model is untouched

    # the repaired model is healthy as far as its statistics go
    again = diagnose(fixed, (x, y))
    assert not {"stale-running-stats", "momentum-too-high-for-steps"} & again.ids


def test_torch_week9_momentum_08_has_no_stale_finding(cases):
    x, y = cases.data.digits("raw", "nchw")
    diag = diagnose(cases.torch_cases.week9(0.8), (x, y))
    assert not {"stale-running-stats", "momentum-too-high-for-steps", "train-eval-gap"} & diag.ids
    assert "unnormalized-inputs" in diag.ids


def test_torch_week9_on_a_bnlab_dataset_reports_test_accuracy_before_after(cases):
    data = bnlab.data.load("digits", scale="raw")
    diag = diagnose(cases.torch_cases.week9(0.99), data)
    (stale,) = diag.get("stale-running-stats")
    ev = stale.evidence
    assert ev["test_accuracy_after"] > ev["test_accuracy_before"]
    assert diag.passes == 2 and diag.model_info["test_passes"] == 2


def test_keras_week9_stale_statistics_confirmed_and_fixed(cases, keras):
    x, y = cases.data.digits("raw", "nchw")
    model = cases.keras_cases.week9(0.99)
    weights = [w.copy() for w in model.get_weights()]
    before = _keras_accuracy(model, x, y)
    diag = diagnose(model, (x, y))  # NCHW tensors: the adapter hands Keras NHWC
    train_mode = _check_stale(diag, "keras")
    assert diag.model_info["inference_accuracy"] == pytest.approx(before, abs=1e-6)
    assert (
        diag.model_info["layers"][0]["steps"] == STEPS["keras"]
    )  # from the optimizer's iterations

    fixed = bnlab.recalibrate(model, (x, y))
    assert fixed is not model
    assert abs(_keras_accuracy(fixed, x, y) - train_mode) <= 0.02
    for w, w0 in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(w, w0)


def test_keras_week9_momentum_08_has_no_stale_finding(cases, keras):
    x, y = cases.data.digits("raw", "nchw")
    diag = diagnose(cases.keras_cases.week9(0.8), (x, y))
    assert not {"stale-running-stats", "momentum-too-high-for-steps", "train-eval-gap"} & diag.ids
