"""The SQLite store and its pandas views, with hand-made outcomes (no training)."""

from __future__ import annotations

import math
import sqlite3

import pytest

from bnlab.errors import ConfigError, DataError
from bnlab.study import load, load_runs, studies
from bnlab.study.jobs import RunOutcome, RunRequest
from bnlab.study.store import Store, describe_changes

SPEC = {
    "name": "toy",
    "train": {"epochs": 3, "batch_size": 8},
    "target_accuracy": 0.7,
    "variants": {"a": {}, "b": {"norm": "none"}},
}


def outcome(
    variant: str, seed: int, accs: list[float], status: str = "finished", **kw
) -> RunOutcome:
    req = RunRequest(
        "toy", variant, seed, "circles_mlp", {"norm": "batch"}, {"epochs": len(accs)}, "k"
    )
    n = len(accs)
    metrics = {
        "loss": [1.0 / (e + 1) for e in range(n)],
        "accuracy": [a + 0.05 for a in accs],
        "val_accuracy": list(accs),
        "train_eval_accuracy": [a + 0.01 for a in accs],
    }
    return RunOutcome(
        req,
        status,
        metrics,
        {"val_source": "test"},
        seconds=1.5,
        engine="sequential",
        device="cpu",
        **kw,
    )


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "runs.db") as st:
        yield st


def test_record_and_load_roundtrip(store):
    ref, created = store.open_study("toy", SPEC, question="q?", variants=["a", "b"], new=False)
    assert created and ref.version == 1 and ref.label == "toy"
    store.record(ref, outcome("b", 0, [0.5, 0.75, 0.72]))
    store.record(ref, outcome("a", 1, [0.6, 0.65, 0.8]))
    diverged = outcome("a", 0, [0.4, 0.45, math.nan], status="diverged", diverged_at_epoch=3)
    diverged.metrics["loss"][2] = math.inf
    store.record(ref, diverged)
    frame = load(store.path)
    assert list(frame.columns[:8]) == [
        "study",
        "study_version",
        "run_id",
        "variant",
        "seed",
        "status",
        "diverged_at_epoch",
        "epoch",
    ]
    for key in (
        "loss",
        "data_loss",
        "reg_loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "train_eval_loss",
        "train_eval_accuracy",
    ):
        assert key in frame.columns  # every History key, NaN where not recorded
    assert frame["data_loss"].isna().all()
    # ordered by the spec's variant order, then seed, then epoch
    assert list(zip(frame["variant"], frame["seed"], frame["epoch"], strict=True)) == [
        ("a", 0, 1),
        ("a", 0, 2),
        ("a", 0, 3),
        ("a", 1, 1),
        ("a", 1, 2),
        ("a", 1, 3),
        ("b", 0, 1),
        ("b", 0, 2),
        ("b", 0, 3),
    ]
    div = frame[(frame["variant"] == "a") & (frame["seed"] == 0)]
    assert math.isnan(div["val_accuracy"].iloc[2]) and div["loss"].iloc[2] == math.inf
    assert (div["diverged_at_epoch"] == 3).all() and (div["status"] == "diverged").all()

    runs = load_runs(store.path).set_index(["variant", "seed"])
    b0 = runs.loc[("b", 0)]
    assert b0["final_val_accuracy"] == pytest.approx(0.72)
    assert b0["best_val_accuracy"] == pytest.approx(0.75) and b0["best_epoch"] == 2
    assert b0["epochs_to_target"] == 2  # first epoch with val_accuracy >= 0.7
    assert b0["train_eval_gap"] == pytest.approx(0.04)  # (0.72 + .05) - (0.72 + .01)
    assert b0["epochs"] == 3 and b0["seconds"] == 1.5 and b0["val_source"] == "test"
    assert runs.loc[("a", 1), "epochs_to_target"] == 3
    assert math.isnan(runs.loc[("a", 0), "epochs_to_target"])  # never reached 0.7
    assert math.isnan(runs.loc[("a", 0), "final_val_accuracy"])  # the last epoch's value
    assert runs.loc[("a", 0), "best_val_accuracy"] == pytest.approx(0.45)


