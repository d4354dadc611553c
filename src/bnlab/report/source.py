"""Everything a report shows about one study, gathered in one object.

:func:`collect` reads it from a study store through :mod:`bnlab.study`
(``Store.one`` for the spec and versions, ``load``, ``load_runs``,
``stats.summarize``); :meth:`StudyData.from_frames` builds it from DataFrames
that follow the same contract (one row per run x epoch, one row per run), which
is how a report is drawn for data that never went through a store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bnlab.errors import DataError

FINISHED = "finished"


@dataclass
class StudyData:
    """A study's runs, statistics and settings, ready to be reported.

    ``epochs``: one row per run x epoch (``bnlab.study.load``); ``runs``: one row per
    run (``bnlab.study.load_runs``); ``summary``: one row per variant
    (``bnlab.study.stats.summarize``). Accuracies are fractions in [0, 1].
    """

    name: str
    epochs: pd.DataFrame
    runs: pd.DataFrame
    summary: pd.DataFrame
    spec: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    question: str = ""
    baseline: str | None = None
    target: float | None = None
    store: str | None = None

    @classmethod
    def from_frames(
        cls,
        epochs: pd.DataFrame,
        runs: pd.DataFrame,
        *,
        name: str | None = None,
        spec: Mapping[str, Any] | None = None,
        versions: Mapping[str, str] | None = None,
        baseline: str | None = None,
        target: float | None = None,
        store: str | None = None,
    ) -> StudyData:
        """Build from the two contract frames; the summary is computed with ``summarize``."""
        from bnlab.study.stats import summarize

        spec = dict(spec or {})
        if name is None:
            names = pd.unique(runs["study"]) if "study" in runs.columns else []
            name = str(names[0]) if len(names) else str(spec.get("name", "study"))
        variants = list(dict.fromkeys(runs["variant"])) if len(runs) else []
        baseline = baseline or spec.get("baseline") or (variants[0] if variants else None)
        if target is None:
            target = _target_of(spec)
        summary = summarize(runs, baseline=baseline, target=target)
        return cls(
            name=name,
            epochs=epochs,
            runs=runs,
            summary=summary,
            spec=spec,
            versions=dict(versions or {}),
            question=str(spec.get("question") or ""),
            baseline=baseline,
            target=target,
            store=store,
        )

    @property
    def variants(self) -> list[str]:
        """Variant names in the order of the summary (the study's order)."""
        if len(self.summary) and "variant" in self.summary.columns:
            return [str(v) for v in self.summary["variant"]]
        return [str(v) for v in dict.fromkeys(self.runs.get("variant", []))]

    @property
    def finished_epochs(self) -> pd.DataFrame:
        """The per-epoch rows of finished runs only (what the curves pool)."""
        if "status" not in self.epochs.columns:
            return self.epochs
        return self.epochs[self.epochs["status"] == FINISHED]

    @property
    def finished_runs(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == FINISHED] if "status" in self.runs else self.runs

    @property
    def problem_runs(self) -> pd.DataFrame:
        """Runs whose status is not ``finished`` (diverged, failed, ...)."""
        if "status" not in self.runs.columns:
            return self.runs.iloc[0:0]
        return self.runs[self.runs["status"] != FINISHED]

    @property
    def val_set(self) -> str:
        """Which set ``val_*`` metrics were measured on: ``"validation"`` or ``"test"``.

        The trainer evaluates ``val_*`` on the validation split when the dataset has
        one (and then also records ``test_*``), else on the test set — as the seeds
        pass their test set as ``validation_data``.
        """
        recorded = self.runs["val_source"].dropna() if "val_source" in self.runs else []
        if len(recorded):
            return str(recorded.iloc[0])
        if "test_accuracy" in self.epochs.columns and self.epochs["test_accuracy"].notna().any():
            return "validation"
        return "test"

    @property
    def seeds(self) -> list[int]:
        return sorted({int(s) for s in self.runs.get("seed", [])})

    @property
    def num_epochs(self) -> int:
        if "epoch" not in self.epochs.columns or self.epochs.empty:
            return 0
        return int(self.epochs["epoch"].max())


def _target_of(spec: Mapping[str, Any]) -> float | None:
    value = spec.get("target_accuracy")
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def collect(store: str | Path, study: str | None = None) -> StudyData:
    """Read one study from a store (an SQLite file written by ``bnlab.study.run``).

    ``study``: ``"name"`` (its latest version), ``"name@N"`` (version N), or None for the
    study most recently created in the store. The spec, question and the bnlab/torch
    versions come from the store's record of the study.
    """
    from bnlab.study.frames import load, load_runs
    from bnlab.study.store import Store

    path = Path(store)
    if not path.is_file():
        raise DataError(f"store: {str(store)!r} does not exist (run a study first: bnlab run ...)")
    with Store(path, create=False) as opened:
        ref = opened.one(study)
        exact = f"{ref.name}@{ref.version}"
        epochs = load(opened, study=exact)
        runs = load_runs(opened, study=exact)
    if runs.empty:
        raise DataError(f"store: study {ref.label!r} in {str(store)!r} has no finished run yet")
    versions = {"bnlab": ref.bnlab_version, "torch": ref.torch_version}
    spec = dict(ref.spec)
    spec.setdefault("question", ref.question)
    return StudyData.from_frames(
        epochs, runs, name=ref.label, spec=spec, versions=versions, store=str(path)
    )
