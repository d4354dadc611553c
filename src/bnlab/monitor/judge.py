"""From one measurement to findings: the doctor's ids, thresholds and words (``doctor.rules``).

Each finding comes with the one line the monitor prints the first time it appears, e.g.
``epoch 2: inference 0.17, exact BN statistics 0.77 — the moving averages are stale
(momentum 0.99, 32 steps: 72 % initial values); recalibrate with bnlab.recalibrate or lower
momentum to ≤ 0.87``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnlab.doctor import rules
from bnlab.doctor.findings import Finding
from bnlab.monitor.measure import Reading


@dataclass
class Context:
    """What the framework side knows about the period since the previous measurement."""

    label: str  # "epoch 2" or "step 300"
    trained: bool | None  # training steps happened (None: unknown)
    # PyTorch only: {path: (train-mode calls, eval-mode calls)} with gradients enabled
    mode_calls: dict[str, tuple[int, int]] | None = None
    previous_mode_calls: dict[str, tuple[int, int]] | None = None


def _paths(paths: list[str]) -> str:
    return ", ".join(paths) if len(paths) <= 3 else f"{', '.join(paths[:3])} (+{len(paths) - 3})"


def _finding(fid: str, layers: list[str] | None, message: str, evidence: dict, fix: str) -> Finding:
    return Finding(
        id=fid,
        severity=rules.SEVERITY[fid],
        layer=_paths(layers) if layers else None,
        message=message,
        evidence=evidence,
        fix=fix,
        confirmed=True if fid == rules.STALE_RUNNING_STATS else None,
    )


def _metric_pair(r: Reading) -> tuple[str, float | None, float | None]:
    if r.inference_accuracy is not None:
        return "accuracy", r.inference_accuracy, r.exact_accuracy
    return "loss", r.inference_loss, r.exact_loss


def _stalest(r: Reading):
    known = [layer for layer in r.layers if layer.initial_weight is not None]
    return max(known, key=lambda layer: layer.initial_weight) if known else None


def judge(r: Reading, ctx: Context) -> list[tuple[Finding, str]]:
    """Every finding of this measurement, each with its warning line."""
    out: list[tuple[Finding, str]] = []
    label = ctx.label

    broken = [layer for layer in r.layers if rules.statistics_broken(layer.nonfinite)]
    if broken:
        counts = {layer.path: layer.nonfinite for layer in broken}
        out.append((
            _finding(rules.NAN_RUNNING_STATS, [b.path for b in broken],
                     f"The moving statistics of {len(broken)} BN layer(s) hold NaN, Inf or a "
                     "negative variance, so inference-mode outputs are garbage.",
                     {"layers": counts}, rules.NAN_FIX),
            f"{label}: BN moving statistics are NaN/Inf in {_paths([b.path for b in broken])} "
            f"— {rules.NAN_FIX}",
        ))  # fmt: skip

    calls, before = ctx.mode_calls or {}, ctx.previous_mode_calls or {}
    eval_calls = [p for p, (_t, e) in calls.items() if e > 0]
    if eval_calls:
        switched = [p for p in eval_calls if before.get(p, (0, 0))[0] > 0]
        how = " (they switched from train mode since the last measurement)" if switched else ""
        out.append((
            _finding(rules.EVAL_MODE_IN_TRAINING, eval_calls,
                     f"{len(eval_calls)} BN layer(s) ran in eval mode during training steps{how}: "
                     "they normalise with their moving averages and stop updating them.",
                     {"calls": {p: {"train": calls[p][0], "eval": calls[p][1]} for p in eval_calls},
                      "switched": switched}, rules.EVAL_MODE_FIX),
            f"{label}: {_paths(eval_calls)} ran in eval mode during training{how} — "
            f"{rules.EVAL_MODE_FIX}",
        ))  # fmt: skip
    thawed = [p for p, (t, _e) in calls.items() if t > 0 and p in before and before[p][0] == 0
              and before[p][1] > 0]  # fmt: skip
    if thawed:
        out.append((
            _finding(rules.BN_MODE_SWITCHED, thawed,
                     f"{len(thawed)} BN layer(s) that trained in eval mode before now train in "
                     "train mode (model.train() undid a freeze?).",
                     {"layers": thawed}, rules.MODE_SWITCHED_FIX),
            f"{label}: {_paths(thawed)} switched from eval to train mode — "
            f"{rules.MODE_SWITCHED_FIX}",
        ))  # fmt: skip

    if ctx.trained:
        stuck = [layer.path for layer in r.layers
                 if layer.expected_to_update and layer.changed is False]  # fmt: skip
        if stuck:
            cause = (
                "they ran in eval mode (model.eval() not undone)"
                if set(stuck) & set(eval_calls)
                else "the training steps ran the model without training mode"
            )
            out.append((
                _finding(rules.STATS_NEVER_UPDATED, stuck,
                         f"The moving statistics of {len(stuck)} BN layer(s) did not change "
                         f"across training steps: {cause}.",
                         {"layers": stuck}, rules.NEVER_UPDATED_FIX),
                f"{label}: BN statistics not updating in {_paths(stuck)} ({cause}) — "
                f"{rules.NEVER_UPDATED_FIX}",
            ))  # fmt: skip

    kind, moving, exact = _metric_pair(r)
    stale = (
        rules.stale_by_accuracy(moving, exact, r.gained, r.lost)
        if kind == "accuracy"
        else rules.stale_by_loss(moving, exact)
    )
    stalest = _stalest(r)
    if stale and not broken:
        cause = rules.stale_cause(
            stalest.momentum if stalest else None,
            stalest.steps if stalest else None,
            stalest.initial_weight if stalest else None,
        )
        fix = rules.stale_fix(stalest.steps if stalest else None)
        out.append((
            _finding(rules.STALE_RUNNING_STATS, None,
                     f"On {r.samples_val} validation samples the model scores {kind} "
                     f"{moving:.3f} in inference mode but {exact:.3f} with exact BN statistics "
                     f"(from {r.samples_train} {r.exact_from} samples), so the stored moving "
                     "averages, not the weights, cause the gap.",
                     {f"inference_{kind}": moving, f"exact_{kind}": exact,
                      "gained": r.gained, "lost": r.lost, "samples": r.samples_val},
                     fix),
            f"{label}: inference {moving:.2f}, exact BN statistics {exact:.2f} — {cause}; {fix}",
        ))  # fmt: skip

    high = {
        layer.path: layer
        for layer in r.layers
        if layer.mean_error_std is not None
        and rules.momentum_too_high(
            layer.initial_weight,
            {"mean_error_std": layer.mean_error_std,
             "variance_ratio_median": layer.variance_ratio_median},
        )
    }  # fmt: skip
    if high:
        first = next(iter(high.values()))
        out.append((
            _finding(rules.MOMENTUM_TOO_HIGH, list(high),
                     f"With momentum {first.momentum:g} the initial moving values still weigh "
                     f"{first.initial_weight:.2f} after {first.steps} steps, so the moving "
                     f"averages of {len(high)} BN layer(s) are far from the statistics of the "
                     "data.",
                     {"layers": {p: vars(layer) for p, layer in high.items()}},
                     "Recalibrate (`bnlab.recalibrate`), and train with a lower momentum or for "
                     "more steps." + rules.momentum_fix_suggestion(first.steps)),
            f"{label}: {rules.stale_cause(first.momentum, first.steps, first.initial_weight)} "
            f"in {_paths(list(high))}; {rules.stale_fix(first.steps)}",
        ))  # fmt: skip
    return out
