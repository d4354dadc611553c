"""kill -9 in the middle of a study, then the same command: nothing lost, nothing repeated.

The study runs in a subprocess; the test polls the store and sends SIGKILL as soon as two
runs are committed, snapshots what the store holds, runs the same command again and checks
that every committed run is still there untouched and that exactly the missing runs trained.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

SPEC = """
name = "resume"
question = "Does a killed study resume?"
seeds = 6
[model]
preset = "circles_mlp"
[data]
name = "circles"
[train]
epochs = 40
batch_size = 32
optimizer = "sgd"
lr = 0.01
optimizer_options = {momentum = 0.9}
[variants.no_bn]
norm = "none"
[variants.bn]
"""

SCRIPT = (
    "import sys, bnlab.study as s; "
    "r = s.run(sys.argv[1], store=sys.argv[2], engine='sequential', progress=False); "
    "print('TRAINED', r.trained, 'SKIPPED', r.skipped)"
)


def _env() -> dict:
    env = dict(os.environ, BNLAB_NO_PROGRESS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _snapshot(db) -> dict:
    con = sqlite3.connect(db)
    try:
        runs = con.execute("SELECT run_id, variant, seed, status, finished FROM runs").fetchall()
        out = {}
        for run_id, variant, seed, status, finished in runs:
            metrics = con.execute(
                "SELECT epoch, name, value FROM metrics WHERE run_id = ? ORDER BY name, epoch",
                (run_id,),
            ).fetchall()
            out[(variant, seed)] = (run_id, status, finished, metrics)
        return out
    finally:
        con.close()


def _count(db) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def test_kill_dash_nine_then_rerun_loses_nothing_and_repeats_nothing(tmp_path):
    spec, db = tmp_path / "resume.toml", tmp_path / "runs.db"
    spec.write_text(SPEC)
    cmd = [sys.executable, "-c", SCRIPT, str(spec), str(db)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while _count(db) < 2:
            if proc.poll() is not None:
                pytest.fail(f"the study exited before it was killed: {proc.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("no run was committed within 240 s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _snapshot(db)
    total = 12
    assert 2 <= len(before) < total, "kill -9 must land while the study is running"
    assert all(status == "finished" for _, status, _, _ in before.values())

    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"TRAINED {total - len(before)} SKIPPED {len(before)}" in done.stdout
    after = _snapshot(db)
    assert len(after) == total  # the study completed; UNIQUE(study, variant, seed) holds
    for key, row in before.items():
        assert after[key] == row, f"committed run {key} changed after the re-run"
    con = sqlite3.connect(db)
    try:
        n_studies = con.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
        epochs = con.execute(
            "SELECT run_id, COUNT(DISTINCT epoch) FROM metrics GROUP BY run_id"
        ).fetchall()
    finally:
        con.close()
    assert n_studies == 1  # the same study continued, no new version
    assert {n for _, n in epochs} == {40} and len(epochs) == total
