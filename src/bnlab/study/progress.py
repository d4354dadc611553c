"""What a study shows while it trains: a rich bar on a terminal, plain lines in a log.

Two displays behind one interface (:class:`StudyProgress`):

* ``"bar"``: a bar over the runs and one over the epochs of the runs now training. A stack
  of runs trained at once (the stacked engine) shows as ``16 runs at once (bn seeds 0-15)``.
* ``"lines"``: for logs, pipes and CI (stderr is not a terminal): a line when training
  starts, one per finished run, and an epoch line at most every
  :func:`bnlab.train.progress.line_interval` seconds (``$BNLAB_PROGRESS_SECONDS``, 10 by
  default), so the log of an 11-minute study shows it working.

Metric names are the History keys (``val_accuracy``), as in the store and the exports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bnlab.study.jobs import RunOutcome, RunRequest
from bnlab.train.progress import PlainLines, metrics_text, progress_mode


def describe_group(group: Sequence[RunRequest]) -> str:
    """``bn seed 3``, or ``16 runs at once (bn seeds 0-15)`` for a stack."""
    if len(group) == 1:
        return f"{group[0].variant} seed {group[0].seed}"
    by_variant: dict[str, list[int]] = {}
    for request in group:
        by_variant.setdefault(request.variant, []).append(request.seed)
    parts = [f"{variant} seeds {_span(seeds)}" for variant, seeds in by_variant.items()]
    shown = "; ".join(parts[:2]) + ("; ..." if len(parts) > 2 else "")
    return f"{len(group)} runs at once ({shown})"


def _span(seeds: list[int]) -> str:
    seeds = sorted(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


class StudyProgress:
    """Progress of one ``run`` call over ``total`` runs (see the module docstring)."""

    def __init__(self, progress: bool | str | None, total: int, name: str):
        self.mode = progress_mode(progress)
        self.total, self.name = total, name
        self.done = 0
        self._groups: dict[tuple[str, int], str] = {}
        self._bar: Any = None
        self._lines: PlainLines | None = None

    def __enter__(self) -> StudyProgress:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
            )
            self._bar.__enter__()
            self._runs = self._bar.add_task(f"{self.name} runs", total=self.total, info="")
            self._epochs = self._bar.add_task("  epochs", total=None, info="")
        elif self.mode == "lines":
            self._lines = PlainLines()
        return self

    def say(self, text: str) -> None:
        """A message that is always shown (above the bar, or as a line)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        elif self._lines is not None:
            self._lines.always(text)

    def started(self, groups: Sequence[Sequence[RunRequest]]) -> None:
        """``groups`` were handed to the executor (each trains as one unit)."""
        for group in groups:
            label = describe_group(group)
            for request in group:
                self._groups[request.key] = label
            if self._lines is not None and len(group) > 1:
                self._lines.always(f"training {label}")

    def epoch(self, request: RunRequest, epoch: int, logs: dict) -> None:
        total = request.fit_options.get("epochs")
        label = self._groups.get(request.key, f"{request.variant} seed {request.seed}")
        several = label != f"{request.variant} seed {request.seed}"
        # A stack reports every run each epoch: show one (the group's), not K of them.
        shown = label if not several else f"{label}, e.g. seed {request.seed}"
        text = f"{shown}: epoch {epoch}/{total}  {metrics_text(logs)}".rstrip()
        if self._bar is not None:
            if epoch == 1 and not several:  # a new run: restart the epoch bar's clock
                self._bar.reset(self._epochs, total=total)
            self._bar.update(self._epochs, completed=epoch, total=total, info=text)
        elif self._lines is not None:
            self._lines.maybe(f"[{self.done}/{self.total} runs] {text}")

    def run_done(self, outcome: RunOutcome) -> None:
        self.done += 1
        request = outcome.request
        accuracy = (outcome.metrics.get("val_accuracy") or [None])[-1]
        result = f"  val_accuracy {accuracy:.4f}" if accuracy is not None else ""
        seconds = f" ({outcome.seconds:.1f} s)" if outcome.seconds == outcome.seconds else ""
        text = f"{request.variant} seed {request.seed} {outcome.status}{result}{seconds}"
        if self._bar is not None:
            self._bar.update(self._runs, advance=1, info=f"last: {text}")
        elif self._lines is not None:
            self._lines.always(f"[{self.done}/{self.total} runs] {text}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None


__all__ = ["StudyProgress", "describe_group"]
