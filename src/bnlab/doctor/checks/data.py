"""Check the patient before the diagnosis: does the data match what the model was trained on?

The rule (``data-mismatch``). For every *first* BN layer (no BN upstream of it, so its input
is the same in train and inference mode) the doctor knows two things: the statistics of
its input on the diagnosed data, as the average of the per-batch mean and variance (what a
moving average estimates: batches that each carry their own offset are then not a
mismatch), and its moving statistics, which are
``w * initial + (1 - w) * training statistics`` with the initial mean 0 / variance 1 and
``w = momentum ** steps`` (Keras convention). Taking the initial values out gives the
input statistics the layer saw *in training*:

* ``w`` known (steps from ``num_batches_tracked``, optimizer iterations or ``steps=``) and
  below :data:`~bnlab.doctor.thresholds.UNINFORMATIVE_WEIGHT`: training mean
  ``m / (1 - w)``, training variance ``(v - w) / (1 - w)``;
* ``w`` unknown: only the bound that holds for every ``w`` in [0, 1) is used (a moving
  variance below 1 means the training variance was at most that; above 1, at least that);
* ``w`` from a Keras optimizer's iterations: both must agree (a fresh optimizer for
  fine-tuning restarts the count while the statistics go on from the pretrained ones).

The data's std over the training std (median over channels) is the *scale factor*; the
data's mean minus the training mean, in training stds (median of its size over channels,
so a few near-constant channels cannot decide), the *shift*.
A scale factor beyond :data:`~bnlab.doctor.thresholds.SCALE_MISMATCH` (either way) or a shift
beyond :data:`~bnlab.doctor.thresholds.SHIFT_MISMATCH` is a mismatch when the same holds
against the moving statistics as stored (so statistics that already fit the data, as after
recalibration, never make one). Stale statistics (the
week-9 case: raw pixels, momentum 0.99, 42 steps) keep the factor near 1 because the
initial values are taken out; a model trained on 0-1 pixels fed 0-255 ones shows ~255.
On mismatched data the intervention is not run, so ``stale-running-stats`` is never
confirmed, and ``bnlab fix`` refuses to recalibrate unless forced.
"""

from __future__ import annotations

import numpy as np

from bnlab.doctor.checks.state import at_initial_values
from bnlab.doctor.exam import Exam
from bnlab.doctor.findings import Finding
from bnlab.doctor.model_view import BNLayer
from bnlab.doctor.thresholds import SCALE_MISMATCH, SHIFT_MISMATCH, UNINFORMATIVE_WEIGHT


def scale_advice(factor: float) -> str:
    """The likely fix for a scale factor (data std over training std at the first BN)."""
    if factor >= SCALE_MISMATCH:
        return "-O scale=unit (pixels / 255) for bnlab's data sets, or x / 255 for your arrays"
    if factor <= 1 / SCALE_MISMATCH:
        return "-O scale=raw (pixels in 0-255) for bnlab's data sets, or x * 255 for your arrays"
    return "the same preprocessing (centring, normalisation) as in training"


def scale_fix(factor: float) -> str:
    return (
        f"Feed the data as the model was trained on it: {scale_advice(factor)}. Do not "
        "recalibrate on this data: `bnlab fix` would fit the BN statistics to inputs the "
        "model never sees."
    )


def first_bn_layers(exam: Exam) -> list[BNLayer]:
    """BN layers with no BN upstream of them in the graph (the first one when untraceable)."""
    by_path = exam.bn_by_path()
    graph = exam.graph
    firsts: list[str] = []
    if graph is not None and graph.source != "registration order":
        for node in graph.nodes.values():
            if node.kind != "bn" or node.path not in by_path or node.path in firsts:
                continue
            upstream = list(graph.producers(node, lambda n: n.kind != "bn"))
            if not any(n.kind == "bn" for n in upstream):
                firsts.append(node.path)
    if not firsts and exam.bn:
        firsts = [exam.bn[0].path]
    return [by_path[p] for p in firsts]


def _initial_weight(exam: Exam, layer: BNLayer) -> tuple[float | None, str | None]:
    """``momentum ** steps`` and where the steps come from (``(None, None)`` when unknown)."""
    steps, source = exam.steps_for(layer)
    if steps is None or steps <= 0:
        return None, None
    if layer.momentum is None:  # PyTorch's cumulative average: the first step replaces all
        return 0.0, source
    return float(layer.momentum) ** steps, source


def _bounds_ratio(rv: np.ndarray, pv: np.ndarray, eps: float) -> np.ndarray:
    """Data std over training std, using only what holds for any initial weight in [0, 1).

    A moving variance below 1 means the training variance was at most that; above 1, at
    least that; the ratio is 1 wherever the data's variance is on the allowed side.
    """
    below = rv < 1.0
    off = (below & (pv > rv)) | (~below & (pv < rv))
    ratio = np.ones_like(pv)
    ratio[off] = np.sqrt((pv[off] + eps) / (rv[off] + eps))
    return ratio


