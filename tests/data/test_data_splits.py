"""Slicing (train_range / test_range / test_from) and seeded validation splits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import bnlab.data as data
from bnlab.errors import ConfigError


@pytest.fixture()
def npz_path(tmp_path):
    """300 training images (labels 0..4, unbalanced) and 50 test images; pixel = index % 256."""
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(300, 4, 4), dtype=np.uint8)
    y_train = np.repeat(np.arange(5), [100, 80, 60, 40, 20])
    rng.shuffle(y_train)
    x_test = rng.integers(0, 256, size=(50, 4, 4), dtype=np.uint8)
    y_test = np.arange(50) % 5
    path = tmp_path / "small.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_seed_002_split_takes_the_test_set_from_the_training_set(npz_path):
    raw = arrays(npz_path)
    ds = data.load(
        f"npz:{npz_path}", train_range=[0, 100], test_from="train", test_range=[100, 200]
    )
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), raw["x_train"][:100])
    np.testing.assert_array_equal(ds.x_test[:, 0].numpy(), raw["x_train"][100:200])
    np.testing.assert_array_equal(ds.y_test.numpy(), raw["y_train"][100:200])
    assert ds.meta["sizes"] == {"train": 100, "validation": 0, "test": 100}


def test_test_range_slices_the_test_set(npz_path):
    ds = data.load(f"npz:{npz_path}", test_range=[10, 20])
    np.testing.assert_array_equal(ds.x_test[:, 0].numpy(), arrays(npz_path)["x_test"][10:20])
    assert len(ds.y_train) == 300


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"test_from": "train"}, "test_range: is required with test_from='train'"),
        (
            {"test_from": "train", "test_range": [0, 10]},
            "train_range: is required with test_from='train'",
        ),
        (
            {"test_from": "train", "train_range": [0, 100], "test_range": [50, 150]},
            r"test_range: \[50, 150\] overlaps train_range \[0, 100\]",
        ),
        ({"train_range": [0, 301]}, r"train_range: \[0, 301\] reaches past the 300 samples"),
        (
            {"test_range": [40, 60]},
            r"test_range: \[40, 60\] reaches past the 50 samples of the test set",
        ),
    ],
)
def test_inconsistent_ranges_are_config_errors(npz_path, options, message):
    with pytest.raises(ConfigError, match=message):
        data.load(f"npz:{npz_path}", **options)


def test_validation_split_is_sklearn_train_test_split(npz_path):
    # Seed 003: train_test_split(x_train, y_train, test_size=0.2, random_state=42)
    raw = arrays(npz_path)
    ds = data.load(f"npz:{npz_path}", validation_split=0.2, split_seed=42)
    x_tr, x_val, y_tr, y_val = train_test_split(
        raw["x_train"], raw["y_train"], test_size=0.2, random_state=42
    )
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), x_tr)
    np.testing.assert_array_equal(ds.x_val[:, 0].numpy(), x_val)
    np.testing.assert_array_equal(ds.y_val.numpy(), y_val)
    np.testing.assert_array_equal(ds.x_test[:, 0].numpy(), raw["x_test"])  # test set untouched
    assert ds.meta["sizes"] == {"train": 240, "validation": 60, "test": 50}


def test_same_seed_same_split_every_time_and_seed_matters(npz_path):
    a = data.load(f"npz:{npz_path}", validation_split=0.2, split_seed=7)
    b = data.load(f"npz:{npz_path}", validation_split=0.2, split_seed=7)
    c = data.load(f"npz:{npz_path}", validation_split=0.2, split_seed=8)
    assert np.array_equal(a.y_val.numpy(), b.y_val.numpy())
    assert np.array_equal(a.x_val.numpy(), b.x_val.numpy())
    assert not np.array_equal(a.x_val.numpy(), c.x_val.numpy())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fraction", [0.2, 0.33])
def test_stratified_split_keeps_class_proportions_within_one_sample(npz_path, seed, fraction):
    y = arrays(npz_path)["y_train"]
    ds = data.load(f"npz:{npz_path}", validation_split=fraction, stratify=True, split_seed=seed)
    held = np.bincount(ds.y_val.numpy(), minlength=5)
    kept = np.bincount(ds.y_train.numpy(), minlength=5)
    total = np.bincount(y, minlength=5)
    assert np.array_equal(held + kept, total)
    assert np.all(np.abs(held - total * len(ds.y_val) / len(y)) <= 1)


def test_split_applies_to_the_sliced_training_set(npz_path):
    ds = data.load(f"npz:{npz_path}", train_range=[0, 100], validation_split=0.25, split_seed=1)
    raw = arrays(npz_path)["x_train"][:100]
    got = np.concatenate([ds.x_train[:, 0].numpy(), ds.x_val[:, 0].numpy()]).astype(np.uint8)
    assert len(ds.y_val) == 25
    assert sorted(map(bytes, got)) == sorted(map(bytes, raw))


def test_impossible_stratified_split_is_a_config_error(npz_path):
    with pytest.raises(
        ConfigError, match="validation_split: 0.2 cannot split 3 samples stratified"
    ):
        data.load(f"npz:{npz_path}", train_range=[0, 3], validation_split=0.2, stratify=True)


def test_scale_unit_divides_raw_by_255(npz_path):
    raw = data.load(f"npz:{npz_path}")
    unit = data.load(f"npz:{npz_path}", scale="unit")
    np.testing.assert_allclose(unit.x_train.numpy() * 255, raw.x_train.numpy(), rtol=1e-6)
    assert raw.meta["options"]["scale"] == "raw"


def test_validation_source_is_another_datasets_training_split(npz_path, tmp_path):
    rng = np.random.default_rng(1)
    val_path = tmp_path / "val.npz"
    x_val = rng.integers(0, 256, size=(30, 4, 4), dtype=np.uint8)
    y_val = np.arange(30) % 5
    np.savez(val_path, x_train=x_val, y_train=y_val, x_test=x_val[:2], y_test=y_val[:2])
    ds = data.load(f"npz:{npz_path}", scale="unit", validation=f"npz:{val_path}")
    assert ds.x_val.shape == (30, 1, 4, 4) and ds.meta["sizes"]["validation"] == 30
    np.testing.assert_array_equal(ds.y_val.numpy(), y_val)
    np.testing.assert_allclose(ds.x_val[:, 0].numpy(), x_val / 255.0, rtol=1e-6)
    assert len(ds.y_train) == 300  # the training set keeps every sample

    with pytest.raises(ConfigError, match=r"^validation: .* both choose the validation set"):
        data.load(f"npz:{npz_path}", validation=f"npz:{val_path}", validation_split=0.2)
    with pytest.raises(ConfigError, match=r"^validation: 3 is not a dataset name or path"):
        data.load(f"npz:{npz_path}", validation=3)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x_train=x_val[:, :2], y_train=y_val, x_test=x_val[:2, :2], y_test=y_val[:2])
    from bnlab.errors import DataError

    with pytest.raises(DataError, match=r"^validation: .* shape \(1, 2, 4\), the training set \(1, 4, 4\)"):
        data.load(f"npz:{npz_path}", validation=f"npz:{wrong}")
