"""``bnlab.freeze``: frozen BN that ``model.train()`` cannot undo (PyTorch) or trainable=False (Keras)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnlab
from bnlab.doctor.freeze import FrozenBatchNorm
from bnlab.errors import ConfigError


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 1.5)
    return net


def _step(net, x):
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net.train()
    loss = F.cross_entropy(net(x), torch.zeros(x.shape[0], dtype=torch.long))
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("what", ["stats", "all"])
def test_torch_freeze_survives_train_mode(what):
    net = _net()
    ref = copy.deepcopy(net)
    frozen = bnlab.freeze(net, what=what)
    assert frozen is net and isinstance(net[1], FrozenBatchNorm)
    assert set(net.state_dict()) == set(ref.state_dict())  # same keys: weights load either way
    x = torch.randn(32, 4) * 3 + 1
    net.train()
    with torch.no_grad():  # train mode: still the stored statistics, exactly eval-mode BN
        expected = F.batch_norm(ref[0](x), ref[1].running_mean, ref[1].running_var,
                                ref[1].weight, ref[1].bias, False, 0.0, ref[1].eps)  # fmt: skip
        torch.testing.assert_close(net[1](net[0](x)), expected, rtol=0, atol=0)
    _step(net, x)
    assert torch.equal(net[1].running_mean, ref[1].running_mean)
    assert torch.equal(net[1].running_var, ref[1].running_var)
    moved = not torch.equal(net[1].weight, ref[1].weight)
    assert moved is (what == "stats")  # gamma trains only when only the stats are frozen


def test_torch_freeze_affine_keeps_stats_moving_and_bad_what_is_refused():
    net = _net()
    ref = copy.deepcopy(net)
    bnlab.freeze(net, what="affine")
    assert isinstance(net[1], nn.BatchNorm1d) and not net[1].weight.requires_grad
    _step(net, torch.randn(32, 4))
    assert not torch.equal(net[1].running_mean, ref[1].running_mean)
    assert torch.equal(net[1].weight, ref[1].weight)
    with pytest.raises(ConfigError, match="what"):
        bnlab.freeze(net, what="everything")


def test_torch_freeze_looks_through_wrappers():
    net = nn.DataParallel(_net())
    bnlab.freeze(net)
    assert isinstance(net.module[1], FrozenBatchNorm)


def test_keras_freeze(keras):
    layers = keras.layers
    model = keras.Sequential([keras.Input((4,)), layers.Dense(6), layers.BatchNormalization(),
                              layers.Dense(2)])  # fmt: skip
    bnlab.freeze(model, what="affine")
    bn = model.layers[1]
    assert bn.trainable and not bn.gamma.trainable and not bn.beta.trainable
    bnlab.freeze(model, what="all")
    assert bn.trainable is False
    with pytest.raises(ConfigError, match="'stats' is not available for Keras"):
        bnlab.freeze(model, what="stats")
