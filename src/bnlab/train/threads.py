"""How many CPU threads a training run uses.

PyTorch runs every operator on all cores by default (intra-op threads). For a small model each
operator is a few microseconds of work, the threads' hand-offs cost more than they save, and
when anything else competes for the cores the waiting threads make training many times slower:
on 2 cores next to one other busy process, ``bnlab demo`` took 251 s with torch's default of
2 threads and 16 s with one (``OMP_NUM_THREADS=1``). A model whose training step costs at most
:data:`SMALL_STEP_MACS` multiply-accumulates is therefore trained on one thread; larger models
keep torch's setting. A thread count chosen by the user wins: ``BNLAB_THREADS=N`` (bnlab's
own) or ``OMP_NUM_THREADS`` (then bnlab changes nothing). GPU training is not affected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

#: Forward multiply-accumulates per training step (per sample x batch size) up to which a
#: CPU run uses one thread: circles_mlp (4.8 k per step), digits_cnn and the seed-004 and demo
#: models sit far below; fashion_cnn (190 M per step at batch 64) above.
SMALL_STEP_MACS = 50_000_000


def threads_for(step_macs: int | None) -> int | None:
    """The intra-op thread count for a CPU run of that cost, or ``None`` to leave torch's."""
    chosen = os.environ.get("BNLAB_THREADS", "").strip()
    if chosen.isdigit() and int(chosen) > 0:
        return int(chosen)
    if os.environ.get("OMP_NUM_THREADS") or step_macs is None:
        return None
    return 1 if step_macs <= SMALL_STEP_MACS else None


def macs_per_step(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int | None:
    """Forward multiply-accumulates of one training step, or ``None`` when they cannot be
    counted (a model the dry pass of :func:`bnlab.train.memory.estimate_memory` fails on)."""
    from bnlab.train.memory import estimate_memory

    try:
        return estimate_memory(model, input_shape=tuple(input_shape)).macs_per_sample * batch_size
    except (RuntimeError, TypeError, ValueError):
        return None


@contextmanager
def training_threads(step_macs: int | None, device: torch.device | str) -> Iterator[None]:
    """Use :func:`threads_for`'s thread count while training on CPU; restore it afterwards.

    ``step_macs``: the training step's forward multiply-accumulates (:func:`macs_per_step`;
    for a stack of K runs, K times one run's)."""
    threads = threads_for(step_macs) if torch.device(device).type == "cpu" else None
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
