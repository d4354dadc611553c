"""The in-memory dataset every part of bnlab passes around."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Dataset:
    """Train/test (and optional validation) tensors of one dataset.

    Conventions: ``x_*`` are ``float32`` tensors, images in PyTorch layout
    ``(N, C, H, W)``, tabular data ``(N, F)``; ``y_*`` are ``int64`` class indices
    ``(N,)``. Pixel scaling is whatever the loader documents (the seeds differ:
    seed 002 and 001 feed raw 0-255 pixels, seed 003 divides by 255).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    name: str = ""
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, channels first: ``(C, H, W)`` or ``(F,)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> Dataset:
        """A copy with every tensor on ``device``."""

        def move(t):
            return None if t is None else t.to(device)

        return Dataset(
            move(self.x_train),
            move(self.y_train),
            move(self.x_test),
            move(self.y_test),
            list(self.classes),
            self.name,
            move(self.x_val),
            move(self.y_val),
            dict(self.meta),
        )

    def __repr__(self) -> str:
        val = f", val={tuple(self.x_val.shape)}" if self.x_val is not None else ""
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}{val}, classes={self.num_classes})"
        )
