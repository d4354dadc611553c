"""Exact pooled per-channel moments over many batches: :class:`bnlab.nn.moments.PooledMoments`.

The doctor's activation statistics use the estimator of :mod:`bnlab.nn.moments` (float64,
Chan et al.'s parallel update of ``(count, mean, M2)``, safe on raw 0-255 activations); this
module keeps the name it has always been imported under.
"""

from __future__ import annotations

from bnlab.nn.moments import PooledMoments

__all__ = ["PooledMoments"]
