"""Architecture specs: each preset is one declarative list of layers.

A preset function turns resolved options into an :class:`Architecture`; the same
architecture is then built as a PyTorch module (:mod:`bnlab.models.build`) or as the seed's
Keras model (:mod:`bnlab.models.keras_twins`). Writing the network once is what makes the
two structurally identical, layer for layer.

Shapes in this module are PyTorch's: ``(C, H, W)`` for images (channels first) and
``(F,)`` for vectors, without the batch dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bnlab.errors import ConfigError


@dataclass(frozen=True)
class Pad:
    """Zero padding of ``pad`` pixels on every side (Keras ``ZeroPadding2D(pad)``)."""

    name: str
    pad: int = 1


@dataclass(frozen=True)
class Conv:
    """2-D convolution, stride 1, ``padding`` ``"valid"`` or ``"same"`` (Keras rules), with bias.

    ``regularized``: whether the preset's ``l2`` option puts a kernel regularizer on it.
    """

    name: str
    filters: int
    kernel: int
    padding: str = "valid"
    kernel_initializer: str = "glorot_uniform"
    regularized: bool = True


@dataclass(frozen=True)
class Pool:
    """Max pooling with a square window; ``stride`` defaults to the window size (Keras)."""

    name: str
    size: int = 2
    stride: int | None = None


@dataclass(frozen=True)
class Norm:
    """A normalization slot; its kind and settings come from :class:`NormSettings`."""

    name: str


@dataclass(frozen=True)
class ReLU:
    name: str


@dataclass(frozen=True)
class Flatten:
    """Flatten in Keras's channels-last (H, W, C) order (see :class:`bnlab.models.layers.Flatten`)."""

    name: str


@dataclass(frozen=True)
class Dropout:
    name: str
    rate: float


@dataclass(frozen=True)
class Dense:
    name: str
    units: int
    kernel_initializer: str = "glorot_uniform"
    regularized: bool = True


Layer = Pad | Conv | Pool | Norm | ReLU | Flatten | Dropout | Dense


@dataclass(frozen=True)
class NormSettings:
    """What every :class:`Norm` slot of an architecture becomes.

    ``momentum`` is Keras's convention: the fraction of the moving statistics *kept* per
    training step (0.99 is PyTorch's 0.01).
    """

    kind: str = "batch"
    momentum: float = 0.99
    epsilon: float = 1e-3
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Architecture:
    """A preset network: layers in order, input shape (channels first) and task.

    The last :class:`Dense` outputs logits: ``num_classes`` of them for ``"multiclass"``,
    one for ``"binary"``. ``keras_output_layer`` asks the Keras twin to write the softmax as
    a separate ``Activation`` layer (as seed 002 does) instead of inside the last Dense.
    """

    preset: str
    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]
    num_classes: int
    task: str
    norm: NormSettings
    l2: float = 0.0
    keras_output_layer: bool = False

    def shapes(self) -> list[tuple[int, ...]]:
        """The output shape of every layer (no batch dimension), channels first.

        Raises ConfigError naming ``input_shape`` when the input is too small for a layer.
        """
        shape = tuple(self.input_shape)
        out = []
        for layer in self.layers:
            shape = _output_shape(layer, shape)
            if any(d < 1 for d in shape):
                raise ConfigError(
                    f"input_shape: {tuple(self.input_shape)!r} is too small for {self.preset}: "
                    f"layer {layer.name!r} would output shape {shape}"
                )
            out.append(shape)
        return out

    def input_shapes(self) -> list[tuple[int, ...]]:
        """The input shape of every layer (no batch dimension), channels first."""
        return [tuple(self.input_shape), *self.shapes()[:-1]]

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "binary" else self.num_classes


def _output_shape(layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(layer, (Pad, Conv, Pool)) and len(shape) != 3:
        raise ConfigError(
            f"input_shape: layer {layer.name!r} needs a (C, H, W) input, got shape {shape}"
        )
    if isinstance(layer, Pad):
        c, h, w = shape
        return (c, h + 2 * layer.pad, w + 2 * layer.pad)
    if isinstance(layer, Conv):
        _, h, w = shape
        shrink = 0 if layer.padding == "same" else layer.kernel - 1
        return (layer.filters, h - shrink, w - shrink)
    if isinstance(layer, Pool):
        c, h, w = shape
        stride = layer.stride or layer.size
        return (c, (h - layer.size) // stride + 1, (w - layer.size) // stride + 1)
    if isinstance(layer, Flatten):
        return (math.prod(shape),)
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise ConfigError(f"input_shape: layer {layer.name!r} needs a flat input, got {shape}")
        return (layer.units,)
    return shape  # Norm, ReLU, Dropout keep the shape


def place_norm(
    linear: Conv | Dense,
    commuting: list[Layer],
    norm_name: str,
    relu_name: str,
    *,
    norm_kind: str,
    position: str,
) -> list[Layer]:
    """A conv/dense layer, its ReLU and its norm slot, in the order ``position`` asks for.

    ``commuting`` are layers between the activation and the norm in the seed (max pooling,
    flatten); they commute with ReLU exactly (``max(relu(x)) == relu(max(x))``), so moving
    the ReLU behind them changes no number when there is no norm.

    - ``"after_activation"`` (the seeds): linear -> ReLU -> commuting -> norm
    - ``"before_activation"`` (the BN paper): linear -> commuting -> norm -> ReLU

    With ``norm_kind="none"`` the slot is left out and the seed's order is kept whatever the
    position, so a no-norm model has the same layers in both positions.
    """
    relu = ReLU(relu_name)
    if norm_kind == "none":
        return [linear, relu, *commuting]
    if position == "after_activation":
        return [linear, relu, *commuting, Norm(norm_name)]
    return [linear, *commuting, Norm(norm_name), relu]
