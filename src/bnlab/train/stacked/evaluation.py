"""Inference-mode evaluation of a stack on shared samples, and its exact BN statistics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from bnlab.nn.moments import PooledMoments
from bnlab.nn.probe import train_mode
from bnlab.train.losses import per_sample_loss, predictions
from bnlab.train.stacked.batchnorm import StackedBatchNorm
from bnlab.train.stacked.layers import StackedDropout
from bnlab.train.stacked.model import StackedModel


@torch.no_grad()
def evaluate_stacked(
    model: StackedModel,
    x: torch.Tensor,
    y: torch.Tensor,
    rows: int,
    *,
    loss_epsilon: float | None = None,
    channels_last: bool = False,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run ``(sum of per-sample losses (K,) float64, number correct (K,) int64)`` of the
    shared samples ``x`` in inference mode, in chunks of ``rows`` samples; no host sync."""
    k, device = model.k, x.device
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    with train_mode(model, False):
        for start in range(0, x.shape[0], rows):
            xb, yb = x[start : start + rows], y[start : start + rows]
            if channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast or contextlib.nullcontext():
                logits = model(xb)
            n = xb.shape[0]
            flat = logits.float().reshape(n * k, model.num_outputs)
            yy = yb.repeat_interleave(k)
            # Per run, a sum over one contiguous row, as ``evaluate_sums`` does per chunk.
            per = per_sample_loss(flat, yy, loss_epsilon).view(n, k).t().contiguous()
            loss_sum += per.sum(1, dtype=torch.float64)
            correct += (predictions(flat) == yy).view(n, k).sum(0)
    return loss_sum, correct


@torch.no_grad()
def precise_stats_stacked(
    model: StackedModel, x: torch.Tensor, rows: int, *, channels_last: bool = False
) -> list[tuple[StackedBatchNorm, torch.Tensor, torch.Tensor]]:
    """Exact population BN statistics of every run over the shared samples ``x``.

    Mirrors :func:`bnlab.nn.precise.precise_bn_stats`: the model runs in training mode with
    dropout off, each BN layer normalising with the statistics of the current chunk; per
    layer the chunks' moments are pooled by :class:`bnlab.nn.moments.PooledMoments` (the
    estimator ``precise_bn_stats`` uses) into the population mean and biased variance
    (unbiased ``n/(n-1)`` for an ``"unbiased"`` layer). Returns ``[(layer, mean, var)]``
    without changing the model's buffers.
    """
    bns = [m for _, m in model.stacked_layers() if isinstance(m, StackedBatchNorm)]
    if not bns:
        return []
    pooled = {id(b): PooledMoments(reduce_dtype=torch.float32) for b in bns}
    originals = {}

    def capture(layer):
        def hook(mod, inp, out):
            pooled[id(mod)].update(mod.expand(inp[0]).float(), channel_axis=1)

        return layer.register_forward_hook(hook)

    hooks = [capture(b) for b in bns]
    for b in bns:  # batch statistics without touching the moving averages
        originals[id(b)] = (
            b.moving_mean.clone(),
            b.moving_variance.clone(),
            b.num_batches_tracked.clone(),
        )
    try:
        with train_mode(model, True):
            for m in model.modules():
                if isinstance(m, StackedDropout):
                    m.training = False
            for start in range(0, x.shape[0], rows):
                xb = x[start : start + rows]
                if channels_last and xb.dim() == 4:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                model(xb)
    finally:
        for h in hooks:
            h.remove()
        for b in bns:
            mean, var, nbt = originals[id(b)]
            b.moving_mean.copy_(mean)
            b.moving_variance.copy_(var)
            b.num_batches_tracked.copy_(nbt)
    out = []
    for b in bns:
        moments = pooled[id(b)]
        var = moments.variance(unbiased=b.variance == "unbiased")
        out.append((b, moments.mean.float(), var.float()))
    return out


@contextlib.contextmanager
def _swapped_stats(stats) -> Iterator[None]:
    """Temporarily replace BN moving statistics with ``stats`` (from precise_stats_stacked)."""
    saved = [(b, b.moving_mean.clone(), b.moving_variance.clone()) for b, _, _ in stats]
    try:
        for b, mean, var in stats:
            b.moving_mean.copy_(mean)
            b.moving_variance.copy_(var)
        yield
    finally:
        for b, mean, var in saved:
            b.moving_mean.copy_(mean)
            b.moving_variance.copy_(var)
