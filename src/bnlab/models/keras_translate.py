"""Translate a Keras 3 model into an equivalent PyTorch module, weights included.

:func:`translate` turns a ``keras.Sequential`` or functional model whose layers are all in
:data:`SUPPORTED` into a :class:`KerasTranslation`: one torch module per Keras layer, under
the Keras layer's name, run in the graph's order. Conventions:

* the module takes bnlab's channels-first tensors ``(N, C, *spatial)`` (``(N, F)`` for flat
  inputs) where the Keras model takes channels-last ones; every layer works on channels-first
  tensors and means what the Keras layer means on the channels-last ones: a ``Flatten``
  orders features ``(H, W, C)`` as Keras does, ``Dense`` and ``BatchNormalization`` act on the
  channel axis, a Keras ``axis`` is mapped to the torch axis it names;
* ``BatchNormalization`` becomes :class:`bnlab.BatchNorm` (Keras's update rule, momentum as
  the fraction kept, biased moving variance);
* it returns *logits*: a softmax (or a one-unit sigmoid) at the very end of the Keras model,
  fused or as its own layer, is left out and named in ``output_activation``, because bnlab's
  losses take logits (:func:`output_probabilities` applies it back).

:func:`unsupported_layers` lists what cannot be translated (a study then trains that model
with Keras itself); :func:`bnlab.models.keras_check.check_translation` compares the two models
on a batch in inference and training mode and names the first layer that differs.
Keras is imported lazily (only the functions that receive a Keras model use it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm

SUPPORTED = (
    "InputLayer",
    "Conv1D",
    "Conv2D",
    "Dense",
    "BatchNormalization",
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "Flatten",
    "Reshape",
    "Activation",
    "ReLU",
    "Softmax",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "Rescaling",
    "Add",
    "Concatenate",
)

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "relu6": F.relu6,
    "exponential": torch.exp,
    "softmax": lambda x: torch.softmax(x, dim=1),
    "log_softmax": lambda x: torch.log_softmax(x, dim=1),
}


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def _keras_axis(axis: int, rank: int) -> int:
    """The torch (channels-first) axis of Keras axis ``axis`` of a rank-``rank`` tensor."""
    axis = axis % rank
    if rank <= 2 or axis == 0:
        return axis
    return 1 if axis == rank - 1 else axis + 1


def _to_last(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1) if x.dim() > 2 else x


def _to_first(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(-1, 1) if x.dim() > 2 else x


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding (the extra pixel goes at the end)."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel, stride, dilation, value: float = 0.0) -> torch.Tensor:
    pads: list[int] = []
    for i in reversed(range(len(kernel))):  # F.pad pads the last axis first
        pads += list(_same_pads(x.shape[2 + i], kernel[i], stride[i], dilation[i]))
    return F.pad(x, pads, value=value) if any(pads) else x


class Conv(nn.Module):
    """Keras ``Conv1D``/``Conv2D`` (any padding, strides, dilation, groups, activation)."""

    def __init__(self, layer, rank: int):
        super().__init__()
        cls = nn.Conv1d if rank == 1 else nn.Conv2d
        kernel = np.asarray(layer.kernel.numpy())  # (*k, in/groups, out)
        in_per_group, out = kernel.shape[-2], kernel.shape[-1]
        self.same = layer.padding == "same"
        self.kernel_size = tuple(layer.kernel_size)
        self.strides = tuple(layer.strides)
        self.dilation = tuple(layer.dilation_rate)
        self.conv = cls(
            in_per_group * layer.groups,
            out,
            self.kernel_size,
            stride=self.strides,
            dilation=self.dilation,
            groups=layer.groups,
            bias=layer.use_bias,
        )
        axes = (rank + 1, rank, *range(rank))  # HWIO -> OIHW
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(kernel.transpose(axes).copy()))
            if layer.use_bias:
                self.conv.bias.copy_(torch.from_numpy(np.asarray(layer.bias.numpy())))
        self.activation = _activation_name(layer.activation)

    def forward(self, x):
        if self.same:
            x = _pad_same(x, self.kernel_size, self.strides, self.dilation)
        return _ACTIVATIONS[self.activation](self.conv(x))


class Dense(nn.Module):
    """Keras ``Dense`` (on the last Keras axis = torch's channel axis for images)."""

    def __init__(self, layer):
        super().__init__()
        kernel = np.asarray(layer.kernel.numpy())
        self.linear = nn.Linear(kernel.shape[0], kernel.shape[1], bias=layer.use_bias)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            if layer.use_bias:
                self.linear.bias.copy_(torch.from_numpy(np.asarray(layer.bias.numpy())))
        self.activation = _activation_name(layer.activation)

    def forward(self, x):
        y = _to_first(self.linear(_to_last(x)))
        return _ACTIVATIONS[self.activation](y)


def _batchnorm(layer, rank: int) -> BatchNorm:
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    bn = BatchNorm(
        momentum=float(layer.momentum),
        epsilon=float(layer.epsilon),
        center=layer.center,
        scale=layer.scale,
        axis=_keras_axis(axis, rank),
        renorm=bool(getattr(layer, "renorm", False)),
        renorm_clipping=getattr(layer, "renorm_clipping", None) or None,
        renorm_momentum=float(getattr(layer, "renorm_momentum", 0.99)),
        num_features=int(layer.moving_mean.shape[0]),
    )
    names = {"gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean",
             "moving_variance": "moving_variance", "moving_stddev": "moving_stddev",
             "renorm_mean": "renorm_mean", "renorm_stddev": "renorm_stddev"}  # fmt: skip
    with torch.no_grad():
        for weight in layer.weights:
            short = weight.path.rsplit("/", 1)[-1]
            target = getattr(bn, names.get(short, ""), None)
            if isinstance(target, torch.Tensor):
                target.copy_(torch.from_numpy(np.asarray(weight.numpy())))
    bn.trainable = bool(layer.trainable)
    return bn


class Pool(nn.Module):
    """Keras ``Max/AveragePooling1D/2D`` ('valid' or 'same'; average excludes padding)."""

    def __init__(self, layer, rank: int, kind: str):
        super().__init__()
        self.kind, self.rank = kind, rank
        self.size = tuple(layer.pool_size)
        self.strides = tuple(layer.strides)
        self.same = layer.padding == "same"

    def forward(self, x):
        pool = {("max", 1): F.max_pool1d, ("max", 2): F.max_pool2d,
                ("avg", 1): F.avg_pool1d, ("avg", 2): F.avg_pool2d}[(self.kind, self.rank)]  # fmt: skip
        ones = (1,) * self.rank
        if not self.same:
            return pool(x, self.size, self.strides)
        if self.kind == "max":
            return pool(_pad_same(x, self.size, self.strides, ones, -math.inf), self.size,
                        self.strides)  # fmt: skip
        total = pool(_pad_same(x, self.size, self.strides, ones), self.size, self.strides)
        count = torch.ones_like(x[:1, :1])
        count = pool(_pad_same(count, self.size, self.strides, ones), self.size, self.strides)
        return total / count


class GlobalPool(nn.Module):
    def __init__(self, layer, kind: str):
        super().__init__()
        self.kind, self.keepdims = kind, bool(getattr(layer, "keepdims", False))

    def forward(self, x):
        dims = tuple(range(2, x.dim()))
        if self.kind == "avg":
            return x.mean(dim=dims, keepdim=self.keepdims)
        return x.amax(dim=dims, keepdim=self.keepdims)


class Flatten(nn.Module):
    """Keras's ``Flatten``: features in channels-last order."""

    def forward(self, x):
        return _to_last(x).flatten(1)


class Reshape(nn.Module):
    def __init__(self, target: tuple[int, ...]):
        super().__init__()
        self.target = tuple(int(t) for t in target)

    def forward(self, x):
        return _to_first(_to_last(x).reshape(x.shape[0], *self.target))


class Activation(nn.Module):
    def __init__(self, name: str, axis: int | None = None):
        super().__init__()
        self.activation, self.axis = name, axis

    def forward(self, x):
        if self.activation in ("softmax", "log_softmax") and self.axis is not None:
            dim = _keras_axis(self.axis, x.dim())
            fn = torch.softmax if self.activation == "softmax" else torch.log_softmax
            return fn(x, dim=dim)
        return _ACTIVATIONS[self.activation](x)


class KerasReLU(nn.Module):
    """``keras.layers.ReLU(max_value, negative_slope, threshold)``."""

    def __init__(self, layer):
        super().__init__()
        self.max_value = None if layer.max_value is None else float(layer.max_value)
        self.slope, self.threshold = float(layer.negative_slope), float(layer.threshold)

    def forward(self, x):
        y = torch.where(x >= self.threshold, x, self.slope * (x - self.threshold))
        return y if self.max_value is None else y.clamp(max=self.max_value)


class ZeroPad(nn.Module):
    def __init__(self, padding):
        super().__init__()
        pads: list[int] = []
        for before, after in reversed([tuple(p) for p in padding]):
            pads += [int(before), int(after)]
        self.pads = pads

    def forward(self, x):
        return F.pad(x, self.pads)


class Rescale(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(layer.scale, np.float32)))
        self.register_buffer("offset", torch.as_tensor(np.asarray(layer.offset, np.float32)))

    def forward(self, x):
        def shaped(t):  # a per-channel (last Keras axis) vector goes on torch's axis 1
            return t.reshape(1, -1, *([1] * (x.dim() - 2))) if t.dim() == 1 and x.dim() > 2 else t

        return x * shaped(self.scale) + shaped(self.offset)


