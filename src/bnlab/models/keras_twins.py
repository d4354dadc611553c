"""The presets as the seeds wrote them, in Keras 3 (channels last), and weight copying.

``build_keras(name, **options)`` builds the seed's Keras network from the same layer spec
as :func:`bnlab.models.build` (same options, same layer names): ``Conv2D``/``Dense`` with the
ReLU inside the layer where the seed has it there, ``BatchNormalization(momentum,
epsilon)`` (Keras momentum: fraction kept), ``MaxPooling2D``, ``ZeroPadding2D``,
``Flatten``, ``Dropout``, and a softmax (sigmoid for binary presets) on the output, so the
Keras model returns probabilities where the bnlab module returns logits. Input shape is
bnlab's ``(C, H, W)`` turned into Keras's ``(H, W, C)``.

``copy_keras_weights(keras_model, torch_model)`` copies every kernel, bias, gamma, beta
and moving statistic into a bnlab preset (conv kernels HWIO -> OIHW, Dense kernels
transposed). No row permutation is needed at the flatten because bnlab's presets flatten
in Keras's (H, W, C) order (:class:`bnlab.models.layers.Flatten`).
``copy_torch_weights`` copies the other way.

Keras is imported on first use (``pip install bnlab[keras]``); the torch backend is selected
unless ``KERAS_BACKEND`` says otherwise.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from bnlab.errors import ConfigError
from bnlab.models import architecture, spec
from bnlab.nn import BatchNorm

#: Norm kinds with a Keras 3 equivalent (ghost batches exist only in tf-keras).
KERAS_NORMS = ("none", "batch", "renorm")


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as exc:  # the keras extra is optional
        raise ImportError(
            "bnlab.models.keras_twins needs Keras 3: pip install 'bnlab[keras]'"
        ) from exc
    return keras


def build_keras(name: str, **options: Any):
    """The seed's Keras model of preset ``name`` with the same ``options`` as ``build``.

    Returns a built ``keras.Sequential`` (NHWC input, probabilities out). Norm kinds other
    than ``"none"``, ``"batch"`` and ``"renorm"`` have no Keras 3 layer: ConfigError.
    """
    keras = _keras()
    arch = architecture(name, **options)
    if arch.norm.kind not in KERAS_NORMS:
        raise ConfigError(
            f"norm: {arch.norm.kind!r} has no Keras 3 twin; the Keras twins support "
            f"{', '.join(KERAS_NORMS)}"
        )
    layers = arch.layers
    folded = {  # ReLUs written inside the preceding Conv2D/Dense, as the seeds write them
        i + 1
        for i, layer in enumerate(layers[:-1])
        if isinstance(layer, (spec.Conv, spec.Dense)) and isinstance(layers[i + 1], spec.ReLU)
    }
    c, *spatial = arch.input_shape
    input_shape = (*spatial, c) if spatial else (c,)
    out_act = "sigmoid" if arch.task == "binary" else "softmax"
    k_layers = [keras.Input(shape=input_shape)]
    for i, layer in enumerate(layers):
        if i in folded:
            continue
        last = i == len(layers) - 1
        act = "relu" if i + 1 in folded else None
        if last and not arch.keras_output_layer:
            act = out_act
        k_layers.append(_keras_layer(keras, layer, arch, act))
    if arch.keras_output_layer:
        k_layers.append(keras.layers.Activation(out_act, name="output_activation"))
    return keras.Sequential(k_layers, name=name)


def _keras_layer(keras, layer: spec.Layer, arch: spec.Architecture, activation: str | None):
    L = keras.layers  # noqa: N806
    reg = keras.regularizers.L2(arch.l2) if arch.l2 > 0 else None
    if isinstance(layer, spec.Pad):
        return L.ZeroPadding2D(layer.pad, name=layer.name)
    if isinstance(layer, spec.Conv):
        return L.Conv2D(
            layer.filters,
            layer.kernel,
            padding=layer.padding,
            activation=activation,
            kernel_initializer=layer.kernel_initializer,
            kernel_regularizer=reg if layer.regularized else None,
            name=layer.name,
        )
    if isinstance(layer, spec.Pool):
        return L.MaxPooling2D(layer.size, strides=layer.stride or layer.size, name=layer.name)
    if isinstance(layer, spec.Norm):
        n = arch.norm
        kw = dict(n.options)
        if n.kind == "renorm":
            kw["renorm"] = True
        try:
            return L.BatchNormalization(
                momentum=n.momentum, epsilon=n.epsilon, name=layer.name, **kw
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"norm_options: {n.options!r} is not accepted by Keras BatchNormalization ({exc})"
            ) from exc
    if isinstance(layer, spec.ReLU):
        return L.Activation("relu", name=layer.name)
    if isinstance(layer, spec.Flatten):
        return L.Flatten(name=layer.name)
    if isinstance(layer, spec.Dropout):
        return L.Dropout(layer.rate, name=layer.name)
    if isinstance(layer, spec.Dense):
        return L.Dense(
            layer.units,
            activation=activation,
            kernel_initializer=layer.kernel_initializer,
            kernel_regularizer=reg if layer.regularized else None,
            name=layer.name,
        )
    raise TypeError(f"unknown layer spec {layer!r}")


# ---------------------------------------------------------------- weight copying
_TORCH_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _torch_weighted(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, BatchNorm, *_TORCH_BN))
    ]


def _keras_weighted(keras, model) -> list:
    kinds = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.BatchNormalization)
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            out += _keras_weighted(keras, layer)
        elif isinstance(layer, kinds):
            out.append(layer)
    return out


def _pairs(keras, keras_model, torch_model) -> list[tuple[Any, str, nn.Module]]:
    """Keras layers with weights paired in order with the torch modules with weights."""
    k_layers = _keras_weighted(keras, keras_model)
    t_modules = _torch_weighted(torch_model)
    if len(k_layers) != len(t_modules):
        raise ConfigError(
            f"keras_model: {len(k_layers)} layers with weights "
            f"({', '.join(layer.name for layer in k_layers)}) but the torch model has "
            f"{len(t_modules)} ({', '.join(n for n, _ in t_modules)})"
        )
    matches = (
        (keras.layers.Conv2D, nn.Conv2d),
        (keras.layers.Dense, nn.Linear),
        (keras.layers.BatchNormalization, (BatchNorm, *_TORCH_BN)),
    )
    pairs = []
    for k, (t_name, t) in zip(k_layers, t_modules, strict=True):
        expected = next(t_kind for k_kind, t_kind in matches if isinstance(k, k_kind))
        if not isinstance(t, expected):
            raise ConfigError(
                f"keras_model: layer {k.name!r} ({type(k).__name__}) meets torch module "
                f"{t_name!r} ({type(t).__name__}); the two models differ"
            )
        pairs.append((k, t_name, t))
    return pairs


#: Batch renormalization's extra statistics; Keras 3 and bnlab.BatchNorm use these names.
_RENORM_STATS = ("moving_stddev", "renorm_mean", "renorm_stddev")


def _bn_tensors(t: nn.Module) -> dict[str, torch.Tensor | None]:
    if isinstance(t, BatchNorm):
        out = {
            "gamma": t.gamma,
            "beta": t.beta,
            "moving_mean": t.moving_mean,
            "moving_variance": t.moving_variance,
        }
        for key in _RENORM_STATS:
            if isinstance(getattr(t, key, None), torch.Tensor):
                out[key] = getattr(t, key)
        return out
    return {
        "gamma": t.weight,
        "beta": t.bias,
        "moving_mean": t.running_mean,
        "moving_variance": t.running_var,
    }


def _torch_from_keras(keras, k) -> dict[str, np.ndarray]:
    """The Keras layer's weights in torch layout, keyed like :func:`_torch_tensors`."""
    to_np = keras.ops.convert_to_numpy
    if isinstance(k, keras.layers.Conv2D):
        out = {"weight": to_np(k.kernel).transpose(3, 2, 0, 1)}  # HWIO -> OIHW
    elif isinstance(k, keras.layers.Dense):
        out = {"weight": to_np(k.kernel).T}
    else:
        out = {}
        for key in ("gamma", "beta", "moving_mean", "moving_variance", *_RENORM_STATS):
            var = getattr(k, key, None)
            out[key] = None if var is None else to_np(var)
        return out
    out["bias"] = None if k.bias is None else to_np(k.bias)
    return out


