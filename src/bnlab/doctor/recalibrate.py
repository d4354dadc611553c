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
from bnlab.doctor.evaluation import evaluate
from bnlab.doctor.exam import ModeResult
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
    for x, _ in source.batches(max_batches):
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
            for x, _ in source.batches(max_batches):
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


@dataclass
class Repair:
    """A recalibrated model and its inference-mode scores before and after."""

    model: Any
    before: ModeResult  # on the diagnosed (training) data, with the stored moving averages
    after: ModeResult  # the same data, with exact population statistics
    test_before: ModeResult | None = None  # the test split of a bnlab Dataset
    test_after: ModeResult | None = None
    bn_layers: int = 0


def repair(
    model, data, *, batches: int | None = None, batch_size: int = 256, in_place: bool = False
) -> Repair:
    """Recalibrate ``model`` (a copy unless ``in_place``) and score it before and after.

    What ``bnlab fix`` runs. Passes: one before, one to recalibrate, one after over the
    training data (plus before/after over a Dataset's test split).
    """
    if batches is not None:
        batches = check_positive_int("batches", batches)
    train, test = as_sources(data, batch_size)
    adapter = adapt(model)
    work = adapter if in_place else adapter.copy()
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
    )
