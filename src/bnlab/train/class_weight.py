"""Class weights as Keras applies them: one weight per class, turned into a weight per sample.

``"balanced"`` follows scikit-learn's ``compute_class_weight("balanced")``:
``w_c = n_samples / (n_classes * count_c)`` where ``n_classes`` counts the classes present
in the labels. A dict maps class index -> weight; classes it omits get 1.0 (Keras's
``class_weight.get(c, 1.0)``). The per-sample weight multiplies the sample's loss in the
``sum_over_batch_size`` reduction (see :mod:`bnlab.train.losses`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bnlab.errors import ConfigError


def balanced_class_weight(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """scikit-learn's balanced weights, ``(num_classes,)`` float32; absent classes get 1.0."""
    counts = torch.bincount(y.detach().cpu().long(), minlength=num_classes).double()
    present = counts > 0
    weights = torch.ones(num_classes, dtype=torch.float64)
    weights[present] = y.numel() / (int(present.sum()) * counts[present])
    return weights.float()


def resolve_class_weight(
    class_weight: str | dict | None, y: torch.Tensor, num_classes: int
) -> torch.Tensor | None:
    """Turn ``None`` | ``"balanced"`` | ``{class: weight}`` into a ``(num_classes,)`` tensor."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ConfigError(
                f"class_weight: {class_weight!r} is not 'balanced', a dict {{class: weight}} "
                "or None"
            )
        return balanced_class_weight(y, num_classes)
    if not isinstance(class_weight, dict):
        raise ConfigError(
            f"class_weight: {class_weight!r} is not 'balanced', a dict {{class: weight}} or None"
        )
    weights = torch.ones(num_classes, dtype=torch.float32)
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < num_classes:
            raise ConfigError(
                f"class_weight: key {key!r} is not a class index in 0..{num_classes - 1}"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigError(f"class_weight[{key}]: {value!r} is not a finite number >= 0")
        weights[key] = float(value)
    return weights


def describe(weights: torch.Tensor | None) -> dict[int, float] | None:
    """A JSON-able ``{class: weight}`` for ``History.params``."""
    if weights is None:
        return None
    return {i: float(w) for i, w in enumerate(weights.tolist())}


def sample_weights(weights: torch.Tensor | None, y: torch.Tensor) -> Any:
    """Per-sample weights ``weights[y]`` (``None`` when unweighted)."""
    return None if weights is None else weights[y]