def layer_mismatch(exam: Exam, layer: BNLayer) -> dict | None:
    """Scale factor and shift of the data at ``layer`` against its training inputs."""
    if layer.path not in exam.running or layer.path not in exam.population:
        return None
    if not layer.tracks_running_stats or not layer.uses_batch_stats_in_training:
        return None  # frozen (Keras trainable=False) statistics are not a training estimate
    rm, rv = (np.asarray(a, np.float64) for a in exam.running[layer.path])
    # Moving averages fold in one batch's statistics per step: compare with the data's
    # average batch statistics (the pooled ones when only those were measured).
    if layer.path in exam.batchwise:
        pm, pv = exam.batchwise[layer.path]
    else:
        pm, pv, _ = exam.population[layer.path]
    pm, pv = np.asarray(pm, np.float64), np.asarray(pv, np.float64)
    if not (np.all(np.isfinite(rm)) and np.all(np.isfinite(rv)) and np.all(rv >= 0)):
        return None  # broken statistics are nan-running-stats' business
    if at_initial_values(exam, layer):
        return None  # never updated: they say nothing about the training data
    eps = max(float(layer.epsilon), 1e-12)
    w, source = _initial_weight(exam, layer)
    bounds = _bounds_ratio(rv, pv, eps)
    if w is not None and w < UNINFORMATIVE_WEIGHT:
        tm = rm / (1.0 - w)
        tv = np.maximum(rv - w, 0.0) / (1.0 - w)
        ratio = np.sqrt((pv + eps) / (tv + eps))
        shift = (pm - tm) / np.sqrt(tv + eps)
        basis = f"moving statistics with the initial values taken out (steps: {source})"
        if source == "optimizer iterations":
            # A fresh optimizer for fine-tuning restarts its count while the moving
            # statistics go on from the pretrained ones: only agreeing evidence counts.
            ratio = np.where(np.abs(np.log(bounds)) < np.abs(np.log(ratio)), bounds, ratio)
            ratio = np.where(bounds == 1.0, 1.0, ratio)
            shift = np.zeros_like(pm)
    else:
        ratio = bounds
        shift = np.zeros_like(pm)  # the training mean can be anywhere on the ray through rm
        basis = "bounds that hold for any number of training steps"
    live = pv > 1e-3 * eps  # constant channels say nothing about scale
    if not live.any():
        return None
    factor = float(np.median(ratio[live]))
    shift_median = float(np.median(np.abs(shift[live])))
    # The same numbers against the moving statistics as they are (no initial values taken
    # out): a mismatch must show there too, so statistics that already fit the data (a
    # recalibrated model, statistics loaded or averaged rather than learned from 0/1) never
    # count as one.
    direct = float(np.median(np.sqrt((pv[live] + eps) / (rv[live] + eps))))
    direct_shift = float(np.median(np.abs(pm[live] - rm[live]) / np.sqrt(rv[live] + eps)))
    return {
        "scale_factor": factor,
        "shift_std": shift_median,
        "scale_factor_vs_moving": direct,
        "shift_std_vs_moving": direct_shift,
        "initial_weight": w,
        "steps_source": source,
        "basis": basis,
        "data_mean": float(np.mean(pm)),
        "data_std": float(np.sqrt(np.mean(pv))),
        "moving_mean": float(np.mean(rm)),
        "moving_std": float(np.sqrt(np.mean(rv))),
    }


def measure_mismatch(exam: Exam) -> dict | None:
    """``{path: numbers}`` of the first BN layers that see mismatched data (``None``: none)."""
    hits = {}
    for layer in first_bn_layers(exam):
        m = layer_mismatch(exam, layer)
        if m is None:
            continue
        factor, direct = m["scale_factor"], m["scale_factor_vs_moving"]
        big = factor >= SCALE_MISMATCH and direct >= SCALE_MISMATCH
        small = factor <= 1 / SCALE_MISMATCH and direct <= 1 / SCALE_MISMATCH
        shifted = m["shift_std"] >= SHIFT_MISMATCH and m["shift_std_vs_moving"] >= SHIFT_MISMATCH
        if big or small or shifted:
            hits[layer.path] = m
    return hits or None


def describe(hits: dict, exam: Exam | None = None) -> str:
    """One sentence with the numbers: what the data looks like to the first BN layer."""
    path, m = next(iter(hits.items()))
    factor = m["scale_factor"]
    if factor >= SCALE_MISMATCH:
        what = f"about {factor:.3g}x the scale it saw in training"
    elif factor <= 1 / SCALE_MISMATCH:
        what = f"about 1/{1 / factor:.3g} of the scale it saw in training"
    else:
        what = f"shifted by {m['shift_std']:.3g} training standard deviations"
    tail = ""
    if exam is not None and exam.input_min is not None:
        tail = f"; the inputs range over [{exam.input_min:.3g}, {exam.input_max:.3g}]"
    return f"At {path} (the first BN layer) the data is {what}{tail}"


def check_data_mismatch(exam: Exam) -> list[Finding]:
    if not exam.mismatch:
        return []
    hits = exam.mismatch
    hint = ""
    factor = next(iter(hits.values()))["scale_factor"]
    # 255x at the input shows as 100-1000x at the first BN: a bias and a ReLU before it
    # cut a different share of the activations at each scale.
    if 100 <= factor <= 1000:
        hint = " (as for pixels at 0-255 given to a model trained on 0-1)"
    elif 1 / 1000 <= factor <= 1 / 100:
        hint = " (as for pixels at 0-1 given to a model trained on 0-255)"
    return [
        Finding(
            id="data-mismatch",
            severity="error",
            layer=", ".join(hits),
            message=(
                f"{describe(hits, exam)}{hint}: this is not the data the model was trained on, "
                "so no BN statistic can be judged on it."
            ),
            evidence={"layers": hits, "scale_limit": SCALE_MISMATCH, "shift_limit": SHIFT_MISMATCH},
            fix=scale_fix(factor),
            confirmed=None,
        )
    ]
