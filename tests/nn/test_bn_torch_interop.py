"""bnlab.BatchNorm <-> torch.nn.BatchNorm*d: same numbers, exact conversions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab
from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm

TOL = {"rtol": 1e-6, "atol": 1e-6}


def _batches(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * (1 + 0.3 * k) + 0.5 * k for k in range(n)]


def _params(layer):
    return [layer.gamma, layer.beta] if isinstance(layer, BatchNorm) else [layer.weight, layer.bias]


@pytest.mark.parametrize("torch_momentum", [0.1, 0.01, 0.5])
def test_unbiased_matches_torch_batchnorm2d(torch_momentum):
    ref = nn.BatchNorm2d(3, momentum=torch_momentum, eps=1e-5)
    ours = BatchNorm(
        momentum=bnlab.torch_to_keras_momentum(torch_momentum),
        epsilon=1e-5,
        variance="unbiased",
        num_features=3,
    )
    xs = _batches(6, (4, 3, 5, 5))
    w = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    for x in xs[:5]:
        outs, grads = [], []
        for layer in (ref, ours):
            xx = x.clone().requires_grad_(True)
            y = layer.train()(xx)
            grads.append(torch.autograd.grad((y * w).sum(), [xx, *_params(layer)]))
            outs.append(y.detach())
        torch.testing.assert_close(outs[1], outs[0], **TOL)
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(b, a, **TOL)
        with torch.no_grad():  # identical SGD steps
            for layer, g in zip((ref, ours), grads, strict=True):
                for p, gp in zip(_params(layer), g[1:], strict=True):
                    p.sub_(0.1 * gp)
        torch.testing.assert_close(ours.moving_mean, ref.running_mean, **TOL)
        torch.testing.assert_close(ours.moving_variance, ref.running_var, **TOL)
    torch.testing.assert_close(ours.eval()(xs[5]), ref.eval()(xs[5]), **TOL)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 5


def _trained_torch_bn(cls=nn.BatchNorm2d, shape=(8, 4, 3, 3), momentum=0.1, affine=True):
    bn = cls(shape[1], momentum=momentum, eps=1e-4, affine=affine)
    opt = torch.optim.SGD(bn.parameters(), lr=0.3) if affine else None
    for x in _batches(4, shape, seed=5):
        y = bn.train()(x)
        if opt:
            opt.zero_grad()
            (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            opt.step()
    return bn


@pytest.mark.parametrize(
    "cls, shape",
    [
        (nn.BatchNorm1d, (8, 4)),
        (nn.BatchNorm1d, (8, 4, 6)),
        (nn.BatchNorm2d, (8, 4, 3, 3)),
        (nn.BatchNorm3d, (4, 4, 2, 2, 2)),
    ],
)
@pytest.mark.parametrize("affine", [True, False])
def test_from_torch_to_torch_round_trip_is_exact(cls, shape, affine):
    bn = _trained_torch_bn(cls, shape, affine=affine)
    bn.eval()
    ours = BatchNorm.from_torch(bn)
    assert ours.momentum == 0.9 and ours.epsilon == 1e-4 and ours.variance == "unbiased"
    assert not ours.training
    back = ours.to_torch()
    assert type(back) is cls
    assert back.momentum == bn.momentum and back.eps == bn.eps and back.affine == bn.affine
    assert back.training == bn.training
    sd_a, sd_b = bn.state_dict(), back.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for key in sd_a:
        assert torch.equal(sd_a[key], sd_b[key]), key
    # and in between, the bnlab layer computes what the torch layer computes
    x = _batches(1, shape, seed=11)[0]
    torch.testing.assert_close(ours(x), bn(x), rtol=0, atol=0)
    torch.testing.assert_close(ours.train()(x), bn.train()(x), **TOL)
    torch.testing.assert_close(ours.moving_variance, bn.running_var, **TOL)


def test_from_torch_keeps_device_dtype_and_requires_grad():
    bn = _trained_torch_bn().double()
    bn.weight.requires_grad_(False)
    ours = BatchNorm.from_torch(bn)
    assert ours.gamma.dtype == torch.float64 and ours.moving_mean.dtype == torch.float64
    assert not ours.gamma.requires_grad and ours.beta.requires_grad
    assert ours.trainable  # a frozen torch weight is not Keras's trainable=False


def test_from_torch_overrides_use_bnlab_conventions():
    bn = _trained_torch_bn()
    ours = BatchNorm.from_torch(bn, momentum=0.99, variance="biased")
    assert ours.momentum == 0.99 and ours.variance == "biased"
    assert torch.equal(ours.moving_mean, bn.running_mean)
    renorm = BatchNorm.from_torch(bn, renorm=True)
    assert torch.equal(renorm.renorm_mean, bn.running_mean)
    torch.testing.assert_close(renorm.moving_stddev, (bn.running_var + bn.eps).sqrt())


def test_from_torch_keeps_the_cumulative_momentum_or_takes_an_override():
    bn = nn.BatchNorm1d(3, momentum=None)
    assert BatchNorm.from_torch(bn).momentum is None
    assert BatchNorm.from_torch(bn).to_torch().momentum is None
    assert BatchNorm.from_torch(bn, momentum=0.9).momentum == 0.9


def test_from_torch_refusals():
    with pytest.raises(ConfigError, match="track_running_stats: False"):
        BatchNorm.from_torch(nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ConfigError, match="torch_bn: GroupNorm"):
        BatchNorm.from_torch(nn.GroupNorm(1, 3))
    with pytest.raises(ConfigError, match=r"axis: -1 cannot be overridden"):
        BatchNorm.from_torch(nn.BatchNorm2d(3), axis=-1)
    with pytest.raises(ConfigError, match="unknown option 'momentun'"):
        BatchNorm.from_torch(nn.BatchNorm2d(3), momentun=0.9)


def test_to_torch_partial_affine_computes_the_same_function():
    ours = BatchNorm(num_features=3, scale=False)
    with torch.no_grad():
        ours.beta.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = _batches(1, (6, 3))[0]
    ours.train()(x)
    bn = ours.to_torch()
    assert isinstance(bn, nn.BatchNorm1d) and bn.affine
    assert not bn.weight.requires_grad and bn.bias.requires_grad
    torch.testing.assert_close(bn.eval()(x), ours.eval()(x), rtol=0, atol=0)


def test_to_torch_class_choice_and_refusals():
    never_called = BatchNorm(num_features=3)
    with pytest.raises(ConfigError, match="cls: None"):
        never_called.to_torch()
    assert isinstance(never_called.to_torch(cls=nn.BatchNorm3d), nn.BatchNorm3d)
    with pytest.raises(ConfigError, match="cls: .*GroupNorm"):
        never_called.to_torch(cls=nn.GroupNorm)
    with pytest.raises(ConfigError, match="num_features: None"):
        BatchNorm().to_torch()
    with pytest.raises(ConfigError, match="renorm: True"):
        BatchNorm(num_features=3, renorm=True).to_torch(cls=nn.BatchNorm1d)
    with pytest.raises(ConfigError, match="virtual_batch_size: 4"):
        BatchNorm(num_features=3, virtual_batch_size=4).to_torch(cls=nn.BatchNorm1d)
    frozen = BatchNorm(num_features=3)
    frozen.trainable = False
    with pytest.raises(ConfigError, match="trainable: False"):
        frozen.to_torch(cls=nn.BatchNorm1d)
    nhwc = BatchNorm(axis=-1)
    nhwc(torch.randn(2, 4, 4, 3))
    with pytest.raises(ConfigError, match="axis: -1"):
        nhwc.to_torch()
    flat = BatchNorm(axis=-1)
    flat(torch.randn(4, 3))  # on (N, C), axis -1 is torch's channel axis
    assert isinstance(flat.to_torch(), nn.BatchNorm1d)
