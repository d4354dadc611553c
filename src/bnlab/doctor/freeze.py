"""``bnlab.freeze(model, what=...)``: freeze BN layers so that fine-tuning cannot move them.

PyTorch: ``what="stats"`` or ``"all"`` swaps every ``torch.nn.BatchNorm*d`` for a
:class:`FrozenBatchNorm` that always normalises with its stored statistics, whatever
``model.train()`` says (the usual trap: ``requires_grad=False`` on gamma/beta leaves the
module updating its statistics in train mode); ``"all"`` also stops gamma/beta training,
``"stats"`` keeps them trainable. ``"affine"`` only sets ``requires_grad=False`` on gamma/beta
(the statistics still follow the new data in train mode). :class:`bnlab.BatchNorm` layers get
``trainable=False`` for ``"all"`` (Keras semantics: frozen and inference mode).

Keras 3: ``"all"`` sets ``layer.trainable = False`` on every BatchNormalization layer (frozen
*and* inference mode, even inside ``fit``); ``"affine"`` freezes only the gamma/beta
variables. Keras cannot keep statistics fixed while training gamma/beta, so ``"stats"`` is
refused for Keras models.

The state_dict keys of a frozen PyTorch model are the BN's own (``weight``, ``bias``,
``running_mean``, ``running_var``, ``num_batches_tracked``), so weights load either way.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab._validation import check_choice
from bnlab.doctor.adapters import is_keras_model, unwrap
from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm

WHAT = ("stats", "affine", "all")


class FrozenBatchNorm(nn.Module):
    """BN with fixed statistics: ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``.

    ``train()`` changes nothing about it; gamma/beta train only if ``requires_grad``.
    """

    def __init__(self, bn: _BatchNorm, *, affine_trainable: bool):
        super().__init__()
        self.num_features = bn.num_features
        self.eps = float(bn.eps)
        if bn.running_mean is None:
            raise ConfigError(
                f"model: a {type(bn).__name__} with track_running_stats=False has no statistics "
                "to freeze"
            )
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked.detach().clone())
        for name in ("weight", "bias"):
            p = getattr(bn, name, None)
            if p is None:
                self.register_parameter(name, None)
            else:
                self.register_parameter(
                    name, nn.Parameter(p.detach().clone(), requires_grad=affine_trainable)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _freeze_torch(model: nn.Module, what: str) -> int:
    targets = [
        (path, m) for path, m in model.named_modules() if isinstance(m, (_BatchNorm, BatchNorm))
    ]
    for path, m in targets:
        if isinstance(m, BatchNorm):
            if what == "stats":
                raise ConfigError(
                    f"what: 'stats' is not available for bnlab.BatchNorm ({path}); use 'all' "
                    "(trainable=False: Keras semantics) or m.to_torch() first"
                )
            if what == "all":
                m.trainable = False
            for p in (m.gamma, m.beta):
                if p is not None:
                    p.requires_grad_(False)
            continue
        if what == "affine":
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad_(False)
            continue
        frozen = FrozenBatchNorm(m, affine_trainable=what == "stats").to(m.running_mean.device)
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, frozen)
    return len(targets)


def _freeze_keras(model, what: str) -> int:
    if what == "stats":
        raise ConfigError(
            "what: 'stats' is not available for Keras models (Keras cannot keep BN statistics "
            "fixed while training gamma/beta); use 'all' (trainable=False) or 'affine'"
        )
    layers = [
        lay
        for lay in model._flatten_layers(include_self=False, recursive=True)
        if type(lay).__name__ == "BatchNormalization"
    ]
    for lay in layers:
        if what == "all":
            lay.trainable = False
        else:
            for v in (getattr(lay, "gamma", None), getattr(lay, "beta", None)):
                if v is not None:
                    v.trainable = False
    return len(layers)


def freeze(model: Any, what: str = "all") -> Any:
    """Freeze every BN layer of ``model`` in place and return it (see the module docstring).

    ``what``: ``"stats"`` (fixed moving statistics), ``"affine"`` (fixed gamma/beta) or
    ``"all"`` (both). Wrappers (DataParallel, torch.compile) are looked through.
    """
    what = check_choice("what", what, WHAT)
    if is_keras_model(model):
        _freeze_keras(model, what)
        return model
    inner, _ = unwrap(model)
    if not isinstance(inner, nn.Module):
        raise ConfigError(
            f"model: a {type(model).__name__} is neither a torch.nn.Module nor a Keras model"
        )
    _freeze_torch(inner, what)
    return model
