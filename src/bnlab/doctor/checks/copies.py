"""Checks against other copies of the model: ``frozen-bn-drift`` and ``ema-stale-bn``
(numbers from :mod:`bnlab.doctor.compare`)."""

from __future__ import annotations

from bnlab.doctor.exam import Exam
from bnlab.doctor.findings import Finding, layer_summary
from bnlab.doctor.thresholds import DRIFT_STD, DRIFT_VAR_RATIO


def check_frozen_bn_drift(exam: Exam) -> list[Finding]:
    if not exam.drift:
        return []
    worst = max(v["mean_shift_ref_std"] for v in exam.drift.values())
    return [
        Finding(
            id="frozen-bn-drift",
            severity="warning",
            layer=layer_summary(list(exam.drift)),
            message=(
                f"{len(exam.drift)} BN layer(s) kept the reference's gamma/beta (frozen) but "
                f"their moving statistics moved (mean by up to {worst:.2g} reference stds): "
                "fine-tuning ran them in training mode, so the pretrained statistics are gone."
            ),
            evidence={"layers": exam.drift, "mean_limit": DRIFT_STD, "var_limit": DRIFT_VAR_RATIO},
            fix=(
                "Freeze BN for real: bnlab.freeze(model, what='all') (PyTorch: a frozen BN that "
                "model.train() cannot switch back; Keras: trainable=False, which also runs it in "
                "inference mode), or `bnlab fix --freeze`; then reload the pretrained statistics "
                "or recalibrate."
            ),
        )
    ]


def check_ema_stale_bn(exam: Exam) -> list[Finding]:
    if not exam.ema:
        return []
    worst = max(v["mean_error_std"] for v in exam.ema.values())
    return [
        Finding(
            id="ema-stale-bn",
            severity="error",
            layer=layer_summary(list(exam.ema)),
            message=(
                f"The averaged (EMA/SWA) model's BN statistics do not fit its averaged weights in "
                f"{len(exam.ema)} layer(s) (mean off by up to {worst:.2g} stds): they were copied "
                "or averaged, not recomputed."
            ),
            evidence={"layers": exam.ema},
            fix=(
                "Recompute them after averaging: torch.optim.swa_utils.update_bn(loader, "
                "swa_model), AveragedModel(..., use_buffers=True) for an EMA, or "
                "bnlab.recalibrate(averaged, data)."
            ),
        )
    ]
