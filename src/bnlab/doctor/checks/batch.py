"""``batch-dependent-inference``: in inference mode a sample's prediction depends on its batch.

BN with ``track_running_stats=False`` (PyTorch), a Keras BN called with ``training=True``
baked into the graph, or any layer normalising with batch statistics at inference makes a
prediction change with the other samples in the batch. Measured, not guessed: the same
:data:`~bnlab.doctor.thresholds.BATCH_DEPENDENCE_SAMPLES` samples are predicted in inference
mode as one batch and in pairs; a batch-independent model gives the same logits (up to
float rounding). More than :data:`~bnlab.doctor.thresholds.BATCH_DEPENDENCE` of them with
different logits is a finding.
"""

from __future__ import annotations

import torch

from bnlab.doctor.exam import Exam
from bnlab.doctor.findings import Finding
from bnlab.doctor.metrics import predictions
from bnlab.doctor.thresholds import BATCH_DEPENDENCE, BATCH_DEPENDENCE_SAMPLES

LOGIT_TOLERANCE = 1e-3  # relative logit difference that float rounding never reaches


def measure_batch_dependence(work, x: torch.Tensor, layout: str) -> dict | None:
    """Logits of up to 64 samples as one batch vs in pairs (``None`` for fewer than 4)."""
    n = min(BATCH_DEPENDENCE_SAMPLES, x.shape[0])
    if n < 4:
        return None
    n -= n % 2
    xin = work.prepare(x[:n], layout)
    together = work.forward(xin, train=False)
    pairs = torch.cat([work.forward(xin[i : i + 2], train=False) for i in range(0, n, 2)])
    diff = (together - pairs).abs().reshape(n, -1).amax(dim=1)
    scale = 1.0 + together.abs().reshape(n, -1).amax(dim=1)
    changed = diff > LOGIT_TOLERANCE * scale
    return {
        "samples": n,
        "changed_fraction": float(changed.float().mean()),
        "class_changes": int((predictions(together) != predictions(pairs)).sum()),
        "max_logit_difference": float(diff.max()),
    }


def check_batch_dependent_inference(exam: Exam) -> list[Finding]:
    m = exam.batch_dependence
    if not m or m["changed_fraction"] <= BATCH_DEPENDENCE:
        return []
    untracked = [b.path for b in exam.bn if not b.tracks_running_stats]
    cause = (
        f" ({', '.join(untracked[:3])} {'has' if len(untracked) == 1 else 'have'} "
        "track_running_stats=False: they normalise with batch statistics at inference)"
        if untracked
        else ""
    )
    return [
        Finding(
            id="batch-dependent-inference",
            severity="error",
            layer=", ".join(untracked[:3]) or None,
            message=(
                f"In inference mode {m['changed_fraction']:.0%} of {m['samples']} samples get "
                f"other logits when predicted in pairs than in one batch ({m['class_changes']} "
                f"change class){cause}: a prediction depends on the other samples in its batch."
            ),
            evidence={**m, "untracked_layers": untracked},
            fix=(
                "Keep running statistics (track_running_stats=True, then `bnlab fix` to compute "
                "them), call the model with training=False at inference (model.eval() in "
                "PyTorch; no training=True baked into a Keras graph), or use a "
                "batch-independent norm (GroupNorm/LayerNorm)."
            ),
        )
    ]
