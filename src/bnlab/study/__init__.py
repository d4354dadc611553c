"""Studies: every variant of a network trained under many seeds, stored durably, summarised.

::

    import bnlab.study as study

    result = study.run("demo", store="runs.db")      # built-in name, TOML path or dict
    print(result.summary[["variant", "n", "final_val_accuracy_mean", "verdict"]])
    epochs = study.load("runs.db")                     # one row per run x epoch
    runs = study.load_runs("runs.db")                  # one row per run
    spec = study.load_spec("runs.db", "demo")          # the spec a stored study ran

Modules: :mod:`~bnlab.study.spec` (TOML spec and its validation; its parts in ``spec_*`` and
:mod:`~bnlab.study.model_table`), :mod:`~bnlab.study.runner`
(``run``), :mod:`~bnlab.study.engines` (how runs are trained), :mod:`~bnlab.study.executors`
(where), :mod:`~bnlab.study.store` (SQLite), :mod:`~bnlab.study.frames` (pandas views),
:mod:`~bnlab.study.stats` (intervals, Welch, Holm, verdicts).
"""

from __future__ import annotations

import os
from pathlib import Path

from bnlab.study.engines import engine_names, get_engine, register_engine
from bnlab.study.executors import Executor, executor_names, get_executor
from bnlab.study.frames import load, load_runs, studies
from bnlab.study.jobs import RunOutcome, RunRequest
from bnlab.study.keras_engine import KerasEngine  # registers engine "keras"
from bnlab.study.runner import StudyResult, run
from bnlab.study.spec import StudySpec, Variant, builtin_studies
from bnlab.study.spec import load_spec as _load_spec_source
from bnlab.study.stats import holm, summarize, t_interval, welch
from bnlab.study.store import Store

_SQLITE_MAGIC = b"SQLite format 3\x00"


def load_spec(
    source: str | os.PathLike | dict | StudySpec | Store, study: str | None = None
) -> StudySpec:
    """A validated :class:`StudySpec`.

    ``source`` is a spec dict, a TOML path, a built-in study name, or a study store (path of
    an SQLite file or an open :class:`Store`); from a store, ``study`` picks the study
    (``"name"`` = its latest version, ``"name@N"``; None = the most recent study).
    """
    if isinstance(source, Store):
        return _load_spec_source(source.one(study).spec, check_values=False)
    if isinstance(source, (str, os.PathLike)) and _is_sqlite(Path(source)):
        with Store(source, create=False) as st:
            return _load_spec_source(st.one(study).spec, check_values=False)
    return _load_spec_source(source)


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


__all__ = [
    "Executor",
    "KerasEngine",
    "RunOutcome",
    "RunRequest",
    "Store",
    "StudyResult",
    "StudySpec",
    "Variant",
    "builtin_studies",
    "engine_names",
    "executor_names",
    "get_engine",
    "get_executor",
    "holm",
    "load",
    "load_runs",
    "load_spec",
    "register_engine",
    "run",
    "studies",
    "summarize",
    "t_interval",
    "welch",
]
