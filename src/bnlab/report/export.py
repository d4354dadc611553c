"""Export a study's data for other tools: CSV, Parquet or JSON.

Two tables leave the store: the run x epoch table (``bnlab.study.load``: one row
per run and epoch, every ``History`` metric a column, NaN where a run did not
record it) and the runs table (``bnlab.study.load_runs``: one row per run with
``final_*`` metrics, ``best_val_accuracy``, ``epochs_to_target``, ...).

File layout: ``out`` is used as given (``.FORMAT`` is added only to a name without a
suffix). For ``out="results.csv"``:

* ``csv`` / ``parquet``: ``results.csv`` (run x epoch) and ``results.runs.csv`` (runs);
  an ``out`` named ``NAME.epochs.csv`` puts the runs beside it as ``NAME.runs.csv`` (what
  ``bnlab report STORE --format csv`` writes by default: ``STORE.epochs.csv`` and
  ``STORE.runs.csv``);
* ``json``: one file ``results.json`` = ``{"study", "spec", "versions", "summary": [...],
  "verdicts": [...], "epochs": [...], "runs": [...]}`` with one object per row and ``null``
  for missing values; ``summary`` is the per-variant statistics table the terminal and the
  HTML report show (means, 95 % intervals, differences to the baseline, Holm p-values).

Accuracies stay fractions in [0, 1], losses in nats, times in seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from bnlab._validation import check_choice
from bnlab.errors import ConfigError
from bnlab.report.source import StudyData, collect

FORMATS = ("csv", "parquet", "json")


def export(
    store: str | Path | StudyData,
    out: str | Path,
    format: str = "csv",
    *,
    study: str | None = None,
) -> list[Path]:
    """Write the study's tables to ``out`` (see the module doc) and return the paths written."""
    check_choice("format", format, FORMATS)
    if format == "parquet":
        _require_pyarrow()
    data = store if isinstance(store, StudyData) else collect(store, study)
    out = Path(out)
    if not out.suffix:
        out = out.with_name(out.name + f".{format}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "json":
        payload = {
            "study": data.name,
            "spec": data.spec,
            "versions": data.versions,
            "summary": _records(data.summary),
            "verdicts": [str(v) for v in data.summary.get("verdict", [])],
            "epochs": _records(data.epochs),
            "runs": _records(data.runs),
        }
        out.write_text(json.dumps(payload, indent=1, default=_json_default), encoding="utf-8")
        return [out]
    stem = out.stem.removesuffix(".epochs")
    runs_path = out.with_name(f"{stem}.runs{out.suffix}")
    if format == "csv":
        data.epochs.to_csv(out, index=False)
        data.runs.to_csv(runs_path, index=False)
    else:
        data.epochs.to_parquet(out, index=False)
        data.runs.to_parquet(runs_path, index=False)
    return [out, runs_path]


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "format: 'parquet' needs pyarrow, which is not installed "
            "(pip install 'bnlab[parquet]'), or use 'csv' or 'json'"
        ) from exc


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with NaN/NA turned into None (JSON null), numpy scalars into Python."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: _plain(v) for k, v in row.items()} for row in clean.to_dict("records")]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
