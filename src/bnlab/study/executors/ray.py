"""The Ray executor: a study's runs as Ray tasks on a cluster; the driver alone writes the store.

``bnlab run STUDY --executor ray [--address ADDR]`` sends each group of runs planned by the
engine (one run for ``sequential``, many for ``stacked``) to Ray as one task that asks for the
resources it needs (``num_cpus``, and ``num_gpus`` when the device is CUDA). The datasets are put
in Ray's object store once per study and every task reads them from there. Outcomes flow back to
the driver as tasks finish; the driver commits each to SQLite before it waits for the next, so a
killed driver resumes exactly as with the local executor (finished runs are kept, none repeated).

Failures: a task whose worker or node dies is retried by Ray (``max_retries``); a run that
raises is retried the same number of times (its exception is wrapped in
:class:`RetryableRunError`, the only application error Ray is told to retry). After the last
try the runs of that task are recorded as ``failed`` with the error, and the study goes on.
Setting and data errors (:class:`~bnlab.errors.ConfigError`, :class:`~bnlab.errors.DataError`)
are not retried: every run would fail the same way, so they stop the study.

Ray is an optional extra: ``pip install "bnlab[ray]"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from bnlab._validation import check_number, check_positive_int
from bnlab.errors import ConfigError
from bnlab.study.executors import Executor, run_group
from bnlab.study.jobs import RunOutcome, RunRequest

try:  # the module is named like the package it wraps; import it absolutely
    import ray as _ray
except ImportError as error:  # pragma: no cover - exercised where ray is absent
    raise ImportError(
        f'{error}; the Ray executor needs the ray extra: pip install "bnlab[ray]"'
    ) from None


class RetryableRunError(RuntimeError):
    """A run of a Ray task raised; Ray retries the task (``retry_exceptions``)."""


def _train_group(group: list[RunRequest], datasets: dict, engine: Any, device: str) -> list:
    """Body of one Ray task: train ``group`` and return its outcomes (or raise to retry)."""
    dataset = datasets[group[0].data_key]
    outcomes = list(run_group(group, dataset, engine=engine, device=device))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise RetryableRunError(failed[0].error or "run failed")
    return outcomes


class RayExecutor(Executor):
    """Runs groups as Ray tasks; see the module docstring.

    Parameters
    ----------
    jobs:
        Unused by Ray's scheduling (the cluster's resources decide how many tasks run at
        once); accepted for a common executor interface.
    address:
        The cluster to join (``"auto"``, ``"ray://host:10001"``…); ``None`` uses
        ``RAY_ADDRESS`` when set, else starts a local Ray instance. When Ray is already
        initialised in this process, that instance is used as it is.
    num_cpus, num_gpus:
        Resources one task asks for. ``num_gpus`` defaults to 1 for a CUDA device, else 0.
    max_retries:
        How many times a task is tried again after its worker died or a run raised.
    """

    name = "ray"

    def __init__(
        self,
        jobs: int = 1,
        *,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float | None = None,
        max_retries: int = 2,
    ):
        super().__init__(jobs)
        self.address = address
        self.num_cpus = check_number("num_cpus", num_cpus, low=0.0)
        self.num_gpus = None if num_gpus is None else check_number("num_gpus", num_gpus, low=0.0)
        self.max_retries = check_positive_int("max_retries", max_retries, minimum=0)

    # ------------------------------------------------------------------ lifecycle
    def _open(self, datasets, engine, device, on_epoch_end) -> None:
        from bnlab.study.engines import get_engine

        self._started_ray = False
        if not _ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            _ray.init(address=address, include_dashboard=False, log_to_driver=False)
            self._started_ray = True
        self._engine_name, self._device = engine, str(device)
        self._get_engine = get_engine
        # Put once per study: every task receives the reference, never a copy of its own.
        self._datasets_ref = _ray.put(dict(datasets))
        num_gpus = self.num_gpus
        if num_gpus is None:
            num_gpus = 1 if self._device.startswith("cuda") else 0
        self._remote = _ray.remote(_train_group).options(
            num_cpus=self.num_cpus,
            num_gpus=num_gpus,
            max_retries=self.max_retries,
            retry_exceptions=[RetryableRunError],
        )
        self._pending: dict[Any, list[RunRequest]] = {}

    def _close(self) -> None:
        for ref in list(self._pending):
            _ray.cancel(ref, force=True)
        self._pending = {}
        if self._started_ray:
            _ray.shutdown()

    # ------------------------------------------------------------------- protocol
    def submit(self, group: Sequence[RunRequest]) -> None:
        group = list(group)
        # The engine is resolved here, in the driver, and shipped with the task, so an engine
        # registered in the driver process (bnlab.study.engines.register_engine) works on the
        # cluster too.
        engine = self._get_engine(self._engine_name, group, self._device)
        ref = self._remote.remote(group, self._datasets_ref, engine, self._device)
        self._pending[ref] = group

    def results(self) -> Iterator[RunOutcome]:
        while self._pending:
            done, _ = _ray.wait(list(self._pending), num_returns=1)
            ref = done[0]
            group = self._pending.pop(ref)
            try:
                outcomes = _ray.get(ref)
            except _ray.exceptions.RayTaskError as error:
                cause = error.cause if getattr(error, "cause", None) is not None else error
                if isinstance(cause, ConfigError) or type(cause).__name__ in (
                    "ConfigError", "DataError",
                ):
                    raise cause from None
                outcomes = self._failed(group, cause)
            except (_ray.exceptions.WorkerCrashedError, _ray.exceptions.NodeDiedError,
                    _ray.exceptions.RayError) as error:
                outcomes = self._failed(group, error)
            yield from outcomes

    def _failed(self, group: list[RunRequest], error: BaseException) -> list[RunOutcome]:
        tries = self.max_retries + 1
        wrapped = RuntimeError(f"failed after {tries} tries on Ray: {_one_line(error)}")
        return [
            RunOutcome.from_exception(r, wrapped, seconds=float("nan"), engine=self._engine_name,
                                      device=self._device, started="")
            for r in group
        ]


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"


EXECUTOR = RayExecutor
