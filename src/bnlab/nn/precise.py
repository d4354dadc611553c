"""Precise BN: replace moving averages by the exact population statistics of some data.

During training the moving averages mix statistics of many past versions of the network
(and, with ``momentum=0.99`` and few steps, mostly their initial values). Recomputing them
with the weights fixed gives the statistics the network actually needs at inference (Wu &
Johnson, "Rethinking Batch in BatchNorm", 2021; fvcore's ``update_bn_stats``).

bnlab's estimator is exact rather than fvcore's average of per-batch variances: per channel,
the mean over all values seen and the pooled variance ``E[(x - mean)^2]`` over all of them
(:class:`bnlab.nn.moments.PooledMoments`: batches weighted by their number of values,
combined with Chan's formula), the same numbers as concatenating the data into one batch.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from bnlab._validation import check_positive_int
from bnlab.errors import ConfigError
from bnlab.nn import distributed
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.moments import PooledMoments
from bnlab.nn.probe import train_mode
from bnlab.nn.surgery import find_bn_layers


class _Accumulator:
    """One layer's inputs pooled by :class:`bnlab.nn.moments.PooledMoments` (each batch
    reduced in at least float32, pooled in float64), written into the layer at the end."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.moments = PooledMoments(reduce_dtype=torch.float32)

    def axis(self, x: torch.Tensor) -> int:
        return self.layer._channel_axis(x) if isinstance(self.layer, BatchNorm) else 1

    def hook(self, module: nn.Module, args) -> None:
        x = args[0]
        self.moments.update(x, self.axis(x))

    def unbiased(self) -> bool:
        if isinstance(self.layer, BatchNorm):
            return self.layer.variance == "unbiased"
        return True  # torch.nn.BatchNorm*d keeps the unbiased running variance

    @torch.no_grad()
    def write(self) -> None:
        layer, moments = self.layer, self.moments
        if moments.mean is None:
            return
        var = moments.variance(self.unbiased())
        layer.running_mean.copy_(moments.mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(var.to(layer.running_var.dtype))
        if isinstance(layer, BatchNorm) and layer.renorm:
            # Keras derives the inference variance from moving_stddev = sqrt(var + epsilon).
            layer.moving_stddev.copy_(torch.sqrt(var + layer.epsilon).to(layer.moving_stddev.dtype))


def _measured_layers(model: nn.Module) -> list[nn.Module]:
    """BN layers whose statistics are recomputed.

    Skipped: torch layers without running statistics, and bnlab layers with
    ``trainable=False`` (Keras's frozen BN uses its moving statistics even in training, so
    they are part of the frozen function, not an estimate to refresh).
    """
    out = []
    for _, m in find_bn_layers(model):
        if isinstance(m, BatchNorm):
            if m.trainable:
                out.append(m)
        elif m.track_running_stats and m.running_mean is not None:
            out.append(m)
    return out


def _inputs(batches: Iterable, max_batches: int | None):
    """Batch tensors (first element of tuples/lists); a one-sample batch joins its predecessor.

    A BN layer in training mode cannot normalise a single sample of ``(N, C)`` data, and a
    trailing batch of one is common (``N % batch_size == 1``).
    """
    pending = None
    for batch in itertools.islice(batches, max_batches):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor):
            raise ConfigError(
                f"batches: an element of type {type(x).__name__} is not a tensor or an "
                "(x, y) pair of tensors"
            )
        if pending is None:
            pending = x
        elif x.shape[0] < 2:
            pending = torch.cat([pending, x.to(pending.device)])
        else:
            yield pending
            pending = x
    if pending is not None:
        yield pending


def snapshot_other_buffers(model: nn.Module, layers: list[nn.Module]) -> Callable[[], None]:
    """A function that puts every buffer outside ``layers`` back exactly as it is now.

    Forward passes update more than BN: a quantization observer's min/max, a step counter.
    A buffer that forward replaced or resized is put back as the original tensor object.
    """
    own = {id(b) for m in layers for b in m.buffers(recurse=False)}
    saved = [
        (module, name, buf, buf.detach().clone())
        for module in model.modules()
        for name, buf in module._buffers.items()
        if buf is not None and id(buf) not in own
    ]

    @torch.no_grad()
    def restore() -> None:
        for module, name, buf, value in saved:
            if buf.shape != value.shape:
                buf.set_(value)  # resized in place (per-channel observers start empty)
            else:
                buf.copy_(value)
            module._buffers[name] = buf

    return restore


