"""Options every loader understands: which samples, which split, which pixel scale.

All option values are TOML-able (studies pass them from TOML): ranges are ``[start, stop]``
lists with Python slice meaning (``stop`` excluded), fractions are floats, seeds ints.

* ``scale`` (image datasets only): ``"raw"`` gives pixels in 0-255 as float32, ``"unit"``
  divides them by 255 (0-1). Each dataset documents its default; the seeds differ (002 and
  001 feed raw pixels, 003 divides by 255).
* ``train_range=[start, stop]``: keep training samples ``start .. stop - 1``.
* ``test_from="test" | "train"`` and ``test_range=[start, stop]``: the test set is the
  dataset's test set (optionally sliced) or, with ``test_from="train"``, a slice of the
  *training* set that must not overlap ``train_range``. Seed 002: ``train_range=[0, 1000],
  test_from="train", test_range=[1000, 2000]``.
* ``validation_split``: fraction (0-1) of the (sliced) training set held out as the
  validation set, ``stratify`` keeps class proportions, ``split_seed`` fixes the draw. The
  split is scikit-learn's ``train_test_split(test_size=validation_split,
  random_state=split_seed, stratify=labels if stratify else None)``, so seed 003's
  ``train_test_split(x, y, test_size=0.2, random_state=42)`` is
  ``validation_split=0.2, split_seed=42`` -- same samples, same order.
* ``validation=SOURCE``: the validation set is another dataset -- anything :func:`load`
  accepts (``"imagefolder:data/val"``, ``"npz:val.npz"``, ...) -- namely that source's
  training split (for an image folder: every image in it), loaded with the same ``scale``
  and the same format options. Keras's ``validation_data``; exclusive with
  ``validation_split``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bnlab._validation import check_choice, check_number
from bnlab.data.arrays import RawData, check_raw, to_nchw
from bnlab.data.dataset import Dataset
from bnlab.errors import ConfigError

SCALES = ("raw", "unit")
TEST_FROM = ("test", "train")
COMMON_OPTIONS = (
    "train_range",
    "test_range",
    "test_from",
    "validation_split",
    "validation",
    "stratify",
    "split_seed",
)


@dataclass(frozen=True)
class CommonOptions:
    """The validated common options (see the module docstring); ``scale`` is None for
    tabular datasets."""

    scale: str | None = None
    train_range: tuple[int, int] | None = None
    test_range: tuple[int, int] | None = None
    test_from: str = "test"
    validation_split: float = 0.0
    stratify: bool = False
    split_seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """TOML-able form, omitting unset ranges and the scale of tabular data."""
        out = {
            "scale": self.scale,
            "train_range": list(self.train_range) if self.train_range else None,
            "test_range": list(self.test_range) if self.test_range else None,
            "test_from": self.test_from,
            "validation_split": self.validation_split,
            "stratify": self.stratify,
            "split_seed": self.split_seed,
        }
        return {k: v for k, v in out.items() if v is not None}


def check_range(name: str, value: Any) -> tuple[int, int]:
    """A ``[start, stop]`` pair of integers with ``0 <= start < stop``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{name}: {value!r} is not a [start, stop] pair")
    start = check_number(f"{name}[0]", value[0], low=0, integer=True)
    stop = check_number(f"{name}[1]", value[1], low=start + 1, integer=True)
    return start, stop


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name}: {value!r} is not true or false")
    return bool(value)


def check_fraction(name: str, value: Any) -> float:
    """A fraction strictly between 0 and 1."""
    return float(
        check_number(name, value, low=0, high=1, low_inclusive=False, high_inclusive=False)
    )


def parse_common(options: dict[str, Any], default_scale: str | None) -> CommonOptions:
    """Validate the common options present in ``options`` (other keys are ignored)."""
    scale = options.get("scale", default_scale)
    if default_scale is not None:
        check_choice("scale", scale, SCALES)
    test_from = check_choice("test_from", options.get("test_from", "test"), TEST_FROM)
    train_range = (
        check_range("train_range", options["train_range"]) if "train_range" in options else None
    )
    test_range = (
        check_range("test_range", options["test_range"]) if "test_range" in options else None
    )
    if test_from == "train" and test_range is None:
        raise ConfigError(
            "test_range: is required with test_from='train' (which training samples form the "
            "test set), e.g. train_range=[0, 1000], test_range=[1000, 2000]"
        )
    if test_from == "train":
        _check_disjoint(train_range, test_range)
    validation_split = options.get("validation_split", 0.0)
    no_split = validation_split == 0 and not isinstance(validation_split, bool)
    validation_split = 0.0 if no_split else check_fraction("validation_split", validation_split)
    return CommonOptions(
        scale=scale if default_scale is not None else None,
        train_range=train_range,
        test_range=test_range,
        test_from=test_from,
        validation_split=validation_split,
        stratify=check_bool("stratify", options.get("stratify", False)),
        split_seed=check_number(
            "split_seed", options.get("split_seed", 0), low=0, high=2**32 - 1, integer=True
        ),
    )


