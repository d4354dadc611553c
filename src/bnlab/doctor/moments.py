"""Exact pooled per-channel moments over many batches (Chan et al.'s parallel update).

Batches are combined weighted by their number of values, as fvcore's PreciseBN
``_PopulationVarianceEstimator`` does: the result is the mean and the *biased* variance
of all values seen, as if they had been one batch. Accumulation is in float64 with a
per-batch centred second moment, so raw 0-255 activations (mean >> std) lose no digits.
"""

from __future__ import annotations

import numpy as np
import torch


class PooledMoments:
    """Running count, mean and sum of squared deviations per channel."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor, channel_axis: int) -> None:
        """Add every value of ``x``; channel ``c`` pools ``x`` along all axes but ``channel_axis``."""
        x = x.detach()
        flat = x.movedim(channel_axis, 0).reshape(x.shape[channel_axis], -1).to(torch.float64)
        n = flat.shape[1]
        if n == 0:
            return
        mean_b = flat.mean(dim=1)
        m2_b = (flat - mean_b[:, None]).square().sum(dim=1)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean_b, m2_b
            return
        total = self.count + n
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2_b + delta.square() * (self.count * n / total)
        self.count = total

    @property
    def var(self) -> torch.Tensor:
        """Biased (population) variance per channel."""
        return self.m2 / self.count

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, biased variance)`` as float64 arrays."""
        return self.mean.cpu().numpy(), self.var.cpu().numpy()
