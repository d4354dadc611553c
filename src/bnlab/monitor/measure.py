"""One measurement of a model's BN during training, on bounded samples, restoring everything.

On the user's own model (no copy: a copy per epoch would cost more than the measurement),
through the doctor's adapters:

1. the validation sample in inference mode, BN on its moving averages;
2. exact statistics of every BN layer's inputs over the training sample (one training-mode
   forward per chunk, dropout off, pooled over all values as PreciseBN does:
   :class:`~bnlab.doctor.moments.PooledMoments`);
3. the validation sample again with those exact statistics swapped in;

then every BN buffer (PyTorch) or non-trainable variable (Keras) is put back bit for bit and
the global random streams are as they were, in ``finally``.

Keras models do 2 and 3 in one call per validation chunk (a Keras call costs far more than a
PyTorch one): the batch is the training sample followed by validation samples, and every BN
layer normalises all rows with the exact statistics of the training rows, which is
inference mode with those statistics swapped in (:func:`keras_exact_pass`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from bnlab.doctor import rules
from bnlab.doctor.adapters import BNLayer, ModelAdapter
from bnlab.doctor.metrics import LossFn, Meter, predictions
from bnlab.doctor.moments import PooledMoments
from bnlab.doctor.recalibrate import recalibration_targets
from bnlab.doctor.torch_graph import is_bn


@dataclass
class LayerReading:
    """One BN layer at one measurement."""

    path: str
    momentum: float | None  # Keras convention
    steps: int | None
    initial_weight: float | None  # momentum ** steps
    mean_error_std: float | None = None
    variance_ratio_median: float | None = None
    nonfinite: dict = field(default_factory=dict)
    changed: bool | None = None  # moving statistics differ from the previous measurement
    expected_to_update: bool = True


@dataclass
class Reading:
    """What one measurement found (accuracies are ``None`` without class labels)."""

    samples_val: int
    samples_train: int
    exact_from: str  # "training" or "validation" (no training inputs were seen)
    inference_accuracy: float | None
    exact_accuracy: float | None
    inference_loss: float | None
    exact_loss: float | None
    gained: int | None  # samples right only with exact statistics
    lost: int | None  # samples right only with the moving averages
    layers: list[LayerReading]
    running: dict  # {path: (mean, var)} as stored, for the next change test
    population: dict  # {path: (mean, biased var, count)} exact statistics


@contextlib.contextmanager
def restored_state(adapter: ModelAdapter):
    """Every BN buffer / non-trainable variable and the global RNG streams, put back after."""
    model = adapter.model
    if adapter.framework == "torch":
        saved = [
            (b, b.detach().clone())
            for _, m in model.named_modules()
            if is_bn(m)
            for b in m.buffers()
            if b is not None
        ]
        devices = sorted({b.device.index for b, _ in saved if b.device.type == "cuda"})
    else:
        saved = [(v, np.array(v.numpy(), copy=True)) for v in model.non_trainable_variables]
        devices = []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for var, value in saved:
                if isinstance(value, torch.Tensor):
                    var.copy_(value)
                else:
                    var.assign(value)


def _chunks(x: torch.Tensor, y, size: int):
    """Slices of at most ``size`` samples; a last slice of one joins the one before.

    A BN layer in training mode cannot normalise a batch of one sample.
    """
    bounds = list(range(0, x.shape[0], size)) + [x.shape[0]]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    for i, j in zip(bounds[:-1], bounds[1:], strict=False):
        yield x[i:j], (None if y is None else y[i:j])


class LossMeter(Meter):
    """A :class:`Meter` for targets that are not class labels: the mean loss only."""

    def add(self, logits: torch.Tensor, y: torch.Tensor | None) -> None:
        n = logits.shape[0]
        self.n += n
        if y is not None:
            self.labelled += n
            self.loss_sum += float(self.loss_fn(logits.float(), y.to(logits.device))) * n

    @property
    def accuracy(self) -> None:
        return None


def _score(
    adapter, x, y, loss_fn: LossFn, chunk: int, classify: bool = True
) -> tuple[Meter, torch.Tensor | None]:
    """Inference-mode loss/accuracy and, with class labels, which samples are right."""
    meter, right = (Meter if classify else LossMeter)(loss_fn), []
    if not classify:
        for xb, yb in _chunks(x, y, chunk):
            meter.add(adapter.forward(adapter.prepare(xb, "as-given"), train=False), yb)
        return meter, None
    for xb, yb in _chunks(x, y, chunk):
        logits = adapter.forward(adapter.prepare(xb, "as-given"), train=False)
        meter.add(logits, yb)
        if yb is not None:
            right.append(predictions(logits).cpu() == yb.reshape(-1).long().cpu())
    return meter, (torch.cat(right) if right else None)


def _keras_bn_call(layer, n_head: int, capture: dict | None):
    """A Keras BN ``call`` normalising every row with the statistics of the first ``n_head``."""

    def call(inputs, *args, **kwargs):
        t = torch.as_tensor(inputs)
        axis = layer.axis % t.dim()
        head = t[:n_head]
        if capture is not None:
            capture.setdefault(layer.name, PooledMoments()).update(head, axis)
        dims = [d for d in range(t.dim()) if d != axis]
        mean = head.mean(dim=dims, keepdim=True)
        var = head.var(dim=dims, unbiased=False, keepdim=True)
        shape = [1] * t.dim()
        shape[axis] = -1
        inv = torch.rsqrt(var + layer.epsilon)
        if getattr(layer, "scale", False) and layer.gamma is not None:
            inv = inv * torch.as_tensor(layer.gamma.value).reshape(shape)
        out = (t - mean) * inv
        if getattr(layer, "center", False) and layer.beta is not None:
            out = out + torch.as_tensor(layer.beta.value).reshape(shape)
        return out

    return call


def keras_exact_pass(adapter, x_train, x_val, y_val, loss_fn: LossFn, chunk: int,
                     classify: bool = True):  # fmt: skip
    """Exact-statistics scores of a Keras model's validation rows, and the exact statistics.

    One call per chunk of validation samples: ``[training sample; chunk]``, each BN layer
    normalising with the training rows' statistics (captured on the first call).
    """
    bns = [lay for lay in adapter._layers if type(lay).__name__ == "BatchNormalization"]
    targets = recalibration_targets(adapter)
    capture: dict = {}
    meter, right = (Meter if classify else LossMeter)(loss_fn), []
    n_head = int(x_train.shape[0])
    for k, (xb, yb) in enumerate(_chunks(x_val, y_val, chunk)):
        with contextlib.ExitStack() as stack:
            for lay in bns:
                if lay.name in targets:
                    fn = _keras_bn_call(lay, n_head, capture if k == 0 else None)
                    stack.enter_context(adapter._patched(lay, fn))
            both = torch.cat([x_train.to(xb.dtype), xb])
            logits = adapter.forward(adapter.prepare(both, "as-given"), train=False)[n_head:]
        meter.add(logits, yb)
        if yb is not None and classify:
            right.append(predictions(logits).cpu() == yb.reshape(-1).long().cpu())
    population = {p: (*m.numpy(), m.count) for p, m in capture.items()}
    return meter, (torch.cat(right) if right else None), population


def _steps(adapter: ModelAdapter, layer: BNLayer) -> int | None:
    if layer.steps is not None:
        return layer.steps
    return adapter.optimizer_steps() if adapter.framework == "keras" else None


def expected_to_update(layer: BNLayer) -> bool:
    """Whether a training step should move this layer's statistics."""
    if not (layer.uses_batch_stats_in_training and layer.tracks_running_stats):
        return False
    if layer.momentum is not None and layer.momentum >= 1.0:
        return False
    # PyTorch's frozen BN (eval mode and no trainable parameter) is frozen on purpose.
    return not (layer.in_train_mode is False and layer.params_frozen)


