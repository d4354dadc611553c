"""Exact population statistics for every BN layer (PreciseBN), on a copy of the model.

During training the moving averages chase statistics of weights that keep changing, and
with a high momentum after few steps they still hold their initial 0/1. Recalibration
freezes the weights and recomputes each layer's mean and variance as the statistics of all
its inputs over the data, pooled and weighted by sample count, like fvcore's
``update_bn_stats`` with its ``_PopulationVarianceEstimator``: training-mode forward passes
(upstream BN layers on batch statistics), dropout disabled, the biased population variance
stored (the unbiased one, ``n / (n - 1)`` times it, for layers that keep that convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bnlab._validation import check_positive_int
from bnlab.doctor.adapters import ModelAdapter, adapt
from bnlab.doctor.capture import Capture
from bnlab.doctor.checks.data import describe, measure_mismatch, scale_advice
from bnlab.doctor.evaluation import evaluate
from bnlab.doctor.exam import Exam, ModeResult
from bnlab.doctor.progress import track
from bnlab.doctor.sources import DataSource, as_sources
from bnlab.errors import DataError


def recalibration_targets(adapter: ModelAdapter) -> set[str]:
    """Paths of the BN layers recalibration rewrites, as :func:`bnlab.nn.precise.precise_bn_stats`.

    Skipped: layers without running statistics, and frozen layers in Keras's sense
    (``trainable=False``: they use their moving statistics even in training, so those are
    part of the frozen function rather than an estimate to refresh).
    """
    return {
        b.path
        for b in adapter.bn_layers()
        if b.uses_batch_stats_in_training and b.tracks_running_stats
    }


def population_stats(
    adapter: ModelAdapter, source: DataSource, max_batches: int | None = None
) -> dict[str, tuple]:
    """``{path: (mean, biased var, values per channel)}`` of every BN layer's inputs.

    One pass over ``source``; the model's running statistics are left as they are.
    """
    capture: dict = {}
    total = source.num_samples if max_batches is None else None
    for x, _ in track(source.batches(max_batches), total, "population statistics"):
        adapter.forward(adapter.prepare(x, source.layout), train=True, capture=capture)
    if not source.last_samples:
        raise DataError(f"data: the {source.name} yielded no batches")
    return {path: (*m.numpy(), m.count) for path, m in capture.items()}


def recalibrate_in_place(
    adapter: ModelAdapter, source: DataSource, max_batches: int | None = None
) -> int:
    """Write exact population statistics into ``adapter``'s own model; returns samples seen.

    PyTorch models go through :func:`bnlab.nn.precise.precise_bn_stats`; Keras models through
    the adapter (the same estimator, computed from each BN layer's captured inputs).
    """
    if adapter.framework == "torch":
        from bnlab.nn.precise import precise_bn_stats

        def inputs():
            total = source.num_samples if max_batches is None else None
            for x, _ in track(source.batches(max_batches), total, "recalibrating"):
                yield adapter.prepare(x, source.layout)

        with torch.no_grad():
            seen = precise_bn_stats(adapter.model, inputs())
        if not seen:
            raise DataError(f"data: the {source.name} yielded no batches")
        return int(seen)
    targets = recalibration_targets(adapter)
    stats = population_stats(adapter, source, max_batches)
    adapter.set_running_stats({p: s for p, s in stats.items() if p in targets})
    return source.last_samples


def recalibrate(model, data, *, batches: int | None = None, batch_size: int = 256):
    """A repaired copy of ``model`` whose BN moving statistics are the data's exact statistics.

    Parameters
    ----------
    model:
        A ``torch.nn.Module`` (``torch.nn.BatchNorm*d`` and ``bnlab.BatchNorm`` layers) or a
        Keras 3 model. It is never modified: a deep copy (PyTorch) or a clone with the same
        weights and compile settings (Keras) is repaired and returned.
    data:
        Anything :func:`bnlab.diagnose` accepts; for a bnlab Dataset the training split is used.
    batches:
        Use at most this many batches (``None``: one full pass).
    batch_size:
        Samples per forward pass when ``data`` is tensors/arrays/a Dataset (a DataLoader keeps
        its own). Statistics are pooled over all samples, so it only affects speed and memory.
    """
    if batches is not None:
        batches = check_positive_int("batches", batches)
    source, _ = as_sources(data, batch_size)
    work = adapt(model).copy()
    recalibrate_in_place(work, source, batches)
    return work.model


DATA_CHECK_BATCHES = 8  # batches read to check the data before recalibrating


def data_mismatch(
    adapter: ModelAdapter, source: DataSource, max_batches: int | None = None
) -> dict | None:
    """The data check of :mod:`bnlab.doctor.checks.data` on a few batches (``None``: matches)."""
    layers = adapter.bn_layers()
    if not layers:
        return None
    limit = DATA_CHECK_BATCHES if max_batches is None else min(max_batches, DATA_CHECK_BATCHES)
    capture = Capture()
    for x, _ in source.batches(limit):
        adapter.forward(adapter.prepare(x, source.layout), train=True, capture=capture)
    exam = Exam(
        framework=adapter.framework,
        bn=layers,
        graph=adapter.graph(),
        running=adapter.running_stats(),
        population={path: (*m.numpy(), m.count) for path, m in capture.items()},
        batchwise=capture.batch_averages(),
        optimizer_steps=adapter.optimizer_steps(),
    )
    return measure_mismatch(exam)


@dataclass
class Repair:
    """A recalibrated model and its inference-mode scores before and after."""

    model: Any
    before: ModeResult  # on the diagnosed (training) data, with the stored moving averages
    after: ModeResult  # the same data, with exact population statistics
    test_before: ModeResult | None = None  # the test split of a bnlab Dataset
    test_after: ModeResult | None = None
    bn_layers: int = 0
    warning: str | None = None  # set when recalibrated on mismatched data (force=True)


def repair(
    model,
    data,
    *,
    batches: int | None = None,
    batch_size: int = 256,
    in_place: bool = False,
    force: bool = False,
) -> Repair:
    """Recalibrate ``model`` (a copy unless ``in_place``) and score it before and after.

    What ``bnlab fix`` runs. The data is checked first (``data-mismatch``, a few batches):
    on data that does not match what the model was trained on, recalibrating would fit the
    statistics to inputs the model never sees, so a :class:`~bnlab.errors.DataError` is raised
    unless ``force`` (then ``Repair.warning`` says what was wrong). Passes: one before, one to
    recalibrate, one after over the training data (plus before/after over a test split).
    """
    if batches is not None:
        batches = check_positive_int("batches", batches)
    train, test = as_sources(data, batch_size)
    adapter = adapt(model)
    work = adapter if in_place else adapter.copy()
    warning = None
    hits = data_mismatch(work, train, batches)
    if hits:
        factor = next(iter(hits.values()))["scale_factor"]
        warning = (
            f"{describe(hits)}: this is not the data the model was trained on "
            f"(likely fix: {scale_advice(factor)})"
        )
        if not force:
            raise DataError(
                f"data: {warning}; refusing to recalibrate on it (--force to do it anyway)"
            )
    before = evaluate(work, train, max_batches=batches)
    test_before = evaluate(work, test, max_batches=batches) if test is not None else None
    recalibrate_in_place(work, train, batches)
    return Repair(
        model=work.model,
        before=before,
        after=evaluate(work, train, max_batches=batches),
        test_before=test_before,
        test_after=evaluate(work, test, max_batches=batches) if test is not None else None,
        bn_layers=len(work.bn_layers()),
        warning=warning,
    )
