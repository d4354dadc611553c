"""Preset names and options: defaults, checks, errors that name the option and the value."""

from __future__ import annotations

import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.models import build, describe, preset_options, presets, resolve_options

SEED_PRESETS = [
    "malimg_cnn",
    "scenes_cnn",
    "fashion_cnn",
    "cifar_small",
    "cifar_deep",
    "circles_mlp",
]


def test_every_seed_network_is_a_preset():
    assert set(SEED_PRESETS) <= set(presets())
    assert presets() == sorted(presets())
    for name in presets():
        line = describe(name)
        assert "\n" not in line and len(line) > 20
    long = describe("scenes_cnn", options=True).splitlines()
    assert long[0] == describe("scenes_cnn")
    assert "  convs = 3  # 2 or 3 conv blocks (the seed's versions)" in long
    assert len(long) == 1 + len(preset_options("scenes_cnn"))


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(
        ConfigError, match=r"preset: 'fashion_cn' is not one of .*did you mean 'fashion_cnn'"
    ):
        build("fashion_cn")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        build("fashion_cnn", bn_momentun=0.9)
    msg = str(err.value)
    assert "fashion_cnn: unknown option 'bn_momentun'" in msg
    assert "did you mean 'bn_momentum'" in msg
    for name in preset_options("fashion_cnn"):
        assert name in msg


def test_options_that_make_no_sense_are_unknown():
    with pytest.raises(ConfigError, match="circles_mlp: unknown option 'dropout'"):
        build("circles_mlp", dropout=0.5)
    with pytest.raises(ConfigError, match="fashion_cnn: unknown option 'convs'"):
        build("fashion_cnn", convs=2)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"bn_momentum": 1.5}, "bn_momentum: 1.5 is not in [0, 1]"),
        ({"bn_momentum": "0.9"}, "bn_momentum: '0.9' is not a number"),
        ({"bn_epsilon": 0.0}, "bn_epsilon: 0.0 is not in (0, inf)"),
        ({"norm": "btach"}, "norm: 'btach' is not one of"),
        ({"bn_position": "before"}, "bn_position: 'before' is not one of"),
        ({"l2": -0.1}, "l2: -0.1 is not in [0, inf)"),
        ({"dropout": 1.0}, "dropout: 1.0 is not in [0, 1)"),
        ({"dropout": (0.1, 1.2)}, "dropout[1]: 1.2 is not in [0, 1)"),
        ({"dropout": (0.1, 0.2, 0.3)}, "dropout: [0.1, 0.2, 0.3] gives 3 rate(s)"),
        ({"num_classes": 1}, "num_classes: 1 is not in [2, inf)"),
        ({"num_classes": 2.5}, "num_classes: 2.5 is not an integer"),
        ({"input_shape": (64, 64)}, "input_shape: (64, 64) is not a shape (C, H, W)"),
        ({"input_shape": (3, 0, 64)}, "input_shape[1]: 0 is not in [1, inf)"),
        ({"input_shape": (3, 8, 8)}, "input_shape: (3, 8, 8) is too small for malimg_cnn"),
        ({"norm_options": [1, 2]}, "norm_options: [1, 2] is not a dict"),
        ({"bn_placement": "after_relu"}, "bn_placement: 'after_relu' is not one of"),
    ],
)
def test_bad_values_name_the_option_and_the_value(options, fragment):
    with pytest.raises(ConfigError) as err:
        build("malimg_cnn", **options)
    assert fragment in str(err.value)


def test_norm_options_a_kind_does_not_take_is_a_config_error():
    with pytest.raises(ConfigError, match="norm_options"):
        build("circles_mlp", norm_options={"no_such_option": 1})


def test_preset_options_are_the_defaults_and_a_fresh_copy():
    o = preset_options("scenes_cnn")
    assert o["norm"] == "batch" and o["bn_momentum"] == 0.99 and o["bn_epsilon"] == 1e-3
    assert o["input_shape"] == (3, 224, 224) and o["num_classes"] == 6 and o["convs"] == 3
    assert o["dropout"] == 0.5 and o["l2"] == 0.0 and o["bn_position"] == "after_activation"
    assert preset_options("malimg_cnn")["dropout"] == (0.25, 0.5)
    assert preset_options("cifar_deep")["dropout"] == (0.2, 0.3, 0.4, 0.5)
    assert preset_options("cifar_small")["l2_output"] is False
    o["norm_options"]["x"] = 1
    assert preset_options("scenes_cnn")["norm_options"] == {}


def test_meta_rebuilds_the_same_model():
    torch.manual_seed(3)
    model = build("malimg_cnn", bn_momentum=0.9, dropout=0.1, bn_placement="after_conv")
    meta = model.bnlab_meta
    assert meta["preset"] == "malimg_cnn" and meta["task"] == "multiclass"
    assert meta["input_shape"] == (3, 64, 64) and meta["num_classes"] == 25
    assert meta["options"] == {
        **preset_options("malimg_cnn"),
        "bn_momentum": 0.9,
        "dropout": 0.1,
        "bn_placement": "after_conv",
    }
    torch.manual_seed(3)
    again = build(meta["preset"], **meta["options"])
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_binary_meta():
    meta = build("circles_mlp").bnlab_meta
    assert (meta["task"], meta["num_classes"], meta["input_shape"]) == ("binary", 2, (2,))
    assert build("circles_mlp", num_classes=3).bnlab_meta["task"] == "multiclass"
    assert build("circles_mlp", input_shape=5).bnlab_meta["input_shape"] == (5,)


def test_resolve_options_checks_without_building():
    given = {"bn_momentum": 0.8, "dropout": [0.1, 0.2], "input_shape": [3, 48, 48]}
    resolved = resolve_options("malimg_cnn", **given)
    assert resolved == build("malimg_cnn", **given).bnlab_meta["options"]
    assert resolved["dropout"] == (0.1, 0.2) and resolved["input_shape"] == (3, 48, 48)
    with pytest.raises(ConfigError, match="dropout: \\[0.1\\] gives 1 rate\\(s\\)"):
        resolve_options("malimg_cnn", dropout=[0.1])
    with pytest.raises(ConfigError, match="too small for scenes_cnn"):
        resolve_options("scenes_cnn", input_shape=(3, 12, 12))
