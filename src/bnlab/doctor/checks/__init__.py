"""The doctor's checks: pure functions ``Exam -> list[Finding]``, written once for every framework.

:data:`CHECKS` maps each stable finding id to its check, in report order.
"""

from __future__ import annotations

from collections.abc import Callable

from bnlab.doctor.checks.batch import check_batch_dependent_inference
from bnlab.doctor.checks.behaviour import check_stale_running_stats, check_train_eval_gap
from bnlab.doctor.checks.copies import check_ema_stale_bn, check_frozen_bn_drift
from bnlab.doctor.checks.data import check_data_mismatch
from bnlab.doctor.checks.settings import (
    check_frozen_bn_in_train_mode,
    check_small_batch,
    check_torch_momentum_looks_like_keras,
)
from bnlab.doctor.checks.state import (
    check_nan_running_stats,
    check_stats_never_updated,
    check_untrained_model,
    is_untrained,
)
from bnlab.doctor.checks.statistics import (
    check_degenerate_channels,
    check_momentum_too_high_for_steps,
    check_unnormalized_inputs,
)
from bnlab.doctor.checks.structure import (
    check_bias_before_bn,
    check_bn_before_output,
    check_dropout_before_bn,
    check_graph_not_traced,
    check_l2_with_bn,
    check_shared_bn,
)
from bnlab.doctor.exam import Exam
from bnlab.doctor.findings import Finding

Check = Callable[[Exam], list[Finding]]

CHECKS: dict[str, Check] = {
    "untrained-model": check_untrained_model,
    "data-mismatch": check_data_mismatch,
    "nan-running-stats": check_nan_running_stats,
    "stats-never-updated": check_stats_never_updated,
    "batch-dependent-inference": check_batch_dependent_inference,
    "stale-running-stats": check_stale_running_stats,
    "momentum-too-high-for-steps": check_momentum_too_high_for_steps,
    "torch-momentum-looks-like-keras": check_torch_momentum_looks_like_keras,
    "small-batch": check_small_batch,
    "bn-before-output": check_bn_before_output,
    "dropout-before-bn": check_dropout_before_bn,
    "bias-before-bn": check_bias_before_bn,
    "l2-with-bn": check_l2_with_bn,
    "frozen-bn-in-train-mode": check_frozen_bn_in_train_mode,
    "degenerate-channels": check_degenerate_channels,
    "unnormalized-inputs": check_unnormalized_inputs,
    "train-eval-gap": check_train_eval_gap,
    "frozen-bn-drift": check_frozen_bn_drift,
    "ema-stale-bn": check_ema_stale_bn,
    "shared-bn": check_shared_bn,
    "graph-not-traced": check_graph_not_traced,
}

FINDING_IDS: tuple[str, ...] = tuple(CHECKS)

# Checks that judge the BN statistics against the data: meaningless on mismatched data.
DATA_JUDGED = frozenset({
    "stale-running-stats", "momentum-too-high-for-steps", "degenerate-channels",
    "unnormalized-inputs", "train-eval-gap",
})  # fmt: skip


def run_checks(exam: Exam) -> list[Finding]:
    """Every check's findings, in :data:`CHECKS` order.

    On data that does not match the model (``data-mismatch``) the checks in
    :data:`DATA_JUDGED` are skipped: they would blame BN for the data. An untrained model
    gets ``untrained-model`` alone.
    """
    if is_untrained(exam):  # said plainly instead of diagnosed
        return check_untrained_model(exam)
    findings: list[Finding] = []
    for finding_id, check in CHECKS.items():
        if exam.mismatch and finding_id in DATA_JUDGED:
            continue
        findings.extend(check(exam))
    return findings


__all__ = ["CHECKS", "FINDING_IDS", "run_checks"]
