"""The CPU thread rule: small models train on one thread unless the user chose a count."""

from __future__ import annotations

import pytest
import torch

from bnlab.models import build
from bnlab.train import threads
from bnlab.train.threads import SMALL_STEP_MACS, macs_per_step, threads_for, training_threads


@pytest.fixture
def no_thread_env(monkeypatch):
    monkeypatch.delenv("BNLAB_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    # ... on an idle machine: the contention rule (tests below) would otherwise follow
    # whatever else runs on the test machine.
    monkeypatch.setattr(threads, "free_cores", lambda: 64.0)


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


def test_contention_caps_the_thread_count_at_the_free_cores():
    cap = threads.contention_threads
    assert cap(2, 2.0) == 2 and cap(2, 5.0) == 2  # idle: torch's count stands
    assert cap(2, 1.0) == 1 and cap(4, 2.7) == 2
    assert cap(2, 0.0) == 1 and cap(2, -3.0) == 1  # never below one thread
    assert cap(2, None) == 2  # load unknown: unchanged


def test_large_model_on_a_busy_machine_trains_on_fewer_threads(no_thread_env, monkeypatch):
    large = macs_per_step(build("fashion_cnn"), (1, 28, 28), 64)
    session = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(threads, "free_cores", lambda: 0.0)  # two others runnable
        assert threads.choose_threads(large, "cpu") == 1
        with training_threads(large, torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        assert threads.choose_threads(large, "cuda") is None  # GPU runs: untouched
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
        assert threads.choose_threads(large, "cpu") is None
        monkeypatch.setenv("BNLAB_THREADS", "2")
        assert threads.choose_threads(large, "cpu") == 2
    finally:
        torch.set_num_threads(session)


def test_runnable_elsewhere_counts_busy_processes():
    import subprocess
    import sys
    import time
    from pathlib import Path

    if not Path("/proc/loadavg").is_file():
        pytest.skip("no /proc/loadavg (not Linux)")
    assert threads.usable_cores() >= 1
    assert threads._own_running_threads() >= 1  # this thread, reading
    spin = [sys.executable, "-c", "while True: pass"]
    busy = [subprocess.Popen(spin) for _ in range(2)]
    try:
        time.sleep(0.5)  # past their start-up (file reads)
        # Spinning processes are always runnable (running or queued), whatever else runs.
        assert threads.runnable_elsewhere() >= 2
        assert threads.free_cores() <= threads.usable_cores() - 2
    finally:
        for p in busy:
            p.kill()
            p.wait()
