"""Checks on how the model *behaves*: train mode vs inference mode, and the intervention.

The doctor compares, on the diagnosed data, BN on batch statistics (train mode, dropout
off) with BN on its moving averages (inference mode). A gap of at least
:data:`GAP_THRESHOLD` is then tested by intervening: a copy gets exact population
statistics (PreciseBN) and is evaluated again. If that closes at least
:data:`CONFIRM_FRACTION` of the gap the moving averages were the cause
(``stale-running-stats``, confirmed); otherwise the gap is reported as ``train-eval-gap``.
"""

from __future__ import annotations

from bnlab.doctor import rules
from bnlab.doctor.exam import Exam
from bnlab.doctor.findings import Finding
from bnlab.doctor.thresholds import CONFIRM_FRACTION, GAP_THRESHOLD  # noqa: F401 - re-exported

RECALIBRATE_FIX = (
    "Recompute the moving statistics on your training data without retraining: "
    "`bnlab fix MODEL --data DATA -o FIXED` or `bnlab.recalibrate(model, data)`; "
    "when training again, use a lower momentum (Keras convention, e.g. 0.9) or more steps."
)


def gap(exam: Exam) -> float | None:
    """Accuracy lost from train mode to inference mode (1 - agreement when unlabelled)."""
    if exam.train_mode is None or exam.inference is None:
        return None
    if exam.labelled:
        return exam.train_mode.accuracy - exam.inference.accuracy
    return None if exam.agreement is None else 1.0 - exam.agreement


def needs_intervention(exam: Exam) -> bool:
    value = gap(exam)
    if exam.mismatch:  # on data the model was not trained on, a gap proves nothing
        return False
    return value is not None and value >= GAP_THRESHOLD and bool(exam.bn)


def closed_fraction(exam: Exam) -> float | None:
    """Share of the gap that exact statistics win back (``None`` when not measured)."""
    value = gap(exam)
    if exam.recalibrated is None or not value:
        return None
    if exam.labelled:
        won = exam.recalibrated.accuracy - exam.inference.accuracy
    elif exam.recalibrated_agreement is not None:
        won = exam.recalibrated_agreement - exam.agreement
    else:
        return None
    return rules.closed_fraction(value, won)


def _evidence(exam: Exam) -> dict:
    ev = {
        "samples": exam.inference.samples,
        "labelled": exam.labelled,
        "gap": gap(exam),
        "closed_fraction": closed_fraction(exam),
    }
    if exam.labelled:
        ev.update(
            train_mode_accuracy=exam.train_mode.accuracy,
            inference_accuracy=exam.inference.accuracy,
            recalibrated_accuracy=exam.recalibrated.accuracy if exam.recalibrated else None,
            train_mode_loss=exam.train_mode.loss,
            inference_loss=exam.inference.loss,
            recalibrated_loss=exam.recalibrated.loss if exam.recalibrated else None,
        )
    else:
        ev.update(agreement=exam.agreement, recalibrated_agreement=exam.recalibrated_agreement)
    if exam.test_before is not None and exam.test_after is not None:
        ev.update(
            test_accuracy_before=exam.test_before.accuracy,
            test_accuracy_after=exam.test_after.accuracy,
        )
    return ev


def _observed(exam: Exam) -> str:
    """What was measured, as the first half of a sentence."""
    if exam.labelled:
        return (
            f"On its training data the model scores accuracy {exam.train_mode.accuracy:.3f} in "
            f"train mode but {exam.inference.accuracy:.3f} in inference mode"
        )
    return (
        "In inference mode the model predicts the same class as in train mode for only "
        f"{exam.agreement:.1%} of the inputs"
    )


def _after(exam: Exam) -> str:
    if exam.labelled:
        return f"{exam.recalibrated.accuracy:.3f}" if exam.recalibrated else "n/a"
    rec = exam.recalibrated_agreement
    return f"{rec:.1%} agreement" if rec is not None else "n/a"


def check_stale_running_stats(exam: Exam) -> list[Finding]:
    if not needs_intervention(exam) or not rules.confirms_stale(gap(exam), closed_fraction(exam)):
        return []
    test = ""
    if exam.test_before is not None and exam.test_after is not None and exam.labelled:
        test = f" (test accuracy {exam.test_before.accuracy:.3f} -> {exam.test_after.accuracy:.3f})"
    return [
        Finding(
            id="stale-running-stats",
            severity="error",
            layer=None,
            message=(
                f"{_observed(exam)}; with exact BN statistics it reaches {_after(exam)}{test}, "
                "so the stored moving averages, not the weights, cause the gap."
            ),
            evidence=_evidence(exam),
            fix=RECALIBRATE_FIX,
            confirmed=True,
        )
    ]


def check_train_eval_gap(exam: Exam) -> list[Finding]:
    frac = closed_fraction(exam)
    if not needs_intervention(exam) or (frac is not None and frac >= CONFIRM_FRACTION):
        return []
    return [
        Finding(
            id="train-eval-gap",
            severity="warning",
            layer=None,
            message=(
                f"{_observed(exam)}, and exact BN statistics do not close the gap "
                f"({_after(exam)}), so something other than stale moving averages differs "
                "between the two modes."
            ),
            evidence=_evidence(exam),
            fix=(
                "Make training batches i.i.d. (shuffle; no per-batch shifts such as one source "
                "or one class per batch), evaluate with the batch size you trained with, or use "
                "a batch-independent norm (GroupNorm/LayerNorm: bnlab.nn.make_norm('group'))."
            ),
            confirmed=None,
        )
    ]
