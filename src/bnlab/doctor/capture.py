"""What the adapters record of each BN layer's input during a forward pass.

``capture[path]`` pools every value seen (:class:`~bnlab.doctor.moments.PooledMoments`, the
exact population statistics). A :class:`Capture` also keeps, per layer, the *average of
the per-batch* mean and biased variance: that is what BN's moving averages estimate in
training (each step folds in one batch's statistics), so the data check compares like
with like even when batches differ from one another (one source per batch).
"""

from __future__ import annotations

import numpy as np
import torch

from bnlab.doctor.moments import PooledMoments


class Capture(dict):
    """``{path: PooledMoments}`` plus ``batchwise``: ``{path: [sum of means, sum of vars, batches]}``."""

    def __init__(self) -> None:
        super().__init__()
        self.batchwise: dict[str, list] = {}

    def batch_averages(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{path: (average batch mean, average biased batch variance)}`` as float64 arrays."""
        return {
            path: ((s_mean / n).cpu().numpy(), (s_var / n).cpu().numpy())
            for path, (s_mean, s_var, n) in self.batchwise.items()
        }


def record(capture: dict, path: str, x: torch.Tensor, channel_axis: int) -> None:
    """Add one BN input ``x`` (channels on ``channel_axis``) to ``capture``."""
    capture.setdefault(path, PooledMoments()).update(x, channel_axis)
    if not isinstance(capture, Capture):
        return
    x = x.detach()
    dims = [d for d in range(x.dim()) if d != channel_axis]
    var, mean = torch.var_mean(x.to(torch.float64), dim=dims, correction=0)
    slot = capture.batchwise.get(path)
    if slot is None:
        capture.batchwise[path] = [mean, var, 1]
    else:
        slot[0] = slot[0] + mean
        slot[1] = slot[1] + var
        slot[2] += 1
