"""Study tests train tiny models: one torch thread is faster for them and keeps the tests'
timing stable on a shared CPU (threads spin-waiting for busy cores can be 20x slower)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Scoped to these tests: the rest of the suite keeps torch's default.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
