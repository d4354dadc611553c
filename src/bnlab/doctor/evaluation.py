"""Inference-mode evaluation of an adapter over a data source (one pass)."""

from __future__ import annotations

from bnlab.doctor.exam import ModeResult
from bnlab.doctor.metrics import LossFn, Meter, resolve_loss
from bnlab.doctor.model_view import ModelAdapter
from bnlab.doctor.progress import track
from bnlab.doctor.sources import DataSource
from bnlab.errors import DataError


def mode_result(meter: Meter) -> ModeResult:
    return ModeResult(accuracy=meter.accuracy, loss=meter.loss, samples=meter.n)


def evaluate(
    adapter: ModelAdapter,
    source: DataSource,
    loss_fn: LossFn | None = None,
    max_batches: int | None = None,
) -> ModeResult:
    """Loss and accuracy with BN on its moving averages (inference mode), one pass."""
    meter = Meter(loss_fn or resolve_loss(None))
    total = source.num_samples if max_batches is None else None
    for x, y in track(source.batches(max_batches), total, f"evaluating the {source.name}"):
        meter.add(adapter.forward(adapter.prepare(x, source.layout), train=False), y)
    if not meter.n:
        raise DataError(f"data: the {source.name} yielded no batches")
    return mode_result(meter)
