"""Datasets that need no file and no network: scikit-learn's digits, circles and moons."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab._validation import check_number
from bnlab.data.arrays import RawData
from bnlab.data.options import CommonOptions, split_indices


def _size(name: str, value: Any) -> float | int:
    """A split size: a fraction in (0, 1) or a sample count >= 1 (scikit-learn's meaning)."""
    if isinstance(value, float) and not value.is_integer():
        return float(
            check_number(name, value, low=0, high=1, low_inclusive=False, high_inclusive=False)
        )
    return check_number(name, value, low=1, integer=True)


def read_digits(_: str | None, options: dict[str, Any], common: CommonOptions) -> RawData:
    """scikit-learn's ``load_digits``: 1,797 images of 8 x 8 pixels with values 0-16.

    Images are ``(N, 1, 8, 8)``; ``scale="raw"`` (the default, what bnlab's demo trains on:
    raw pixels are what makes BN matter) maps 16 to 255, i.e. ``value * 255 / 16``;
    ``scale="unit"`` is ``value / 16``. Split: ``train_test_split(test_size=0.25,
    random_state=split_seed)`` (``split_seed=0``, ``stratify`` as given) -- 1,347 training
    and 450 test images by default; ``test_size`` / ``train_size`` change it.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    test_size = _size("test_size", options.get("test_size", 0.25))
    train_size = options.get("train_size")
    train_size = None if train_size is None else _size("train_size", train_size)
    kept, held = split_indices(
        digits.target,
        test_size,
        train_size=train_size,
        seed=common.split_seed,
        stratify=common.stratify,
        option="test_size",
    )
    images = digits.images.astype(np.uint8)  # whole numbers 0..16
    return RawData(
        images[kept],
        digits.target[kept],
        images[held],
        digits.target[held],
        classes=[str(i) for i in range(10)],
        full_scale=16.0,
        source="sklearn.datasets.load_digits",
    )


def _generated(options: dict[str, Any], defaults: dict[str, Any]):
    n_samples = check_number(
        "n_samples", options.get("n_samples", defaults["n_samples"]), low=2, integer=True
    )
    noise = check_number("noise", options.get("noise", defaults["noise"]), low=0)
    random_state = check_number(
        "random_state",
        options.get("random_state", defaults["random_state"]),
        low=0,
        high=2**32 - 1,
        integer=True,
    )
    n_train = options.get("n_train", n_samples // 2)
    n_train = check_number("n_train", n_train, low=1, high=n_samples - 1, integer=True)
    return n_samples, noise, random_state, n_train


def _first_n_train(x: np.ndarray, y: np.ndarray, n_train: int, source: str, classes) -> RawData:
    return RawData(
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        classes=classes,
        full_scale=None,
        source=source,
    )


def read_circles(_: str | None, options: dict[str, Any], common: CommonOptions) -> RawData:
    """``make_circles(n_samples=1000, noise=0.1, random_state=1)`` split like seed 004: the
    first ``n_train=500`` points train, the rest test. Features ``(N, 2)`` unscaled; label 0
    is the outer circle, 1 the inner (``factor=0.8`` is the inner radius)."""
    from sklearn.datasets import make_circles

    n_samples, noise, random_state, n_train = _generated(
        options, {"n_samples": 1000, "noise": 0.1, "random_state": 1}
    )
    factor = options.get("factor", 0.8)
    factor = check_number(
        "factor", factor, low=0, high=1, low_inclusive=False, high_inclusive=False
    )
    x, y = make_circles(n_samples=n_samples, noise=noise, random_state=random_state, factor=factor)
    source = (
        f"sklearn make_circles(n_samples={n_samples}, noise={noise}, random_state={random_state})"
    )
    return _first_n_train(x, y, n_train, source, ["outer", "inner"])


def read_moons(_: str | None, options: dict[str, Any], common: CommonOptions) -> RawData:
    """``make_moons(n_samples=1000, noise=0.1, random_state=1)``, first ``n_train=500`` points
    train, the rest test (as circles). Features ``(N, 2)``; label 0 is the upper moon."""
    from sklearn.datasets import make_moons

    n_samples, noise, random_state, n_train = _generated(
        options, {"n_samples": 1000, "noise": 0.1, "random_state": 1}
    )
    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=random_state)
    source = (
        f"sklearn make_moons(n_samples={n_samples}, noise={noise}, random_state={random_state})"
    )
    return _first_n_train(x, y, n_train, source, ["upper", "lower"])
