"""Shared test fixtures.

Keras, when installed, runs on its torch backend (set before any Keras import).
``shared_data`` points at the real Fashion-MNIST / MNIST npz files beside the
repository (``../shared/data``) or skips the test when they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
# Tests compare bnlab's training with computations done by hand, bit for bit. bnlab trains
# small models on one thread (bnlab.train.threads); the hand computations must reduce in the
# same order, so the whole session uses one intra-op thread.
torch.set_num_threads(1)
os.environ.setdefault("BNLAB_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BNLAB_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding fashion_mnist.npz and mnist.npz; skips when absent."""
    if not (SHARED_DATA / "fashion_mnist.npz").is_file():
        pytest.skip(f"real data folder absent: {SHARED_DATA} has no fashion_mnist.npz")
    return SHARED_DATA


@pytest.fixture(scope="session")
def keras():
    """Keras 3 on its torch backend; skips with the reason when the keras extra is absent."""
    keras = pytest.importorskip("keras", reason="the keras extra is not installed (pip install bnlab[keras])")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras backend is {keras.backend.backend()!r}, conformance needs 'torch'")
    return keras