def measure(
    adapter: ModelAdapter,
    x_val: torch.Tensor,
    y_val: torch.Tensor | None,
    x_train: torch.Tensor | None,
    loss_fn: LossFn,
    *,
    chunk: int = 512,
    previous: dict | None = None,
    classify: bool = True,
) -> Reading:
    """Measure ``adapter``'s model now (see the module docstring); its state is unchanged.

    ``classify=False`` (targets that are not class labels): losses only, no accuracy.
    """
    bn = adapter.bn_layers()
    running = adapter.running_stats()
    exact_from = "training"
    if x_train is None:
        x_train, exact_from = x_val, "validation"
    with restored_state(adapter):
        inference, right_moving = _score(adapter, x_val, y_val, loss_fn, chunk, classify)
        capture: dict = {}
        population: dict = {}
        if bn and adapter.framework == "keras" and x_train.shape[0] <= chunk:
            exact, right_exact, population = keras_exact_pass(
                adapter, x_train, x_val, y_val, loss_fn, chunk, classify
            )
        elif bn:
            for xb, _ in _chunks(x_train, None, chunk):
                adapter.forward(adapter.prepare(xb, "as-given"), train=True, capture=capture)
            population = {p: (*m.numpy(), m.count) for p, m in capture.items()}
            targets = recalibration_targets(adapter)
            adapter.set_running_stats({p: s for p, s in population.items() if p in targets})
            exact, right_exact = _score(adapter, x_val, y_val, loss_fn, chunk, classify)
        else:
            exact, right_exact = inference, right_moving
    gained = lost = None
    if not classify:
        right_moving = right_exact = None
    if right_moving is not None and right_exact is not None and inference.accuracy is not None:
        gained = int((right_exact & ~right_moving).sum())
        lost = int((right_moving & ~right_exact).sum())
    layers = []
    for layer in bn:
        steps = _steps(adapter, layer)
        reading = LayerReading(
            path=layer.path,
            momentum=layer.momentum,
            steps=steps,
            initial_weight=rules.initial_weight(layer.momentum, steps),
            expected_to_update=expected_to_update(layer),
        )
        if layer.path in running:
            rm, rv = running[layer.path]
            reading.nonfinite = rules.nonfinite_channels(rm, rv)
            if layer.path in population and not rules.statistics_broken(reading.nonfinite):
                pm, pv, _ = population[layer.path]
                dist = rules.stat_distance(rm, rv, pm, pv, layer.epsilon)
                reading.mean_error_std = dist["mean_error_std"]
                reading.variance_ratio_median = dist["variance_ratio_median"]
            if previous is not None and layer.path in previous:
                pm_, pv_ = previous[layer.path]
                reading.changed = not (
                    np.array_equal(rm, pm_, equal_nan=True) and np.array_equal(rv, pv_, equal_nan=True)
                )
        layers.append(reading)
    return Reading(
        samples_val=int(x_val.shape[0]),
        samples_train=int(x_train.shape[0]),
        exact_from=exact_from,
        inference_accuracy=inference.accuracy if classify else None,
        exact_accuracy=exact.accuracy if classify else None,
        inference_loss=inference.loss,
        exact_loss=exact.loss,
        gained=gained,
        lost=lost,
        layers=layers,
        running=running,
        population=population,
    )