def _check_disjoint(train_range, test_range) -> None:
    if train_range is None:
        raise ConfigError(
            "train_range: is required with test_from='train' so that the test samples "
            f"{list(test_range)} are not also training samples"
        )
    if train_range[0] < test_range[1] and test_range[0] < train_range[1]:
        raise ConfigError(
            f"test_range: {list(test_range)} overlaps train_range {list(train_range)}; with "
            "test_from='train' the test samples must not be training samples"
        )


def split_indices(
    labels: np.ndarray,
    test_size: float | int,
    *,
    seed: int,
    stratify: bool,
    option: str,
    train_size: float | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` sample indices of a seeded split, scikit-learn's ``train_test_split``.

    ``test_size`` is a fraction or a count of held-out samples. Both index arrays come in
    scikit-learn's (shuffled) order, so the split and the order equal the seeds' calls.
    """
    from sklearn.model_selection import train_test_split

    try:
        kept, held = train_test_split(
            np.arange(len(labels)),
            test_size=test_size,
            train_size=train_size,
            random_state=seed,
            shuffle=True,
            stratify=labels if stratify else None,
        )
    except ValueError as err:
        raise ConfigError(
            f"{option}: {test_size!r} cannot split {len(labels)} samples"
            f"{' stratified' if stratify else ''}: {err}"
        ) from None
    return np.asarray(kept), np.asarray(held)


def _slice(x: np.ndarray, y: np.ndarray, span, option: str, what: str):
    if span is None:
        return x, y
    start, stop = span
    if stop > len(x):
        raise ConfigError(
            f"{option}: {list(span)} reaches past the {len(x)} samples of the {what} "
            f"(stop must be <= {len(x)})"
        )
    return x[start:stop], y[start:stop]


def _to_tensor(x: np.ndarray, raw: RawData, scale: str | None, where: str) -> torch.Tensor:
    x = to_nchw(x, raw.layout, where)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if scale is None or raw.full_scale is None:
        return t
    factor = (255.0 if scale == "raw" else 1.0) / raw.full_scale
    return t if factor == 1.0 else t.mul_(factor)


def finalize(raw: RawData, common: CommonOptions, name: str, options: dict[str, Any]) -> Dataset:
    """Check, slice, split and scale ``raw`` into a :class:`Dataset`.

    Order: labels and shapes checked; the test set chosen (``test_from``) and sliced
    (``test_range``); the training set sliced (``train_range``); the validation set split
    off the sliced training set; images converted to NCHW float32 and scaled.
    """
    raw = check_raw(raw, name)
    if common.test_from == "train":
        x_test, y_test = _slice(
            raw.x_train, raw.y_train, common.test_range, "test_range", "training set"
        )
    else:
        x_test, y_test = _slice(raw.x_test, raw.y_test, common.test_range, "test_range", "test set")
    x_train, y_train = _slice(
        raw.x_train, raw.y_train, common.train_range, "train_range", "training set"
    )
    x_val = y_val = None
    if common.validation_split:
        kept, held = split_indices(
            y_train,
            common.validation_split,
            seed=common.split_seed,
            stratify=common.stratify,
            option="validation_split",
        )
        x_val, y_val = x_train[held], y_train[held]
        x_train, y_train = x_train[kept], y_train[kept]

    def tensor(x, part):
        return None if x is None else _to_tensor(x, raw, common.scale, f"{name}: {part}")

    def labels(y):
        return None if y is None else torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))

    meta = {
        **raw.meta,
        "source": raw.source,
        "options": {**options, **common.as_dict()},
        "full_scale": raw.full_scale,
        "sizes": {
            "train": len(y_train),
            "validation": 0 if y_val is None else len(y_val),
            "test": len(y_test),
        },
    }
    return Dataset(
        tensor(x_train, "x_train"),
        labels(y_train),
        tensor(x_test, "x_test"),
        labels(y_test),
        list(raw.classes),
        name,
        tensor(x_val, "x_val"),
        labels(y_val),
        meta,
    )
