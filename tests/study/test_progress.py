"""A study's progress as plain lines: stacks named as such (--jobs epoch lines: test_executors)."""

from __future__ import annotations

import copy
import re

from bnlab.study import run
from bnlab.study.jobs import RunRequest
from bnlab.study.progress import describe_group

TINY = {
    "name": "lines",
    "seeds": 2,
    "model": {"preset": "circles_mlp"},
    "data": {"name": "circles"},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": "sgd", "lr": 0.01},
    "variants": {"no_bn": {"norm": "none"}, "bn": {}},
}


def _request(variant: str, seed: int) -> RunRequest:
    return RunRequest("s", variant, seed, "circles_mlp", {}, {"epochs": 2}, "k")


def test_describe_group():
    assert describe_group([_request("bn", 3)]) == "bn seed 3"
    stack = [_request("bn", s) for s in range(16)]
    assert describe_group(stack) == "16 runs at once (bn seeds 0-15)"
    mixed = [_request("a", 0), _request("a", 2), _request("b", 1)]
    assert describe_group(mixed) == "3 runs at once (a seeds 0,2; b seeds 1)"


def test_the_stacked_engine_says_how_many_runs_train_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BNLAB_PROGRESS_SECONDS", "0")
    result = run(copy.deepcopy(TINY), store=tmp_path / "s.db", engine="stacked",
                 progress="lines")
    assert result.engine == "stacked" and result.trained == 4
    log = capsys.readouterr().err
    assert "training 2 runs at once (no_bn seeds 0,1)" in log
    assert re.search(r"2 runs at once \(bn seeds 0,1\), e\.g\. seed \d: epoch 2/2 ", log), log