def test_epochs_to_target_ignores_nothing_but_nan(store):
    ref, _ = store.open_study("toy", SPEC, question="", variants=["a", "b"], new=False)
    store.record(ref, outcome("a", 0, [0.1, math.nan, 0.9]))
    runs = load_runs(store)
    assert runs.loc[0, "epochs_to_target"] == 3
    assert runs.loc[0, "best_epoch"] == 3


def test_completed_and_failed_runs_are_retried(store):
    ref, _ = store.open_study("toy", SPEC, question="", variants=["a", "b"], new=False)
    store.record(ref, outcome("a", 0, [], status="failed", error="RuntimeError: boom"))
    store.record(ref, outcome("b", 0, [0.5]))
    assert store.completed(ref) == {("b", 0)}  # failed runs are run again
    first = load_runs(store)
    assert set(first["status"]) == {"failed", "finished"}
    assert first.set_index("variant").loc["a", "error"] == "RuntimeError: boom"
    run_id = store.record(ref, outcome("a", 0, [0.6]))  # the retry replaces the failed row
    assert run_id is not None
    assert store.record(ref, outcome("b", 0, [0.9])) is None  # finished rows are final
    runs = load_runs(store).set_index("variant")
    assert len(runs) == 2 and runs.loc["a", "status"] == "finished"
    assert runs.loc["b", "final_val_accuracy"] == pytest.approx(0.5)
    n = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    assert n == 4 * 2  # 4 keys x 1 epoch for each of the two runs; the failed row left nothing


def test_changed_spec_is_refused_with_the_changes_named(store):
    store.open_study("toy", SPEC, question="", variants=["a", "b"], new=False)
    ref, created = store.open_study("toy", SPEC, question="", variants=["a", "b"], new=False)
    assert not created and ref.version == 1  # same spec: resume
    store.record(ref, outcome("a", 0, [0.5]))  # something was measured under this spec
    changed = {
        **SPEC,
        "train": {"epochs": 5, "batch_size": 8},
        "variants": {**SPEC["variants"], "c": {"l2": 0.01}},
    }
    with pytest.raises(ConfigError) as info:
        store.open_study("toy", changed, question="", variants=["a", "b", "c"], new=False)
    message = str(info.value)
    assert "\n" not in message
    assert "train.epochs 3 -> 5" in message and "variants.c added" in message
    assert "--new" in message and "toy@2" in message
    ref2, created = store.open_study(
        "toy", changed, question="", variants=["a", "b", "c"], new=True
    )
    assert created and ref2.version == 2 and ref2.label == "toy@2"
    assert [r.version for r in store.select(None)] == [2]  # latest version per name
    assert store.select("toy@1")[0].spec == SPEC
    listing = studies(store)
    assert list(listing["label"]) == ["toy", "toy@2"]
    with pytest.raises(ConfigError, match=r"study: 'tyo' is not in .*did you mean 'toy'"):
        store.select("tyo")


def test_a_study_without_runs_takes_the_changed_spec(store):
    # e.g. the first attempt stopped at a DataError before any run: nothing was measured
    ref, _ = store.open_study("toy", SPEC, question="", variants=["a", "b"], new=False)
    changed = {**SPEC, "seeds": [0, 1, 2]}
    again, created = store.open_study("toy", changed, question="", variants=["a", "b"], new=False)
    assert not created and again.study_id == ref.study_id and again.spec == changed
    store.record(again, outcome("a", 0, [0.5]))
    with pytest.raises(ConfigError, match="different spec"):
        store.open_study("toy", SPEC, question="", variants=["a", "b"], new=False)


def test_describe_changes():
    assert describe_changes({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 4}) == [
        "b.c 2 -> 3",
        "d added",
    ]


def test_reader_refuses_missing_or_foreign_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nope.db")
    bad = tmp_path / "bad.db"
    bad.write_text("not a database at all, just text" * 50)
    with pytest.raises(DataError, match="not a bnlab study store"):
        load(bad)
