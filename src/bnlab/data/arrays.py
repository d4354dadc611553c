"""Arrays as a loader reads them, and the checks that turn bad data into a clear DataError.

Every loader returns a :class:`RawData`: numpy arrays in the file's own units and layout,
plus ``full_scale``, the stored value that means "white" (255 for 8-bit images, 16 for
scikit-learn's digits, ``None`` for tabular data). :func:`bnlab.data.options.finalize` slices,
splits and scales them into a :class:`~bnlab.data.dataset.Dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnlab.errors import DataError

# Channel counts that identify the channel axis of a 4-D image array.
_CHANNELS = (1, 3, 4)


@dataclass
class RawData:
    """One dataset as read from its source, before slicing, splitting and scaling.

    ``x_*``: images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (see ``layout``), or
    tabular ``(N, F)``; ``y_*``: class indices ``(N,)`` (``(N, 1)`` and one-hot rows are
    accepted and converted). ``full_scale``: the stored value of a white pixel, ``None`` for
    tabular data (which is never rescaled).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str] | None = None
    full_scale: float | None = 255.0
    layout: str = "auto"
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim >= 3


def to_nchw(x: np.ndarray, layout: str, where: str) -> np.ndarray:
    """Images in PyTorch layout ``(N, C, H, W)``; tabular ``(N, F)`` unchanged.

    ``layout="auto"`` reads a 4-D array as channels-last when its last axis has 1, 3 or 4
    entries, as channels-first when its second axis does, and asks for ``layout`` when both
    do (images of 4 pixels or less along an axis).
    """
    if x.ndim == 2:
        return x
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim != 4:
        raise DataError(
            f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {x.shape}"
        )
    last, second = x.shape[-1] in _CHANNELS, x.shape[1] in _CHANNELS
    if layout == "auto" and last and second:
        raise DataError(
            f"{where}: images of shape {x.shape} could be channels-last or channels-first; "
            "pass layout='nhwc' or layout='nchw'"
        )
    if layout == "nhwc" or (layout == "auto" and last):
        return np.transpose(x, (0, 3, 1, 2))
    if layout == "nchw" or (layout == "auto" and second):
        return x
    raise DataError(
        f"{where}: cannot tell the channel axis of images with shape {x.shape} (neither the "
        "second nor the last axis has 1, 3 or 4 entries); pass layout='nhwc' or layout='nchw'"
    )


def labels_1d(y: np.ndarray, where: str) -> np.ndarray:
    """Class indices as int64 ``(N,)`` from ``(N,)``, ``(N, 1)`` or one-hot ``(N, K)`` labels."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise DataError(
                f"{where}: labels of shape {y.shape} are neither class indices nor one-hot rows"
            )
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be class indices of shape (N,), got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise DataError(f"{where}: labels must be whole class indices, found fractional values")
    elif y.dtype.kind not in "iub":
        raise DataError(
            f"{where}: labels must be integer class indices, got dtype {y.dtype}; "
            "map class names to 0..K-1 first"
        )
    return y.astype(np.int64)


def check_raw(raw: RawData, name: str) -> RawData:
    """Validate shapes, values and labels; return a RawData with int64 ``(N,)`` labels.

    Raises DataError naming the array and what is wrong: mismatched lengths, sample shapes
    that differ between train and test, empty sets, non-finite values, labels outside
    ``0 .. len(classes) - 1``.
    """
    arrays = {}
    for part in ("x_train", "y_train", "x_test", "y_test"):
        value = getattr(raw, part)
        if not isinstance(value, np.ndarray):
            raise DataError(f"{name}: {part} is not an array (got {type(value).__name__})")
        arrays[part] = value
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2:
            raise DataError(
                f"{name}: x_{split} has shape {x.shape}; expected (N, features) or images (N, H, W[, C])"
            )
        if len(x) == 0:
            raise DataError(f"{name}: x_{split} is empty")
        if len(x) != len(y):
            raise DataError(
                f"{name}: x_{split} has {len(x)} samples but y_{split} has {len(y)} labels"
            )
        if x.dtype.kind not in "uifb":
            raise DataError(f"{name}: x_{split} must be numeric, got dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(f"{name}: x_{split} contains NaN or infinite values")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(
            f"{name}: train samples have shape {arrays['x_train'].shape[1:]} but test samples "
            f"{arrays['x_test'].shape[1:]}; both sets must hold samples of one shape"
        )
    y_train = labels_1d(arrays["y_train"], f"{name}: y_train")
    y_test = labels_1d(arrays["y_test"], f"{name}: y_test")
    num_classes = len(raw.classes) if raw.classes is not None else None
    for part, y in (("y_train", y_train), ("y_test", y_test)):
        low, high = int(y.min()), int(y.max())
        if low < 0 or (num_classes is not None and high >= num_classes):
            allowed = (
                f"0..{num_classes - 1} (the dataset names {num_classes} classes)"
                if num_classes is not None
                else "0 or more"
            )
            raise DataError(f"{name}: {part} holds labels from {low} to {high}, outside {allowed}")
    classes = raw.classes
    if classes is None:
        count = int(max(y_train.max(), y_test.max())) + 1
        classes = [str(i) for i in range(count)]
    if len(classes) < 2:
        raise DataError(f"{name}: has {len(classes)} class; a classifier needs at least two")
    return RawData(
        arrays["x_train"],
        y_train,
        arrays["x_test"],
        y_test,
        [str(c) for c in classes],
        raw.full_scale,
        raw.layout,
        raw.source,
        dict(raw.meta),
    )
