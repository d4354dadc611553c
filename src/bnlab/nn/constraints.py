"""Keras-style weight constraints, applied to a weight after each optimizer step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bnlab._validation import check_choice, check_number
from bnlab.errors import ConfigError

Constraint = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NonNeg:
    """Clamp negative values to zero."""

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w.clamp_min(0.0)

    def get_config(self) -> dict:
        return {}


@dataclass(frozen=True)
class MaxNorm:
    """Rescale so that the L2 norm along ``axis`` is at most ``max_value`` (Keras formula)."""

    max_value: float = 2.0
    axis: int = 0

    def __post_init__(self) -> None:
        check_number("max_value", self.max_value, low=0.0, low_inclusive=False)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        norms = w.square().sum(dim=self.axis, keepdim=True).sqrt()
        desired = norms.clamp(0.0, self.max_value)
        return w * (desired / (1e-7 + norms))

    def get_config(self) -> dict:
        return {"max_value": self.max_value, "axis": self.axis}


@dataclass(frozen=True)
class UnitNorm:
    """Rescale to unit L2 norm along ``axis`` (Keras formula)."""

    axis: int = 0

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w / (1e-7 + w.square().sum(dim=self.axis, keepdim=True).sqrt())

    def get_config(self) -> dict:
        return {"axis": self.axis}


_NAMED: dict[str, Callable[[], Constraint]] = {
    "non_neg": NonNeg,
    "nonneg": NonNeg,
    "max_norm": MaxNorm,
    "unit_norm": UnitNorm,
}
_CLASSES = {"NonNeg": NonNeg, "MaxNorm": MaxNorm, "UnitNorm": UnitNorm}


def get(value: str | Constraint | None, parameter: str = "constraint") -> Constraint | None:
    """Resolve ``None``, a Keras name (``"non_neg"``, ``"max_norm"``, ``"unit_norm"``) or a callable."""
    if value is None or callable(value):
        return value
    check_choice(parameter, value, _NAMED)
    return _NAMED[value]()


def serialize(c: Constraint | None, parameter: str = "constraint") -> dict | None:
    """A JSON-able description (Keras's ``{"class_name": ..., "config": ...}``).

    Raises :class:`ConfigError` for a custom callable (it has no portable description).
    """
    if c is None:
        return None
    name = type(c).__name__
    if name in _CLASSES and isinstance(c, _CLASSES[name]):
        return {"class_name": name, "config": c.get_config()}
    raise ConfigError(
        f"{parameter}: {c!r} cannot be serialized; use a Keras name "
        f"({', '.join(_NAMED)}) or a bnlab.nn.constraints class"
    )


def deserialize(value: dict | str | None, parameter: str = "constraint") -> Constraint | None:
    """Inverse of :func:`serialize`; reads Keras's ``NonNeg``/``MaxNorm``/``UnitNorm`` dicts."""
    if isinstance(value, dict):
        cls = check_choice(f"{parameter}.class_name", value.get("class_name"), _CLASSES)
        return _CLASSES[cls](**(value.get("config") or {}))
    return get(value, parameter)
