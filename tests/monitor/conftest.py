"""Small models and data for the monitor's tests (digits: embedded, no network)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def digits():
    """``(x_train, y_train, x_val, y_val)``: scikit-learn digits, 1,297 / 500, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    return x[:1297], y[:1297], x[1297:], y[1297:]


