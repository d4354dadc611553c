"""convert() swaps torch and bnlab BN layers in place without changing what the model computes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm, convert, find_bn_layers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        shared = nn.BatchNorm2d(4, momentum=0.2)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), shared
        )
        self.again = shared  # the same module reachable twice
        self.head = nn.ModuleList([nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6)])

    def forward(self, x):
        x = self.again(self.features(x))
        for m in self.head:
            x = m(x)
        return x


def _trained_net():
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        loss = net.train()(torch.randn(8, 1, 6, 6)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def test_find_bn_layers_names_each_layer_once():
    net = Net()
    names = [name for name, _ in find_bn_layers(net)]
    assert names == ["features.1", "features.4", "head.2"]
    assert find_bn_layers(nn.Linear(2, 2)) == []


def test_round_trip_keeps_outputs_and_state():
    net = _trained_net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 1, 6, 6)
    y_torch = net(x)
    torch_twin = copy.deepcopy(net).train()
    y_train_torch = torch_twin(x)  # (updates the twin's running statistics)

    assert convert(net) is net
    bns = [m for _, m in find_bn_layers(net)]
    assert len(bns) == 3 and all(isinstance(m, BatchNorm) for m in bns)
    assert net.again is net.features[4]  # still shared
    assert net.features[4].momentum == 0.8  # torch 0.2 -> Keras 0.8
    assert not net.features[1].training
    torch.testing.assert_close(net(x), y_torch, rtol=0, atol=0)
    bnlab_twin = copy.deepcopy(net).train()
    torch.testing.assert_close(bnlab_twin(x), y_train_torch, rtol=1e-6, atol=1e-6)
    for (_, a), (_, b) in zip(find_bn_layers(bnlab_twin), find_bn_layers(torch_twin), strict=True):
        torch.testing.assert_close(a.moving_variance, b.running_var, rtol=1e-6, atol=1e-6)
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked)

    convert(net, to="torch")
    assert isinstance(net.head[2], nn.BatchNorm1d) and isinstance(net.features[1], nn.BatchNorm2d)
    after = net.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), key
    assert net.features[4].momentum == 0.2


def test_overrides_apply_to_every_new_layer():
    net = convert(_trained_net(), momentum=0.99, variance="biased")
    for _, m in find_bn_layers(net):
        assert m.momentum == 0.99 and m.variance == "biased"


def test_root_module_and_errors():
    bn = nn.BatchNorm1d(3)
    converted = convert(bn)
    assert isinstance(converted, BatchNorm)
    assert isinstance(convert(converted, to="torch"), nn.BatchNorm1d)
    with pytest.raises(ConfigError, match=r"to: 'keras' is not one of"):
        convert(bn, to="keras")
    with pytest.raises(
        ConfigError, match=r"momentum: 0.9 is not an option of convert\(to='torch'\)"
    ):
        convert(converted, to="torch", momentum=0.9)
    with pytest.raises(ConfigError, match="unknown option 'eps'"):
        convert(nn.Sequential(nn.BatchNorm1d(3)), eps=1e-3)


def test_same_padding_with_an_even_kernel_equals_torchs_without_its_warning():
    import warnings

    from bnlab.nn import Conv2d

    torch.manual_seed(0)
    conv = Conv2d(3, 5, 4, padding="same")
    reference = torch.nn.Conv2d(3, 5, 4, padding="same")
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 9, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = conv(x)
    assert out.shape == (2, 5, 9, 7)
    assert torch.equal(out, reference(x))
