"""Adapter selection: the :class:`~bnlab.doctor.model_view.ModelAdapter` for a user's model.

The types (``BNLayer``, ``Node``, ``Graph``, ``ModelAdapter``) live in
:mod:`bnlab.doctor.model_view`, which the adapters implement; this module only picks one,
so the implementations never import it back. The names are re-exported for callers.
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab.doctor.model_view import KINDS, BNLayer, Graph, ModelAdapter, Node

__all__ = [
    "KINDS", "BNLayer", "Graph", "ModelAdapter", "Node", "adapt", "is_keras_model", "unwrap",
]  # fmt: skip


def is_keras_model(model: Any) -> bool:
    """Keras 3 layers subclass ``torch.nn.Module`` on the torch backend: check the MRO."""
    return any(cls.__module__.startswith("keras.") for cls in type(model).__mro__)


def unwrap(model: Any) -> tuple[Any, list[str]]:
    """The model inside ``DataParallel``/``DistributedDataParallel``/``torch.compile`` and
    ``torch.optim.swa_utils.AveragedModel`` wrappers.

    Returns the inner model and the wrappers' class names, outermost first. The wrappers
    only dispatch: their BN layers, weights and graph are the inner model's.
    """
    wrappers: list[str] = []
    while isinstance(model, torch.nn.Module):
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            wrappers.append(type(model).__name__)
            model = model.module
        elif type(model).__name__ == "AveragedModel" and isinstance(
            getattr(model, "module", None), torch.nn.Module
        ):  # torch.optim.swa_utils: the averaged weights live in .module
            wrappers.append("AveragedModel")
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            wrappers.append("torch.compile")
            model = model._orig_mod
        else:
            break
    return model, wrappers


def adapt(model: Any) -> ModelAdapter:
    """The adapter for ``model`` (a ``torch.nn.Module`` or a Keras 3 model), wrappers removed."""
    if isinstance(model, ModelAdapter):
        return model
    model, wrappers = unwrap(model)
    if is_keras_model(model):
        from bnlab.doctor.keras_adapter import KerasAdapter

        return KerasAdapter(model)
    if isinstance(model, torch.nn.Module):
        from bnlab.doctor.torch_adapter import TorchAdapter

        adapter = TorchAdapter(model)
        adapter.wrappers = wrappers
        return adapter
    from bnlab.errors import ConfigError

    raise ConfigError(
        f"model: a {type(model).__name__} is neither a torch.nn.Module nor a Keras model"
    )
