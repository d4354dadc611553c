"""Hints that make a spec error point at its cause: Keras-order shapes, every problem at once.

Kept apart from :mod:`bnlab.study.spec` so the spec module stays about the spec's structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Channel counts that mark the last axis of an image shape as its channels.
_CHANNELS = (1, 2, 3, 4)


def keras_order_hint(shape: Any) -> str:
    """`` (did you mean [1, 28, 28]? ...)`` when ``shape`` looks like Keras's (H, W, C).

    bnlab's presets take ``input_shape`` channels first, (C, H, W), like PyTorch; Keras
    writes (H, W, C). A 3-tuple whose last entry is a channel count (1-4) and whose first is
    not is taken for the Keras order; anything else gets no hint (empty string).
    """
    if not isinstance(shape, Sequence) or isinstance(shape, str) or len(shape) != 3:
        return ""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
        return ""
    height, width, channels = shape
    if channels not in _CHANNELS or height in _CHANNELS:
        return ""
    return (
        f" (did you mean [{channels}, {height}, {width}]? input_shape is (C, H, W), channels "
        "first; [H, W, C] is Keras's order)"
    )


def with_shape_hint(message: str, options: dict[str, Any]) -> str:
    """``message`` plus :func:`keras_order_hint` when it is about ``input_shape``."""
    if "input_shape" not in message or "did you mean" in message:
        return message
    return message + keras_order_hint(options.get("input_shape"))


def join_problems(problems: Sequence[str]) -> str:
    """Every distinct problem on one line, unknown keys first (a typo is often the cause of a
    'missing' one), separated by ``; ``."""
    unique = list(dict.fromkeys(problems))
    typos = [p for p in unique if "unknown key" in p or "unknown option" in p]
    return "; ".join(typos + [p for p in unique if p not in typos])
