"""How many CPU threads a training run uses.

PyTorch runs every operator on all cores by default (intra-op threads, an OpenMP team with
a static split of the work). For a small model each operator is a few microseconds of work,
the threads' hand-offs cost more than they save, and when anything else competes for the
cores the waiting threads make training many times slower: on 2 cores next to one other busy
process, ``bnlab demo`` took 251 s with torch's default of 2 threads and 16 s with one
(``OMP_NUM_THREADS=1``). Two rules follow:

1. A model whose training step costs at most :data:`SMALL_STEP_MACS` multiply-accumulates is
   trained on one thread (:func:`threads_for`).
2. A larger model keeps torch's thread count only as far as the cores are free: when other
   processes are runnable, an OpenMP team of N threads waits at every operator for its
   slowest member, which the scheduler has put behind someone else's process. At the start
   of each run (each ``fit``, each stack) :func:`free_cores` counts the cores this process
   may use (CPU affinity, a cgroup quota) minus the tasks runnable elsewhere right now
   (``/proc/loadavg``'s instantaneous count, less this process's own running threads), and
   :func:`contention_threads` caps the thread count at that, never below 1. On an idle
   machine nothing changes. Measured in ``benchmarks/RESULTS.md``.

A thread count chosen by the user wins over both rules: ``BNLAB_THREADS=N`` (bnlab's own) or
``OMP_NUM_THREADS`` (then bnlab changes nothing). GPU training is not affected.

Reproducibility: oneDNN's convolutions sum in another order on one thread than on two, so a
large model trained while the machine is busy is not bit for bit the run trained on an idle
one (the same seed, the same statistics within the runs' spread). Set ``BNLAB_THREADS`` to
get the same bits whatever the load.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

#: Forward multiply-accumulates per training step (per sample x batch size) up to which a
#: CPU run uses one thread: circles_mlp (4.8 k per step), digits_cnn and the seed-004 and demo
#: models sit far below; fashion_cnn (190 M per step at batch 64) above.
SMALL_STEP_MACS = 50_000_000

#: Samples of the runnable-task count :func:`free_cores` takes (its median), and the pause
#: between them in seconds: about 10 ms per run, against runs of seconds.
LOAD_SAMPLES = 5
LOAD_SAMPLE_INTERVAL_S = 0.002


def user_threads() -> int | None:
    """``BNLAB_THREADS`` when it is a positive integer, else ``None``."""
    chosen = os.environ.get("BNLAB_THREADS", "").strip()
    return int(chosen) if chosen.isdigit() and int(chosen) > 0 else None


def threads_for(step_macs: int | None) -> int | None:
    """The intra-op thread count for a CPU run of that cost, or ``None`` to leave torch's."""
    chosen = user_threads()
    if chosen is not None:
        return chosen
    if os.environ.get("OMP_NUM_THREADS") or step_macs is None:
        return None
    return 1 if step_macs <= SMALL_STEP_MACS else None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota
    (``cpu.max``, as containers set it); at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _own_running_threads() -> int:
    """Threads of this process the kernel has running or runnable now (state ``R``)."""
    running = 0
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return 1
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        # "pid (comm) S ...": the state follows the last ')' (comm may contain spaces).
        if stat[stat.rfind(")") + 2 :].startswith("R"):
            running += 1
    return max(1, running)


def runnable_elsewhere() -> float | None:
    """Tasks runnable on this machine now that are not this process's threads.

    Linux: the median over :data:`LOAD_SAMPLES` samples of ``/proc/loadavg``'s 4th field
    (``running/total``, the instantaneous count of runnable tasks, this process's own
    included) minus this process's running threads. Elsewhere: the 1-minute load average
    (which includes this process's past work). ``None`` when neither can be read.
    """
    counts = []
    for i in range(LOAD_SAMPLES):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        counts.append(max(0, running - _own_running_threads()))
        if i + 1 < LOAD_SAMPLES:
            time.sleep(LOAD_SAMPLE_INTERVAL_S)
    if counts:
        return float(statistics.median(counts))
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def free_cores() -> float | None:
    """:func:`usable_cores` minus :func:`runnable_elsewhere` (may be 0 or below), or ``None``
    when the load cannot be read."""
    others = runnable_elsewhere()
    return None if others is None else usable_cores() - others


def contention_threads(threads: int, free: float | None) -> int:
    """``threads`` capped at the ``free`` cores (rounded down), at least 1; unchanged when
    ``free`` is unknown."""
    if free is None:
        return threads
    return max(1, min(threads, math.floor(free)))


def macs_per_step(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int | None:
    """Forward multiply-accumulates of one training step, or ``None`` when they cannot be
    counted (a model the dry pass of :func:`bnlab.train.memory.estimate_memory` fails on)."""
    from bnlab.train.memory import estimate_memory

    try:
        return estimate_memory(model, input_shape=tuple(input_shape)).macs_per_sample * batch_size
    except (RuntimeError, TypeError, ValueError):
        return None


def choose_threads(step_macs: int | None, device: torch.device | str) -> int | None:
    """The thread count :func:`training_threads` sets, or ``None`` to change nothing."""
    if torch.device(device).type != "cpu":
        return None
    threads = threads_for(step_macs)
    if threads is not None or os.environ.get("OMP_NUM_THREADS"):
        return threads
    current = torch.get_num_threads()
    if current <= 1:
        return None
    return contention_threads(current, free_cores())


@contextmanager
def training_threads(step_macs: int | None, device: torch.device | str) -> Iterator[None]:
    """Use :func:`choose_threads`'s thread count while training on CPU; restore it afterwards.

    ``step_macs``: the training step's forward multiply-accumulates (:func:`macs_per_step`;
    for a stack of K runs, K times one run's)."""
    threads = choose_threads(step_macs, device)
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
