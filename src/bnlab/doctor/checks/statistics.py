"""Checks on the numbers inside BN layers and on the inputs.

Units: distances between running and population statistics are in population standard
deviations of the channel (``(running_mean - mean) / sqrt(var + epsilon)``); momentum is in
Keras's convention (fraction kept per step), so after ``n`` steps the initial moving values
(mean 0, variance 1) still weigh ``momentum ** n``.
"""

from __future__ import annotations

import numpy as np

from bnlab.doctor import rules
from bnlab.doctor.checks.state import at_initial_values
from bnlab.doctor.exam import Exam
from bnlab.doctor.findings import Finding, layer_summary
from bnlab.doctor.thresholds import (  # noqa: F401 - re-exported
    DEAD_FRACTION,
    DEGENERATE_FRACTION,
    INPUT_SCALE_HIGH,
    INPUT_SCALE_LOW,
    MEAN_ERROR,
    MIN_SEPARATION,
    STALE_WEIGHT,
    TINY_GAMMA,
    VAR_RATIO,
)


def running_vs_population(exam: Exam, path: str, epsilon: float) -> dict | None:
    """How far the stored statistics of ``path`` are from the data's, and how stale they look.

    ``estimated_initial_weight`` solves ``running_mean = w * 0 + (1 - w) * mean`` by least
    squares over channels (exact when the statistics were stationary during training); it
    is ``None`` when the initial value and the population mean are too close to tell apart.
    """
    if path not in exam.running or path not in exam.population:
        return None
    rm, rv = exam.running[path]
    pm, pv, _count = exam.population[path]
    return rules.stat_distance(rm, rv, pm, pv, epsilon)


def check_momentum_too_high_for_steps(exam: Exam) -> list[Finding]:
    layers: dict[str, dict] = {}
    for layer in exam.bn:
        # Frozen layers (Keras trainable=False) never update: their momentum is irrelevant.
        if layer.momentum is None or not layer.tracks_running_stats:
            continue
        if not layer.uses_batch_stats_in_training:
            continue
        dist = running_vs_population(exam, layer.path, layer.epsilon)
        if dist is None or at_initial_values(exam, layer):
            continue  # statistics never updated at all: stats-never-updated says why
        steps, source = exam.steps_for(layer)
        weight = rules.initial_weight(layer.momentum, steps)
        if weight is None:
            weight = dist["estimated_initial_weight"]
        if not rules.momentum_too_high(weight, dist):
            continue
        layers[layer.path] = {
            "momentum": layer.momentum,
            "steps": steps,
            "steps_source": source,
            "initial_weight": weight,
            **dist,
        }
    if not layers:
        return []
    first = next(iter(layers.values()))
    steps = first["steps"]
    if steps is None and first["estimated_initial_weight"]:
        # the step count the estimated weight implies: momentum ** n = w
        steps = rules.steps_from_weight(first["momentum"], first["estimated_initial_weight"])
    suggestion = rules.momentum_fix_suggestion(steps) if steps else ""
    how = (
        f"after {steps} steps" if first["steps"] is not None else "(estimated from the statistics)"
    )
    return [
        Finding(
            id="momentum-too-high-for-steps",
            severity="warning",
            layer=layer_summary(list(layers)),
            message=(
                f"With momentum {first['momentum']:g} the initial moving values still weigh "
                f"{first['initial_weight']:.2f} {how}, so the moving averages of "
                f"{len(layers)} BN layer(s) are far from the statistics of the data."
            ),
            evidence={"layers": layers},
            fix=(
                "Recalibrate now (`bnlab fix` / `bnlab.recalibrate`), and train with a lower "
                "momentum or for more steps." + suggestion
            ),
        )
    ]


def check_degenerate_channels(exam: Exam) -> list[Finding]:
    findings = []
    for layer in exam.bn:
        dead_var = DEAD_FRACTION * layer.epsilon
        n = layer.num_features
        constant = np.zeros(n, bool)
        collapsed = np.zeros(n, bool)
        if layer.path in exam.population:
            pv = exam.population[layer.path][1]
            constant = pv <= dead_var
            if layer.path in exam.running:
                collapsed = (exam.running[layer.path][1] <= dead_var) & (pv > 100 * dead_var)
        elif layer.path in exam.running:
            constant = exam.running[layer.path][1] <= dead_var
        zero_gamma = np.zeros(n, bool)
        if layer.path in exam.gammas:
            zero_gamma = np.abs(exam.gammas[layer.path]) <= TINY_GAMMA
        bad = constant | collapsed | zero_gamma
        fraction = float(bad.mean()) if n else 0.0
        # A few dead units are normal in a trained ReLU net; a quarter of a layer is not,
        # and a collapsed running variance blows inference up whatever the count.
        if not (collapsed.any() or fraction >= DEGENERATE_FRACTION):
            continue
        parts = []
        if constant.any():
            parts.append(f"{int(constant.sum())} constant on the data")
        if collapsed.any():
            parts.append(f"{int(collapsed.sum())} with ~zero running variance but varying inputs")
        if zero_gamma.any():
            parts.append(f"{int(zero_gamma.sum())} with gamma ~0")
        findings.append(
            Finding(
                id="degenerate-channels",
                severity="warning",
                layer=layer.path,
                message=(
                    f"{int(bad.sum())} of {n} channels of {layer.label} carry no signal "
                    f"({'; '.join(parts)})."
                ),
                evidence={
                    "channels": n,
                    "degenerate": int(bad.sum()),
                    "fraction": fraction,
                    "constant_on_data": np.flatnonzero(constant)[:32],
                    "collapsed_running_variance": np.flatnonzero(collapsed)[:32],
                    "zero_gamma": np.flatnonzero(zero_gamma)[:32],
                    "epsilon": layer.epsilon,
                },
                fix=(
                    "Constant channels usually come from dead ReLUs before BN: lower the "
                    "learning rate, use BN before the activation or LeakyReLU; a collapsed "
                    "running variance needs recalibration (`bnlab fix`); gamma ~0 channels can "
                    "be pruned."
                ),
            )
        )
    return findings


def check_unnormalized_inputs(exam: Exam) -> list[Finding]:
    if not exam.bn or exam.input_mean is None:
        return []
    inputs = {n.name for n in exam.graph.nodes.values() if n.kind == "input"}
    first = [n for n in exam.graph.nodes.values() if inputs.intersection(n.inputs)]
    if any(n.kind == "rescale" for n in first):
        return []  # the model scales its own inputs
    scale = float(np.max(np.maximum(np.abs(exam.input_mean), exam.input_std)))
    if INPUT_SCALE_LOW <= scale <= INPUT_SCALE_HIGH:
        return []
    high = scale > INPUT_SCALE_HIGH
    return [
        Finding(
            id="unnormalized-inputs",
            severity="warning",
            layer=None,
            message=(
                f"The inputs are far from unit scale (|mean| or std up to {scale:.3g}, values "
                f"in [{exam.input_min:.3g}, {exam.input_max:.3g}]), which makes the first "
                "layers' statistics huge"
                + (" and the moving averages slow to leave their initial 0/1" if high else "")
                + "."
            ),
            evidence={
                "input_mean": exam.input_mean[:64],
                "input_std": exam.input_std[:64],
                "input_min": exam.input_min,
                "input_max": exam.input_max,
                "scale": scale,
            },
            fix=(
                "Scale inputs to about unit range (pixels: x / 255; features: standardise), "
                "or start the model with a Rescaling/Normalization layer, then retrain."
            ),
        )
    ]
