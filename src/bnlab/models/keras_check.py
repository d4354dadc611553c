"""Check a torch translation of a Keras model against Keras itself, layer by layer.

:func:`check_translation` runs both models on one batch in inference mode and in training
mode and, when the outputs differ, names the first layer whose output differs
(:mod:`bnlab.models.keras_translate` makes the translation). Keras is imported lazily.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from bnlab.errors import ConfigError
from bnlab.models.keras_translate import KerasTranslation, _to_last, output_probabilities


def check_translation(model, module: KerasTranslation, x: torch.Tensor, *, tol: float = 1e-5):
    """Raise ConfigError naming the first layer whose output differs from Keras on ``x``.

    ``x`` is a channels-first float32 batch. Both models are compared in inference mode and
    in training mode (batch statistics; dropout rates set to 0 on both sides for the check);
    neither model is changed (the torch module is copied, Keras's weights are restored). A
    layer agrees when ``max |torch - keras| <= tol * max(1, max |keras|)``.
    """
    import keras

    x = x.detach().to(torch.float32).cpu()
    x_last = _to_last(x).numpy()
    saved = [w.numpy().copy() for w in model.weights]
    rates = {}
    try:
        for training in (False, True):
            twin = copy.deepcopy(module).train(training)
            if training:
                for layer in model.layers:
                    if isinstance(layer, keras.layers.Dropout):
                        rates[layer] = layer.rate
                        layer.rate = 0.0
                for m in twin.modules():
                    if isinstance(m, nn.modules.dropout._DropoutNd):
                        m.p = 0.0
            twin.trace = []
            with torch.no_grad():
                got = output_probabilities(twin, twin(x))
            want = np.asarray(keras.ops.convert_to_numpy(model(x_last, training=training)))
            if _close(_to_last(got).numpy(), want, tol):
                continue
            trace = twin.trace
            if twin.output_activation and trace and trace[-1][0] == twin.steps[-1][0]:
                # a fused output softmax/sigmoid: Keras's layer output is the probabilities
                trace[-1] = (trace[-1][0], output_probabilities(twin, trace[-1][1]))
            _raise_first_difference(model, trace, x_last, training, tol, got, want)
    finally:
        for layer, rate in rates.items():
            layer.rate = rate
        for weight, value in zip(model.weights, saved, strict=True):
            weight.assign(value)


def _close(got: np.ndarray, want: np.ndarray, tol: float) -> bool:
    if got.shape != want.shape:
        return False
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    return float(np.max(np.abs(got - want))) <= tol * scale if want.size else True


def _raise_first_difference(model, trace, x_last, training, tol, got, want):
    import keras

    mode = "training" if training else "inference"
    by_name = {layer.name: layer for layer in model.layers}
    names = [name for name, _ in trace if name in by_name]
    probe = keras.Model(model.inputs, [by_name[n].output for n in names])
    outs = probe(x_last, training=training)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    for (name, value), ref in zip(trace, outs, strict=False):
        ref = np.asarray(keras.ops.convert_to_numpy(ref))
        mine = _to_last(value).numpy()
        if not _close(mine, ref, tol):
            diff = float(np.max(np.abs(mine - ref))) if mine.shape == ref.shape else math.inf
            raise ConfigError(
                f"model: the torch translation of Keras layer {name!r} "
                f"({type(by_name[name]).__name__}) differs from Keras in {mode} mode "
                f"(max difference {diff:.3g}, tolerance {tol:g}); the study stops"
            )
    diff = float(np.max(np.abs(_to_last(got).numpy() - want)))
    raise ConfigError(
        f"model: the torch translation's output differs from Keras in {mode} mode (max "
        f"difference {diff:.3g}, tolerance {tol:g}); the study stops"
    )
