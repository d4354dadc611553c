"""Small embedded data sets for the doctor's cases (held in memory, never written to disk).

``digits``: scikit-learn's 8x8 digits, 1797 samples, 10 classes; ``scale="unit"`` divides
the 0-16 pixels by 16, ``scale="raw"`` multiplies them by 255/16 (raw 0-255 pixels, what
``bnlab.data.load("digits", scale="raw")`` gives). ``circles``: make_circles(1000, noise 0.1,
random_state 1), seed 004's binary problem.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch


@cache
def digits(scale: str = "unit", layout: str = "flat") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: x float32 (N, 64) for ``layout="flat"``, (N, 1, 8, 8) for ``"nchw"``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    factor = {"unit": 1.0 / 16.0, "raw": 255.0 / 16.0}[scale]
    x = torch.tensor(d.data * factor, dtype=torch.float32)
    if layout == "nchw":
        x = x.reshape(-1, 1, 8, 8)
    return x, torch.tensor(d.target, dtype=torch.int64)


@cache
def circles() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=1000, noise=0.1, random_state=1)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def nhwc(x: torch.Tensor) -> np.ndarray:
    """NCHW tensor -> NHWC float32 array (Keras's layout)."""
    return x.permute(0, 2, 3, 1).contiguous().numpy()
