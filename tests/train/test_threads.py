"""The CPU thread rule: small models train on one thread unless the user chose a count."""

from __future__ import annotations

import pytest
import torch

from bnlab.models import build
from bnlab.train.threads import SMALL_STEP_MACS, macs_per_step, threads_for, training_threads


@pytest.fixture
def no_thread_env(monkeypatch):
    monkeypatch.delenv("BNLAB_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_step_cost_counts_dense_and_conv_multiply_accumulates():
    # circles_mlp: 2 -> 50 -> 1 dense layers = 150 MAC per sample.
    assert macs_per_step(build("circles_mlp"), (2,), 32) == 150 * 32
    assert macs_per_step(build("fashion_cnn"), (1, 28, 28), 64) > SMALL_STEP_MACS


def test_rule_and_user_choices(no_thread_env, monkeypatch):
    assert threads_for(4_800) == 1
    assert threads_for(SMALL_STEP_MACS + 1) is None
    assert threads_for(None) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads_for(4_800) is None  # the user's choice stands
    monkeypatch.setenv("BNLAB_THREADS", "3")
    assert threads_for(SMALL_STEP_MACS * 10) == 3


def test_training_threads_sets_one_thread_and_restores(no_thread_env):
    session = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small = macs_per_step(build("circles_mlp"), (2,), 32)
        with training_threads(small, torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        large = macs_per_step(build("fashion_cnn"), (1, 28, 28), 64)
        with training_threads(large, torch.device("cpu")):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(session)
