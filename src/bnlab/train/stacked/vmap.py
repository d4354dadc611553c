"""``kernels="vmap"``: any torch module stacked by ``torch.func`` instead of stacked layers.

:class:`VmapModel` holds ``K`` models' parameters and buffers stacked along a leading run
dimension (``torch.func.stack_module_state``) and runs the *unmodified* module of run 0 on
them with ``functional_call`` under ``vmap``. It needs no stacked layer, so it stacks any
architecture, a user's own ``nn.Module`` included (not only the ``nn.Sequential`` trees of
known layers that :func:`~bnlab.train.stacked.stack_signature` accepts): two models stack
when :func:`vmap_signature` says they differ in values only.

It plugs into the same stack as :class:`~bnlab.train.stacked.StackedModel` (same input and
output layout, same :class:`~bnlab.train.stacked.StackedOptimizer`, per-run Keras L1/L2), so
``fit_stacked(models, data, seeds=..., kernels="vmap")`` is the entry point. BN layers update
their stacked buffers in place inside ``vmap`` (bnlab's functional BN is vmap-safe,
:func:`bnlab.nn.functional.is_batched`). Limits, each refused with a :class:`StackingError`:
runs must share every Python-float setting of a module (BN momentum and epsilon, dropout
rates), and dropout masks come from vmap's ``randomness="different"`` (``dropout_rng`` must be
``"shared"`` when a dropout rate is non-zero).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm
from bnlab.nn.probe import output_shape
from bnlab.nn.regularizers import L1L2
from bnlab.train.stacked.layers import _Penalty
from bnlab.train.stacked.model import probe_sample
from bnlab.train.stacked.signature import StackingError

#: Python-float settings a vmapped module shares across runs (they are not tensors).
_SHARED_SETTINGS = ("momentum", "epsilon", "eps", "p", "renorm_momentum")


def vmap_signature(model: nn.Module) -> tuple:
    """What must be equal for two models to share a vmapped stack: module types and the
    names, shapes and dtypes of parameters and buffers (values may differ)."""
    modules = tuple((name, type(m).__qualname__) for name, m in model.named_modules())
    tensors = tuple(
        (name, tuple(t.shape), str(t.dtype), isinstance(t, nn.Parameter) and t.requires_grad)
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    )
    return modules, tensors


def vmap_settings(model: nn.Module) -> tuple:
    """The Python-number settings of ``model``'s modules (BN momentum and epsilon, dropout
    rates) that every run of a vmapped stack must share: ``(module, name, value)``."""
    out = []
    for name, m in model.named_modules():
        for key in _SHARED_SETTINGS:
            value = getattr(m, key, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append((name, key, value))
    return tuple(out)


def vmap_refusal(model: nn.Module) -> str | None:
    """Why ``kernels="vmap"`` would not train ``model`` as :func:`bnlab.train.fit` trains it
    (``None`` when it would): an active dropout (vmap draws its masks from one stream, not
    the run's own), or a ``torch.nn`` batch norm with ``momentum=None`` (its step count is
    read with ``.item()``, which vmap cannot)."""
    for name, m in model.named_modules():
        where = f"layer {name!r} ({type(m).__name__})"
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return f"{where} has dropout {m.p}, whose masks vmap cannot draw as fit does"
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None:
            return f"{where} has momentum=None, which vmap cannot run"
    return None


def _check_stackable(models: Sequence[nn.Module]) -> None:
    first = vmap_signature(models[0])
    for i, m in enumerate(models[1:], start=1):
        if vmap_signature(m) != first:
            raise StackingError(f"engine: model {i} differs from model 0 in more than values")
    for name, m0 in models[0].named_modules():
        for key in _SHARED_SETTINGS:
            value = getattr(m0, key, None)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            others = {getattr(m.get_submodule(name), key) for m in models}
            if len(others) > 1:
                raise StackingError(
                    f"engine: layer {name!r} has {key} {sorted(others)} across the runs; "
                    "kernels='vmap' runs one module, so they must be equal (the stacked "
                    "layers, kernels='stacked' or 'per_run', take per-run values)"
                )


def _key(name: str) -> str:
    return name.replace(".", "__")


class VmapModel(nn.Module):
    """``K`` models of one architecture run with ``vmap(functional_call(...))``.

    ``forward(x)``: a channel-stacked batch ``(B, K*C, ...)`` or a shared batch
    ``(N, C, ...)``, returning ``(B, K*O)`` logits, as :class:`StackedModel` does.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        input_shape: tuple[int, ...],
        dropout_generators: Sequence[torch.Generator] | None = None,
        kernels: str = "vmap",
    ):
        super().__init__()
        if not models:
            raise ConfigError("models: an empty list; the stack needs at least one model")
        _check_stackable(models)
        if dropout_generators is not None and any(
            isinstance(m, nn.Dropout) and m.p > 0 for m in models[0].modules()
        ):
            raise StackingError(
                "dropout_rng: 'per_run' generators cannot drive dropout inside vmap; use "
                "dropout_rng='shared' with kernels='vmap' (or the stacked layers)"
            )
        self.k = len(models)
        self.input_shape = tuple(input_shape)
        first = next(models[0].parameters())
        self.num_outputs = int(output_shape(models[0], probe_sample(models[0], input_shape))[1])
        params, buffers = stack_module_state(list(models))
        self._param_names = list(params)
        self._buffer_names = list(buffers)
        for name, value in params.items():
            trainable = models[0].get_parameter(name).requires_grad
            self.register_parameter(_key(name), nn.Parameter(value.detach(), trainable))
        for name, value in buffers.items():
            self.register_buffer(_key(name), value)
        # The module run on the stacked tensors: run 0's structure, no storage of its own.
        # Kept outside the module tree, so .to() and .parameters() never see it.
        self.__dict__["base"] = copy.deepcopy(models[0]).to("meta")
        self.penalties = nn.ModuleDict()
        self._penalized: list[str] = []
        for name, module in models[0].named_modules():
            for param, attr in _regularized(module):
                regs = [getattr(m.get_submodule(name), attr) for m in models]
                if any(r is not None and not isinstance(r, L1L2) for r in regs):
                    raise StackingError(
                        f"engine: layer {name!r} has a custom {attr}; stacked runs take "
                        "bnlab.nn.regularizers.L1L2 (Keras L1/L2) only"
                    )
                penalty = _Penalty.build(regs, first.device)
                full = f"{name}.{param}" if name else param
                if penalty is not None and full in params:
                    self.penalties[_key(full)] = penalty
                    self._penalized.append(full)

    def _state(self) -> tuple[dict, dict]:
        params = {n: getattr(self, _key(n)) for n in self._param_names}
        buffers = {n: getattr(self, _key(n)) for n in self._buffer_names}
        return params, buffers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.k > 1 and x.shape[1] == self.input_shape[0]
        b = x.shape[0]
        if not shared:
            x = x.unflatten(1, (self.k, -1)).transpose(0, 1)  # (K, B, C, ...)
        self.base.train(self.training)
        params, buffers = self._state()

        def run(p, bufs, xs):
            return functional_call(self.base, (p, bufs), (xs,))

        out = vmap(run, in_dims=(0, 0, None if shared else 0), randomness="different")(
            params, buffers, x
        )  # (K, B, O)
        return out.transpose(0, 1).reshape(b, self.k * self.num_outputs)

    def split(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.view(logits.shape[0], self.k, self.num_outputs)

    def stacked_layers(self) -> list:
        return []

    def regularization(self) -> torch.Tensor:
        """Per-run Keras L1/L2 loss ``(K,)``, in module order."""
        total = None
        for name in self._penalized:
            loss = self.penalties[_key(name)](getattr(self, _key(name)))
            total = loss if total is None else total + loss
        if total is None:
            p = next(self.parameters(), None)
            return torch.zeros(self.k, device=p.device if p is not None else "cpu")
        return total

    @torch.no_grad()
    def unstack_into(self, models: Sequence[nn.Module]) -> None:
        """Write every run's parameters and buffers back into its own model."""
        if len(models) != self.k:
            raise ConfigError(f"models: {len(models)} models for a stack of {self.k}")
        for name in (*self._param_names, *self._buffer_names):
            stacked = getattr(self, _key(name))
            for m, value in zip(models, stacked, strict=True):
                target = m.get_parameter(name) if name in self._param_names else m.get_buffer(name)
                target.copy_(value)


def _regularized(module: nn.Module) -> list[tuple[str, str]]:
    """``(parameter, regularizer attribute)`` pairs of one module, in the order
    :func:`bnlab.nn.regularization_loss` adds them."""
    if isinstance(module, BatchNorm):
        return [("gamma", "gamma_regularizer"), ("beta", "beta_regularizer")]
    if getattr(module, "kernel_regularizer", None) is not None:
        return [("weight", "kernel_regularizer")]
    return []


__all__ = ["VmapModel", "vmap_refusal", "vmap_settings", "vmap_signature"]
