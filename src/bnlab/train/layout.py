"""The memory layout a run trains in: channels-last for convolutional models on CPU.

PyTorch stores images NCHW; oneDNN, which runs PyTorch's CPU convolutions, is much faster on
NHWC-strided ("channels-last") tensors, which is also how Keras's torch backend hands them to
it. Measured on 2 CPU cores for seed 002's ``fashion_cnn`` (batch 64): one training step
18.7 -> 9.5 ms without BN and 14.7 -> 11.9 ms with BN; inference over 1000 images 139 -> 43 ms
and 102 -> 52 ms. Only strides change: every value is the same up to float rounding (other
kernels sum in another order). ``fit`` therefore trains a model that holds 2-D convolutions on
4-D inputs channels-last on CPU (``channels_last=None``, the default) and gives the model
back in the layout it came in.

On CUDA the default stays NCHW: whether NHWC pays there depends on the dtype (TF32 / bf16
tensor cores) and was not measured for fit; ``channels_last=True`` asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from bnlab.errors import ConfigError
from bnlab.train.evaluation import mode


def wants_channels_last(
    choice: bool | None, model: nn.Module, sample: torch.Tensor, device: torch.device
) -> bool:
    """Whether to train channels-last.

    ``choice``: ``True``/``False`` force it (``True`` needs 4-D inputs); ``None`` chooses it on
    CPU for a model with a 2-D convolution and 4-D inputs ``(N, C, H, W)``.
    """
    if choice is not None and not isinstance(choice, bool):
        raise ConfigError(f"channels_last: {choice!r} is not None, True or False")
    if choice is not None:
        if choice and sample.dim() != 4:
            raise ConfigError(
                f"channels_last: True needs 4-D inputs (N, C, H, W); x_train has shape "
                f"{tuple(sample.shape)}"
            )
        return choice
    return (
        device.type == "cpu"
        and sample.dim() == 4
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
        and _runs_channels_last(model, sample)
    )


def _runs_channels_last(model: nn.Module, sample: torch.Tensor) -> bool:
    """Whether ``model`` runs on channels-last tensors: a forward pass that calls ``.view``
    on an activation (``x.view(n, -1)``) fails on them, and such a model trains NCHW.
    ``sample`` must already have the model's device and dtype."""
    if any(nn.parameter.is_lazy(t) for t in [*model.parameters(), *model.buffers()]):
        return False  # shapes unknown until the first pass: keep the layout it will get
    try:
        with torch.no_grad(), mode(model, False), model_layout(model, True):
            model(to_layout(sample[:2], True))
    except RuntimeError:
        return False
    return True


def to_layout(x: torch.Tensor | None, channels_last: bool) -> torch.Tensor | None:
    """``x`` in the run's layout (a copy only when its strides differ)."""
    if x is None or not channels_last or x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last)


@contextmanager
def model_layout(model: nn.Module, channels_last: bool) -> Iterator[nn.Module]:
    """Hold ``model``'s 4-D parameters and buffers channels-last inside the block.

    The same ``Parameter`` objects are kept (their data is restrided in place), so an
    optimizer built on them before or inside the block stays valid. On exit every 4-D tensor
    gets back the exact strides it had on entry (compared as strides: a weight with one input
    channel counts as contiguous in both layouts, yet oneDNN reads the strides).
    """
    if not channels_last:
        yield model
        return
    strides = {name: t.stride() for name, t in _tensors(model) if t.dim() == 4}
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, t in _tensors(model):
                if name in strides and t.stride() != strides[name]:
                    restored = torch.empty_strided(
                        t.shape, strides[name], dtype=t.dtype, device=t.device
                    )
                    t.data = restored.copy_(t.data)


def _tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    # By name: Module.to keeps Parameter objects but replaces buffer objects.
    yield from model.named_parameters()
    yield from model.named_buffers()
