"""make_norm kinds: the right layer, the right numbers, clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, make_norm, norm_kinds
from bnlab.nn.norms import default_groups

PRESET_KW = {"momentum": 0.9, "epsilon": 1e-3, "axis": 1}  # what model builders pass


def _x(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 2 + 1


def test_kinds():
    assert norm_kinds() == ["none", "batch", "renorm", "ghost", "group", "layer", "instance"]


@pytest.mark.parametrize(
    "kind, extra, cls",
    [
        ("none", {}, nn.Identity),
        ("batch", {}, BatchNorm),
        ("renorm", {"renorm_clipping": {"rmax": 2.0}}, BatchNorm),
        ("ghost", {"virtual_batch_size": 4}, BatchNorm),
        ("group", {"num_groups": 4}, GroupNorm),
        ("layer", {}, LayerNorm),
        ("instance", {}, InstanceNorm),
    ],
)
def test_every_kind_takes_the_preset_keywords(kind, extra, cls):
    layer = make_norm(kind, 8, **PRESET_KW, **extra)
    assert type(layer) is cls
    x = _x(8, 8, 3, 3)
    assert layer.train()(x).shape == x.shape
    if isinstance(layer, BatchNorm):
        assert layer.momentum == 0.9 and layer.num_features == 8
    if kind == "renorm":
        assert layer.renorm and layer.renorm_clipping == {"rmax": 2.0}
    if kind == "ghost":
        assert layer.virtual_batch_size == 4
    if kind in ("group", "layer", "instance"):
        assert layer.epsilon == 1e-3 and not any(
            isinstance(b, torch.Tensor) for b in layer.buffers()
        )


def test_group_layer_instance_numbers():
    x = _x(4, 6, 3, 3)
    gamma = torch.linspace(0.5, 1.5, 6)
    beta = torch.linspace(-1, 1, 6)
    for layer, expected in [
        (make_norm("group", 6, num_groups=3, epsilon=1e-5), F.group_norm(x, 3, gamma, beta, 1e-5)),
        (make_norm("layer", 6, epsilon=1e-5), F.group_norm(x, 1, gamma, beta, 1e-5)),
        (
            make_norm("instance", 6, epsilon=1e-5),
            F.instance_norm(x, weight=gamma, bias=beta, eps=1e-5),
        ),
    ]:
        with torch.no_grad():
            layer.gamma.copy_(gamma)
            layer.beta.copy_(beta)
        torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)
    # layer norm = normalise each sample over (C, H, W): torch's layer_norm without affine
    ln = make_norm("layer", 6, epsilon=1e-5)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (6, 3, 3), eps=1e-5), rtol=1e-5, atol=1e-5)


def test_channel_last_axis_equals_permuted_channel_first():
    x = _x(4, 6, 3, 3)
    for kind in ("group", "layer", "instance"):
        a = make_norm(kind, 6, axis=1)
        b = make_norm(kind, 6, axis=-1)
        y = b(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(y, a(x), rtol=1e-6, atol=1e-6)


def test_batch_independent_kinds_do_not_depend_on_the_batch():
    x = _x(6, 4, 2, 2)
    for kind in ("group", "layer", "instance"):
        layer = make_norm(kind, 4)
        torch.testing.assert_close(layer.train()(x)[:2], layer.eval()(x[:2]))


def test_default_groups():
    assert [default_groups(c) for c in (64, 128, 32, 50, 16, 3, 1)] == [32, 32, 16, 25, 8, 1, 1]
    assert make_norm("group", 64).num_groups == 32


def test_errors():
    with pytest.raises(ConfigError, match=r"norm: 'bacth' is not one of .*did you mean 'batch'"):
        make_norm("bacth", 8)
    with pytest.raises(
        ConfigError, match=r"make_norm\('group'\): unknown option 'virtual_batch_size'"
    ):
        make_norm("group", 8, virtual_batch_size=4)
    with pytest.raises(ConfigError, match=r"make_norm\('batch'\): unknown option 'num_groups'"):
        make_norm("batch", 8, num_groups=2)
    with pytest.raises(ConfigError, match=r"make_norm\('renorm'\): unknown option 'renorm'"):
        make_norm("renorm", 8, renorm=False)
    with pytest.raises(ConfigError, match=r"make_norm\('none'\): unknown option 'foo'"):
        make_norm("none", 8, foo=1)
    with pytest.raises(ConfigError, match="virtual_batch_size: None"):
        make_norm("ghost", 8, momentum=0.9)
    with pytest.raises(ConfigError, match="num_groups: 3 does not divide num_features=8"):
        make_norm("group", 8, num_groups=3)
    with pytest.raises(ConfigError, match=r"momentum: 1.5"):
        make_norm("batch", 8, momentum=1.5)
    with pytest.raises(ConfigError, match=r"input: shape \(4, 8\) has no spatial dimensions"):
        make_norm("instance", 8)(torch.randn(4, 8))
    with pytest.raises(
        ConfigError, match=r"num_features: the layer has 8 channels but the input has 5"
    ):
        make_norm("layer", 8)(torch.randn(4, 5))
    with pytest.raises(ConfigError, match=r"axis: 0 is not a channel axis"):
        make_norm("group", 8, axis=0)(torch.randn(8, 8))
