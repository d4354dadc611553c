"""Former home of the memory planner and the stacked study engine, kept so that old imports
work: the planner is :mod:`bnlab.train.memory`, the engines are :mod:`bnlab.study.engines`.

Nothing inside bnlab imports this module (the import-linter contract ignores its one upward
import).
"""

from __future__ import annotations

from bnlab.study.engines import StackedEngine
from bnlab.train.memory import (
    CPU_STACKED_MAX_MACS_PER_STEP,
    MemoryEstimate,
    available_memory,
    estimate_memory,
    plan_chunks,
    prefers_stacked,
)

ENGINES = {"stacked": StackedEngine}

__all__ = [
    "CPU_STACKED_MAX_MACS_PER_STEP",
    "ENGINES",
    "MemoryEstimate",
    "StackedEngine",
    "available_memory",
    "estimate_memory",
    "plan_chunks",
    "prefers_stacked",
]
