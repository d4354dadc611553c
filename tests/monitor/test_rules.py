"""The shared rules (doctor and monitor): closed-form numbers."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.doctor import rules
from bnlab.doctor.checks import behaviour, statistics


def test_the_doctor_uses_the_shared_thresholds():
    assert statistics.STALE_WEIGHT is rules.STALE_WEIGHT
    assert behaviour.GAP_THRESHOLD is rules.GAP_THRESHOLD
    assert behaviour.CONFIRM_FRACTION is rules.CONFIRM_FRACTION


def test_initial_weight_and_the_suggested_momentum():
    assert rules.initial_weight(0.99, 32) == pytest.approx(0.7250, abs=1e-4)
    assert rules.suggested_momentum(32) == pytest.approx(0.01 ** (1 / 32))  # 0.866
    assert rules.suggested_momentum(1) == 0.5 and rules.suggested_momentum(10**6) == 0.99
    assert rules.steps_from_weight(0.99, 0.99**32) == 32
    line = f"{rules.stale_cause(0.99, 32, 0.99**32)}; {rules.stale_fix(32)}"
    assert line == (
        "the moving averages are stale (momentum 0.99, 32 steps: 72 % initial values); "
        "recalibrate with bnlab.recalibrate or lower momentum to ≤ 0.87"
    )


def test_stat_distance_recovers_the_initial_weight():
    mean, var = np.array([3.0, -2.0, 5.0]), np.array([1.0, 4.0, 0.25])
    w = 0.4  # moving = w * (0, 1) + (1 - w) * exact
    d = rules.stat_distance((1 - w) * mean, w + (1 - w) * var, mean, var, 0.0)
    assert d["estimated_initial_weight"] == pytest.approx(w)
    assert rules.momentum_too_high(0.5, d) and not rules.momentum_too_high(0.05, d)
    same = rules.stat_distance(mean, var, mean, var, 1e-3)
    assert same["mean_error_std"] == 0 and not rules.statistics_off(same)


def test_stale_needs_the_gap_and_more_than_sampling_noise():
    assert rules.stale_by_accuracy(0.17, 0.77)
    assert not rules.stale_by_accuracy(0.80, 0.84)  # 0.04 < GAP_THRESHOLD
    # 0.06 on 100 samples: 8 won, 2 lost is 1.9 standard errors: noise
    assert not rules.stale_by_accuracy(0.80, 0.86, gained=8, lost=2)
    assert rules.stale_by_accuracy(0.80, 0.86, gained=7, lost=1)  # 2.1 standard errors
    assert rules.stale_by_loss(1.2, 1.0) and not rules.stale_by_loss(1.05, 1.0)


def test_broken_statistics():
    counts = rules.nonfinite_channels([0.0, np.nan], [1.0, -1.0])
    assert counts == {"nan": 1, "inf": 0, "negative_variance": 1}
    assert rules.statistics_broken(counts)
    assert not rules.statistics_broken(rules.nonfinite_channels([0.0], [1.0]))
    assert rules.at_initial_values(np.zeros(3), np.ones(3))
