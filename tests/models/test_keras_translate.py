"""The Keras -> torch translation against Keras itself, on every supported layer kind.

Each model below is checked with :func:`check_translation`: outputs in inference mode and in
training mode (batch statistics; dropout rates 0 on both sides) agree to 1e-5 relative to the
output scale, layer by layer. BN layers carry non-trivial statistics and affine weights so a
wrong axis or a swapped statistic cannot pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnlab.errors import ConfigError

keras = pytest.importorskip("keras")
from bnlab.models.keras_check import check_translation  # noqa: E402
from bnlab.models.keras_translate import (  # noqa: E402
    SUPPORTED,
    translate,
    unsupported_layers,
)

L = keras.layers


def _randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
    return model


def _image_models():
    inp = keras.Input((9, 9, 3))
    a = L.Rescaling(1 / 255.0, offset=-0.5)(inp)
    a = L.ZeroPadding2D(((1, 0), (2, 1)))(a)
    a = L.Conv2D(6, 3, strides=2, padding="same", activation="relu")(a)
    a = L.BatchNormalization(momentum=0.9, epsilon=1e-2)(a)
    b = L.Conv2D(6, 1, padding="valid")(a)
    b = L.ReLU(max_value=2.0, negative_slope=0.1)(b)
    c = L.Add()([a, b])
    c = L.Concatenate()([c, a])
    c = L.MaxPooling2D(2, strides=1, padding="same")(c)
    c = L.AveragePooling2D(2, padding="same")(c)
    c = L.SpatialDropout2D(0.3)(c)
    d = L.Concatenate()([L.GlobalAveragePooling2D()(c), L.GlobalMaxPooling2D()(c)])
    e = L.Flatten()(c)
    e = L.Dense(7, activation="tanh")(e)
    e = L.Dropout(0.2)(e)
    f = L.Concatenate()([d, e])
    f = L.BatchNormalization()(f)
    f = L.Reshape((31, 1))(f)
    f = L.Flatten()(f)
    out = L.Dense(4)(f)
    out = L.Softmax()(out)
    functional = keras.Model(inp, out)
    sequential = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.BatchNormalization(),
            L.Activation("elu"),
            L.Flatten(),
            L.Dense(3, activation="softmax"),
        ]
    )
    return [(functional, (9, 9, 3)), (sequential, (8, 8, 1))]


def _sequence_model():
    inp = keras.Input((12, 2))
    a = L.ZeroPadding1D((1, 2))(inp)
    a = L.Conv1D(5, 3, padding="same", activation="relu")(a)
    a = L.BatchNormalization()(a)
    a = L.MaxPooling1D(2)(a)
    a = L.AveragePooling1D(2, padding="same")(a)
    a = L.SpatialDropout1D(0.1)(a)
    a = L.Concatenate()([L.GlobalAveragePooling1D()(a), L.GlobalMaxPooling1D()(a)])
    return keras.Model(inp, L.Dense(2, activation="softmax")(a))


def test_every_supported_layer_kind_matches_keras_in_both_modes():
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    covered = set()
    cases = _image_models() + [(_sequence_model(), (12, 2))]
    for model, shape in cases:
        _randomize_bn(model)
        module = translate(model)
        x_last = torch.rand(6, *shape) * 255 if shape[-1] == 3 else torch.randn(6, *shape)
        x = x_last.movedim(-1, 1)
        check_translation(model, module, x)  # raises naming the layer otherwise
        covered |= {type(layer).__name__ for layer in model.layers}
    assert covered >= set(SUPPORTED) - {"InputLayer"}, set(SUPPORTED) - covered
    assert not unsupported_layers(cases[0][0])


def test_a_wrong_weight_is_found_and_named():
    model = _image_models()[1][0]
    module = translate(model)
    name = model.layers[-1].name
    with torch.no_grad():
        module.layers[name].linear.bias[0] += 1e-2  # one unit: a uniform shift is softmax-invariant
    with pytest.raises(ConfigError, match=rf"Keras layer '{name}' \(Dense\) differs from Keras"):
        check_translation(model, module, torch.randn(4, 1, 8, 8))


def test_unsupported_layers_are_listed():
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(3, kernel_regularizer="l2"), L.LayerNormalization()]
    )
    bad = dict(unsupported_layers(model))
    assert "kernel_regularizer" in bad[model.layers[0].name]
    assert "LayerNormalization" in bad[model.layers[1].name]
    with pytest.raises(ConfigError, match="cannot be translated"):
        translate(model)
