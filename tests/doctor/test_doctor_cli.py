"""``bnlab doctor`` / ``bnlab fix`` — exit codes, one-line failures, round trips."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from bnlab.cli.doctor_cmd import app

FACTORY = textwrap.dedent(
    """
    from torch import nn

    def build():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32, bias=False), nn.BatchNorm1d(32),
                             nn.ReLU(), nn.Linear(32, 10))

    def build_mnist():
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=False), nn.BatchNorm1d(10))
    """
)


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def factory(tmp_path_factory, cases):
    """``nets.py:build`` plus weights trained on unit-scale digits (state_dict, .pt)."""
    tmp_path = tmp_path_factory.mktemp("factory")
    path = tmp_path / "nets.py"
    path.write_text(FACTORY)
    namespace: dict = {}
    exec(FACTORY, namespace)  # the same architecture, to train and save its weights
    torch.manual_seed(0)
    x, y = cases.data.digits("unit", "nchw")
    model = cases.train.train_torch(namespace["build"](), x, y, epochs=2, batch_size=64, lr=1e-2)
    weights = tmp_path / "net.pt"
    torch.save(model.state_dict(), weights)
    return path, weights, model


def _fails_cleanly(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_file(runner, tmp_path):
    result = runner.invoke(app, ["doctor", str(tmp_path / "nope.keras"), "--data", "digits"])
    _fails_cleanly(result, "no such file", "nope.keras")


def test_a_pickled_model_is_refused_with_the_reason(runner, tmp_path, factory):
    _, weights, model = factory
    pickled = tmp_path / "model.pt"
    torch.save(model, pickled)  # the whole module: only unpickling could read it
    result = runner.invoke(app, ["doctor", str(pickled), "--data", "digits"])
    _fails_cleanly(result, "full pickle", "arbitrary code")
    result = runner.invoke(
        app, ["doctor", f"{factory[0]}:build", "--weights", str(pickled), "--data", "digits"]
    )
    _fails_cleanly(result, "full pickle")
    # a state_dict alone names no architecture
    result = runner.invoke(app, ["doctor", str(weights), "--data", "digits"])
    _fails_cleanly(result, "module:factory", "--weights")


def test_unknown_format(runner, tmp_path):
    notes = tmp_path / "model.txt"
    notes.write_text("not a model")
    result = runner.invoke(app, ["doctor", str(notes), "--data", "digits"])
    _fails_cleanly(result, "not a model format")


def test_data_shape_mismatch_with_the_model(runner, factory):
    path, _, _ = factory
    result = runner.invoke(app, ["doctor", f"{path}:build_mnist", "--data", "digits"])
    _fails_cleanly(result, "(1, 8, 8) do not fit the model")


def test_bad_data_and_bad_factories(runner, factory, tmp_path):
    path, weights, _ = factory
    result = runner.invoke(
        app, ["doctor", f"{path}:build", "-w", str(weights), "--data", "no-such-data"]
    )
    _fails_cleanly(result)
    result = runner.invoke(app, ["doctor", f"{path}:nothing", "--data", "digits"])
    _fails_cleanly(result, "has no attribute 'nothing'")
    result = runner.invoke(
        app, ["doctor", f"{path}:build_mnist", "-w", str(weights), "--data", "digits"]
    )
    _fails_cleanly(result, "does not fit the model")
    result = runner.invoke(app, ["doctor", "run-42", "--data", "digits"])  # a study's run id
    _fails_cleanly(result, "no such file", "module:factory")
    result = runner.invoke(app, ["doctor", f"{path}:build", "--data", "digits", "-O", "scale"])
    _fails_cleanly(result, "KEY=VALUE")


def test_healthy_torch_model_exits_0_and_fix_writes_a_state_dict(runner, factory, tmp_path):
    path, weights, model = factory
    args = [f"{path}:build", "--weights", str(weights), "--data", "digits", "-O", "scale=unit"]
    result = runner.invoke(app, ["doctor", *args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["healthy"] is True and report["model_info"]["framework"] == "torch"
    out = tmp_path / "fixed.pt"
    result = runner.invoke(app, ["fix", *args, "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    assert numbers["bn_layers"] == 1 and numbers["test_accuracy_after"] is not None
    state = torch.load(out, weights_only=True)
    assert set(state) == set(model.state_dict())


def test_keras_week9_file_doctor_then_fix(runner, cases, keras, tmp_path):
    model_path = tmp_path / "week9.keras"
    cases.keras_cases.week9(0.99).save(model_path)
    args = ["--data", "digits", "-O", "scale=raw"]
    result = runner.invoke(app, ["doctor", str(model_path), *args, "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert "stale-running-stats" in {f["id"] for f in report["findings"]}

    fixed = tmp_path / "fixed.keras"
    result = runner.invoke(app, ["fix", str(model_path), *args, "-o", str(fixed)])
    assert result.exit_code == 0, result.output
    assert "inference accuracy, training data:" in result.stdout and fixed.is_file()

    result = runner.invoke(app, ["doctor", str(fixed), *args, "--json"])
    assert result.exit_code == 1  # raw inputs are still reported ...
    found = {f["id"] for f in json.loads(result.stdout)["findings"]}
    assert "unnormalized-inputs" in found
    assert "stale-running-stats" not in found  # ... but the statistics are fixed
