"""Losses, class weights and accuracy: hand computations and Keras's own losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.train import balanced_class_weight, data_loss, num_correct, resolve_class_weight
from bnlab.train.losses import per_sample_loss


def test_balanced_class_weight_by_hand_and_sklearn():
    y = torch.tensor([0, 0, 0, 1, 2, 2, 0, 0])  # counts 5, 1, 2; class 3 absent
    w = balanced_class_weight(y, num_classes=4)
    n, k = 8, 3  # samples, classes present
    assert w.tolist() == pytest.approx([n / (k * 5), n / (k * 1), n / (k * 2), 1.0])
    sklearn = pytest.importorskip("sklearn.utils.class_weight")
    ref = sklearn.compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=y.numpy())
    np.testing.assert_allclose(w[:3].numpy(), ref, rtol=1e-6)


def test_class_weight_dict_and_errors():
    y = torch.tensor([0, 1, 2])
    assert resolve_class_weight({1: 5.0}, y, 3).tolist() == [1.0, 5.0, 1.0]
    assert resolve_class_weight(None, y, 3) is None
    with pytest.raises(ConfigError, match=r"class_weight: 'balance'"):
        resolve_class_weight("balance", y, 3)
    with pytest.raises(ConfigError, match=r"class_weight: key 3 is not a class index in 0..2"):
        resolve_class_weight({3: 1.0}, y, 3)
    with pytest.raises(ConfigError, match=r"class_weight\[0\]: -1.0"):
        resolve_class_weight({0: -1.0}, y, 3)
    with pytest.raises(ConfigError, match=r"class_weight: \[1, 2\]"):
        resolve_class_weight([1, 2], y, 3)


def test_weighted_categorical_loss_is_sum_over_batch_size():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-3.0, 1.0, 0.5]])
    y = torch.tensor([0, 2, 1])
    w = torch.tensor([1.0, 3.0, 0.5])
    per = [
        -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))),
        math.log(3),
        -math.log(math.exp(1) / (math.exp(-3) + math.exp(1) + math.exp(0.5))),
    ]
    expected = (1.0 * per[0] + 3.0 * per[1] + 0.5 * per[2]) / 3  # divided by N, not sum(w)
    assert data_loss(logits, y, w).item() == pytest.approx(expected, rel=1e-6)
    assert data_loss(logits, y).item() == pytest.approx(sum(per) / 3, rel=1e-6)
    assert num_correct(logits, y).item() == 2  # row 1 ties: argmax picks class 0 (wrong)


def test_binary_loss_and_accuracy_from_one_logit():
    z = torch.tensor([[0.0], [2.0], [-1.0], [3.0]])
    y = torch.tensor([1, 1, 0, 0])
    sig = [1 / (1 + math.exp(-v)) for v in (0.0, 2.0, -1.0, 3.0)]
    per = [-math.log(sig[0]), -math.log(sig[1]), -math.log(1 - sig[2]), -math.log(1 - sig[3])]
    assert data_loss(z, y).item() == pytest.approx(sum(per) / 4, rel=1e-6)
    # logit 0 is probability 0.5, which Keras's `> 0.5` threshold counts as class 0.
    assert num_correct(z, y).item() == 2


@pytest.mark.keras
def test_same_loss_as_keras(keras):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(16, 5)).astype("float32") * 4
    logits[0, 0] = 40.0  # a probability below 1e-7 for the other classes: Keras clips
    y = rng.integers(0, 5, size=16)
    y[0] = 3
    w = rng.uniform(0.2, 3.0, size=16).astype("float32")
    onehot = np.eye(5, dtype="float32")[y]
    t_logits, t_y, t_w = torch.tensor(logits), torch.tensor(y), torch.tensor(w)

    k = keras.losses.CategoricalCrossentropy(from_logits=True)
    expected = float(keras.ops.convert_to_numpy(k(onehot, logits, sample_weight=w)))
    assert data_loss(t_logits, t_y, t_w).item() == pytest.approx(expected, rel=1e-6)

    # Keras's torch backend on probabilities clips them to [1e-7, 1 - 1e-7]: loss_epsilon.
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    k = keras.losses.CategoricalCrossentropy()
    clipped = float(keras.ops.convert_to_numpy(k(onehot, probs, sample_weight=w)))
    ours = data_loss(t_logits, t_y, t_w, epsilon=1e-7).item()
    assert ours == pytest.approx(clipped, rel=1e-5)
    assert abs(ours - expected) > 0.1  # the clipped sample makes a visible difference

    z = rng.normal(size=(16, 1)).astype("float32") * 3
    yb = rng.integers(0, 2, size=16)
    k = keras.losses.BinaryCrossentropy(from_logits=True)
    expected = float(
        keras.ops.convert_to_numpy(k(yb[:, None].astype("float32"), z, sample_weight=w))
    )
    assert data_loss(torch.tensor(z), torch.tensor(yb), t_w).item() == pytest.approx(
        expected, rel=1e-6
    )
    k = keras.losses.BinaryCrossentropy()
    probs = keras.ops.convert_to_numpy(keras.ops.sigmoid(z))
    expected = float(keras.ops.convert_to_numpy(k(yb[:, None].astype("float32"), probs)))
    ours = per_sample_loss(torch.tensor(z), torch.tensor(yb), 1e-7).mean().item()
    assert ours == pytest.approx(expected, rel=1e-5)
