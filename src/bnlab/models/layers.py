"""Layers the presets need beyond ``bnlab.nn``."""

from __future__ import annotations

import torch
from torch import nn


class Flatten(nn.Module):
    """Flatten an NCHW tensor in Keras's (H, W, C) order; 2-D inputs pass through.

    bnlab runs channels first, Keras channels last. ``torch.nn.Flatten`` would order the
    features (C, H, W), so a Dense kernel or a BatchNorm after the flatten would see its
    inputs in a different order than the seed's Keras model. Flattening in (H, W, C) order
    makes every weight of a Keras model copy over unchanged (only transposed/permuted per
    layer, never re-ordered across the flatten), which is what the Keras twins and the
    parity tests rely on. The permute is a view; on a channels-last tensor the flatten is
    free, otherwise it costs one copy of the activation.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.flatten(1)
