"""The runner: tiny real studies (circles_mlp, 2 epochs) against sequential training itself."""

from __future__ import annotations

import copy
import math

import pytest

from bnlab import data, models
from bnlab.errors import ConfigError, DataError
from bnlab.study import load, load_runs, load_spec, register_engine, run
from bnlab.study.engines import SequentialEngine, engine_names
from bnlab.train import fit, seeded

TINY = {
    "name": "tiny",
    "question": "Does BN help the circles MLP in two epochs?",
    "seeds": 2,
    "target_accuracy": 0.6,
    "model": {"preset": "circles_mlp"},
    "data": {"name": "circles"},
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "optimizer": "sgd",
        "lr": 0.01,
        "optimizer_options": {"momentum": 0.9},
    },
    "variants": {"no_bn": {"norm": "none"}, "bn": {}},
}


def tiny(**changes):
    spec = copy.deepcopy(TINY)
    spec.update(changes)
    return spec


def test_study_runs_every_run_once_and_matches_fit(tmp_path):
    store = tmp_path / "runs.db"
    result = run(tiny(), store=store, engine="sequential", progress=False)
    assert (result.trained, result.skipped, result.engine) == (4, 0, "sequential")
    assert list(result.summary["variant"]) == ["no_bn", "bn"]
    assert list(result.summary["n"]) == [2, 2]
    frame = load(store)
    assert len(frame) == 4 * 2 and set(frame["status"]) == {"finished"}
    # a stored run is exactly what build-inside-seeded + fit gives for the same seed
    with seeded(1):
        model = models.build("circles_mlp", norm="none")
    history = fit(
        model,
        data.load("circles"),
        epochs=2,
        batch_size=32,
        optimizer="sgd",
        lr=0.01,
        optimizer_options={"momentum": 0.9},
        seed=1,
        progress=False,
    )
    mine = frame[(frame["variant"] == "no_bn") & (frame["seed"] == 1)]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "train_eval_accuracy"):
        assert mine[key].tolist() == history.history[key], key
    runs = load_runs(store)
    assert runs["final_val_accuracy"].between(0, 1).all()
    assert (runs["engine"] == "sequential").all() and (runs["val_source"] == "test").all()
    # the same call again trains nothing and reports the same summary
    again = run(tiny(), store=store, engine="auto", progress=False)
    assert (again.trained, again.skipped, again.engine) == (0, 4, "none")
    assert (
        again.summary["final_val_accuracy_mean"].tolist()
        == result.summary["final_val_accuracy_mean"].tolist()
    )
    assert len(load(store)) == 8
    # the stored spec is the one that ran
    assert load_spec(store, "tiny").to_dict() == load_spec(tiny()).to_dict()


def test_diverged_run_is_stored_and_the_study_goes_on(tmp_path):
    spec = tiny(
        variants={"no_bn": {"norm": "none"}, "huge_lr": {"norm": "none", "lr": 1e6}}, seeds=1
    )
    result = run(spec, store=tmp_path / "runs.db", engine="sequential", progress=False)
    runs = load_runs(tmp_path / "runs.db").set_index("variant")
    assert runs.loc["huge_lr", "status"] == "diverged"
    assert runs.loc["huge_lr", "diverged_at_epoch"] == 1
    assert math.isnan(runs.loc["huge_lr", "final_loss"])
    assert runs.loc["no_bn", "status"] == "finished" and runs.loc["no_bn", "epochs"] == 2
    row = result.summary.set_index("variant").loc["huge_lr"]
    assert row["n_diverged"] == 1 and row["n"] == 0
    assert "1 of 1 runs diverged" in row["verdict"]
    # a diverged run is a result: it is not run again
    assert run(spec, store=tmp_path / "runs.db", progress=False).trained == 0


def test_changed_spec_is_refused_unless_new(tmp_path):
    # More seeds grow a study in place (tests/study/test_growth.py); a changed training
    # option alters the stored runs and needs new=True.
    store = tmp_path / "runs.db"
    run(tiny(seeds=1), store=store, engine="sequential", progress=False)
    longer = tiny(train={**TINY["train"], "epochs": 3})
    with pytest.raises(
        ConfigError,
        match=r"study 'tiny' .* different spec \(seeds \[0\] -> \[0, 1\]; train.epochs 2 -> 3\)",
    ):
        run(longer, store=store, progress=False)
    result = run(longer, store=store, new=True, engine="sequential", progress=False)
    assert result.study == "tiny@2" and result.trained == 4
    assert set(load(store)["study_version"]) == {2}  # latest version by default
    assert len(load_runs(store, "tiny@1")) == 2


class PairsEngine(SequentialEngine):
    """Trains runs two at a time (in reverse order) through fit: exercises the engine seam."""

    name = "pairs"

    def plan(self, requests):
        requests = list(requests)[::-1]
        return [requests[i : i + 2] for i in range(0, len(requests), 2)]


def test_registered_engine_is_used_and_gives_the_same_runs(tmp_path):
    register_engine("pairs", PairsEngine())
    assert "pairs" in engine_names()
    a = run(tiny(), store=tmp_path / "a.db", engine="pairs", progress=False)
    run(tiny(), store=tmp_path / "b.db", engine="sequential", progress=False)
    assert a.engine == "pairs" and set(a.runs["engine"]) == {"pairs"}
    key = ["variant", "seed", "epoch"]
    fa = load(tmp_path / "a.db").sort_values(key).reset_index(drop=True)
    fb = load(tmp_path / "b.db").sort_values(key).reset_index(drop=True)
    assert fa["val_accuracy"].tolist() == fb["val_accuracy"].tolist()
    assert fa["loss"].tolist() == fb["loss"].tolist()


def test_bad_arguments_and_missing_data(tmp_path):
    store = tmp_path / "runs.db"
    with pytest.raises(ConfigError, match=r"^engine: 'turbo' is not available; engines: auto"):
        run(tiny(), store=store, engine="turbo", progress=False)
    with pytest.raises(
        ConfigError, match=r"^executor: 'lcoal' is not available \(did you mean 'local'"
    ):
        run(tiny(), store=store, executor="lcoal", progress=False)
    with pytest.raises(ConfigError, match=r"^jobs: 0 is not in \[1, inf\)"):
        run(tiny(), store=store, jobs=0, progress=False)
    hint = "put toy.npz in DIR and pass --data-dir DIR"
    missing = tiny(name="nodata", data={"name": "npz:toy.npz", "hint": hint})
    with pytest.raises(DataError) as info:
        run(missing, store=store, data_dir=tmp_path, progress=False)
    assert hint in str(info.value) and "\n" not in str(info.value)
    assert load_runs(store, "nodata").empty  # nothing ran
    with pytest.raises(ConfigError, match=r"^model.num_classes: 3 does not match the data"):
        run(
            tiny(name="mismatch", model={"preset": "circles_mlp", "num_classes": 3}),
            store=store,
            progress=False,
        )


class NoCpuEngine(SequentialEngine):
    name = "nocpu"

    def available(self, device):
        return "it needs CUDA" if device == "cpu" else None


def test_engine_unavailable_on_the_device_is_a_config_error(tmp_path):
    register_engine("nocpu", NoCpuEngine())
    with pytest.raises(
        ConfigError, match=r"^engine: 'nocpu' cannot run on device 'cpu': it needs CUDA"
    ):
        run(tiny(), store=tmp_path / "runs.db", engine="nocpu", progress=False)
    if "stacked" not in engine_names():
        with pytest.raises(ConfigError, match="engine: 'stacked' is not available"):
            run(tiny(), store=tmp_path / "runs.db", engine="stacked", progress=False)