class Add(nn.Module):
    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concatenate(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs):
        return torch.cat(xs, dim=_keras_axis(self.axis, xs[0].dim()))


def _module(layer) -> nn.Module:
    kind = type(layer).__name__
    if kind in ("Conv1D", "Conv2D"):
        return Conv(layer, 1 if kind == "Conv1D" else 2)
    if kind == "Dense":
        return Dense(layer)
    if kind == "BatchNormalization":
        return _batchnorm(layer, len(layer.input.shape))
    if kind.startswith(("MaxPooling", "AveragePooling")):
        return Pool(layer, int(kind[-2]), "max" if kind.startswith("Max") else "avg")
    if kind.startswith("Global"):
        return GlobalPool(layer, "avg" if "Average" in kind else "max")
    if kind == "Dropout":
        return nn.Dropout(float(layer.rate))
    if kind == "SpatialDropout1D":
        return nn.Dropout1d(float(layer.rate))
    if kind == "SpatialDropout2D":
        return nn.Dropout2d(float(layer.rate))
    if kind == "Flatten":
        return Flatten()
    if kind == "Reshape":
        return Reshape(layer.target_shape)
    if kind == "Activation":
        return Activation(_activation_name(layer.activation), axis=-1)
    if kind == "Softmax":
        return Activation("softmax", axis=int(np.ravel(layer.axis)[0]))
    if kind == "ReLU":
        return KerasReLU(layer)
    if kind in ("ZeroPadding1D", "ZeroPadding2D"):
        return ZeroPad(layer.padding if kind == "ZeroPadding2D" else [layer.padding])
    if kind == "Rescaling":
        return Rescale(layer)
    if kind == "Add":
        return Add()
    if kind == "Concatenate":
        return Concatenate(int(layer.axis))
    raise ConfigError(f"model: Keras layer {layer.name!r} ({kind}) has no torch translation")


