"""Exact per-channel moments pooled over many batches: the one estimator bnlab uses.

Precise BN (:func:`bnlab.nn.precise.precise_bn_stats`), the doctor's activation statistics
and the stacked engine's exact evaluation statistics all pool with :class:`PooledMoments`.

The state is ``(count, mean, M2)`` per channel, ``M2`` being the sum of squared deviations
from the mean. Each batch contributes its own centred moments and two states merge with Chan
et al.'s parallel update (:func:`bnlab.nn.functional.merge_moments`), in float64. Nothing is
``E[x^2] - E[x]^2``: on raw 0-255 activations (mean far above the spread) that difference
cancels most of its digits, while the centred form keeps them. The result equals the
statistics of all values concatenated into one batch; the biased variance is ``M2 / count``.

Because the state is three numbers per channel, states from different processes or stack
members merge exactly: :meth:`PooledMoments.merge`, or :meth:`PooledMoments.to_tensor` /
:meth:`PooledMoments.from_tensor` around an all-gather.
"""

from __future__ import annotations

import numpy as np
import torch

from bnlab.nn import functional as BF


class PooledMoments:
    """Running ``count``, ``mean`` and ``m2`` per channel (float64 tensors once updated).

    ``reduce_dtype``: the dtype one batch's mean and variance are reduced in before they are
    promoted to float64 (``None``: float64; ``torch.float32``: at least float32, the cheaper
    choice for large float32 activations, at float32 rounding per batch).
    """

    def __init__(self, reduce_dtype: torch.dtype | None = None) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.reduce_dtype = reduce_dtype

    def update(self, x: torch.Tensor, channel_axis: int = 1) -> PooledMoments:
        """Add every value of ``x``; channel ``c`` pools ``x`` along all axes but
        ``channel_axis``."""
        x = x.detach()
        n = x.numel() // x.shape[channel_axis] if x.shape[channel_axis] else 0
        if n == 0:
            return self
        if self.reduce_dtype is None:
            xc = x.to(torch.float64)
        else:
            xc = x.to(torch.promote_types(x.dtype, self.reduce_dtype))
        mean, var = BF.moments(xc, channel_axis)
        return self.add(n, mean.double(), var.double() * n)

    def add(self, count: int, mean: torch.Tensor, m2: torch.Tensor) -> PooledMoments:
        """Merge a group of ``count`` values with per-channel ``mean`` and ``m2``."""
        if count == 0:
            return self
        if self.mean is None:
            self.count, self.mean, self.m2 = int(count), mean, m2
        else:
            self.count, self.mean, self.m2 = BF.merge_moments(
                self.count, self.mean, self.m2, int(count), mean, m2
            )
        return self

    def merge(self, other: PooledMoments) -> PooledMoments:
        """Pool ``other``'s values into this state (exact, order-independent up to rounding)."""
        if other.mean is None:
            return self
        return self.add(other.count, other.mean, other.m2)

    @property
    def var(self) -> torch.Tensor:
        """Biased (population) variance per channel, ``M2 / count``."""
        return self.m2 / self.count

    def variance(self, unbiased: bool = False) -> torch.Tensor:
        """``M2 / count``, or ``M2 / (count - 1)`` with ``unbiased`` (when ``count > 1``)."""
        divisor = self.count - 1 if unbiased and self.count > 1 else self.count
        return self.m2 / divisor

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, biased variance)`` as float64 arrays."""
        return self.mean.cpu().numpy(), self.var.cpu().numpy()

    def to_tensor(self) -> torch.Tensor:
        """``(3, C)`` float64: count (repeated), mean, M2 -- to all-gather across processes."""
        count = torch.full_like(self.mean, float(self.count))
        return torch.stack((count, self.mean, self.m2))

    @classmethod
    def from_tensor(cls, state: torch.Tensor) -> PooledMoments:
        """Inverse of :meth:`to_tensor`; a ``(P, 3, C)`` stack of states is merged in order."""
        out = cls()
        for row in state.reshape(-1, *state.shape[-2:]):
            out.add(int(row[0, 0].item()), row[1].double(), row[2].double())
        return out


__all__ = ["PooledMoments"]
