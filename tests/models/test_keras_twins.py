"""The presets against the seeds' Keras networks (Keras 3, torch backend).

After copying a Keras model's weights (randomised, BN moving statistics included) into the
bnlab preset, both compute the same outputs: probabilities in inference mode for every
model, and in training mode (batch statistics) for models without dropout, including the
moving statistics the training step leaves behind.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.models import build, presets, summary
from bnlab.nn import BatchNorm, regularization_loss

pytestmark = [
    pytest.mark.keras,
    # Keras's torch backend calls np.array(tensor, copy=False) (numpy 2 deprecation): noise
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
TOL = 1e-5


@pytest.fixture(scope="module")
def twins(keras):
    from bnlab.models import keras_twins

    return keras_twins


def randomize(keras, model, seed=0):
    """Non-default biases, gamma, beta and moving statistics so that copying them matters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.3, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
        elif getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype("float32"))


def twin_pair(keras, twins, name, options, seed=0):
    k_model = twins.build_keras(name, **options)
    randomize(keras, k_model, seed)
    t_model = build(name, **options)
    twins.copy_keras_weights(k_model, t_model)
    return k_model, t_model


def inputs(t_model, n=8, seed=1):
    shape = t_model.bnlab_meta["input_shape"]
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype("float32")
    x_keras = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x  # NCHW -> NHWC
    return torch.from_numpy(x), x_keras


def probabilities(t_model, x):
    logits = t_model(x)
    if t_model.bnlab_meta["task"] == "binary":
        return torch.sigmoid(logits).detach().numpy()
    return torch.softmax(logits, dim=1).detach().numpy()


INFERENCE_CASES = [
    ("fashion_cnn", {}),
    ("fashion_cnn", {"norm": "none"}),
    ("circles_mlp", {}),
    ("circles_mlp", {"bn_position": "before_activation"}),
    ("cifar_small", {}),
    ("malimg_cnn", {}),
    ("malimg_cnn", {"bn_placement": "after_conv", "bn_position": "before_activation"}),
    ("cifar_deep", {"input_shape": (3, 16, 16)}),  # the seed's layers, a smaller input
    ("scenes_cnn", {"input_shape": (3, 40, 40)}),
    ("scenes_cnn", {"input_shape": (3, 40, 40), "convs": 2, "norm": "none"}),
    ("digits_cnn", {}),
]


