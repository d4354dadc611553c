"""pandas views of a study store: one row per run x epoch, one row per run, one per study.

``load(store)``
    columns ``study, study_version, run_id, variant, seed, status, diverged_at_epoch, epoch``
    then one column per History key (``loss, data_loss, reg_loss, accuracy, val_loss,
    val_accuracy, train_eval_loss, train_eval_accuracy`` always; ``precise_*``, ``test_*`` when
    any run recorded them), NaN where a run did not record a key. Rows are ordered by study,
    variant (in the spec's order), seed and epoch (1-based).
``load_runs(store)``
    one row per stored run: ``study, study_version, run_id, variant, seed, status,
    diverged_at_epoch, error, seconds, epochs`` (epochs recorded), ``final_<key>`` (last recorded
    epoch's value of every History key), ``best_val_accuracy, best_epoch`` (first epoch reaching
    the maximum), ``epochs_to_target`` (first epoch with ``val_accuracy >= target_accuracy`` of
    the spec; NaN when never reached or no target), ``train_eval_gap`` (``final_accuracy -
    final_train_eval_accuracy``: train-mode minus inference-mode accuracy on the training set),
    ``val_source`` (``"validation"`` or ``"test"``: which set the ``val_*`` columns measure),
    ``engine, device, started, finished``.
``studies(store)``
    one row per study version with its question, versions of bnlab/torch and run counts.

``store`` is a path or an open :class:`bnlab.study.store.Store`; ``study`` selects as
:meth:`Store.select` does (None = the latest version of every study in the store).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from bnlab.study.store import Store, StudyRef

RUN_COLUMNS = ["study", "study_version", "run_id", "variant", "seed", "status", "diverged_at_epoch"]
#: History keys every fit records; always present as columns.
BASE_METRICS = [
    "loss",
    "data_loss",
    "reg_loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "train_eval_loss",
    "train_eval_accuracy",
]
_OPTIONAL_ORDER = [
    "precise_val_accuracy",
    "precise_train_eval_accuracy",
    "test_loss",
    "test_accuracy",
]


@contextmanager
def _opened(store: str | os.PathLike | Store) -> Iterator[Store]:
    if isinstance(store, Store):
        yield store
    else:
        with Store(store, create=False) as opened:
            yield opened


def _runs_table(st: Store, refs: list[StudyRef]) -> pd.DataFrame:
    rows = []
    for ref in refs:
        order = {v: i for i, v in enumerate(ref.variants)}
        for r in st.query(
            "SELECT run_id, variant, seed, status, diverged_at_epoch, error, seconds, params_json, "
            "engine, device, started, finished FROM runs WHERE study_id = ?",
            (ref.study_id,),
        ):
            params = json.loads(r[7] or "{}")
            rows.append(
                dict(
                    study=ref.name,
                    study_version=ref.version,
                    run_id=r[0],
                    variant=r[1],
                    seed=r[2],
                    status=r[3],
                    diverged_at_epoch=np.nan if r[4] is None else r[4],
                    error=r[5],
                    seconds=np.nan if r[6] is None else r[6],
                    val_source=params.get("val_source"),
                    engine=r[8],
                    device=r[9],
                    started=r[10],
                    finished=r[11],
                    _study_order=ref.study_id,
                    _variant_order=order.get(r[1], len(order)),
                )
            )
    frame = pd.DataFrame(
        rows,
        columns=RUN_COLUMNS
        + [
            "error",
            "seconds",
            "val_source",
            "engine",
            "device",
            "started",
            "finished",
            "_study_order",
            "_variant_order",
        ],
    )
    frame = frame.sort_values(["_study_order", "_variant_order", "seed"], kind="stable")
    frame = frame.drop(columns=["_study_order", "_variant_order"]).reset_index(drop=True)
    frame["diverged_at_epoch"] = frame["diverged_at_epoch"].astype("Float64").astype(float)
    return frame


def _metrics_long(st: Store, refs: list[StudyRef]) -> pd.DataFrame:
    """``run_id, epoch, name, value`` of every run of ``refs`` (NULL, i.e. stored NaN, -> NaN)."""
    rows: list[tuple] = []
    for ref in refs:
        rows += st.query(
            "SELECT m.run_id, m.epoch, m.name, m.value FROM metrics AS m "
            "JOIN runs AS r ON r.run_id = m.run_id WHERE r.study_id = ?",
            (ref.study_id,),
        )
    long = pd.DataFrame(rows, columns=["run_id", "epoch", "name", "value"])
    long["value"] = pd.to_numeric(long["value"]).astype(float)
    return long


def _metric_order(names) -> list[str]:
    names = set(names)
    ordered = BASE_METRICS + [n for n in _OPTIONAL_ORDER if n in names]
    return ordered + sorted(names - set(ordered))


def load(store: str | os.PathLike | Store, study: str | None = None) -> pd.DataFrame:
    """Per-epoch metrics, one row per run x epoch (see the module docstring for the columns)."""
    with _opened(store) as st:
        refs = st.select(study)
        runs = _runs_table(st, refs)
        long = _metrics_long(st, refs)
    metrics = _metric_order(long["name"].unique())
    if long.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + ["epoch"] + metrics)
    wide = long.pivot_table(
        index=["run_id", "epoch"], columns="name", values="value", aggfunc="first", dropna=False
    )
    wide = wide.reindex(columns=metrics).reset_index()
    wide.columns.name = None
    frame = runs[RUN_COLUMNS].merge(wide, on="run_id", how="inner", sort=False)
    return frame.reset_index(drop=True)


def load_runs(store: str | os.PathLike | Store, study: str | None = None) -> pd.DataFrame:
    """One row per run with final and derived metrics (see the module docstring)."""
    with _opened(store) as st:
        refs = st.select(study)
        runs = _runs_table(st, refs)
        long = _metrics_long(st, refs)
    targets = {ref.name: ref.spec.get("target_accuracy") for ref in refs}
    metrics = _metric_order(long["name"].unique())
    epochs = long.groupby("run_id")["epoch"].max() if not long.empty else pd.Series(dtype=float)
    runs["epochs"] = runs["run_id"].map(epochs).fillna(0).astype(int)
    last = long[long["epoch"] == long["run_id"].map(epochs)]
    finals = (
        last.pivot_table(
            index="run_id", columns="name", values="value", aggfunc="first", dropna=False
        )
        if not last.empty
        else pd.DataFrame()
    )
    for name in metrics:
        source = finals[name] if name in finals else pd.Series(dtype=float)
        runs[f"final_{name}"] = runs["run_id"].map(source).astype(float)

    val = (
        long[long["name"] == "val_accuracy"]
        .dropna(subset=["value"])
        .sort_values(["run_id", "epoch"])
    )
    best = val.loc[val.groupby("run_id")["value"].idxmax()] if not val.empty else val
    runs["best_val_accuracy"] = runs["run_id"].map(best.set_index("run_id")["value"]).astype(float)
    runs["best_epoch"] = runs["run_id"].map(best.set_index("run_id")["epoch"]).astype(float)
    target = runs["study"].map(targets).astype(float)  # NaN: no target_accuracy
    hits = val.merge(pd.DataFrame({"run_id": runs["run_id"], "target": target}), on="run_id")
    hits = hits[hits["value"] >= hits["target"]]
    runs["epochs_to_target"] = (
        runs["run_id"].map(hits.groupby("run_id")["epoch"].min()).astype(float)
    )
    runs["train_eval_gap"] = runs["final_accuracy"] - runs["final_train_eval_accuracy"]
    head = RUN_COLUMNS + ["error", "seconds", "epochs"]
    rest = [c for c in runs.columns if c not in head]
    return runs[head + rest]


def studies(store: str | os.PathLike | Store) -> pd.DataFrame:
    """One row per study version: ``study, version, label, question, created, bnlab_version,
    torch_version, spec_hash, variants, n_runs, n_finished, n_diverged, n_failed``."""
    with _opened(store) as st:
        rows = []
        for ref in st.studies():
            counts = dict(
                st.query(
                    "SELECT status, COUNT(*) FROM runs WHERE study_id = ? GROUP BY status",
                    (ref.study_id,),
                )
            )
            rows.append(
                dict(
                    study=ref.name,
                    version=ref.version,
                    label=ref.label,
                    question=ref.question,
                    created=ref.created,
                    bnlab_version=ref.bnlab_version,
                    torch_version=ref.torch_version,
                    spec_hash=ref.spec_hash,
                    variants=list(ref.variants),
                    n_runs=sum(counts.values()),
                    n_finished=counts.get("finished", 0),
                    n_diverged=counts.get("diverged", 0),
                    n_failed=counts.get("failed", 0),
                )
            )
    return pd.DataFrame(
        rows,
        columns=[
            "study",
            "version",
            "label",
            "question",
            "created",
            "bnlab_version",
            "torch_version",
            "spec_hash",
            "variants",
            "n_runs",
            "n_finished",
            "n_diverged",
            "n_failed",
        ],
    )
