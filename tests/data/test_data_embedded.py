"""Embedded datasets (digits, circles, moons) and the registry's names and option checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_circles, make_moons
from sklearn.model_selection import train_test_split

import bnlab.data as data
from bnlab.errors import ConfigError


def test_names_and_descriptions():
    assert data.datasets() == ["cifar10", "circles", "digits", "fashion_mnist", "mnist", "moons"]
    lines = data.describe()
    assert set(data.datasets()) | {"npz:PATH", "imagefolder:PATH", "idx:PATH", "cifar:PATH"} == set(
        lines
    )
    assert all(isinstance(v, str) and v and "\n" not in v for v in lines.values())


def test_circles_is_seed_004():
    ds = data.load("circles")
    x, y = make_circles(n_samples=1000, noise=0.1, random_state=1)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    np.testing.assert_array_equal(ds.x_train.numpy(), x[:500].astype(np.float32))
    np.testing.assert_array_equal(ds.x_test.numpy(), x[500:].astype(np.float32))
    np.testing.assert_array_equal(ds.y_train.numpy(), y[:500])
    np.testing.assert_array_equal(ds.y_test.numpy(), y[500:])
    assert ds.classes == ["outer", "inner"] and ds.input_shape == (2,)


def test_circles_and_moons_options():
    ds = data.load("circles", n_samples=200, noise=0.0, random_state=3, n_train=150)
    x, _ = make_circles(n_samples=200, noise=0.0, random_state=3)
    np.testing.assert_array_equal(ds.x_test.numpy(), x[150:].astype(np.float32))
    moons = data.load("moons")
    xm, ym = make_moons(n_samples=1000, noise=0.1, random_state=1)
    np.testing.assert_array_equal(moons.x_train.numpy(), xm[:500].astype(np.float32))
    np.testing.assert_array_equal(moons.y_test.numpy(), ym[500:])


def test_digits_default_split_and_scales():
    raw = data.load("digits")
    unit = data.load("digits", scale="unit")
    digits = load_digits()
    kept, held = train_test_split(np.arange(1797), test_size=0.25, random_state=0)
    assert raw.x_train.shape == (1347, 1, 8, 8) and raw.x_test.shape == (450, 1, 8, 8)
    # raw = value * 255 / 16 (0-255), unit = value / 16 (0-1)
    np.testing.assert_array_equal(
        raw.x_train[:, 0].numpy(), (digits.images[kept] * 255 / 16).astype(np.float32)
    )
    np.testing.assert_array_equal(
        unit.x_test[:, 0].numpy(), (digits.images[held] / 16).astype(np.float32)
    )
    np.testing.assert_array_equal(raw.y_test.numpy(), digits.target[held])
    assert float(raw.x_train.max()) == 255.0 and float(unit.x_train.max()) == 1.0
    assert raw.num_classes == 10


def test_digits_split_options():
    ds = data.load("digits", test_size=300, split_seed=4, stratify=True)
    assert len(ds.y_test) == 300 and len(ds.y_train) == 1497
    counts = np.bincount(ds.y_test.numpy(), minlength=10)
    expected = np.bincount(load_digits().target) * 300 / 1797
    assert np.all(np.abs(counts - expected) <= 1)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(
        ConfigError, match=r"unknown option 'noize' \(did you mean 'noise'\?\); valid options are"
    ):
        data.load("circles", noize=0.2)
    # tabular data has no pixel scale
    with pytest.raises(ConfigError, match="unknown option 'scale'"):
        data.load("circles", scale="unit")
    assert "scale" in data.dataset_options("digits")
    assert "data_dir" in data.dataset_options("fashion_mnist")


def test_unknown_name_suggests_the_closest():
    with pytest.raises(
        ConfigError, match=r"'fashion' is not a dataset \(did you mean 'fashion_mnist'\?\)"
    ):
        data.load("fashion")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": "unity"}, "scale: 'unity' is not one of 'raw', 'unit'"),
        ({"train_range": [10, 5]}, r"train_range\[1\]: 5 is not in \[11, inf\)"),
        ({"train_range": 5}, "train_range: 5 is not a .start, stop. pair"),
        ({"validation_split": 1.5}, r"validation_split: 1.5 is not in \(0, 1\)"),
        ({"stratify": "yes"}, "stratify: 'yes' is not true or false"),
        ({"split_seed": -1}, "split_seed: -1 is not in"),
        ({"test_from": "val"}, "test_from: 'val' is not one of 'test', 'train'"),
        ({"test_size": 0}, "test_size: 0 is not in"),
    ],
)
def test_bad_option_values_name_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        data.load("digits", **options)
