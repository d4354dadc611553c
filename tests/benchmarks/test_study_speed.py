"""``benchmarks/study_speed.py`` runs and prints the JSON it promises (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "study_speed.py"


def _module():
    spec = importlib.util.spec_from_file_location("study_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_engine(entry: dict, models: int) -> None:
    assert entry["models"] == models
    assert entry["per_model_s"] > 0
    assert set(entry["per_variant_per_model_s"]) <= {"no_bn", "bn"}
    for accuracy in entry["mean_final_test_accuracy"].values():
        assert 0 <= accuracy <= 1


def test_ratio_is_per_model_over_the_variants_both_timed():
    ratio = _module()._ratio
    keras = {"per_variant_per_model_s": {"no_bn": 6.0}}
    bnlab = {"per_variant_per_model_s": {"no_bn": 2.0, "bn": 100.0}}
    assert ratio(keras, bnlab) == 3.0
    assert ratio({}, bnlab) is None


@pytest.mark.parametrize("work", ["seed", "study"])
def test_bnlab_engines_one_epoch(shared_data, capsys, work):
    code = _module().main(
        [
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--engines",
            "stacked,sequential",
            "--data-dir",
            str(shared_data),
            "--work",
            work,
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["benchmark"] == "study_speed" and out["epochs"] == 1
    assert out["work"] == work
    assert out["bnlab_fit_options"]["train_eval"] is (work == "study")
    assert out["train_test"] == [1000, 1000]
    for key in ("bnlab_stacked", "bnlab_sequential"):
        _check_engine(out[key], 2)
    # Same seeds, same runs: on CPU a stacked run is its fit run bit for bit.
    assert (
        out["bnlab_stacked"]["mean_final_test_accuracy"]
        == (out["bnlab_sequential"]["mean_final_test_accuracy"])
    )
    assert out["ratios_per_model"]["bnlab_sequential/bnlab_stacked"] > 0


def test_jobs_engine_trains_the_same_runs_in_worker_processes(shared_data, capsys):
    code = _module().main(
        [
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--engines",
            "sequential,jobs",
            "--jobs",
            "2",
            "--data-dir",
            str(shared_data),
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _check_engine(out["bnlab_jobs"], 2)
    assert out["bnlab_jobs"]["jobs"] == 2
    # Workers run fit on one thread each (the parent's tests too): the same numbers.
    assert (
        out["bnlab_jobs"]["mean_final_test_accuracy"]
        == (out["bnlab_sequential"]["mean_final_test_accuracy"])
    )


@pytest.mark.slow
@pytest.mark.keras
def test_with_keras_in_a_subprocess(shared_data, keras):
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--keras-runs",
            "1",
            "--data-dir",
            str(shared_data),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    _check_engine(out["keras_torch"], 1)
    assert "skipped" in out["keras_tensorflow"] or out["keras_tensorflow"]["per_model_s"] > 0
    for key in ("keras_torch/bnlab_stacked", "keras_torch/bnlab_sequential"):
        assert out["ratios_per_model"][key] > 0


def test_targets_met_reads_the_default_engine_ratio_at_each_load():
    met = _module().targets_met(
        {
            "default_engine": "sequential",
            "ratios_per_model": {"keras_tensorflow/bnlab_sequential": 3.2},
            "under_load": {
                "load": 2,
                "ratios_per_model": {"keras_tensorflow/bnlab_sequential": 1.9},
            },
        }
    )
    assert met["without_load"]["value"] == 3.2 and met["without_load"]["met"] is True
    assert met["under_load"]["busy_processes"] == 2 and met["under_load"]["met"] is False
    assert _module().targets_met({"default_engine": "stacked"})["under_load"]["met"] is None


def test_load_times_again_beside_busy_processes(shared_data, capsys):
    code = _module().main(
        ["--epochs", "1", "--seeds", "1", "--engines", "sequential", "--load", "1",
         "--threads", "1", "--data-dir", str(shared_data)]
    )  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["default_engine"] == "sequential"  # seed 002's CNN is above the stacking bound
    loaded = out["under_load"]
    assert loaded["load"] == 1 and len(loaded["busy_pids"]) == 1
    _check_engine(loaded["bnlab_sequential"], 2)
    # the same runs on one fixed thread, so the same accuracies whatever the load
    same = out["bnlab_sequential"]["mean_final_test_accuracy"]
    assert loaded["bnlab_sequential"]["mean_final_test_accuracy"] == same
    for entry in (out["bnlab_sequential"], loaded["bnlab_sequential"]):
        assert len(entry["loadavg"]) == 2 and len(entry["loadavg"][0]) == 3
    assert out["targets_met"]["under_load"]["busy_processes"] == 1