def _torch_tensors(t: nn.Module) -> dict[str, torch.Tensor | None]:
    if isinstance(t, (nn.Conv2d, nn.Linear)):
        return {"weight": t.weight, "bias": t.bias}
    return _bn_tensors(t)


@torch.no_grad()
def copy_keras_weights(keras_model, torch_model: nn.Module) -> nn.Module:
    """Copy every weight of ``keras_model`` into ``torch_model`` (in place; returned).

    Layers are paired in order (Conv2D <-> Conv2d, Dense <-> Linear, BatchNormalization <->
    BatchNorm); a different structure or shape raises ConfigError naming the layer.
    """
    keras = _keras()
    for k, t_name, t in _pairs(keras, keras_model, torch_model):
        source = _torch_from_keras(keras, k)
        dests = _torch_tensors(t)
        for key in dict.fromkeys([*dests, *source]):
            dest, value = dests.get(key), source.get(key)
            if (dest is None) != (value is None):
                raise ConfigError(
                    f"keras_model: layer {k.name!r} and torch module {t_name!r} disagree on "
                    f"having {key!r}"
                )
            if dest is None:
                continue
            if tuple(dest.shape) != tuple(value.shape):
                raise ConfigError(
                    f"keras_model: layer {k.name!r} {key} has shape {tuple(value.shape)} "
                    f"(torch layout) but torch module {t_name!r} has {tuple(dest.shape)}"
                )
            dest.copy_(torch.as_tensor(np.ascontiguousarray(value), dtype=dest.dtype))
    return torch_model


