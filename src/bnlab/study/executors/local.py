"""The local executor: in-process and in order (``jobs=1``), or a pool of worker processes.

``jobs=1`` trains each group in the calling process, lazily: the next group starts only when
the driver asks for the next outcome, i.e. after it has committed the previous one.

``jobs=N > 1`` starts ``N`` worker processes (``spawn``: a fresh interpreter, safe with
torch's thread pools), hands each the study's datasets once (at start-up, not per run) and
gives each ``cpu_count // N`` torch threads so the workers do not oversubscribe the cores.
Outcomes come back in completion order. Epoch-level progress comes back from the workers
through a queue that a driver thread reads and hands to ``on_epoch_end``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from bnlab.study.executors import Executor, run_group
from bnlab.study.jobs import RunOutcome, RunRequest

_WORKER: dict = {}


def _init_worker(datasets: dict, engine: str, device: str, threads: int, epochs=None) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(datasets=datasets, engine=engine, device=device, epochs=epochs)


def _work(group: list[RunRequest]) -> list[RunOutcome]:
    dataset = _WORKER["datasets"][group[0].data_key]
    queue = _WORKER.get("epochs")
    hook = None
    if queue is not None:

        def hook(request: RunRequest, epoch: int, logs: dict) -> None:
            queue.put((request.key, epoch, {k: float(v) for k, v in logs.items()}))

    return list(
        run_group(
            group, dataset, engine=_WORKER["engine"], device=_WORKER["device"], on_epoch_end=hook
        )
    )


class LocalExecutor(Executor):
    """In-process (``jobs=1``) or a ``spawn`` process pool of ``jobs`` workers."""

    name = "local"

    def _open(self, datasets, engine, device, on_epoch_end) -> None:
        self._datasets, self._engine, self._device = datasets, engine, device
        self._on_epoch_end = on_epoch_end
        self._queue: list[list[RunRequest]] = []
        self._futures: dict[Future, list[RunRequest]] = {}
        self._pool = None
        self._epochs = self._reader = None
        self._requests: dict[tuple[str, int], RunRequest] = {}
        if self.jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // self.jobs)
            context = multiprocessing.get_context("spawn")
            if on_epoch_end is not None:
                self._epochs = context.Queue()
                self._reader = threading.Thread(
                    target=self._read_epochs, name="bnlab-epochs", daemon=True
                )
                self._reader.start()
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=context,
                initializer=_init_worker,
                initargs=(datasets, engine, device, threads, self._epochs),
            )

    def _read_epochs(self) -> None:
        """Driver thread: epoch reports from the workers -> ``on_epoch_end``."""
        while True:
            item = self._epochs.get()
            if item is None:
                return
            key, epoch, logs = item
            request = self._requests.get(key)
            if request is not None:
                try:
                    self._on_epoch_end(request, epoch, logs)
                except Exception:  # noqa: BLE001 - a display problem must not stop training
                    pass

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._reader is not None:
            self._epochs.put(None)
            self._reader.join(timeout=5.0)
            self._epochs.close()
            self._reader = None

    def submit(self, group: Sequence[RunRequest]) -> None:
        group = list(group)
        if self._pool is None:
            self._queue.append(group)
        else:
            self._requests.update({request.key: request for request in group})
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
        while self._futures:  # groups submitted while this runs are waited for too
            done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
            future = next(iter(done))
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