def unsupported_layers(model) -> list[tuple[str, str]]:
    """``(name, reason)`` of each layer that keeps ``model`` from being translated."""
    out = []
    for layer in _layers(model):
        kind = type(layer).__name__
        if kind not in SUPPORTED:
            out.append((layer.name, f"{kind} is not a translated layer kind"))
            continue
        act = getattr(layer, "activation", None)
        if act is not None and _activation_name(act) not in _ACTIVATIONS:
            out.append((layer.name, f"activation {_activation_name(act)!r} is not translated"))
        for attr in ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                     "beta_regularizer", "gamma_regularizer", "kernel_constraint",
                     "bias_constraint", "beta_constraint", "gamma_constraint"):  # fmt: skip
            if getattr(layer, attr, None) is not None:
                out.append((layer.name, f"{attr} is not translated"))
                break
        if kind == "BatchNormalization" and getattr(layer, "synchronized", False):
            out.append((layer.name, "synchronized BN is not translated"))
        if kind == "Rescaling" and np.ndim(layer.scale) > 1:
            out.append((layer.name, "a Rescaling scale of rank > 1 is not translated"))
    return out


def _layers(model) -> list:
    return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]


def _program(model) -> tuple[list[tuple[str, list[int], int]], list[int], int]:
    """``(steps, input ids, output id)``: each step runs layer ``name`` on tensor ids."""
    if type(model).__name__ == "Sequential":
        steps, current = [], 0
        for i, layer in enumerate(_layers(model), start=1):
            steps.append((layer.name, [current], i))
            current = i
        return steps, [0], current
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError("model: a Keras model with several inputs or outputs is not translated")
    steps = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if type(node.operation).__name__ == "InputLayer":
                continue
            ins = [id(t) for t in node.input_tensors]
            if len(node.outputs) != 1:
                raise ConfigError(f"model: layer {node.operation.name!r} has several outputs")
            steps.append((node.operation.name, ins, id(node.outputs[0])))
    return steps, [id(model.inputs[0])], id(model.outputs[0])