@torch.no_grad()
def copy_torch_weights(torch_model: nn.Module, keras_model):
    """Copy every weight of ``torch_model`` into ``keras_model`` (in place; returned)."""
    keras = _keras()
    for k, t_name, t in _pairs(keras, keras_model, torch_model):
        tensors = {key: v for key, v in _torch_tensors(t).items() if v is not None}
        if isinstance(k, keras.layers.Conv2D):
            assign = {"kernel": tensors["weight"].permute(2, 3, 1, 0), "bias": tensors.get("bias")}
        elif isinstance(k, keras.layers.Dense):
            assign = {"kernel": tensors["weight"].T, "bias": tensors.get("bias")}
        else:
            assign = tensors
            for key in _RENORM_STATS:  # statistics Keras has and torch would leave unset
                if getattr(k, key, None) is not None and key not in assign:
                    raise ConfigError(
                        f"keras_model: layer {k.name!r} has {key!r} (renorm) but torch module "
                        f"{t_name!r} has not"
                    )
        for key, value in assign.items():
            var = getattr(k, key, None)
            if var is None or value is None:
                if (var is None) != (value is None):
                    raise ConfigError(
                        f"keras_model: layer {k.name!r} and torch module {t_name!r} disagree "
                        f"on having {key!r}"
                    )
                continue
            array = value.detach().cpu().numpy()
            if tuple(var.shape) != array.shape:
                raise ConfigError(
                    f"keras_model: layer {k.name!r} {key} has shape {tuple(var.shape)} but "
                    f"torch module {t_name!r} gives {array.shape}"
                )
            var.assign(array)
    return keras_model
