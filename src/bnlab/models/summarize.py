"""Keras-style parameter counts and layer table for any PyTorch module.

Counting follows Keras's ``model.summary()``:

- trainable: parameters with ``requires_grad`` (frozen ones are non-trainable);
- non-trainable: frozen parameters plus floating-point buffers, i.e. BN's moving mean and
  variance (bnlab's ``moving_mean``/``moving_variance``, torch's ``running_mean``/
  ``running_var``), which Keras stores as non-trainable weights;
- integer buffers (torch's and bnlab's ``num_batches_tracked`` step counter) are not
  weights in Keras and are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bnlab.nn.probe import train_mode


def _own_counts(module: nn.Module) -> tuple[int, int]:
    trainable = non_trainable = 0
    for p in module.parameters(recurse=False):
        if p.requires_grad:
            trainable += p.numel()
        else:
            non_trainable += p.numel()
    for b in module.buffers(recurse=False):
        if b.is_floating_point():
            non_trainable += b.numel()
    return trainable, non_trainable


def _rows(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules and modules holding their own weights, in registration order."""
    rows = []
    for name, module in model.named_modules():
        has_own = any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False)
        )
        if has_own or not any(True for _ in module.children()):
            rows.append((name or type(module).__name__, module))
    return rows


def summary(model: nn.Module, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """``dict(total, trainable, non_trainable, layers=[(name, type, output_shape, params)])``.

    ``output_shape`` is ``(None, *shape)`` (``None`` = the batch, as Keras prints it), taken
    by forward hooks on one pass of zeros of batch 2 and shape ``input_shape`` (default:
    ``model.bnlab_meta["input_shape"]``) in eval mode without gradients; every module's
    train/eval flag is restored afterwards and no state changes (eval-mode BN does not
    update its statistics). Without an input shape, output shapes are ``None``.
    """
    rows = _rows(model)
    shapes = _output_shapes(model, rows, input_shape)
    layers = []
    trainable = non_trainable = 0
    for name, module in rows:
        t, n = _own_counts(module)
        trainable += t
        non_trainable += n
        layers.append((name, type(module).__name__, shapes.get(id(module)), t + n))
    return {
        "total": trainable + non_trainable,
        "trainable": trainable,
        "non_trainable": non_trainable,
        "layers": layers,
    }


def _output_shapes(
    model: nn.Module, rows: list[tuple[str, nn.Module]], input_shape: Sequence[int] | None
) -> dict[int, tuple | None]:
    if input_shape is None:
        input_shape = getattr(model, "bnlab_meta", {}).get("input_shape")
    if input_shape is None:
        return {}
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    shapes: dict[int, tuple | None] = {}

    def hook(module, _inputs, output):
        if id(module) not in shapes and isinstance(output, torch.Tensor):
            shapes[id(module)] = (None, *output.shape[1:])

    handles = [m.register_forward_hook(hook) for _, m in rows]
    try:
        with train_mode(model, False), torch.no_grad():
            model(torch.zeros(2, *input_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return shapes


def format_summary(model: nn.Module, input_shape: Sequence[int] | None = None) -> str:
    """The summary as a Keras-style text table (layer (type), output shape, params, totals)."""
    s = summary(model, input_shape)
    title = getattr(model, "bnlab_meta", {}).get("preset", type(model).__name__)
    cells = [
        (f"{name} ({kind})", "?" if shape is None else str(shape), f"{params:,}")
        for name, kind, shape, params in s["layers"]
    ]
    header = ("Layer (type)", "Output Shape", "Param #")
    w = [max(len(r[i]) for r in [header, *cells]) + 3 for i in range(3)]
    width = sum(w)

    def line(r: tuple[str, str, str]) -> str:
        return f"{r[0]:<{w[0]}}{r[1]:<{w[1]}}{r[2]:>{w[2] - 3}}"

    out = [f'Model: "{title}"', "_" * width, line(header), "=" * width]
    out += [line(r) for r in cells]
    out += [
        "=" * width,
        f"Total params: {s['total']:,}",
        f"Trainable params: {s['trainable']:,}",
        f"Non-trainable params: {s['non_trainable']:,}",
        "_" * width,
    ]
    return "\n".join(out)
