"""What the command line tells a user: progress in a log, what was resumed or kept, bad
options in one line, lists and exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bnlab import data
from bnlab.cli import app
from bnlab.cli.listing import DATASET_SHAPES
from bnlab.study import register_engine
from bnlab.study.engines import SequentialEngine

SRC = str(Path(__file__).resolve().parents[2] / "src")
SMALL = textwrap.dedent(
    """
    name = "small"
    seeds = 2
    [model]
    preset = "circles_mlp"
    [data]
    name = "circles"
    [train]
    epochs = 3
    batch_size = 64
    optimizer = "sgd"
    lr = 0.01
    [variants.no_bn]
    norm = "none"
    [variants.bn]
    """
)
runner = CliRunner()


@pytest.fixture
def small(tmp_path):
    spec = tmp_path / "small.toml"
    spec.write_text(SMALL)
    return spec, tmp_path / "small.db"


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_piped_run_logs_epoch_lines(small):
    spec, store = small
    env = {k: v for k, v in os.environ.items() if k != "BNLAB_NO_PROGRESS"}
    env.update(PYTHONPATH=SRC, BNLAB_PROGRESS_SECONDS="0", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "bnlab", "run", str(spec), "--store", str(store),
         "--engine", "sequential"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    log = done.stderr
    for variant in ("no_bn", "bn"):
        for seed in (0, 1):
            for epoch in (1, 2, 3):
                assert re.search(
                    rf"{variant} seed {seed}: epoch {epoch}/3  loss \d\.\d{{4}}.*val_accuracy", log
                ), log
            assert f"{variant} seed {seed} finished  val_accuracy" in log
    assert "training 4 run(s) of small with engine sequential on cpu" in log
    assert "trained 4 of 4 runs" in done.stdout


class StopAfter(SequentialEngine):
    """Trains ``n`` runs, then behaves like a Ctrl-C."""

    name = "stop_after_2"

    def train(self, group, dataset, **kw):
        for request, result in super().train(group, dataset, **kw):
            yield request, result
            StopAfter.count += 1
            if StopAfter.count >= 2:
                raise KeyboardInterrupt

    count = 0


def test_ctrl_c_says_how_many_runs_were_kept_and_a_rerun_resumes(small):
    spec, store = small
    register_engine("stop_after_2", StopAfter())
    result = runner.invoke(app, ["run", str(spec), "--store", str(store),
                                 "--engine", "stop_after_2"])
    assert result.exit_code == 130
    assert (f"interrupted: 2 of 4 runs kept in {store}; run the same command to continue"
            in " ".join(result.stderr.split()))
    result = runner.invoke(app, ["run", str(spec), "--store", str(store),
                                 "--engine", "sequential"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "resumed: 2 of 4 runs already in the store; trained 2 of 4 runs" in out
    result = runner.invoke(app, ["run", str(spec), "--store", str(store)])
    assert "resumed: 4 of 4 runs already in the store; nothing left to train" in result.stdout


@pytest.mark.parametrize("device", ["gpu", "CPU"])
def test_a_bad_device_is_one_line(small, device):
    spec, store = small
    result = runner.invoke(app, ["run", str(spec), "--store", str(store), "--device", device])
    assert result.exit_code == 2
    assert _one_error_line(result).startswith(f"error: device: {device!r} is not one of")
    assert not store.exists()  # refused before the store was opened


def test_every_spec_problem_is_listed(small, tmp_path):
    spec, store = small
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("epochs = 3", "epochz = 3").replace("lr = 0.01", "lr = -1"))
    line = _one_error_line(runner.invoke(app, ["run", str(bad), "--store", str(store)]))
    assert "more problem" not in line
    assert line.index("train.epochz: unknown key (did you mean 'epochs'?)") < line.index(
        "train.epochs: missing"
    )
    assert "train.lr: -1 is not >= 0" in line  # the message fit gives for the same value


def test_keras_order_input_shape_gets_a_did_you_mean(tmp_path):
    spec = tmp_path / "hwc.toml"
    spec.write_text(SMALL.replace('preset = "circles_mlp"', 'preset = "digits_cnn"\ninput_shape = [8, 8, 1]')
                    .replace('name = "circles"', 'name = "digits"'))
    line = _one_error_line(runner.invoke(app, ["run", str(spec), "--store", str(tmp_path / "s.db")]))
    assert "model.input_shape" in line and "did you mean [1, 8, 8]?" in line


def test_lists_show_shapes_classes_and_scales_within_80_columns():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    text = result.stdout
    assert re.search(r"fashion_cnn\s+\(1, 28, 28\)\s+10\s", text)
    assert re.search(r"circles_mlp\s+\(2,\)\s+2\s", text)
    assert re.search(r"cifar10\s+\(3, 32, 32\)\s+10\s+unit\s", text)
    assert re.search(r"digits\s+\(1, 8, 8\)\s+10\s+raw\s", text)
    for name in ("digits", "circles", "moons"):  # the listed shapes are what loads
        dataset = data.load(name)
        assert DATASET_SHAPES[name] == (tuple(dataset.input_shape), dataset.num_classes)


def test_help_shows_the_ray_extra_and_doctor_has_no_store_option():
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert "bnlab[ray]" in result.stdout
    result = runner.invoke(app, ["doctor", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--store" not in result.stdout


def test_exports_are_named_after_the_store_and_json_has_the_statistics(small):
    spec, store = small
    assert runner.invoke(app, ["run", str(spec), "--store", str(store)]).exit_code == 0
    result = runner.invoke(app, ["report", str(store), "--format", "csv"])
    assert result.exit_code == 0, result.output
    folder = store.parent
    assert (folder / "small.epochs.csv").is_file() and (folder / "small.runs.csv").is_file()
    given = folder / "mine.txt"
    assert runner.invoke(app, ["report", str(store), "--format", "json", "-o", str(given)]
                         ).exit_code == 0
    payload = json.loads(given.read_text())  # -o used as given: no suffix added
    summary = {row["variant"]: row for row in payload["summary"]}
    assert set(summary) == {"no_bn", "bn"} and summary["bn"]["n"] == 2
    runs = [r for r in payload["runs"] if r["variant"] == "bn"]
    mean = sum(r["final_val_accuracy"] for r in runs) / 2
    assert summary["bn"]["final_val_accuracy_mean"] == pytest.approx(mean)
    assert summary["bn"]["diff"] == pytest.approx(
        mean - summary["no_bn"]["final_val_accuracy_mean"]
    )
    assert payload["verdicts"] == [summary["no_bn"]["verdict"], summary["bn"]["verdict"]]
