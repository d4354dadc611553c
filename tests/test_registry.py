"""The one Registry helper: duplicates refused, did-you-mean on a miss, and make_norm taking a
class or a functools.partial as timm's create_norm_layer does."""

from __future__ import annotations

import functools

import pytest
import torch

from bnlab import BatchNorm
from bnlab.errors import ConfigError
from bnlab.models.registry import PRESETS
from bnlab.nn.registry import NORM_KINDS, make_norm
from bnlab.registry import Registry
from bnlab.study.engines import SequentialEngine, register_engine


def test_registry_refuses_duplicates_and_suggests_the_closest_name():
    reg = Registry("norm", {"batch": 1})

    @reg.register("group")
    def group():
        return 2

    assert reg.lookup("group") is group and reg.names() == ["batch", "group"]
    with pytest.raises(ConfigError, match=r"norm: 'batch' is already registered") as info:
        reg.register("batch", 3)
    assert info.value.param == "norm" and reg["batch"] == 1
    with pytest.raises(ConfigError) as info:
        reg.lookup("btach")
    assert str(info.value) == "norm: 'btach' is not one of 'batch', 'group' (did you mean 'batch'?)"
    assert (info.value.param, info.value.value) == ("norm", "btach")


def test_every_table_is_a_registry():
    assert isinstance(NORM_KINDS, Registry) and isinstance(PRESETS, Registry)
    with pytest.raises(ConfigError, match="preset: 'circles_mpl'.*did you mean 'circles_mlp'"):
        PRESETS.lookup("circles_mpl")
    with pytest.raises(ConfigError, match="engine: 'sequential' is already registered"):
        register_engine("sequential", SequentialEngine())


def test_make_norm_takes_a_class_or_a_partial():
    torch_bn = make_norm(torch.nn.BatchNorm1d, 4, momentum=0.2)
    assert isinstance(torch_bn, torch.nn.BatchNorm1d) and torch_bn.momentum == 0.2
    keras_bn = make_norm(functools.partial(BatchNorm, momentum=0.9), 4, epsilon=1e-5)
    assert isinstance(keras_bn, BatchNorm)
    assert (keras_bn.momentum, keras_bn.epsilon, keras_bn.num_features) == (0.9, 1e-5, 4)
    by_name = make_norm("batch", 4, momentum=0.9, epsilon=1e-5)
    x = torch.randn(8, 4)
    torch.testing.assert_close(keras_bn.train()(x), by_name.train()(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="norm: .*BatchNorm1d.*epsilon"):
        make_norm(torch.nn.BatchNorm1d, 4, epsilon=1e-3)
