"""The progress display of ``fit``: a rich bar when a person is watching, nothing otherwise."""

from __future__ import annotations

import os
import sys
from typing import Any

from bnlab.errors import ConfigError


def progress_enabled(progress: bool | None) -> bool:
    """``True``/``False`` force it; ``None`` means: on when stderr is a terminal and the
    environment variable ``BNLAB_NO_PROGRESS`` is unset or empty."""
    if progress is not None and not isinstance(progress, bool):
        raise ConfigError(f"progress: {progress!r} is not True, False or None")
    if progress is not None:
        return progress
    return sys.stderr.isatty() and not os.environ.get("BNLAB_NO_PROGRESS")


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
        shown = ("loss", "accuracy", "val_accuracy", "train_eval_accuracy")
        metrics = "  ".join(f"{k} {logs[k]:.4f}" for k in shown if k in logs)
        self._progress.update(self._task, completed=epoch, metrics=metrics)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None
