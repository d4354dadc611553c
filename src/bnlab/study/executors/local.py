"""The local executor: in-process and in order (``jobs=1``), or a pool of worker processes.

``jobs=1`` trains each group in the calling process, lazily: the next group starts only when
the driver asks for the next outcome, i.e. after it has committed the previous one.

``jobs=N > 1`` starts ``N`` worker processes (``spawn``: a fresh interpreter, safe with
torch's thread pools), hands each the study's datasets once (at start-up, not per run) and
gives each ``cpu_count // N`` torch threads so the workers do not oversubscribe the cores.
Outcomes come back in completion order. Epoch-level progress is not reported from workers.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from bnlab.study.executors import Executor, run_group
from bnlab.study.jobs import RunOutcome, RunRequest

_WORKER: dict = {}


def _init_worker(datasets: dict, engine: str, device: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(datasets=datasets, engine=engine, device=device)


def _work(group: list[RunRequest]) -> list[RunOutcome]:
    dataset = _WORKER["datasets"][group[0].data_key]
    return list(run_group(group, dataset, engine=_WORKER["engine"], device=_WORKER["device"]))


class LocalExecutor(Executor):
    """In-process (``jobs=1``) or a ``spawn`` process pool of ``jobs`` workers."""

    name = "local"

    def _open(self, datasets, engine, device, on_epoch_end) -> None:
        self._datasets, self._engine, self._device = datasets, engine, device
        self._on_epoch_end = on_epoch_end
        self._queue: list[list[RunRequest]] = []
        self._futures: dict[Future, list[RunRequest]] = {}
        self._pool = None
        if self.jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // self.jobs)
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(datasets, engine, device, threads),
            )

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, group: Sequence[RunRequest]) -> None:
        group = list(group)
        if self._pool is None:
            self._queue.append(group)
        else:
            self._futures[self._pool.submit(_work, group)] = group

    def results(self) -> Iterator[RunOutcome]:
        if self._pool is None:
            while self._queue:
                group = self._queue.pop(0)
                yield from run_group(
                    group,
                    self._datasets[group[0].data_key],
                    engine=self._engine,
                    device=self._device,
                    on_epoch_end=self._on_epoch_end,
                )
            return
        for future in as_completed(list(self._futures)):
            group = self._futures.pop(future)
            try:
                outcomes = future.result()
            except BrokenProcessPool as error:  # a worker died (e.g. out of memory)
                outcomes = [
                    RunOutcome.from_exception(
                        r,
                        error,
                        seconds=float("nan"),
                        engine=self._engine,
                        device=str(self._device),
                        started="",
                    )
                    for r in group
                ]
            yield from outcomes


EXECUTOR = LocalExecutor
