"""bnlab.nn.fold_bn: the folded copy computes the unfolded model's eval-mode function.

Every BN gets non-trivial statistics and affine parameters first (fresh ones are the
identity map up to epsilon, which would hide a wrong fold). Tolerance: 1e-5 relative to
the output's scale.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnlab
from bnlab import models
from bnlab.nn.fold import _is_bn


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if not _is_bn(m):
                continue
            c = m.running_mean.shape[0]
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.25)
            for name in ("weight", "bias", "gamma", "beta"):
                p = getattr(m, name, None)
                if isinstance(p, nn.Parameter):
                    p.copy_(
                        torch.randn(c, generator=g) * 0.7
                        + (1.0 if name in ("weight", "gamma") else 0.0)
                    )


def _check_equal(model, x):
    model.eval()
    with torch.no_grad():
        expected = model(x)
    folded = bnlab.nn.fold_bn(model)
    assert not folded.training
    with torch.no_grad():
        got = folded(x)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * scale)
    return folded


def _bn_names(model):
    return sorted(n for n, m in model.named_modules() if _is_bn(m))


PRESET_VARIANTS = [
    (name, position)
    for name in models.presets()
    for position in ("after_activation", "before_activation")
]
SMALL_INPUTS = {"scenes_cnn": (3, 64, 64), "malimg_cnn": (3, 32, 32)}  # conv stacks fit any size


@pytest.mark.parametrize(
    "name, position", PRESET_VARIANTS, ids=[f"{n}-{p}" for n, p in PRESET_VARIANTS]
)
def test_every_preset_folds_to_the_same_function(name, position):
    options = {"norm": "batch", "bn_position": position}
    if name in SMALL_INPUTS:
        options["input_shape"] = SMALL_INPUTS[name]
    model = models.build(name, **options)
    shape = models.resolve_options(name, **options)["input_shape"]
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        model(x)  # build lazy layers
    _randomize_bn(model)
    folded = _check_equal(model, x)
    report = folded.bn_folding
    assert sorted([bn for bn, _ in report.folded] + [bn for bn, _ in report.left]) == _bn_names(
        model
    )
    assert _bn_names(folded) == sorted(bn for bn, _ in report.left)
    if position == "before_activation" and name == "circles_mlp":
        assert report.folded == [("bn1", "dense1")]  # Dense -> BN -> ReLU


class ResidualBlock(nn.Module):
    """ResNet's basic block with a projection shortcut (torchvision's layout)."""

    def __init__(self, cin=3, cout=6):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout)
        )
        self.tap = nn.Conv2d(cout, cout, 1)
        self.bn_shared = nn.BatchNorm2d(cout)  # reads a conv whose output is also added

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = torch.relu(out + self.down(x))
        t = self.tap(out)
        return self.bn_shared(t) + t


def test_resnet_block_folds_through_the_traced_graph():
    model = ResidualBlock()
    _randomize_bn(model)
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(3))
    folded = _check_equal(model, x)
    report = folded.bn_folding
    assert sorted(report.folded) == [("bn1", "conv1"), ("bn2", "conv2"), ("down.1", "down.0")]
    assert report.left == [("bn_shared", "the output of tap is also used elsewhere")]
    assert isinstance(folded, torch.fx.GraphModule)
    assert folded.conv1.bias is not None and model.conv1.bias is None  # the original is untouched


@pytest.mark.parametrize("bias", [True, False])
def test_conv1d_linear_and_bnlab_layers(bias):
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, bias=bias),
        bnlab.BatchNorm(num_features=4, epsilon=1e-3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6, 5, bias=bias),
        nn.BatchNorm1d(5),
        nn.Linear(5, 3),
        bnlab.BatchNorm(axis=-1, num_features=3, center=False, renorm=True),
    )
    _randomize_bn(model)
    x = torch.randn(4, 2, 8, generator=torch.Generator().manual_seed(5))
    folded = _check_equal(model, x)
    assert [bn for bn, _ in folded.bn_folding.folded] == ["1", "5", "7"]
    assert isinstance(folded, nn.Sequential) and _bn_names(folded) == []


def test_unfoldable_bn_is_left_and_listed():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        bnlab.BatchNorm(axis=-1, num_features=4),  # NCHW input, axis -1 is the width
        nn.MaxPool2d(2),
        nn.BatchNorm2d(4, track_running_stats=False),
    )
    with torch.no_grad():
        model[1].moving_mean.fill_(0.5)
    x = torch.randn(2, 3, 6, 6)
    folded = _check_equal(model, x)
    reasons = dict(folded.bn_folding.left)
    assert "not the Conv2d's channel axis" in reasons["1"]
    assert "MaxPool2d" in reasons["3"] or "running statistics" in reasons["3"]
    assert folded.bn_folding.folded == []


def test_keras_model_folds_to_a_new_keras_model(keras):
    import numpy as np

    inputs = keras.Input((8, 8, 2))
    a = keras.layers.Conv2D(4, 3, use_bias=False, name="c1")(inputs)
    a = keras.layers.BatchNormalization(name="bn1")(a)
    a = keras.layers.ReLU()(a)
    b = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(a)
    b = keras.layers.BatchNormalization(name="bn2")(b)  # after the conv's own ReLU: left
    c = keras.layers.Conv2D(4, 1, name="c3")(b)
    c = keras.layers.Add()([keras.layers.BatchNormalization(name="bn3")(c), c])  # c read twice
    d = keras.layers.Dense(3, name="d1")(keras.layers.Flatten()(c))
    d = keras.layers.BatchNormalization(name="bn4", scale=False)(d)
    model = keras.Model(inputs, d)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=n) * 0.5)
            layer.moving_variance.assign(rng.uniform(0.3, 2.0, size=n))
            if layer.gamma is not None:
                layer.gamma.assign(rng.normal(size=n) * 0.5 + 1)
            layer.beta.assign(rng.normal(size=n) * 0.5)
    x = rng.normal(size=(3, 8, 8, 2)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    folded = bnlab.nn.fold_bn(model)
    got = keras.ops.convert_to_numpy(folded(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert sorted(folded.bn_folding.folded) == [("bn1", "c1"), ("bn4", "d1")]
    assert {name for name, _ in folded.bn_folding.left} == {"bn2", "bn3"}
    assert not any(
        isinstance(la, keras.layers.BatchNormalization) and la.name in ("bn1", "bn4")
        for la in folded.layers
    )
    sequential = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, name="d"),
            keras.layers.BatchNormalization(name="bn"),
        ]
    )
    sequential.get_layer("bn").moving_mean.assign(rng.normal(size=4))
    xs = rng.normal(size=(6, 5)).astype("float32")
    folded_seq = bnlab.nn.fold_bn(sequential)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded_seq(xs, training=False)),
        keras.ops.convert_to_numpy(sequential(xs, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert isinstance(folded_seq.get_layer("bn"), keras.layers.Identity)
    assert model.get_layer("c1").bias is None  # the original is untouched


@pytest.mark.parametrize("name", ["circles_mlp", "cifar_small", "fashion_cnn"])
def test_keras_twins_of_presets_fold_to_the_same_function(keras, name):
    import numpy as np

    from bnlab.models.keras_twins import build_keras

    model = build_keras(name, norm="batch", bn_position="before_activation")
    rng = np.random.default_rng(2)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=n) * 0.3)
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size=n))
    x = rng.normal(size=(2, *model.input_shape[1:])).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    folded = bnlab.nn.fold_bn(model)
    got = keras.ops.convert_to_numpy(folded(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    report = folded.bn_folding
    bn_count = sum(isinstance(la, keras.layers.BatchNormalization) for la in model.layers)
    assert len(report.folded) + len(report.left) == bn_count
    if name != "fashion_cnn":  # fashion's BN sit behind pooling
        assert report.folded and not report.left