def _device(model: nn.Module) -> torch.device | None:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return None


@torch.no_grad()
def precise_bn_stats(model: nn.Module, batches: Iterable, *, max_batches: int | None = None) -> int:
    """Recompute, in place, every BN layer's moving mean/variance as exact population statistics.

    Parameters
    ----------
    model:
        Any module holding ``torch.nn.BatchNorm*d`` and/or :class:`bnlab.BatchNorm` layers.
    batches:
        An iterable of input tensors or of ``(x, y)`` tuples (``y`` is ignored), e.g. a
        ``DataLoader``; moved to the model's device. A batch of one sample is merged into the
        previous one.
    max_batches:
        Use at most this many batches (``None``: all).

    Returns the number of samples seen (also when the model has no BN layer to update).

    Under an initialised ``torch.distributed`` process group each process passes over its
    own shard and the pooled moments are all-reduced (:mod:`bnlab.nn.distributed`): every
    process writes the same statistics, those of all shards together (the returned count
    is this process's). Every process must call it (it is a collective).

    How (fvcore's PreciseBN, with an exact estimator): the model runs forward once per
    batch with every module in eval mode (dropout off) except the BN layers, which normalise
    with the batch's own statistics as in training. A hook records each BN layer's input;
    after the last batch each layer gets the pooled mean and pooled variance of everything it
    saw: biased (``/ n``) for Keras-convention layers, unbiased (``/ (n - 1)``) for torch
    layers and ``variance="unbiased"`` bnlab layers. bnlab layers normalise with whole-batch
    statistics during these passes (no virtual batches, no renorm correction, no update);
    torch layers' buffers and ``num_batches_tracked`` are restored before the new statistics
    are written, and every buffer of every other module (observers, counters) is exactly as
    it was. Every module's train/eval flag is restored, also when an error occurs (the
    statistics are then left unchanged).
    """
    if max_batches is not None:
        check_positive_int("max_batches", max_batches)
    layers = _measured_layers(model)
    accumulators = [_Accumulator(m) for m in layers]
    device = _device(model)
    saved = {
        id(m): [t.clone() for t in (m.running_mean, m.running_var, m.num_batches_tracked)]
        for m in layers
        if not isinstance(m, BatchNorm)
    }
    hooks = [a.layer.register_forward_pre_hook(a.hook) for a in accumulators]
    restore_other_buffers = snapshot_other_buffers(model, layers)
    seen = 0
    with train_mode(model, False), _restored(layers, saved, hooks, restore_other_buffers):
        for m in layers:
            m.train()
            if isinstance(m, BatchNorm):
                m._stats_pass = True
        for x in _inputs(batches, max_batches):
            seen += x.shape[0]
            if accumulators:
                model(x.to(device) if device is not None else x)
    if distributed.process_group_active():  # each process saw its shard: pool them exactly
        distributed.pool_accumulators([a.moments for a in accumulators], layers)
    for a in accumulators:
        a.write()
    return seen


@contextlib.contextmanager
def _restored(
    layers: list[nn.Module], saved: dict, hooks: list, restore_other_buffers: Callable[[], None]
) -> Iterator[None]:
    """On exit: hooks removed, bnlab layers out of their statistics pass, torch layers'
    buffers and ``num_batches_tracked`` as they were (the new statistics come after), every
    other module's buffers as they were."""
    try:
        yield
    finally:
        restore_other_buffers()
        for h in hooks:
            h.remove()
        for m in layers:
            if isinstance(m, BatchNorm):
                m._stats_pass = False
            else:
                for t, old in zip(
                    (m.running_mean, m.running_var, m.num_batches_tracked),
                    saved[id(m)],
                    strict=True,
                ):
                    t.copy_(old)