class KerasTranslation(nn.Module):
    """A Keras model as a torch module (channels-first in, logits out); see the module doc.

    ``layers`` holds one module per Keras layer under its Keras name; ``output_activation``
    is ``"softmax"``, ``"sigmoid"`` or ``None`` (the Keras output's activation, left out).
    """

    def __init__(self, layers: dict[str, nn.Module], steps, input_id: int, output_id: int,
                 output_activation: str | None):  # fmt: skip
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.steps, self.input_id, self.output_id = steps, input_id, output_id
        self.output_activation = output_activation
        self.trace: list[tuple[str, torch.Tensor]] | None = None  # set to a list to record

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input_id: x}
        for name, ins, out in self.steps:
            env[out] = self.layers[name](*[env[i] for i in ins])
            if self.trace is not None:
                self.trace.append((name, env[out]))
        return env[self.output_id]


def translate(model) -> KerasTranslation:
    """The torch twin of Keras ``model`` (weights copied); ConfigError when it cannot be."""
    bad = unsupported_layers(model)
    if bad:
        raise ConfigError(f"model: Keras layer {bad[0][0]!r} cannot be translated: {bad[0][1]}")
    steps, inputs, output = _program(model)
    by_name = {layer.name: layer for layer in _layers(model)}
    layers = {name: _module(by_name[name]) for name, _, _ in {s[0]: s for s in steps}.values()}
    output_activation = None
    last_name, last_ins, last_out = steps[-1]
    last = layers[last_name]
    act = getattr(last, "activation", None)
    if isinstance(last, (Conv, Dense)) and act in ("softmax", "sigmoid"):
        output_activation = act
        last.activation = "linear"  # the logits; the probabilities are the loss's business
    elif isinstance(last, Activation) and act in ("softmax", "sigmoid") and len(steps) > 1:
        output_activation = act
        steps = steps[:-1]
        output = last_ins[0]
        del layers[last_name]
    if output_activation == "sigmoid" and model.output.shape[-1] != 1:
        raise ConfigError("model: a sigmoid output with several units (multi-label) is not a "
                          "classification bnlab trains")  # fmt: skip
    module = KerasTranslation(layers, steps, inputs[0], output, output_activation)
    return module.train(False)


def output_probabilities(module: KerasTranslation, logits: torch.Tensor) -> torch.Tensor:
    """What the Keras model outputs, from the translation's logits."""
    if module.output_activation == "softmax":
        return torch.softmax(logits, dim=-1)
    if module.output_activation == "sigmoid":
        return torch.sigmoid(logits)
    return logits
