"""Small models and training loops for the monitor's tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def mlp(seed: int = 0, momentum: float = 0.1) -> nn.Module:
    """64 -> 32 -> BN -> ReLU -> Dropout -> 10 (PyTorch momentum: fraction replaced)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 32), nn.BatchNorm1d(32, momentum=momentum), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(32, 10),
    )  # fmt: skip


def train_epoch(model, opt, x, y, *, generator, batch_size: int = 64, poison: bool = False):
    """One epoch of plain SGD steps; ``poison`` puts an Inf into the first batch."""
    order = torch.randperm(x.shape[0], generator=generator)
    for i in range(0, x.shape[0], batch_size):
        idx = order[i : i + batch_size]
        xb = x[idx].clone()
        if poison and i == 0:
            xb[0, 0] = float("inf")
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), y[idx]).backward()
        opt.step()


def evaluate(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum()) / len(y)


def all_weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
