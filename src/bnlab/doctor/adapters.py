"""Adapter selection: the :class:`~bnlab.doctor.model_view.ModelAdapter` for a user's model.

The types (``BNLayer``, ``Node``, ``Graph``, ``ModelAdapter``) live in
:mod:`bnlab.doctor.model_view`, which the adapters implement; this module only picks one,
so the implementations never import it back. The names are re-exported for callers.
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab.doctor.model_view import KINDS, BNLayer, Graph, ModelAdapter, Node

__all__ = ["KINDS", "BNLayer", "Graph", "ModelAdapter", "Node", "adapt", "is_keras_model"]


def is_keras_model(model: Any) -> bool:
    """Keras 3 layers subclass ``torch.nn.Module`` on the torch backend: check the MRO."""
    return any(cls.__module__.startswith("keras.") for cls in type(model).__mro__)


def adapt(model: Any) -> ModelAdapter:
    """The adapter for ``model`` (a ``torch.nn.Module`` or a Keras 3 model)."""
    if isinstance(model, ModelAdapter):
        return model
    if is_keras_model(model):
        from bnlab.doctor.keras_adapter import KerasAdapter

        return KerasAdapter(model)
    if isinstance(model, torch.nn.Module):
        from bnlab.doctor.torch_adapter import TorchAdapter

        return TorchAdapter(model)
    from bnlab.errors import ConfigError

    raise ConfigError(
        f"model: a {type(model).__name__} is neither a torch.nn.Module nor a Keras model"
    )
