"""Progress of the doctor's passes over the data (60,000 images take minutes on a CPU).

A rich bar on a terminal (stderr), plain lines otherwise (one at each quarter of a pass, so
logs stay short), nothing when ``BNLAB_NO_PROGRESS`` is set or the pass is small. The
numbers are samples, counted as the batches go by.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator

SHOW_FROM_SAMPLES = 10_000  # passes over fewer samples finish in seconds: no display
PLAIN_STEPS = 4  # plain lines per pass when stderr is not a terminal


def enabled(total: int | None) -> bool:
    if os.environ.get("BNLAB_NO_PROGRESS"):
        return False
    return total is None or total >= SHOW_FROM_SAMPLES


def track(batches: Iterable, total: int | None, label: str) -> Iterator:
    """Yield ``batches`` (``(x, y)`` pairs) unchanged while showing how many samples passed."""
    if not enabled(total):
        yield from batches
        return
    if sys.stderr.isatty():
        yield from _rich(batches, total, label)
    else:
        yield from _plain(batches, total, label)


def _rich(batches: Iterable, total: int | None, label: str) -> Iterator:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=Console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(f"doctor: {label}", total=total)
        for item in batches:
            yield item
            bar.advance(task, int(item[0].shape[0]))


def _plain(batches: Iterable, total: int | None, label: str) -> Iterator:
    start, seen, next_mark = time.perf_counter(), 0, 1
    for item in batches:
        yield item
        seen += int(item[0].shape[0])
        if total and seen >= next_mark * total / PLAIN_STEPS:
            while next_mark * total / PLAIN_STEPS <= seen:
                next_mark += 1
            print(
                f"doctor: {label}: {seen}/{total} samples ({time.perf_counter() - start:.0f}s)",
                file=sys.stderr, flush=True,
            )  # fmt: skip
    if not total:
        print(f"doctor: {label}: {seen} samples ({time.perf_counter() - start:.0f}s)",
              file=sys.stderr, flush=True)  # fmt: skip
