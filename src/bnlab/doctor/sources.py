"""Turn whatever the user calls ``data`` into re-iterable batches, counting the passes.

Accepted (DESIGN.md): a bnlab :class:`~bnlab.data.dataset.Dataset` (the training split is
diagnosed, the test split is used for before/after evidence), an ``(x, y)`` pair of tensors or
numpy arrays (or ``x`` alone, unlabelled), a torch ``Dataset`` or ``DataLoader`` (or any
re-iterable of ``(x, y)`` / ``x`` batches), or a name/path that :func:`bnlab.data.load`
understands. Inputs keep the scale they come with (raw pixels stay raw: the doctor reports
it); images of a bnlab Dataset are NCHW.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from bnlab._validation import check_positive_int
from bnlab.data.dataset import Dataset
from bnlab.errors import DataError

Batch = tuple[torch.Tensor, "torch.Tensor | None"]


def _tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise DataError(f"data: {what} is a {type(value).__name__}, expected a tensor or an array")


def _as_input(x: torch.Tensor) -> torch.Tensor:
    # uint8 images keep their 0-255 scale: the doctor must see the inputs the model saw.
    return x if x.is_floating_point() else x.to(torch.float32)


def split_batch(item) -> Batch:
    """``(x, y, ...)`` -> ``(x, y)``; a bare ``x`` -> ``(x, None)``; dicts use 'x'/'y' keys."""
    if isinstance(item, dict):
        if "x" not in item:
            raise DataError(f"data: a batch dict needs an 'x' key, got keys {sorted(item)}")
        item = (item["x"], item.get("y"))
    if isinstance(item, (tuple, list)):
        if not item:
            raise DataError("data: an empty batch")
        x = _as_input(_tensor(item[0], "a batch's inputs"))
        y = None if len(item) < 2 or item[1] is None else _tensor(item[1], "a batch's labels")
        return x, y
    return _as_input(_tensor(item, "a batch")), None


@dataclass
class DataSource:
    """One split as re-iterable batches; every call of :meth:`batches` is one counted pass.

    ``layout`` is ``"NCHW"`` when the inputs are known to be channels-first (a bnlab
    Dataset), ``"as-given"`` otherwise (adapters then match the model's input shape).
    """

    make_iter: Callable[[], Iterable]
    name: str
    num_samples: int | None = None
    layout: str = "as-given"
    passes: int = field(default=0, init=False)
    last_samples: int = field(default=0, init=False)  # samples read by the latest pass

    def batches(self, max_batches: int | None = None) -> Iterator[Batch]:
        """One pass; a one-sample batch joins the batch before it.

        BN in training mode cannot normalise a single sample, and a trailing batch of one
        is common (``N % batch_size == 1``).
        """
        self.passes += 1
        self.last_samples = 0
        pending: Batch | None = None
        for i, item in enumerate(self.make_iter()):
            if max_batches is not None and i >= max_batches:
                break
            x, y = split_batch(item)
            if pending is not None and x.shape[0] < 2:
                px, py = pending
                y = None if py is None or y is None else torch.cat([py, y.to(py.device)])
                pending = (torch.cat([px, x.to(px.device)]), y)
                continue
            if pending is not None:
                self.last_samples += pending[0].shape[0]
                yield pending
            pending = (x, y)
        if pending is not None:
            self.last_samples += pending[0].shape[0]
            yield pending


def _tensor_source(x, y, batch_size: int, name: str, layout: str) -> DataSource:
    x = _as_input(_tensor(x, "x"))
    y = None if y is None else _tensor(y, "y")
    if y is not None and y.shape[0] != x.shape[0]:
        raise DataError(f"data: x has {x.shape[0]} samples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise DataError(f"data: {name} is empty")

    def make_iter():
        for i in range(0, x.shape[0], batch_size):
            yield (x[i : i + batch_size], None if y is None else y[i : i + batch_size])

    return DataSource(make_iter, name, int(x.shape[0]), layout)


def _is_array(value) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def as_sources(data, batch_size: int = 256) -> tuple[DataSource, DataSource | None]:
    """``(train, test)`` sources for ``data``; ``test`` is ``None`` unless a Dataset has one."""
    batch_size = check_positive_int("batch_size", batch_size)
    if isinstance(data, (str, os.PathLike)):
        from bnlab import data as bnlab_data

        load = getattr(bnlab_data, "load", None)
        if load is None:
            raise DataError(f"data: {str(data)!r} is a name, but bnlab.data.load is unavailable")
        data = load(str(data))
    if isinstance(data, Dataset):
        train = _tensor_source(data.x_train, data.y_train, batch_size, "training set", "NCHW")
        test = None
        if data.x_test is not None and len(data.x_test):
            test = _tensor_source(data.x_test, data.y_test, batch_size, "test set", "NCHW")
        return train, test
    if _is_array(data):
        return _tensor_source(data, None, batch_size, "x", "as-given"), None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(_is_array(v) for v in data):
        return _tensor_source(data[0], data[1], batch_size, "(x, y)", "as-given"), None
    if isinstance(data, torch.utils.data.DataLoader):
        n = len(data.dataset) if hasattr(data.dataset, "__len__") else None
        return DataSource(lambda: data, "data loader", n), None
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
        return DataSource(lambda: loader, "torch dataset", len(data)), None
    if isinstance(data, Iterable):
        if iter(data) is data:
            raise DataError(
                "data: a one-shot iterator cannot be read twice; pass a DataLoader, "
                "a list of batches or an (x, y) pair"
            )
        return DataSource(lambda: data, type(data).__name__), None
    raise DataError(
        f"data: a {type(data).__name__} is not usable; pass a bnlab Dataset, an (x, y) pair of "
        "tensors or arrays, a torch Dataset or DataLoader, or a name bnlab.data.load knows"
    )
