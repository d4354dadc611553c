"""The stacked model: ``K`` ``nn.Sequential`` models of one architecture as one module."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bnlab._validation import check_choice
from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm
from bnlab.nn.probe import leaf_shapes
from bnlab.train.stacked.batchnorm import StackedBatchNorm
from bnlab.train.stacked.layers import (
    StackedConv2d,
    StackedDropout,
    StackedFlatten,
    StackedLinear,
    _StackedLayer,
)
from bnlab.train.stacked.signature import StackingError, _flatten_kind, stack_signature


def probe_sample(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Two zero samples on the model's device, in its dtype, for a dry shape probe."""
    first = next(model.parameters())
    return torch.zeros((2, *input_shape), device=first.device, dtype=first.dtype)


class StackedModel(nn.Module):
    """``K`` models of one architecture as one module (see the module docstring for layout).

    ``forward(x)`` takes a channel-stacked batch ``(B, K*C, ...)`` (one batch per run) or a
    shared batch ``(N, C, ...)`` (the same samples for every run) and returns logits
    ``(B, K*O)``; :meth:`split` views them as ``(B, K, O)``.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        input_shape: tuple[int, ...],
        dropout_generators: Sequence[torch.Generator] | None = None,
        kernels: str = "stacked",
    ):
        super().__init__()
        if not models:
            raise ConfigError("models: an empty list; the stack needs at least one model")
        signatures = [stack_signature(m) for m in models]
        for i, sig in enumerate(signatures[1:], start=1):
            if sig != signatures[0]:
                diff = (
                    next((a, b) for a, b in zip(signatures[0], sig, strict=False) if a != b)
                    if len(sig) == len(signatures[0])
                    else ("layer count", len(sig))
                )
                raise StackingError(
                    f"engine: model {i} differs from model 0 in more than values: {diff}"
                )
        self.k = len(models)
        shapes = leaf_shapes(models[0], probe_sample(models[0], input_shape))
        self.input_shape = tuple(input_shape)
        # Hooks fire in execution order: the last leaf's output is the logits.
        self.num_outputs = int(list(shapes.values())[-1][1][0])
        self.kernels = check_choice("kernels", kernels, ("stacked", "per_run"))
        self.body = self._stack(models, "", shapes, dropout_generators)

    def _stack(self, models, prefix, shapes, generators) -> nn.Sequential:
        out = nn.Sequential()
        for name, child in models[0].named_children():
            full = f"{prefix}{name}"
            children = [getattr(m, name) if not name.isdigit() else m[int(name)] for m in models]
            if isinstance(child, nn.Sequential):
                out.add_module(name, self._stack(children, f"{full}.", shapes, generators))
                continue
            in_shape = shapes[full][0]
            if isinstance(child, nn.Conv2d):
                layer = StackedConv2d(children, in_shape, self.kernels)
            elif isinstance(child, nn.Linear):
                layer = StackedLinear(children, in_shape, self.kernels)
            elif isinstance(child, BatchNorm):
                layer = StackedBatchNorm(children, in_shape)
            elif isinstance(child, nn.Dropout):
                layer = StackedDropout(children, in_shape, generators)
            elif _flatten_kind(child) is not None:
                layer = StackedFlatten(self.k, in_shape, _flatten_kind(child))
            else:
                layer = child  # channel-wise and parameter-free: shared as is
            out.add_module(name, layer)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def split(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K*O)`` -> ``(B, K, O)`` (a view)."""
        return logits.view(logits.shape[0], self.k, self.num_outputs)

    def stacked_layers(self) -> list[tuple[str, _StackedLayer]]:
        return [(n, m) for n, m in self.body.named_modules() if isinstance(m, _StackedLayer)]

    def regularization(self) -> torch.Tensor:
        """Per-run regularization loss ``(K,)``, summed over layers in module order like
        :func:`bnlab.nn.regularization_loss`."""
        total = None
        for _, m in self.stacked_layers():
            loss = m.regularization()
            if loss is not None:
                total = loss if total is None else total + loss
        if total is None:
            p = next(self.parameters(), None)
            return torch.zeros(self.k, device=p.device if p is not None else "cpu")
        return total

    @torch.no_grad()
    def unstack_into(self, models: Sequence[nn.Module]) -> None:
        """Write every run's weights and BN statistics back into its own model."""
        if len(models) != self.k:
            raise ConfigError(f"models: {len(models)} models for a stack of {self.k}")
        for name, layer in self.stacked_layers():
            layer.unstack_into([m.get_submodule(name) for m in models])
