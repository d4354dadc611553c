"""Executors: *where* the runs of a study are trained; the driver alone writes the store.

An executor receives the study's datasets once, then groups of runs (lists of
:class:`bnlab.study.jobs.RunRequest` planned by the engine), and hands back one
:class:`bnlab.study.jobs.RunOutcome` per run as soon as it is done::

    executor = get_executor("local", jobs=1)
    with executor.start(datasets, engine="sequential", device="cpu", on_epoch_end=None):
        for group in groups:
            executor.submit(group)
        for outcome in executor.results():   # in completion order
            store.record(study, outcome)      # committed before the next outcome is awaited

Contract of :meth:`Executor.results`: every submitted run comes back exactly once; a run
that raised an ordinary exception comes back as a ``failed`` outcome; a
:class:`bnlab.errors.ConfigError` / :class:`bnlab.errors.DataError` raised by a run is a
problem with the study's settings or data and is re-raised from ``results()``.

Built in: ``local`` (:class:`bnlab.study.executors.local.LocalExecutor`: in-process and
sequential with ``jobs=1``, a process pool of ``jobs`` workers otherwise). Another executor is
one module ``bnlab/study/executors/<name>.py`` defining ``EXECUTOR`` (an :class:`Executor`
subclass whose constructor takes ``jobs``); ``run(executor="<name>")`` imports it lazily, so
optional dependencies (Ray) are only needed by those who ask for them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from bnlab._validation import check_positive_int
from bnlab.errors import ConfigError, DataError
from bnlab.registry import Registry
from bnlab.study.jobs import RunOutcome, RunRequest, Stopwatch


class Executor(ABC):
    """Runs groups of runs somewhere; see the package docstring for the protocol."""

    name = "executor"

    def __init__(self, jobs: int = 1):
        self.jobs = check_positive_int("jobs", jobs)

    @contextmanager
    def start(
        self,
        datasets: Mapping[str, Any],
        *,
        engine: str,
        device: str,
        on_epoch_end: Callable[[RunRequest, int, dict], None] | None = None,
    ) -> Iterator[Executor]:
        """Open the executor for one study (``datasets`` keyed by ``RunRequest.data_key``)."""
        self._open(dict(datasets), engine, device, on_epoch_end)
        try:
            yield self
        finally:
            self._close()

    @abstractmethod
    def _open(self, datasets: dict, engine: str, device: str, on_epoch_end) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def submit(self, group: Sequence[RunRequest]) -> None:
        """Queue one group of runs (to be trained together by the engine)."""

    @abstractmethod
    def results(self) -> Iterator[RunOutcome]:
        """Outcomes of every submitted run, each once, as runs finish."""


def run_group(
    group: Sequence[RunRequest],
    dataset: Any,
    *,
    engine: Any,
    device: str,
    on_epoch_end: Callable[[RunRequest, int, dict], None] | None = None,
) -> Iterator[RunOutcome]:
    """Train ``group`` with ``engine`` (an engine object, or its name) and yield each run's
    outcome.

    Every executor calls this wherever the work happens (in-process, in a pool worker, in a
    Ray task), so a run is trained the same way whatever the executor. Passing the engine
    object (resolved in the driver) lets an engine registered at run time reach workers that
    receive pickled tasks; a name is looked up in the worker's own registry.
    """
    from bnlab.study.engines import get_engine

    trainer = get_engine(engine, group, device) if isinstance(engine, str) else engine
    watch = Stopwatch()
    for request, result in trainer.train(group, dataset, device=device, on_epoch_end=on_epoch_end):
        seconds = float(getattr(result, "seconds", 0.0) or watch.seconds)
        common = dict(
            seconds=seconds, engine=trainer.name, device=str(device), started=watch.started
        )
        if isinstance(result, (ConfigError, DataError)):
            raise result  # the study's settings or data: every run would fail the same way
        if isinstance(result, BaseException):
            yield RunOutcome.from_exception(request, result, **common)
        else:
            yield RunOutcome.from_history(request, result, **common)
        watch = Stopwatch()


def executor_names() -> list[str]:
    """``local`` plus every module in this package that defines ``EXECUTOR``."""
    names = ["local"]
    for info in pkgutil.iter_modules(__path__):
        if info.name not in names:
            names.append(info.name)
    return names


def get_executor(name: str, jobs: int = 1, **options: Any) -> Executor:
    """An executor instance: ``"local"`` or a module ``bnlab.study.executors.<name>``.

    ``options`` go to the executor's constructor (for Ray: ``address``, ``num_cpus``,
    ``num_gpus``, ``max_retries``); one it does not take is a :class:`ConfigError` naming it.
    """
    names = executor_names()
    # Executors are modules found at call time: their registry is rebuilt from the package.
    executors = Registry("executor", {n: f"bnlab.study.executors.{n}" for n in names})
    module_name = executors.lookup(
        name,
        message=lambda bad: (
            f"executor: {bad!r} is not available{executors.hint(bad)}; "
            f"executors: {', '.join(names)}"
        ),
    )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"executor: {name!r} needs a package that is not installed ({error})"
        ) from None
    cls = getattr(module, "EXECUTOR", None)
    if cls is None:
        raise ConfigError(f"executor: module bnlab.study.executors.{name} defines no EXECUTOR")
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "jobs") and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"executor_options: {unknown[0]!r} is not an option of the {name!r} executor; "
            f"it takes {', '.join(accepted) or 'none'}"
        )
    return cls(jobs=jobs, **options)
