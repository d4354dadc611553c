"""Progress displays: a rich bar when a person watches a terminal, plain lines in a log.

:func:`progress_mode` decides which: ``"bar"`` (a rich bar on stderr), ``"lines"`` (one
plain line at most every :func:`line_interval` seconds, for logs and pipes, so that the log of
a long study is never empty) or ``None`` (quiet). ``fit`` shows a bar only when asked or on a
terminal; a study (:func:`bnlab.study.run`) also writes lines when stderr is not a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from bnlab.errors import ConfigError


def progress_enabled(progress: bool | None) -> bool:
    """``True``/``False`` force it; ``None`` means: on when stderr is a terminal and the
    environment variable ``BNLAB_NO_PROGRESS`` is unset or empty."""
    if progress is not None and not isinstance(progress, bool):
        raise ConfigError(f"progress: {progress!r} is not True, False or None")
    if progress is not None:
        return progress
    return sys.stderr.isatty() and not os.environ.get("BNLAB_NO_PROGRESS")


PROGRESS_MODES = ("bar", "lines")


def progress_mode(progress: bool | str | None) -> str | None:
    """``"bar"``, ``"lines"`` or ``None`` (no progress) for a study's ``progress`` argument.

    ``True``: a bar; ``False``: none; ``"bar"`` / ``"lines"``: that; ``None``: none when the
    environment variable ``BNLAB_NO_PROGRESS`` is set (non-empty), else a bar when stderr is
    a terminal and plain lines when it is not (a log file, a pipe, a CI job).
    """
    if progress is None:
        if os.environ.get("BNLAB_NO_PROGRESS"):
            return None
        return "bar" if sys.stderr.isatty() else "lines"
    if isinstance(progress, bool):
        return "bar" if progress else None
    if progress in PROGRESS_MODES:
        return progress
    raise ConfigError(f"progress: {progress!r} is not True, False, None, 'bar' or 'lines'")


def line_interval() -> float:
    """Seconds between two progress lines: ``$BNLAB_PROGRESS_SECONDS`` (>= 0), default 10."""
    try:
        value = float(os.environ.get("BNLAB_PROGRESS_SECONDS", "10"))
    except ValueError:
        return 10.0
    return value if value >= 0 else 10.0


class PlainLines:
    """Timestamped plain lines on ``stream`` (default stderr), flushed at once.

    :meth:`maybe` writes only when ``interval`` seconds have passed since the last line
    (periodic epoch lines); :meth:`always` writes regardless (a run finished, a message).
    """

    def __init__(self, stream: TextIO | None = None, interval: float | None = None):
        self.stream = stream
        self.interval = line_interval() if interval is None else float(interval)
        self._t0 = time.perf_counter()
        self._last = -float("inf")

    def always(self, text: str) -> None:
        stream = self.stream or sys.stderr
        elapsed = time.perf_counter() - self._t0
        stream.write(f"[{_clock(elapsed)}] {text}\n")
        stream.flush()
        self._last = time.perf_counter()

    def maybe(self, text: str) -> None:
        if time.perf_counter() - self._last >= self.interval:
            self.always(text)


def _clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}"


#: The History keys a progress line shows, under their History names (as in the store,
#: the exports and the report).
SHOWN_METRICS = ("loss", "accuracy", "val_accuracy", "train_eval_accuracy")


def metrics_text(logs: dict[str, float]) -> str:
    """``loss 0.3120  val_accuracy 0.8740`` for the keys of :data:`SHOWN_METRICS` present."""
    return "  ".join(f"{k} {logs[k]:.4f}" for k in SHOWN_METRICS if k in logs)


class EpochProgress:
    """One bar over the epochs, showing the last epoch's loss and accuracies.

    Used as a context manager; a disabled instance does nothing at all.
    """

    def __init__(self, enabled: bool, epochs: int, description: str = "training"):
        self.enabled = enabled
        self.epochs = epochs
        self.description = description
        self._progress: Any = None
        self._task = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.epochs, metrics="")
        return self

    def update(self, epoch: int, logs: dict[str, float]) -> None:
        if self._progress is None:
            return
        self._progress.update(self._task, completed=epoch, metrics=metrics_text(logs))

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None
