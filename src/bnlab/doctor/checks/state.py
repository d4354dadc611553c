"""Checks on the state of the BN buffers themselves: never trained, never updated, broken.

* ``untrained-model``: every BN layer holds its initial moving statistics (mean 0, variance 1
  within :data:`~bnlab.doctor.thresholds.INIT_TOLERANCE`), no step was counted
  (``num_batches_tracked == 0``, no optimizer iterations) and the weights do no better than
  chance in train mode (within :data:`~bnlab.doctor.thresholds.CHANCE_MARGIN`): a model built
  without its weights (``module:factory`` without ``--weights``). It is said plainly and
  nothing else is diagnosed.
* ``stats-never-updated``: the same initial statistics in a model whose weights *did* learn
  (train-mode accuracy above chance, or steps counted): the training loop never ran BN in
  training mode (``training=False`` in a custom loop, UPDATE_OPS not run, ``.eval()`` all along).
* ``nan-running-stats``: NaN/Inf moving statistics or a negative moving variance (mixed
  precision overflow, a diverged step).
"""

from __future__ import annotations

from bnlab.doctor import rules
from bnlab.doctor.exam import Exam
from bnlab.doctor.findings import Finding, layer_summary
from bnlab.doctor.model_view import BNLayer
from bnlab.doctor.thresholds import CHANCE_MARGIN


def _updatable(exam: Exam) -> list[BNLayer]:
    """Layers whose moving statistics a training step should change."""
    return [
        b
        for b in exam.bn
        if b.tracks_running_stats and b.uses_batch_stats_in_training and b.path in exam.running
    ]


def at_initial_values(exam: Exam, layer: BNLayer) -> bool:
    return rules.at_initial_values(*exam.running[layer.path])


def _chance(exam: Exam) -> float | None:
    return None if not exam.classes else 1.0 / exam.classes


def _learned(exam: Exam) -> bool | None:
    """Whether the weights beat chance in train mode (``None``: no labels to tell)."""
    if exam.train_mode is None or exam.train_mode.accuracy is None or not exam.classes:
        return None
    return exam.train_mode.accuracy > _chance(exam) + CHANCE_MARGIN


def _steps_counted(exam: Exam, layers: list[BNLayer]) -> int | None:
    counted = [exam.steps_for(b)[0] for b in layers]
    known = [s for s in counted if s is not None]
    return max(known) if known else None


def is_untrained(exam: Exam) -> bool:
    layers = _updatable(exam)
    if not layers or not all(at_initial_values(exam, b) for b in layers):
        return False
    steps = _steps_counted(exam, layers)
    return not steps and _learned(exam) is not True


def check_untrained_model(exam: Exam) -> list[Finding]:
    if not is_untrained(exam):
        return []
    acc = exam.train_mode.accuracy if exam.train_mode is not None else None
    seen = (
        f" and scores {acc:.3f} in train mode (chance: {_chance(exam):.3f})"
        if acc is not None
        else ""
    )
    return [
        Finding(
            id="untrained-model",
            severity="error",
            layer=None,
            message=(
                f"This model looks untrained: all {len(_updatable(exam))} BN layer(s) hold their "
                f"initial statistics (mean 0, variance 1), no training step was counted{seen}. "
                "There is nothing to diagnose."
            ),
            evidence={
                "bn_layers": [b.path for b in _updatable(exam)],
                "steps": _steps_counted(exam, _updatable(exam)),
                "train_mode_accuracy": acc,
                "chance": _chance(exam),
            },
            fix=(
                "Give the trained weights: `bnlab doctor module:factory --weights FILE.pt` "
                "(a state_dict), a saved .keras file, or call diagnose() after training."
            ),
        )
    ]


def check_stats_never_updated(exam: Exam) -> list[Finding]:
    if is_untrained(exam):
        return []
    layers = [b for b in _updatable(exam) if at_initial_values(exam, b)]
    if not layers:
        return []
    steps = _steps_counted(exam, _updatable(exam))
    if not steps and not _learned(exam):
        return []
    why = (
        f"after {steps} counted training steps"
        if steps
        else f"although the weights learned (train-mode accuracy {exam.train_mode.accuracy:.3f})"
    )
    return [
        Finding(
            id="stats-never-updated",
            severity="error",
            layer=layer_summary([b.path for b in layers]),
            message=(
                f"{len(layers)} BN layer(s) still hold their initial moving statistics "
                f"(mean 0, variance 1) {why}: training never ran them in training mode, so "
                "inference normalises with numbers unrelated to the data."
            ),
            evidence={
                "layers": [b.path for b in layers],
                "steps": steps,
                "train_mode_accuracy": exam.train_mode.accuracy if exam.train_mode else None,
            },
            fix=rules.NEVER_UPDATED_FIX,
        )
    ]


def check_nan_running_stats(exam: Exam) -> list[Finding]:
    bad: dict[str, dict] = {}
    for layer in exam.bn:
        if layer.path not in exam.running:
            continue
        mean, var = exam.running[layer.path]
        counts = rules.nonfinite_channels(mean, var)
        if rules.statistics_broken(counts):
            bad[layer.path] = {
                "non_finite_values": counts["nan"] + counts["inf"],
                "negative_variances": counts["negative_variance"],
            }
    if not bad:
        return []
    return [
        Finding(
            id="nan-running-stats",
            severity="error",
            layer=layer_summary(list(bad)),
            message=(
                f"{len(bad)} BN layer(s) hold NaN/Inf moving statistics or a negative moving "
                "variance: every inference-mode output through them is garbage (a diverged "
                "step or a float16 overflow wrote them)."
            ),
            evidence={"layers": bad},
            fix=rules.NAN_FIX,
        )
    ]
