"""The monitor's bounded samples: a fixed validation sample and a reservoir of training inputs.

Both draw from private random generators (numpy ``Generator`` seeded by the monitor), never
from the global torch/numpy/python streams, so watching a run cannot change its shuffling or
its dropout masks.
"""

from __future__ import annotations

import numpy as np
import torch

from bnlab.doctor.sources import as_sources, split_batch
from bnlab.errors import DataError


def _labels(y: torch.Tensor | None) -> torch.Tensor | None:
    """Class indices from one-hot rows (Keras's ``to_categorical``); anything else as given."""
    if y is None:
        return None
    if y.dim() == 2 and y.shape[1] > 1 and y.is_floating_point():
        rows = y.sum(dim=1)
        if bool(torch.all((y >= 0) & (y <= 1))) and bool(torch.allclose(rows, torch.ones_like(rows))):
            return y.argmax(dim=1)
    if y.dim() == 2 and y.shape[1] == 1 and not y.is_floating_point():
        return y.reshape(-1)
    return y


def fixed_sample(data, limit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """At most ``limit`` samples of ``data``, in a fixed random order (the same every epoch).

    ``data`` is anything :func:`bnlab.diagnose` takes (an ``(x, y)`` pair of arrays/tensors,
    ``x`` alone, a torch Dataset/DataLoader, a bnlab Dataset: its test split). One-hot
    labels become class indices. A loader is read only until ``limit`` samples are in.
    """
    from bnlab.data.dataset import Dataset

    if isinstance(data, Dataset):
        data = (data.x_test, data.y_test) if data.x_test is not None else (data.x_train, data.y_train)
    source, _ = as_sources(data, batch_size=max(1, min(limit, 1024)))
    xs, ys, n = [], [], 0
    for x, y in source.batches():
        xs.append(x)
        ys.append(y)
        n += x.shape[0]
        if n >= 4 * limit:  # enough to draw from without reading a whole large loader
            break
    if not xs:
        raise DataError("validation_data: yielded no samples")
    x = torch.cat(xs)
    y = None if any(v is None for v in ys) else torch.cat([v.to(ys[0].device) for v in ys])
    order = np.random.default_rng(seed).permutation(x.shape[0])[:limit]
    index = torch.as_tensor(np.sort(order))
    return x[index], (None if y is None else _labels(y[index.to(y.device)]))


class Reservoir:
    """A uniform sample of the training batches seen since :meth:`new_epoch`, up to a size.

    Each batch is kept with probability ``slots / batches_seen`` (reservoir sampling at the
    batch level, Vitter's algorithm R), so a loader sorted by class still yields a sample
    of the whole epoch. Kept batches are detached copies; nothing is copied otherwise.
    """

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = int(capacity)
        self._rng = np.random.default_rng(seed)
        self.new_epoch()

    def new_epoch(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.seen_batches = 0
        self.seen_samples = 0
        self._slots = None

    def add(self, x) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            return
        n = int(x.shape[0])
        self.seen_batches += 1
        self.seen_samples += n
        if self._slots is None:
            self._slots = max(1, -(-self.capacity // max(1, n)))
        if len(self.batches) < self._slots:
            self.batches.append(x.detach().clone())
            return
        j = int(self._rng.integers(0, self.seen_batches))
        if j < self._slots:
            self.batches[j] = x.detach().clone()

    def sample(self, limit: int) -> torch.Tensor | None:
        """Up to ``limit`` kept samples (``None`` when no batch was seen)."""
        if not self.batches:
            return None
        same = all(b.shape[1:] == self.batches[0].shape[1:] for b in self.batches)
        if not same:
            return self.batches[-1][:limit]
        return torch.cat([b.to(self.batches[0].device) for b in self.batches])[:limit]


def first_input(batch):
    """The inputs of a training batch (``x`` of ``(x, y, ...)``, ``batch['x']``, or ``x``)."""
    try:
        x, _ = split_batch(batch)
    except DataError:
        return None
    return x
