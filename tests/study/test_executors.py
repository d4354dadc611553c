"""Executors: a process pool (jobs=2) stores exactly what the in-process executor stores."""

from __future__ import annotations

import sys

import pytest

from bnlab.errors import ConfigError
from bnlab.study import executor_names, get_executor, load, run
from bnlab.study.executors import Executor
from bnlab.study.executors.local import LocalExecutor

SPEC = {
    "name": "pool",
    "seeds": 2,
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


def test_process_pool_gives_the_same_runs_as_in_process(tmp_path, monkeypatch, capsys):
    one = run(SPEC, store=tmp_path / "one.db", engine="sequential", jobs=1, progress=False)
    monkeypatch.setenv("BNLAB_PROGRESS_SECONDS", "0")  # every epoch line of the workers
    two = run(SPEC, store=tmp_path / "two.db", engine="sequential", jobs=2, progress="lines")
    assert one.trained == two.trained == 4
    log = capsys.readouterr().err
    for run_name in ("no_bn seed 0", "no_bn seed 1", "bn seed 0", "bn seed 1"):
        for epoch in (1, 2):
            assert f"{run_name}: epoch {epoch}/2 " in log, log
    key = ["variant", "seed", "epoch"]
    a = load(tmp_path / "one.db").sort_values(key).reset_index(drop=True)
    b = load(tmp_path / "two.db").sort_values(key).reset_index(drop=True)
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "train_eval_accuracy"):
        assert a[column].tolist() == b[column].tolist(), column


def test_executor_lookup():
    assert executor_names()[0] == "local"
    executor = get_executor("local", jobs=3)
    assert isinstance(executor, LocalExecutor) and isinstance(executor, Executor)
    assert executor.jobs == 3
    with pytest.raises(
        ConfigError, match=r"^executor: 'lokal' is not available \(did you mean 'local'"
    ):
        get_executor("lokal")
    with pytest.raises(
        ConfigError, match=r"^executor_options: 'address' is not an option of the 'local' "
    ):
        get_executor("local", address="auto")


def test_run_passes_executor_options_and_names_a_bad_one(tmp_path):
    spec = {
        "name": "opts", "model": {"preset": "circles_mlp"}, "data": {"name": "circles"},
        "train": {"epochs": 1, "batch_size": 32}, "seeds": 1, "variants": {"bn": {}},
    }
    with pytest.raises(ConfigError, match="'num_gpus' is not an option of the 'local'"):
        run(spec, store=tmp_path / "x.db", executor_options={"num_gpus": 1}, progress=False)
    assert not (tmp_path / "x.db").exists()  # refused before anything was written


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    monkeypatch.delitem(sys.modules, "bnlab.study.executors.ray", raising=False)
    with pytest.raises(ConfigError, match=r'^executor: .ray. needs .*pip install "bnlab\[ray\]"'):
        get_executor("ray")
