"""Build an :class:`~bnlab.models.spec.Architecture` as a PyTorch module (NCHW, logits out)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from bnlab.errors import ConfigError
from bnlab.models import spec
from bnlab.models.layers import Flatten
from bnlab.nn import Conv2d, Dense, make_norm


def to_torch(arch: spec.Architecture) -> nn.Sequential:
    """An ``nn.Sequential`` whose children carry the layer names of ``arch``.

    Convolutions and dense layers are :class:`bnlab.nn.Conv2d` / :class:`bnlab.nn.Dense`
    (Keras initialisation; ``arch.l2`` as an L2 kernel regularizer on the layers marked
    ``regularized``); every norm slot is ``bnlab.nn.make_norm(kind, channels,
    momentum=..., epsilon=..., axis=1, **options)`` with Keras's momentum convention.
    """
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for layer, in_shape in zip(arch.layers, arch.input_shapes(), strict=True):
        modules[layer.name] = _module(layer, in_shape, arch)
    return nn.Sequential(modules)


def _module(layer: spec.Layer, in_shape: tuple[int, ...], arch: spec.Architecture) -> nn.Module:
    reg = arch.l2 if arch.l2 > 0 else None
    if isinstance(layer, spec.Pad):
        return nn.ZeroPad2d(layer.pad)
    if isinstance(layer, spec.Conv):
        return Conv2d(
            in_shape[0],
            layer.filters,
            layer.kernel,
            padding=layer.padding,
            kernel_initializer=layer.kernel_initializer,
            kernel_regularizer=reg if layer.regularized else None,
        )
    if isinstance(layer, spec.Pool):
        return nn.MaxPool2d(layer.size, stride=layer.stride or layer.size)
    if isinstance(layer, spec.Norm):
        n = arch.norm
        try:
            return make_norm(
                n.kind, in_shape[0], momentum=n.momentum, epsilon=n.epsilon, axis=1, **n.options
            )
        except (TypeError, ConfigError) as exc:
            # momentum/epsilon/kind are checked already: what the layer rejects came from
            # norm_options, so name that option in the message.
            raise ConfigError(
                f"norm_options: {n.options!r} is not accepted by norm {n.kind!r} ({exc})"
            ) from exc
    if isinstance(layer, spec.ReLU):
        return nn.ReLU()
    if isinstance(layer, spec.Flatten):
        return Flatten()
    if isinstance(layer, spec.Dropout):
        return nn.Dropout(layer.rate)
    if isinstance(layer, spec.Dense):
        return Dense(
            in_shape[0],
            layer.units,
            kernel_initializer=layer.kernel_initializer,
            kernel_regularizer=reg if layer.regularized else None,
        )
    raise TypeError(f"unknown layer spec {layer!r}")
