"""Batch statistics across processes (``torch.distributed``): synchronized BN and exact recalibration.

Both pool per-process ``(count, mean, M2)`` exactly (Chan et al.'s parallel formula, in
float64) with two all-reduces, so the result equals the statistics of the union of every
process's data, whatever the batch size on each process:

* :func:`synchronized_moments` inside a training step, differentiable: it uses
  ``torch.distributed.nn.functional.all_reduce``, whose backward all-reduces the incoming
  gradients, so each process gets the gradient of the *sum* of all processes' losses with
  respect to its own inputs, as if the concatenated batch had been one batch (what
  ``torch.nn.SyncBatchNorm`` computes).
* :func:`all_reduce_pooled_moments` after a statistics pass (:func:`bnlab.nn.precise_bn_stats`),
  so that every process writes identical population statistics.

Without an initialised process group (or with ``torch.distributed`` unavailable) nothing
is communicated: :func:`process_group_active` is False and synchronized layers say so once.
"""

from __future__ import annotations

import warnings

import torch

from bnlab.nn import bn_math

_warned_inactive = False


def process_group_active() -> bool:
    """True when ``torch.distributed`` is available and a default process group is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    return torch.distributed.get_world_size() if process_group_active() else 1


def warn_inactive_once() -> None:
    """Warn (once per process) that ``synchronized=True`` runs with local statistics."""
    global _warned_inactive
    if not _warned_inactive:
        _warned_inactive = True
        warnings.warn(
            "bnlab.BatchNorm(synchronized=True): no torch.distributed process group is "
            "initialised, so batch statistics are this process's own (as synchronized=False)",
            RuntimeWarning,
            stacklevel=3,
        )


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def synchronized_moments(
    xc: torch.Tensor, mask_c: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, biased variance, count)`` of every process's ``xc`` together.

    ``xc`` is channels-first ``(N, C, *S)``; ``mask_c`` (bool, ``(N, 1, *S)``) leaves out
    positions as :func:`bnlab.nn.bn_math.masked_moments` does. Every process of the default
    group must call this in the same order (it is a collective). The statistics come back
    in ``xc``'s dtype (the count as a 0-d tensor), differentiable with respect to ``xc``.
    """
    dims = bn_math.stat_dims(xc)
    if mask_c is None:
        var_l, mean_l = torch.var_mean(xc, dim=dims, correction=0)
        count_l = torch.full((), xc.numel() // xc.shape[1], dtype=torch.float64, device=xc.device)
        m2_l = var_l.double() * count_l
    else:
        count_l = mask_c.to(torch.float64).sum(dims).reshape(())
        total = torch.where(mask_c, xc, 0).sum(dims)
        mean_l = total / count_l.clamp(min=1.0).to(xc.dtype)
        diff = torch.where(mask_c, xc - mean_l.reshape(1, -1, *([1] * (xc.dim() - 2))), 0)
        m2_l = diff.square().sum(dims).double()
    mean_l = mean_l.double()
    first = _all_reduce(torch.cat([mean_l * count_l, count_l.reshape(1)]))
    count = first[-1]
    mean = first[:-1] / count.clamp(min=bn_math.KERAS_FUZZ)
    m2 = _all_reduce(m2_l + count_l * (mean_l - mean).square())
    var = m2 / count.clamp(min=bn_math.KERAS_FUZZ)
    return mean.to(xc.dtype), var.to(xc.dtype), count.to(xc.dtype)


@torch.no_grad()
def all_reduce_pooled_moments(
    moments: list[tuple[float | int, torch.Tensor | None, torch.Tensor | None]],
    like: list[torch.Tensor],
) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Pool each entry's ``(count, mean, M2)`` over every process of the default group.

    ``moments[i]`` is one BN layer's accumulated statistics on this process (``mean``/``M2``
    may be ``None`` when the layer saw nothing here); ``like[i]`` is a tensor of that layer's
    channel count (its running mean), for the shape and device. Returns the pooled
    ``(count, mean, M2)`` per layer in float64, identical on every process. All layers go
    through two all-reduces in total, and every process must pass the layers in the same order.
    """
    if not moments:
        return []
    device = like[0].device
    counts, weighted, means = [], [], []
    for (count, mean, _), ref in zip(moments, like, strict=True):
        n = float(count) if mean is not None else 0.0
        m = mean.double() if mean is not None else torch.zeros(ref.shape, dtype=torch.float64)
        counts.append(n)
        means.append(m.to(device))
        weighted.append(m.to(device) * n)
    local_counts = torch.tensor(counts, dtype=torch.float64, device=device)
    first = torch.cat([local_counts, *weighted])
    torch.distributed.all_reduce(first)
    total_counts = first[: len(moments)]
    pooled_means, offset = [], len(moments)
    for m in means:
        k = m.numel()
        pooled_means.append(
            first[offset : offset + k] / total_counts[len(pooled_means)].clamp(min=1)
        )
        offset += k
    second = []
    for (_, mean, m2), m, n, pooled in zip(moments, means, counts, pooled_means, strict=True):
        local_m2 = m2.double().to(device) if mean is not None else torch.zeros_like(m)
        second.append(local_m2 + n * (m - pooled).square())
    flat = torch.cat(second)
    torch.distributed.all_reduce(flat)
    out, offset = [], 0
    for i, pooled in enumerate(pooled_means):
        k = pooled.numel()
        out.append((int(round(float(total_counts[i]))), pooled, flat[offset : offset + k]))
        offset += k
    return out


def pool_accumulators(moments, layers) -> None:
    """Replace each :class:`bnlab.nn.moments.PooledMoments` state by the pooled one of every process.

    The hook :func:`bnlab.nn.precise_bn_stats` calls under a process group, before writing
    the statistics; ``moments[i]`` holds what BN layer ``layers[i]`` saw here, in model order.
    A layer no process saw keeps ``mean = None`` (nothing is written).
    """
    pooled = all_reduce_pooled_moments(
        [(m.count, m.mean, m.m2) for m in moments],
        [layer.running_mean for layer in layers],
    )
    for m, (count, mean, m2) in zip(moments, pooled, strict=True):
        if count > 0:
            m.count, m.mean, m.m2 = count, mean, m2
