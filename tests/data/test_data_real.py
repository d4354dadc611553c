"""Real Fashion-MNIST and MNIST from the shared data folder (skipped when it is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bnlab.data as data


@pytest.fixture(scope="module")
def fashion_npz(shared_data):
    with np.load(shared_data / "fashion_mnist.npz") as f:
        return {k: f[k] for k in ("x_train", "y_train", "classes")}


def test_seed_002_split_of_real_fashion_mnist(shared_data, fashion_npz):
    ds = data.load(
        "fashion_mnist",
        data_dir=str(shared_data),
        train_range=[0, 1000],
        test_from="train",
        test_range=[1000, 2000],
    )
    assert ds.x_train.shape == (1000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.x_val is None
    # raw pixels (seed 002 feeds them undivided), byte for byte the npz's first 2000 images
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(fashion_npz["x_train"][:1000]).float())
    assert torch.equal(ds.x_test[:, 0], torch.from_numpy(fashion_npz["x_train"][1000:2000]).float())
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 255.0
    for y, span in ((ds.y_train, slice(0, 1000)), (ds.y_test, slice(1000, 2000))):
        expected = np.bincount(fashion_npz["y_train"][span], minlength=10)
        assert np.bincount(y.numpy(), minlength=10).tolist() == expected.tolist()
        assert expected.min() > 50  # every class present in each half
    assert ds.classes == [str(c) for c in fashion_npz["classes"]]
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


def test_real_mnist_through_bnlab_data_and_stratified_validation(shared_data, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA", str(shared_data))
    ds = data.load(
        "mnist",
        scale="unit",
        train_range=[0, 5000],
        validation_split=0.2,
        stratify=True,
        split_seed=3,
    )
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_val.shape == (1000, 1, 28, 28)
    assert ds.x_test.shape == (10000, 1, 28, 28)
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) == 1.0
    # stratified: each class's validation count within one sample of its share
    all_labels = torch.cat([ds.y_train, ds.y_val]).numpy()
    share = np.bincount(all_labels, minlength=10) * 0.2
    assert np.all(np.abs(np.bincount(ds.y_val.numpy(), minlength=10) - share) <= 1)
