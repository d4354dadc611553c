"""Several processes on one store share its runs (leases); a foreign SQLite file is refused."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnlab.errors import ConfigError, DataError
from bnlab.study import leases
from bnlab.study.jobs import RunOutcome, RunRequest
from bnlab.study.store import Store

SRC = str(Path(__file__).resolve().parents[2] / "src")

SHARED = """
name = "shared"
seeds = 6
[model]
preset = "circles_mlp"
[data]
name = "circles"
[train]
epochs = 12
batch_size = 32
optimizer = "sgd"
lr = 0.01
[variants.no_bn]
norm = "none"
[variants.bn]
"""

FINISHED = re.compile(r"\[\d+/\d+ runs\] (\S+) seed (\d+) finished")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BNLAB_NO_PROGRESS"}
    env.update(PYTHONPATH=SRC, OMP_NUM_THREADS="1", BNLAB_THREADS="1", **extra)
    return env


def test_two_processes_share_a_study_and_train_every_run_once(tmp_path):
    spec = tmp_path / "shared.toml"
    spec.write_text(SHARED)
    store = tmp_path / "shared.db"
    command = [sys.executable, "-m", "bnlab", "run", str(spec), "--store", str(store),
               "--engine", "sequential"]
    env = _env(BNLAB_PROGRESS_SECONDS="0")
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env, cwd=tmp_path)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [{(v, int(s)) for v, s in FINISHED.findall(out)} for out in outputs]
    counts = [len(FINISHED.findall(out)) for out in outputs]
    every = {(v, s) for v in ("no_bn", "bn") for s in range(6)}
    # each process trained some runs, none twice, and together exactly the study
    assert all(n > 0 for n in counts), outputs
    assert sum(counts) == len(every) and trained[0] | trained[1] == every
    assert not trained[0] & trained[1]
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT variant, seed, status FROM runs").fetchall()
        assert sorted((v, s) for v, s, _ in rows) == sorted(every)
        assert {status for *_, status in rows} == {"finished"}
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
    for out in outputs:  # both print the whole study's summary, each with its own count
        assert re.search(r"trained \d+ of 12 runs", out), out


def _request(variant: str, seed: int) -> RunRequest:
    return RunRequest("toy", variant, seed, "circles_mlp", {}, {"epochs": 1}, "k")


def test_a_lease_keeps_a_run_from_others_until_it_expires_or_its_process_dies(tmp_path):
    a, b = leases.Owner("here", os.getpid(), "a"), leases.Owner("here", os.getpid(), "b")
    with Store(tmp_path / "s.db") as st:
        ref, _ = st.open_study("toy", {"x": 1}, question="", variants=["v"], new=False)
        keys = [("v", 0), ("v", 1)]
        assert st.claim(ref, keys, a, ttl=60) == keys
        assert st.claim(ref, keys, b, ttl=60) == []  # held by a live process
        st.record(ref, RunOutcome(_request("v", 0), "finished", {"loss": [0.5]}))
        assert [(x.variant, x.seed) for x in st.leases(ref)] == [("v", 1)]  # recorded: freed
        assert st.claim(ref, keys, b, ttl=60) == []  # v/0 is stored, v/1 still held
        # the holder stops renewing: once expired, the run is free again
        st._conn.execute("UPDATE leases SET expires = ?", (time.time() - 1,))
        assert st.claim(ref, keys, b, ttl=60) == [("v", 1)]
        # a holder on this host whose pid is gone (kill -9) frees its run at once
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        gone = leases.Owner("here", dead.pid, "c")
        st._conn.execute("UPDATE leases SET owner = ?, pid = ?", (gone.key, dead.pid))
        assert st.claim(ref, keys, a, ttl=60) == [("v", 1)]
        st.release(ref, a)
        assert st.leases(ref) == []


def test_heartbeat_renews_leases(tmp_path):
    owner = leases.Owner("here", os.getpid(), "h")
    with Store(tmp_path / "s.db") as st:
        ref, _ = st.open_study("toy", {"x": 1}, question="", variants=["v"], new=False)
        st.claim(ref, [("v", 0)], owner, ttl=0.3)
        first = st.leases(ref)[0].expires
        with leases.Heartbeat(st.path, owner, ttl=0.3):
            time.sleep(0.5)
        assert st.leases(ref)[0].expires > first + 0.1


def test_a_sqlite_file_that_is_not_a_store_is_refused_and_left_untouched(tmp_path):
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    before = foreign.read_bytes()
    with pytest.raises(DataError) as info:
        Store(foreign)
    message = str(info.value)
    assert "not a bnlab study store" in message and "users" in message and "\n" not in message
    assert foreign.read_bytes() == before
    with sqlite3.connect(foreign) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"users"}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # an empty SQLite file becomes a store
    with Store(empty) as st:
        assert st.studies() == []


def test_two_processes_opening_a_new_study_at_once_share_one_version(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as first, Store(path) as second:
        real = second.studies
        calls = []

        def stale():  # the second read "no study yet" just before the first wrote version 1
            calls.append(1)
            return [] if len(calls) == 1 else real()

        second.studies = stale
        ref1, created1 = first.open_study("toy", {"x": 1}, question="", variants=["v"], new=False)
        ref2, created2 = second.open_study("toy", {"x": 1}, question="", variants=["v"], new=False)
        assert created1 and not created2 and ref1.study_id == ref2.study_id
        calls.clear()
        with pytest.raises(ConfigError, match="another process just started toy "):
            second.open_study("toy", {"x": 2}, question="", variants=["v"], new=False)
