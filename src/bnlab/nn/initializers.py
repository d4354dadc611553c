"""Keras-named weight initializers for PyTorch tensors.

Fan-in/fan-out follow Keras: for a Dense kernel ``(in, out)`` they are ``in`` and
``out``; for a convolution kernel, ``in_channels * receptive_field`` and
``out_channels * receptive_field``. PyTorch stores kernels as ``(out, in, *k)``;
:func:`fans` reads them in that layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bnlab._validation import check_choice, check_number
from bnlab.errors import ConfigError

Initializer = Callable[[torch.Tensor], None]


def fans(tensor: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a PyTorch weight of shape ``(out, in, *kernel)`` or ``(n,)``."""
    if tensor.dim() < 2:
        n = tensor.numel()
        return n, n
    receptive = math.prod(tensor.shape[2:]) if tensor.dim() > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


@torch.no_grad()
def glorot_uniform(t: torch.Tensor) -> None:
    fan_in, fan_out = fans(t)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    t.uniform_(-limit, limit)


@torch.no_grad()
def glorot_normal(t: torch.Tensor) -> None:
    fan_in, fan_out = fans(t)
    _truncated_normal(t, math.sqrt(2.0 / (fan_in + fan_out)))


@torch.no_grad()
def he_uniform(t: torch.Tensor) -> None:
    fan_in, _ = fans(t)
    limit = math.sqrt(6.0 / fan_in)
    t.uniform_(-limit, limit)


@torch.no_grad()
def he_normal(t: torch.Tensor) -> None:
    fan_in, _ = fans(t)
    _truncated_normal(t, math.sqrt(2.0 / fan_in))


@torch.no_grad()
def lecun_uniform(t: torch.Tensor) -> None:
    fan_in, _ = fans(t)
    limit = math.sqrt(3.0 / fan_in)
    t.uniform_(-limit, limit)


@torch.no_grad()
def zeros(t: torch.Tensor) -> None:
    t.zero_()


@torch.no_grad()
def ones(t: torch.Tensor) -> None:
    t.fill_(1.0)


@torch.no_grad()
def _truncated_normal(t: torch.Tensor, std: float) -> None:
    # Keras's variance-scaling "truncated_normal" divides std by 0.8796... so the
    # truncated distribution keeps the requested variance.
    std = std / 0.87962566103423978
    torch.nn.init.trunc_normal_(t, mean=0.0, std=std, a=-2 * std, b=2 * std)


@dataclass(frozen=True)
class Constant:
    """Fill with ``value`` (Keras's ``Constant``; the name ``"constant"`` means value 0)."""

    value: float = 0.0

    def __post_init__(self) -> None:
        check_number("value", self.value)

    @torch.no_grad()
    def __call__(self, t: torch.Tensor) -> None:
        t.fill_(float(self.value))

    def get_config(self) -> dict:
        return {"value": self.value}


def constant(value: float) -> Initializer:
    """An initializer that fills with ``value``."""
    return Constant(float(value))


INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "lecun_uniform": lecun_uniform,
    "zeros": zeros,
    "ones": ones,
    "constant": Constant(0.0),
}

# Keras serializes initializers as {"class_name": "GlorotUniform", "config": {...}}.
_KERAS_CLASSES = {
    "GlorotUniform": "glorot_uniform",
    "GlorotNormal": "glorot_normal",
    "HeUniform": "he_uniform",
    "HeNormal": "he_normal",
    "LecunUniform": "lecun_uniform",
    "Zeros": "zeros",
    "Ones": "ones",
}


def get(name_or_fn: str | Initializer, parameter: str = "initializer") -> Initializer:
    """Resolve a Keras initializer name or a callable ``f(tensor) -> None``."""
    if callable(name_or_fn):
        return name_or_fn
    check_choice(parameter, name_or_fn, INITIALIZERS)
    return INITIALIZERS[name_or_fn]


def serialize(init: Initializer, parameter: str = "initializer") -> str | dict:
    """A JSON-able description: the Keras name, or ``{"class_name": "Constant", ...}``.

    Raises :class:`ConfigError` for a custom callable (it has no portable description).
    """
    if isinstance(init, Constant):
        return {"class_name": "Constant", "config": init.get_config()}
    for name, fn in INITIALIZERS.items():
        if fn is init:
            return name
    raise ConfigError(
        f"{parameter}: {init!r} cannot be serialized; use a Keras name "
        f"({', '.join(INITIALIZERS)}) or bnlab.nn.initializers.Constant"
    )


def deserialize(value, parameter: str = "initializer") -> Initializer:
    """Inverse of :func:`serialize`; also reads Keras's ``{"class_name": ..., "config": ...}``.

    A Keras ``seed`` in the config is ignored: bnlab draws from PyTorch's generator.
    """
    if isinstance(value, dict):
        cls = value.get("class_name")
        config = value.get("config") or {}
        if cls == "Constant":
            return Constant(float(config.get("value", 0.0)))
        check_choice(f"{parameter}.class_name", cls, [*_KERAS_CLASSES, "Constant"])
        return INITIALIZERS[_KERAS_CLASSES[cls]]
    return get(value, parameter)
