"""Busy processes for timing a contended machine reproducibly (``--load N``).

:func:`busy_processes` starts ``n`` child interpreters that each spin a pure-Python loop
(one core each, no memory traffic to speak of) and stops them when the ``with`` block ends,
also on an exception or Ctrl-C. A child also ends by itself when its parent is gone, so a
``kill -9`` of the benchmark leaves nothing spinning.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: The child's program: spin until the parent changes (the parent died: re-parented).
SPIN = (
    "import os\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    for _ in range(200_000):\n"
    "        pass\n"
)


def loadavg() -> list[float]:
    """``os.getloadavg()`` rounded to 2 decimals (``[]`` where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return []


@contextmanager
def busy_processes(n: int, settle_s: float = 0.5) -> Iterator[list[int]]:
    """Run ``n`` spinning processes for the duration of the block; yields their pids.

    ``settle_s``: seconds to wait after starting them, so the scheduler (and anything that
    samples the load at its start) already sees them busy when the block's work begins.
    """
    if n < 0:
        raise ValueError(f"n: {n} busy processes; allowed: 0 or more")
    children: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", SPIN],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        if n:
            time.sleep(settle_s)
        yield [c.pid for c in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