@pytest.mark.parametrize(("name", "options"), INFERENCE_CASES)
def test_same_inference_outputs(keras, twins, name, options):
    k_model, t_model = twin_pair(keras, twins, name, options)
    x, x_keras = inputs(t_model)
    expected = keras.ops.convert_to_numpy(k_model(x_keras, training=False))
    got = probabilities(t_model.eval(), x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


TRAINING_CASES = [
    ("circles_mlp", {}),
    ("circles_mlp", {"bn_position": "before_activation", "bn_momentum": 0.5}),
    ("fashion_cnn", {"dropout": 0.0}),
    ("fashion_cnn", {"dropout": 0.0, "bn_position": "before_activation"}),
    ("cifar_small", {"dropout": 0.0, "bn_momentum": 0.8}),
    ("digits_cnn", {}),
]


@pytest.mark.parametrize(("name", "options"), TRAINING_CASES)
def test_same_training_mode_outputs_and_moving_statistics(keras, twins, name, options):
    k_model, t_model = twin_pair(keras, twins, name, options)
    x, x_keras = inputs(t_model, n=16)
    expected = keras.ops.convert_to_numpy(k_model(x_keras, training=True))
    got = probabilities(t_model.train(), x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    k_bns = [lay for lay in k_model.layers if isinstance(lay, keras.layers.BatchNormalization)]
    t_bns = [m for m in t_model.modules() if isinstance(m, BatchNorm)]
    assert len(k_bns) == len(t_bns) > 0
    for k_bn, t_bn in zip(k_bns, t_bns, strict=True):
        for key in ("moving_mean", "moving_variance"):
            np.testing.assert_allclose(
                getattr(t_bn, key).numpy(),
                keras.ops.convert_to_numpy(getattr(k_bn, key)),
                rtol=TOL,
                atol=TOL,
                err_msg=f"{k_bn.name}.{key}",
            )


RENORM = {"renorm": True, "renorm_clipping": {"rmax": 1.5, "rmin": 0.7, "dmax": 0.5}}


def test_batch_renormalization_twin(keras, twins):
    # renorm's r/d corrections use the renorm_mean/renorm_stddev copied from Keras
    k_model, t_model = twin_pair(keras, twins, "circles_mlp", {"norm_options": RENORM})
    k_bn = k_model.get_layer("bn1")
    rng = np.random.default_rng(5)
    for key in ("renorm_mean", "renorm_stddev", "moving_stddev"):
        getattr(k_bn, key).assign(rng.uniform(0.5, 1.5, 50).astype("float32"))
    twins.copy_keras_weights(k_model, t_model)
    x, x_keras = inputs(t_model, n=16)
    expected = keras.ops.convert_to_numpy(k_model(x_keras, training=True))
    np.testing.assert_allclose(probabilities(t_model.train(), x), expected, rtol=0, atol=TOL)
    for key in ("moving_mean", "moving_variance", "renorm_mean", "renorm_stddev"):
        np.testing.assert_allclose(
            getattr(t_model.bn1, key).numpy(),
            keras.ops.convert_to_numpy(getattr(k_bn, key)),
            rtol=TOL,
            atol=TOL,
            err_msg=key,
        )
    expected = keras.ops.convert_to_numpy(k_model(x_keras, training=False))
    np.testing.assert_allclose(probabilities(t_model.eval(), x), expected, rtol=0, atol=TOL)
    s = summary(t_model)  # renorm's three statistics are non-trainable weights in Keras too
    assert keras_counts(k_model) == (s["total"], s["trainable"], s["non_trainable"])
    assert s["non_trainable"] == 5 * 50


def keras_counts(k_model):
    count = lambda ws: sum(int(np.prod(w.shape)) for w in ws)  # noqa: E731
    return (
        count(k_model.weights),
        count(k_model.trainable_weights),
        count(k_model.non_trainable_weights),
    )


@pytest.mark.parametrize("name", presets())
def test_parameter_counts_equal_keras(keras, twins, name):
    for options in ({}, {"norm": "none"}):
        s = summary(build(name, **options), input_shape=None)
        k_model = twins.build_keras(name, **options)
        assert keras_counts(k_model) == (s["total"], s["trainable"], s["non_trainable"])


@pytest.mark.parametrize(("name", "options"), [("fashion_cnn", {}), ("cifar_deep", {}),
                                               ("scenes_cnn", {})])  # fmt: skip
def test_layer_output_shapes_equal_keras(keras, twins, name, options):
    k_model = twins.build_keras(name, **options)
    shapes = {n: s for n, _, s, _ in summary(build(name, **options))["layers"]}
    compared = 0
    for layer in k_model.layers:
        if layer.name not in shapes:
            continue
        k_shape = tuple(layer.output.shape)
        if len(k_shape) == 4:  # NHWC -> NCHW
            k_shape = (k_shape[0], k_shape[3], k_shape[1], k_shape[2])
        assert shapes[layer.name] == k_shape, layer.name
        compared += 1
    assert compared >= len(k_model.layers) - 1  # every layer but the output softmax


@pytest.mark.parametrize(
    ("name", "options"), [("cifar_small", {"l2": 0.01}), ("fashion_cnn", {"l2": 0.003})]
)
def test_l2_penalty_equals_keras(keras, twins, name, options):
    k_model, t_model = twin_pair(keras, twins, name, options)
    k_model(inputs(t_model, n=2)[1])
    keras_penalty = sum(float(keras.ops.convert_to_numpy(loss)) for loss in k_model.losses)
    assert keras_penalty > 0
    assert abs(float(regularization_loss(t_model).detach()) - keras_penalty) <= 1e-5 * keras_penalty


def test_copy_torch_weights_back_into_keras(keras, twins):
    torch.manual_seed(0)
    t_model = build("fashion_cnn", dropout=0.0)
    t_model.train()(torch.randn(32, 1, 28, 28))  # moving statistics away from 0 / 1
    k_model = twins.copy_torch_weights(t_model, twins.build_keras("fashion_cnn", dropout=0.0))
    x, x_keras = inputs(t_model)
    expected = keras.ops.convert_to_numpy(k_model(x_keras, training=False))
    np.testing.assert_allclose(probabilities(t_model.eval(), x), expected, rtol=0, atol=TOL)


def test_different_structures_are_refused(keras, twins):
    with pytest.raises(ConfigError, match="keras_model: 7 layers with weights"):
        twins.copy_keras_weights(twins.build_keras("fashion_cnn"), build("circles_mlp"))
    with pytest.raises(ConfigError, match="keras_model: layer 'dense1' .* has shape"):
        twins.copy_keras_weights(
            twins.build_keras("circles_mlp", units=8), build("circles_mlp", units=9)
        )


def test_norm_kinds_without_a_keras_layer_are_refused(twins, monkeypatch):
    from bnlab.nn import registry

    monkeypatch.setitem(registry.NORM_KINDS, "other", lambda n, **kw: torch.nn.Identity())
    with pytest.raises(ConfigError, match="norm: 'other' has no Keras 3 twin"):
        twins.build_keras("circles_mlp", norm="other")
    # ghost batches exist in bnlab.BatchNorm, not in Keras 3's BatchNormalization
    build("circles_mlp", norm_options={"virtual_batch_size": 2})
    with pytest.raises(ConfigError, match="norm_options: .*virtual_batch_size.* Keras"):
        twins.build_keras("circles_mlp", norm_options={"virtual_batch_size": 2})
