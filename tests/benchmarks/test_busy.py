"""``benchmarks/busy.py``: the busy processes of ``--load N`` start, spin, and always stop."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _busy():
    spec = importlib.util.spec_from_file_location("busy", BENCHMARKS / "busy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose: reaped children leave no entry at all
    stat = Path(f"/proc/{pid}/stat")
    return not stat.is_file() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_processes_spin_during_the_block_and_stop_after_it():
    busy = _busy()
    with busy.busy_processes(2, settle_s=0.3) as pids:
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        ticks = [
            int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[11]) for p in pids
        ]
        time.sleep(0.3)
        later = [
            int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[11]) for p in pids
        ]
        assert all(b > a for a, b in zip(ticks, later, strict=True))  # they burn CPU time
    assert not any(_alive(p) for p in pids)


def test_processes_stop_on_an_exception_too():
    busy = _busy()
    with pytest.raises(KeyboardInterrupt):
        with busy.busy_processes(1, settle_s=0.0) as pids:
            raise KeyboardInterrupt
    assert not _alive(pids[0])
    with pytest.raises(ValueError, match="n: -1"):
        with busy.busy_processes(-1):
            pass
