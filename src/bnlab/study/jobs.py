"""The unit of work of a study (:class:`RunRequest`) and what comes back (:class:`RunOutcome`).

Both are plain, picklable data so that any executor (in-process, a process pool, Ray) can carry
them, and so that an engine living in :mod:`bnlab.train` can consume a request without importing
:mod:`bnlab.study` (dependencies point downward only): an engine sees ``seed``, ``preset``,
``model_options``, ``fit_options`` and ``data_key``, and calls :meth:`RunRequest.build` to get
the initialised model, seeded exactly as the sequential engine seeds it.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch

STATUSES = ("finished", "diverged", "failed")


def utc_now() -> str:
    """ISO-8601 UTC timestamp, second resolution (what the store records)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class RunRequest:
    """One (variant, seed) of a study, fully resolved.

    ``fit_options`` are the keyword arguments of :func:`bnlab.train.fit` other than the model,
    the dataset, ``seed``, ``device`` and the callbacks: ``epochs, batch_size, optimizer, lr,
    optimizer_options, class_weight, precise_eval, augment``. ``data_key`` names the dataset
    (the study loads each distinct data configuration once and shares it between runs).
    """

    study: str
    variant: str
    seed: int
    preset: str
    model_options: dict[str, Any]
    fit_options: dict[str, Any]
    data_key: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.variant, self.seed)

    def build(self) -> torch.nn.Module:
        """The preset with this run's options, initialised from ``seed``.

        The seed applies twice, by design (:mod:`bnlab.train.seeding`): building inside
        ``bnlab.train.seeded(seed)`` fixes the initial weights, and :func:`bnlab.train.fit`
        gets the same ``seed`` for the data order, dropout and augmentation. Any engine must
        build through this method so a run is the same model whichever engine trains it.
        """
        from bnlab import models
        from bnlab.models.user import build_user_model, is_user_model
        from bnlab.train.seeding import seeded

        with seeded(self.seed):
            if is_user_model(self.preset):  # the user's own model: torch, or Keras (keras engine)
                built = build_user_model(self.preset, self.model_options, seed=self.seed)
                return built.module if built.module is not None else built.keras
            return models.build(self.preset, **self.model_options)

    def config(self) -> dict[str, Any]:
        """What the store records as the run's configuration (JSON-able)."""
        return dict(
            preset=self.preset,
            model=self.model_options,
            train=self.fit_options,
            data_key=self.data_key,
            seed=self.seed,
        )


@dataclass
class RunOutcome:
    """The result of one run: its status, per-epoch metrics and timing.

    ``metrics`` maps a History key (``loss``, ``val_accuracy`` …) to its per-epoch values
    (epoch 1 first). ``status`` is ``finished``, ``diverged`` (a NaN/inf loss stopped it at
    ``diverged_at_epoch``, 1-based) or ``failed`` (an exception; ``error`` holds its text).
    """

    request: RunRequest
    status: str
    metrics: dict[str, list[float]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    diverged_at_epoch: int | None = None
    error: str | None = None
    seconds: float = math.nan
    engine: str = ""
    device: str = ""
    started: str = ""
    finished: str = ""

    @classmethod
    def from_history(
        cls,
        request: RunRequest,
        history: Any,
        *,
        seconds: float,
        engine: str,
        device: str,
        started: str,
    ) -> RunOutcome:
        """Wrap a :class:`bnlab.train.History` (``history.history``, ``diverged_at_epoch``,
        ``params``)."""
        diverged = getattr(history, "diverged_at_epoch", None)
        metrics = {
            name: [float(v) for v in values] for name, values in dict(history.history).items()
        }
        return cls(
            request=request,
            status="diverged" if diverged is not None else "finished",
            metrics=metrics,
            params=_jsonable(dict(getattr(history, "params", {}) or {})),
            diverged_at_epoch=None if diverged is None else int(diverged),
            seconds=float(seconds),
            engine=engine,
            device=device,
            started=started,
            finished=utc_now(),
        )

    @classmethod
    def from_exception(
        cls,
        request: RunRequest,
        error: BaseException,
        *,
        seconds: float,
        engine: str,
        device: str,
        started: str,
    ) -> RunOutcome:
        """A failed run; ``error`` keeps the exception's type, message and last frames."""
        frames = traceback.format_exception(type(error), error, error.__traceback__)
        text = f"{type(error).__name__}: {error}\n" + "".join(frames[-3:])
        return cls(
            request=request,
            status="failed",
            error=text.strip(),
            seconds=float(seconds),
            engine=engine,
            device=device,
            started=started,
            finished=utc_now(),
        )


class Stopwatch:
    """Wall-clock seconds since creation (``time.perf_counter``) plus the UTC start stamp."""

    def __init__(self) -> None:
        self.started = utc_now()
        self._t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._t0


def _jsonable(value: Any) -> Any:
    """Best-effort conversion of History.params to JSON types (tuples -> lists, others -> str)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
