"""Keras-style weight regularizers: penalties added to the training loss.

Keras adds ``l1 * sum(|w|) + l2 * sum(w**2)`` for each regularized weight to the
data loss (no factor 1/2, unlike "weight decay" in most PyTorch optimizers). The
string names follow Keras: ``"l2"`` means ``L2(0.01)``, ``"l1"`` means ``L1(0.01)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bnlab._validation import check_choice, check_number
from bnlab.errors import ConfigError

Regularizer = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class L1L2:
    """``l1 * sum(|w|) + l2 * sum(w**2)``; both strengths are >= 0."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        check_number("l1", self.l1, low=0.0)
        check_number("l2", self.l2, low=0.0)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        loss = w.new_zeros(())
        if self.l1:
            loss = loss + self.l1 * w.abs().sum()
        if self.l2:
            loss = loss + self.l2 * w.square().sum()
        return loss

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


def L2(l2: float = 0.01) -> L1L2:  # noqa: N802 - Keras's name
    return L1L2(l2=l2)


def L1(l1: float = 0.01) -> L1L2:  # noqa: N802 - Keras's name
    return L1L2(l1=l1)


_NAMED = {"l1": lambda: L1(0.01), "l2": lambda: L2(0.01), "l1_l2": lambda: L1L2(0.01, 0.01)}


def get(
    value: str | float | Regularizer | None, parameter: str = "regularizer"
) -> Regularizer | None:
    """Resolve ``None``, a Keras name (``"l2"``), a float (an L2 strength) or a callable."""
    if value is None:
        return None
    if callable(value):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_number(parameter, value, low=0.0)
        return L2(float(value)) if value else None
    check_choice(parameter, value, _NAMED)
    return _NAMED[value]()


def serialize(reg: Regularizer | None, parameter: str = "regularizer") -> dict | None:
    """A JSON-able description of a regularizer (for ``get_config``).

    Raises :class:`ConfigError` for a custom callable (it has no portable description).
    """
    if reg is None:
        return None
    if isinstance(reg, L1L2):
        return {"class_name": "L1L2", "config": reg.get_config()}
    raise ConfigError(
        f"{parameter}: {reg!r} cannot be serialized; use a Keras name ('l1', 'l2', 'l1_l2'), "
        "a float (an L2 strength) or bnlab.nn.regularizers.L1L2"
    )


def deserialize(value: dict | str | None, parameter: str = "regularizer") -> Regularizer | None:
    """Inverse of :func:`serialize`; also reads Keras's ``L1``/``L2``/``L1L2`` dicts."""
    if isinstance(value, dict):
        cls = check_choice(f"{parameter}.class_name", value.get("class_name"), ("L1", "L2", "L1L2"))
        config = value.get("config") or {}
        if cls == "L1":
            return L1(float(config.get("l1", 0.01)))
        if cls == "L2":
            return L2(float(config.get("l2", 0.01)))
        return L1L2(float(config.get("l1", 0.0)), float(config.get("l2", 0.0)))
    return get(value, parameter)
