"""What the presets compute: layer order, logits, norm settings, L2, dropout, Keras init."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.models import architecture, build
from bnlab.models.layers import Flatten
from bnlab.nn import BatchNorm, norm_kinds, regularization_loss


def names(model):
    return [n for n, _ in model.named_children()]


def test_flatten_orders_features_like_keras_channels_last():
    x = torch.zeros(1, 3, 2, 2)
    for c in range(3):
        for h in range(2):
            for w in range(2):
                x[0, c, h, w] = 100 * c + 10 * h + w
    # Keras flattens (H, W, C): all channels of pixel (0, 0) first
    expected = [0, 100, 200, 1, 101, 201, 10, 110, 210, 11, 111, 211]
    assert Flatten()(x)[0].tolist() == expected
    assert torch.equal(Flatten()(torch.arange(6.0).reshape(2, 3)), torch.arange(6.0).reshape(2, 3))


def spec_names(preset: str, **options) -> list[str]:
    return [layer.name for layer in architecture(preset, **options).layers]


def test_fashion_layers_in_the_seeds_order():
    seed = [
        "conv1", "relu1", "pool1", "bn1", "conv2", "relu2", "pool2", "bn2",
        "conv3", "relu3", "flatten", "bn3", "dropout", "dense",
    ]  # fmt: skip
    assert spec_names("fashion_cnn") == seed
    # The PyTorch module pools before its ReLU (exact, and cheaper: see the next tests).
    assert names(build("fashion_cnn")) == [
        "conv1", "pool1", "relu1", "bn1", "conv2", "pool2", "relu2", "bn2",
        "conv3", "relu3", "flatten", "bn3", "dropout", "dense",
    ]  # fmt: skip
    no_bn = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3",
             "flatten", "dropout", "dense"]  # fmt: skip
    assert spec_names("fashion_cnn", norm="none") == no_bn
    # without a norm, the position changes nothing: same layers, same order
    assert spec_names("fashion_cnn", norm="none", bn_position="before_activation") == no_bn
    assert names(build("fashion_cnn", norm="none", bn_position="before_activation")) == names(
        build("fashion_cnn", norm="none")
    )


def test_pooling_before_relu_changes_no_value_and_no_gradient():
    """Max pooling and ReLU commute, gradients included (raw pixels: many exact ties in the
    black background, where both send the gradient to the same first maximum)."""
    from bnlab.data import load

    x = load("digits", scale="raw").x_train[:16]
    x = torch.nn.functional.interpolate(x, size=(28, 28))  # 28x28 like Fashion-MNIST
    y = torch.arange(16) % 10
    built = build("fashion_cnn", dropout=0.0).train()
    twin = copy.deepcopy(built)
    children = dict(twin.named_children())
    seed_order = torch.nn.Sequential(*[children[n] for n in spec_names("fashion_cnn")])
    out_a, out_b = built(x), seed_order(x)
    for out in (out_a, out_b):
        torch.nn.functional.cross_entropy(out, y).backward()
    assert torch.equal(out_a, out_b)
    for (name, p), q in zip(built.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    for (name, b), c in zip(built.named_buffers(), twin.buffers(), strict=True):
        assert torch.equal(b, c), name


def test_before_activation_puts_the_norm_between_linear_and_relu():
    assert names(build("fashion_cnn", bn_position="before_activation")) == [
        "conv1", "pool1", "bn1", "relu1", "conv2", "pool2", "bn2", "relu2",
        "conv3", "flatten", "bn3", "relu3", "dropout", "dense",
    ]  # fmt: skip
    assert names(build("circles_mlp", bn_position="before_activation")) == [
        "dense1",
        "bn1",
        "relu1",
        "dense2",
    ]
    assert names(build("circles_mlp")) == ["dense1", "relu1", "bn1", "dense2"]


def test_pool_and_flatten_commute_with_relu():
    # why before_activation may move a pool/flatten in front of the ReLU: same numbers
    torch.manual_seed(0)
    a = build("fashion_cnn", norm="none").eval()
    b = build("fashion_cnn", norm="none").eval()
    b.load_state_dict(a.state_dict())
    seq = dict(b.named_children())
    order = "conv1 pool1 relu1 conv2 pool2 relu2 conv3 flatten relu3 dropout dense".split()
    reordered = torch.nn.Sequential(*[seq[n] for n in order])
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(a(x), reordered(x))


def test_malimg_placements():
    assert spec_names("malimg_cnn")[:6] == ["conv1", "relu1", "pool1", "bn1", "conv2", "relu2"]
    assert spec_names("malimg_cnn", bn_placement="after_conv")[:8] == [
        "conv1", "relu1", "bn1", "pool1", "conv2", "relu2", "bn2", "pool2",
    ]  # fmt: skip


def test_cifar_deep_uses_the_seeds_layer_names():
    seed = ("conv01 bn01 conv01_2 bn01_2 maxpool01 drop01 conv02 bn02 conv02_2 bn02_2 maxpool02 "
            "drop02 conv03_1 bn03 conv03_2 bn03_2 maxpool03 drop03 flat full01 bn drop "
            "classification").split()  # fmt: skip
    got = [n for n in names(build("cifar_deep")) if not n.startswith("relu")]
    assert got == seed


@pytest.mark.parametrize(
    ("name", "options", "x_shape", "out"),
    [
        ("malimg_cnn", {}, (3, 3, 64, 64), 25),
        ("scenes_cnn", {"input_shape": (3, 48, 48)}, (3, 3, 48, 48), 6),
        ("fashion_cnn", {}, (3, 1, 28, 28), 10),
        ("cifar_small", {}, (3, 3, 32, 32), 10),
        ("cifar_deep", {"input_shape": (3, 16, 16)}, (3, 3, 16, 16), 10),
        ("circles_mlp", {}, (3, 2), 1),
        ("circles_mlp", {"num_classes": 4}, (3, 2), 4),
        ("digits_cnn", {"num_classes": 3}, (3, 1, 8, 8), 3),
    ],
)
def test_logits_shape_in_train_and_eval(name, options, x_shape, out):
    model = build(name, **options)
    x = torch.randn(*x_shape)
    assert model.train()(x).shape == (3, out)
    assert model.eval()(x).shape == (3, out)


def test_norm_settings_reach_every_norm_layer():
    model = build("fashion_cnn", bn_momentum=0.8, bn_epsilon=1e-5, norm_options={"center": False})
    bns = [m for m in model.modules() if isinstance(m, BatchNorm)]
    assert len(bns) == 3
    for bn in bns:
        assert (bn.momentum, bn.epsilon, bn.axis, bn.beta) == (0.8, 1e-5, 1, None)
    assert [bn.num_features for bn in bns] == [32, 32, 512]


def test_bn_momentum_is_the_keras_fraction_kept():
    model = build("circles_mlp", bn_momentum=0.8).train()
    x = torch.randn(16, 2)
    h = model.relu1(model.dense1(x))
    model(x)
    assert torch.allclose(model.bn1.moving_mean, 0.2 * h.mean(0), atol=1e-6)


# known extra options some norm kinds need (names from bnlab.nn.make_norm)
KIND_OPTIONS = {"ghost": {"virtual_batch_size": 2}}


@pytest.mark.parametrize("kind", sorted(norm_kinds()))
def test_every_norm_kind_builds_and_runs(kind):
    model = build("digits_cnn", norm=kind, norm_options=KIND_OPTIONS.get(kind, {})).train()
    out = model(torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    n_norm = sum(1 for n in names(model) if n.startswith("bn"))
    assert n_norm == (0 if kind == "none" else 2)


def test_l2_regularizes_every_kernel_and_no_bias():
    model = build("fashion_cnn", l2=0.01)
    kernels = [model.conv1.weight, model.conv2.weight, model.conv3.weight, model.dense.weight]
    expected = 0.01 * sum(float(w.detach().square().sum()) for w in kernels)
    assert math.isclose(float(regularization_loss(model).detach()), expected, rel_tol=1e-5)
    assert float(regularization_loss(build("fashion_cnn"))) == 0.0


def test_cifar_small_l2_follows_the_seed_the_classifier_is_not_regularized():
    model = build("cifar_small", l2=0.01)
    seed_layers = [model.conv1.weight, model.dense1.weight]
    expected = 0.01 * sum(float(w.detach().double().square().sum()) for w in seed_layers)
    assert math.isclose(float(regularization_loss(model).detach()), expected, rel_tol=1e-5)
    everything = build("cifar_small", l2=0.01, l2_output=True)
    extra = 0.01 * float(everything.dense2.weight.detach().double().square().sum())
    total = 0.01 * sum(
        float(w.detach().double().square().sum())
        for w in (everything.conv1.weight, everything.dense1.weight)
    )
    assert math.isclose(
        float(regularization_loss(everything).detach()), total + extra, rel_tol=1e-5
    )


def test_dropout_option_one_rate_or_one_per_layer():
    drops = lambda m: [x.p for x in m.modules() if isinstance(x, torch.nn.Dropout)]  # noqa: E731
    assert drops(build("malimg_cnn")) == [0.25, 0.5]
    assert drops(build("malimg_cnn", dropout=0.1)) == [0.1, 0.1]
    assert drops(build("malimg_cnn", dropout=[0.0, 0.3])) == [0.0, 0.3]
    assert drops(build("cifar_deep")) == [0.2, 0.3, 0.4, 0.5]
    assert drops(build("fashion_cnn")) == [0.2]
    assert drops(build("scenes_cnn", input_shape=(3, 32, 32))) == [0.5]
    model = build("fashion_cnn", norm="none", dropout=0.0).train()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), model(x))  # rate 0: training mode is deterministic


def test_keras_initialization():
    torch.manual_seed(0)
    model = build("cifar_small").requires_grad_(False)
    w = model.dense1.weight  # 8192 -> 512, glorot uniform: U(-limit, limit)
    limit = math.sqrt(6 / (8192 + 512))
    assert float(w.abs().max()) <= limit
    assert math.isclose(float(w.double().var()), limit**2 / 3, rel_tol=0.01)
    assert not model.dense1.bias.any() and not model.conv1.bias.any()
    assert torch.equal(model.bn1.gamma, torch.ones(32))
    assert torch.equal(model.bn1.beta, torch.zeros(32))
    # he_uniform: U(-limit, limit) with limit = sqrt(6 / fan_in), variance 2 / fan_in = 1
    mlp = build("circles_mlp", units=5000).requires_grad_(False)
    assert float(mlp.dense1.weight.abs().max()) <= math.sqrt(3.0)
    assert math.isclose(float(mlp.dense1.weight.double().var()), 1.0, rel_tol=0.05)


def test_too_small_input_is_caught_at_build():
    with pytest.raises(
        ConfigError, match=r"input_shape: \(1, 10, 10\) is too small for fashion_cnn"
    ):
        build("fashion_cnn", input_shape=(1, 10, 10))
