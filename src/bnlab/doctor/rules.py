"""The rules behind the doctor's findings: thresholds, pure decisions and their words.

One implementation for every place that judges BN: the doctor's checks
(:mod:`bnlab.doctor.checks`) on a finished model, and the training monitor
(:mod:`bnlab.monitor`) epoch by epoch. Nothing here touches a model: every function takes
numbers and returns numbers, booleans or text, so the doctor and the monitor cannot
disagree on an id, a threshold or a fix.

Conventions: momentum is Keras's (fraction of the moving value *kept* per step), so after
``n`` update steps the initial moving values (mean 0, variance 1) still weigh
``momentum ** n``; distances between moving and exact statistics are in standard
deviations of the channel's exact statistics (``(moving_mean - mean) / sqrt(var + eps)``);
accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

# -- finding ids ------------------------------------------------------------------------
STALE_RUNNING_STATS = "stale-running-stats"
MOMENTUM_TOO_HIGH = "momentum-too-high-for-steps"
NAN_RUNNING_STATS = "nan-running-stats"
STATS_NEVER_UPDATED = "stats-never-updated"
EVAL_MODE_IN_TRAINING = "eval-mode-in-training"
BN_MODE_SWITCHED = "bn-mode-switched"

SEVERITY = {
    STALE_RUNNING_STATS: "error",
    MOMENTUM_TOO_HIGH: "warning",
    NAN_RUNNING_STATS: "error",
    STATS_NEVER_UPDATED: "error",
    EVAL_MODE_IN_TRAINING: "warning",
    BN_MODE_SWITCHED: "warning",
}

# -- thresholds: every number lives in bnlab.doctor.thresholds --------------------------
from bnlab.doctor.thresholds import (  # noqa: E402, F401 - re-exported for the monitor
    CONFIRM_FRACTION,
    FADE_TARGET,
    GAP_THRESHOLD,
    INIT_TOLERANCE,
    LOSS_GAP_FRACTION,
    MEAN_ERROR,
    MIN_SEPARATION,
    MOMENTUM_RANGE,
    SIGNIFICANCE_Z,
    STALE_WEIGHT,
    VAR_RATIO,
)


# -- moving averages --------------------------------------------------------------------
def initial_weight(momentum: float | None, steps: int | None) -> float | None:
    """Weight the initial moving values still carry after ``steps`` updates: ``momentum ** steps``.

    ``None`` when either is unknown (PyTorch's cumulative average has ``momentum=None``).
    """
    if momentum is None or steps is None:
        return None
    return float(momentum) ** int(steps)


def suggested_momentum(steps: int) -> float:
    """The highest Keras momentum whose initial values fade below :data:`FADE_TARGET` in ``steps``."""
    low, high = MOMENTUM_RANGE
    return max(low, min(high, FADE_TARGET ** (1.0 / max(1, int(steps)))))


def steps_from_weight(momentum: float, weight: float) -> int:
    """The step count an initial weight implies: ``momentum ** n = weight``."""
    return max(1, round(math.log(weight) / math.log(momentum)))


def stat_distance(
    moving_mean, moving_var, mean, var, epsilon: float
) -> dict[str, float | None]:
    """How far moving statistics are from exact ones, per layer (numbers over its channels).

    ``mean_error_std``: RMS of ``(moving_mean - mean) / sqrt(var + eps)``;
    ``variance_ratio_median``: median of ``(moving_var + eps) / (var + eps)``;
    ``estimated_initial_weight`` solves ``moving_mean = w * 0 + (1 - w) * mean`` by least
    squares over channels (exact when the statistics were stationary), ``None`` when the
    initial value and the exact mean are too close to tell apart.
    """
    rm, rv = np.asarray(moving_mean, np.float64), np.asarray(moving_var, np.float64)
    pm, pv = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    std = np.sqrt(pv + epsilon)
    err = (rm - pm) / std
    init = (0.0 - pm) / std
    separation = float(np.sqrt(np.mean(init**2)))
    weight = None
    if separation >= MIN_SEPARATION:
        weight = float(np.clip(np.sum(init * err) / np.sum(init**2), 0.0, 1.0))
    ratio = (rv + epsilon) / (pv + epsilon)
    return {
        "mean_error_std": float(np.sqrt(np.mean(err**2))),
        "variance_ratio_median": float(np.median(ratio)),
        "init_separation_std": separation,
        "estimated_initial_weight": weight,
    }


def statistics_off(distance: dict) -> bool:
    """Whether moving statistics are far enough from the exact ones to matter."""
    ratio = distance["variance_ratio_median"]
    return distance["mean_error_std"] > MEAN_ERROR or not (1 / VAR_RATIO <= ratio <= VAR_RATIO)


def momentum_too_high(weight: float | None, distance: dict) -> bool:
    """``momentum-too-high-for-steps``: the start still weighs > :data:`STALE_WEIGHT`, and it shows."""
    return weight is not None and weight > STALE_WEIGHT and statistics_off(distance)


# -- inference mode versus exact statistics ---------------------------------------------
def closed_fraction(gap: float | None, won_back: float | None) -> float | None:
    """Share of an inference-mode gap that exact statistics win back."""
    if gap is None or won_back is None or not gap:
        return None
    return won_back / gap


def confirms_stale(gap: float | None, fraction: float | None) -> bool:
    """``stale-running-stats``: inference loses >= :data:`GAP_THRESHOLD` and exact stats close most."""
    return (
        gap is not None
        and gap >= GAP_THRESHOLD
        and fraction is not None
        and fraction >= CONFIRM_FRACTION
    )


def gap_is_significant(gained: int, lost: int) -> bool:
    """Whether exact statistics win more samples than they lose beyond sampling noise.

    ``gained``: samples right with exact statistics and wrong with the moving averages;
    ``lost``: the reverse. McNemar's paired test at :data:`SIGNIFICANCE_Z` standard errors:
    ``gained - lost >= z * sqrt(gained + lost)``.
    """
    return gained - lost >= SIGNIFICANCE_Z * math.sqrt(gained + lost) and gained > lost


def stale_by_accuracy(
    inference: float | None,
    exact: float | None,
    gained: int | None = None,
    lost: int | None = None,
) -> bool:
    """The monitor's form of the rule: exact statistics are the reference (they close it all).

    On a bounded sample the per-sample wins and losses (``gained``/``lost``) must also pass
    :func:`gap_is_significant`, so sampling noise cannot raise the finding.
    """
    if inference is None or exact is None:
        return False
    gap = exact - inference
    if not confirms_stale(gap, 1.0 if gap > 0 else None):
        return False
    return gained is None or lost is None or gap_is_significant(gained, lost)


def stale_by_loss(inference: float | None, exact: float | None) -> bool:
    """Without accuracy: inference loss >= (1 + :data:`LOSS_GAP_FRACTION`) x the exact-stats loss."""
    if inference is None or exact is None or not (math.isfinite(inference) and exact > 0):
        return False
    return inference >= (1.0 + LOSS_GAP_FRACTION) * exact


# -- broken statistics ------------------------------------------------------------------
def nonfinite_channels(mean, var) -> dict[str, int]:
    """Channels whose moving mean or variance is NaN/Inf, or whose variance is negative."""
    m, v = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    return {
        "nan": int(np.isnan(m).sum() + np.isnan(v).sum()),
        "inf": int(np.isinf(m).sum() + np.isinf(v).sum()),
        "negative_variance": int((v < 0).sum()),
    }


def statistics_broken(counts: dict[str, int]) -> bool:
    """``nan-running-stats``: any NaN, Inf or negative variance."""
    return any(counts.values())


def at_initial_values(mean, var, initial_mean: float = 0.0, initial_var: float = 1.0) -> bool:
    """Moving statistics at their initial values (zeros and ones) within
    :data:`~bnlab.doctor.thresholds.INIT_TOLERANCE` on every channel."""
    m, v = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    return bool(
        np.all(np.abs(m - initial_mean) <= INIT_TOLERANCE)
        and np.all(np.abs(v - initial_var) <= INIT_TOLERANCE)
    )


# -- words ------------------------------------------------------------------------------
def _pct(weight: float) -> str:
    return f"{100 * weight:.0f} %"


def stale_cause(momentum: float | None, steps: int | None, weight: float | None) -> str:
    """'the moving averages are stale (momentum 0.99, 32 steps: 72 % initial values)'."""
    if momentum is not None and steps is not None and weight is not None:
        return (
            f"the moving averages are stale (momentum {momentum:g}, {steps} steps: "
            f"{_pct(weight)} initial values)"
        )
    return "the moving averages are stale"


def stale_fix(steps: int | None) -> str:
    """'recalibrate with bnlab.recalibrate or lower momentum to <= 0.87'."""
    if steps:
        return (
            "recalibrate with bnlab.recalibrate or lower momentum to "
            f"≤ {suggested_momentum(steps):.2f}"
        )
    return "recalibrate with bnlab.recalibrate or lower momentum"


def momentum_fix_suggestion(steps: int) -> str:
    """The doctor's sentence for the momentum that fades the initial values below 1 %."""
    suggested = suggested_momentum(steps)
    return (
        f" With about {steps} steps, momentum <= {suggested:.3f} (Keras convention; "
        f"PyTorch momentum >= {1 - suggested:.3f}) lets the initial values fade below 1%."
    )


NAN_FIX = (
    "Recalibrate on the training data (`bnlab fix` / `bnlab.recalibrate`); to stop "
    "it recurring keep BN statistics in float32 under mixed precision, lower the "
    "learning rate or clip gradients, and stop training on a non-finite loss."
)
NEVER_UPDATED_FIX = (
    "Run BN in training mode in the training loop (model.train() in PyTorch; "
    "model(x, training=True) in a custom Keras/TF loop; with tf.compat.v1 run "
    "UPDATE_OPS), then recalibrate the existing model: `bnlab fix` / "
    "`bnlab.recalibrate(model, data)`."
)
EVAL_MODE_FIX = "call model.train() after each evaluation, before the next training step"
MODE_SWITCHED_FIX = (
    "freeze BN so that model.train() cannot undo it (bnlab.freeze(model, what='stats'), "
    "Keras: layer.trainable = False), or keep the layers in one mode on purpose"
)
