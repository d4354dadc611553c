"""Read the weight decay an optimizer applies to each layer (for ``l2-with-bn``).

PyTorch: every parameter group with ``weight_decay > 0`` (SGD/Adam add it to the gradient,
AdamW decouples it; on weights followed by BN both only shrink their scale). Keras 3:
``optimizer.weight_decay`` applies to every variable not excluded with
``exclude_from_weight_decay``. Layers are named as the graph names them (module path in
PyTorch, layer name in Keras).
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab.errors import ConfigError


def _torch_decay(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    owner = {
        id(p): path
        for path, module in model.named_modules()
        for name, p in module.named_parameters(recurse=False)
        if name == "weight"
    }
    out: dict[str, float] = {}
    for group in optimizer.param_groups:
        decay = float(group.get("weight_decay", 0.0) or 0.0)
        if decay <= 0:
            continue
        for p in group["params"]:
            if id(p) in owner:
                out[owner[id(p)]] = decay
    return out


def _keras_decay(model, optimizer) -> dict[str, float]:
    decay = getattr(optimizer, "weight_decay", None)
    if not decay:
        return {}
    out = {}
    excluded = getattr(optimizer, "_exclude_from_weight_decay", None) or set()
    names = getattr(optimizer, "_exclude_from_weight_decay_names", None) or []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        path = getattr(kernel, "path", "") or ""
        if id(kernel) in excluded or any(n in path for n in names):
            continue
        out[layer.name] = float(decay)
    return out


def weight_decay_by_layer(adapter, optimizer: Any) -> dict[str, float]:
    """``{layer path: weight decay}`` for the layers whose kernel ``optimizer`` decays."""
    if optimizer is None:
        return {}
    if isinstance(optimizer, torch.optim.Optimizer):
        if adapter.framework != "torch":
            raise ConfigError("optimizer: a torch optimizer was given for a Keras model")
        return _torch_decay(adapter.model, optimizer)
    if any(c.__module__.startswith("keras.") for c in type(optimizer).__mro__):
        return _keras_decay(adapter.model, optimizer)
    raise ConfigError(
        f"optimizer: a {type(optimizer).__name__} is neither a torch.optim.Optimizer nor a "
        "Keras optimizer"
    )
