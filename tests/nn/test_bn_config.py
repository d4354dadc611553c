"""get_config / from_config round trips (JSON) and what cannot be written down."""

from __future__ import annotations

import json

import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm
from bnlab.nn.constraints import MaxNorm
from bnlab.nn.initializers import Constant
from bnlab.nn.regularizers import L1L2

CONFIGS = {
    "defaults": {},
    "everything": {
        "momentum": 0.8,
        "epsilon": 1e-5,
        "center": True,
        "scale": False,
        "beta_initializer": Constant(0.25),
        "moving_mean_initializer": "ones",
        "moving_variance_initializer": {"class_name": "Constant", "config": {"value": 2.0}},
        "beta_regularizer": L1L2(l1=0.01, l2=0.001),
        "beta_constraint": MaxNorm(1.5),
        "gamma_constraint": "non_neg",
        "axis": -1,
        "variance": "unbiased",
        "num_features": 3,
    },
    "renorm": {
        "renorm": True,
        "renorm_clipping": {"rmax": 2.0, "dmax": 1.0},
        "renorm_momentum": 0.9,
    },
    "ghost": {"virtual_batch_size": 4, "num_features": 3, "gamma_regularizer": "l2"},
}


@pytest.mark.parametrize("kwargs", CONFIGS.values(), ids=CONFIGS.keys())
def test_config_round_trip_through_json(kwargs):
    bn = BatchNorm(**kwargs)
    bn.trainable = False
    config = bn.get_config()
    text = json.dumps(config)
    again = BatchNorm.from_config(json.loads(text))
    assert again.get_config() == config
    assert again.trainable is False
    # the rebuilt layer computes the same function once it holds the same state
    x = torch.randn(8, 5, 3) if bn.axis == -1 else torch.randn(8, 3, 5)
    bn.trainable = again.trainable = True
    bn.train()(x)
    again.train()(torch.zeros_like(x) + 1)  # build it (lazy layers), then take the state
    again.load_state_dict(bn.state_dict())
    x2 = torch.randn_like(x)
    for mode in (True, False):
        torch.testing.assert_close(again.train(mode)(x2), bn.train(mode)(x2), rtol=0, atol=0)


def test_config_values_are_keras_style():
    config = BatchNorm(**CONFIGS["everything"]).get_config()
    assert config["beta_initializer"] == {"class_name": "Constant", "config": {"value": 0.25}}
    assert config["gamma_initializer"] == "ones"
    assert config["beta_regularizer"] == {"class_name": "L1L2", "config": {"l1": 0.01, "l2": 0.001}}
    assert config["beta_constraint"] == {
        "class_name": "MaxNorm",
        "config": {"max_value": 1.5, "axis": 0},
    }
    assert config["gamma_constraint"] == {"class_name": "NonNeg", "config": {}}
    assert config["renorm_clipping"] is None and config["num_features"] == 3


def test_keras_style_dicts_are_read():
    bn = BatchNorm.from_config(
        {
            "name": "batch_normalization",
            "dtype": {"class_name": "DTypePolicy", "config": {"name": "float32"}},
            "trainable": True,
            "axis": [3],
            "momentum": 0.9,
            "gamma_initializer": {
                "module": "keras.initializers",
                "class_name": "Ones",
                "config": {},
            },
            "beta_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
            "gamma_regularizer": {"class_name": "L2", "config": {"l2": 0.05}},
            "beta_regularizer": {"class_name": "L1", "config": {"l1": 0.02}},
            "synchronized": False,
        }
    )
    assert bn.gamma_regularizer == L1L2(l2=0.05) and bn.beta_regularizer == L1L2(l1=0.02)
    assert bn.get_config()["beta_initializer"] == "glorot_uniform"
    assert bn.axis == 3 and bn.momentum == 0.9


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"gamma_initializer": lambda t: t.fill_(2.0)}, "gamma_initializer"),
        ({"beta_regularizer": lambda w: w.sum()}, "beta_regularizer"),
        ({"gamma_constraint": lambda w: w}, "gamma_constraint"),
    ],
)
def test_custom_callables_work_but_do_not_serialize(kwargs, parameter):
    bn = BatchNorm(num_features=2, **kwargs)
    bn.train()(torch.randn(4, 2))
    with pytest.raises(ConfigError, match=f"{parameter}: .*cannot be serialized"):
        bn.get_config()
