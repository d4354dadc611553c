"""Looking at a model without changing it: the train-flag context manager and the one dry
shape probe.

:func:`train_mode` saves every module's ``training`` flag, optionally switches the whole
model, and restores each flag on exit (a model may mix modes on purpose: a frozen BN layer
in inference mode inside a training model). :func:`dry_run` runs one inference-mode forward
pass without gradients, calling a hook on every leaf module in execution order; the shape
and cost probes of the trainer, the stacked engine and the memory planner are built on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

LeafHook = Callable[[str, nn.Module, tuple, Any], None]


@contextmanager
def train_mode(model: nn.Module, training: bool | None = None) -> Iterator[nn.Module]:
    """Within the block the model is in ``model.train(training)`` (unchanged for ``None``);
    every module's own flag is restored on exit, exception or not."""
    flags = [(m, m.training) for m in model.modules()]
    if training is not None:
        model.train(training)
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module without children, in registration order."""
    return [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]


@torch.no_grad()
def dry_run(model: nn.Module, sample: torch.Tensor, on_leaf: LeafHook | None = None) -> Any:
    """``model(sample)`` in inference mode without gradients; ``on_leaf(name, module, inputs,
    output)`` after each leaf module's forward. Flags and hooks are restored/removed."""
    handles = []
    if on_leaf is not None:
        for name, m in leaf_modules(model):
            handles.append(
                m.register_forward_hook(
                    lambda mod, inp, out, name=name: on_leaf(name, mod, inp, out)
                )
            )
    try:
        with train_mode(model, False):
            return model(sample)
    finally:
        for h in handles:
            h.remove()


def output_shape(model: nn.Module, sample: torch.Tensor) -> tuple[int, ...]:
    """The shape of ``model(sample)`` in inference mode (also materialises lazy layers)."""
    return tuple(dry_run(model, sample).shape)


def leaf_shapes(model: nn.Module, sample: torch.Tensor) -> dict[str, tuple[tuple, tuple]]:
    """Per-sample ``(input shape, output shape)`` of every leaf module, in execution order."""
    shapes: dict[str, tuple[tuple, tuple]] = {}

    def record(name, module, inputs, output):
        shapes[name] = (tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))

    dry_run(model, sample, record)
    return shapes


__all__ = ["dry_run", "leaf_modules", "leaf_shapes", "output_shape", "train_mode"]
