"""The ``bnlab`` command line, through typer's CliRunner (and once as ``python -m bnlab``).

A tiny real study (circles MLP, 3 variants x 2 seeds x 2 epochs, a few seconds) is run
through ``bnlab run`` once per module; ``report`` and the exports read its store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

import bnlab
from bnlab.cli import app
from bnlab.cli.app import BnlabGroup
from bnlab.cli.lazy import LazyCommand

TINY = textwrap.dedent(
    """
    name = "tiny"
    question = "Does BN change a two-circles MLP after two epochs?"
    seeds = 2
    target_accuracy = 0.6
    baseline = "no_bn"

    [model]
    preset = "circles_mlp"

    [data]
    name = "circles"

    [train]
    epochs = 2
    batch_size = 32
    optimizer = "sgd"
    lr = 0.01
    optimizer_options = { momentum = 0.9 }
    precise_eval = true

    [variants.no_bn]
    norm = "none"

    [variants.bn_after_relu]
    bn_position = "after_activation"

    [variants.bn_before_relu]
    bn_position = "before_activation"
    """
)
VARIANTS = ["no_bn", "bn_after_relu", "bn_before_relu"]

runner = CliRunner()


def _error_line(result) -> str:
    """The single non-empty stderr line of a failed command (asserting there is exactly one)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, spec path, store path, result of `bnlab run`) of the tiny study."""
    folder = tmp_path_factory.mktemp("cli")
    spec = folder / "tiny.toml"
    spec.write_text(TINY)
    store = folder / "runs.db"
    result = runner.invoke(
        app, ["run", str(spec), "--store", str(store), "--report", str(folder / "run.html")]
    )
    assert result.exit_code == 0, result.output
    return folder, spec, store, result


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"bnlab {bnlab.__version__}"


def test_python_dash_m_bnlab():
    proc = subprocess.run(
        [sys.executable, "-m", "bnlab", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"bnlab {bnlab.__version__}"


def test_help_lists_every_command_with_examples():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "list", "run", "report", "doctor", "fix"):
        assert command in result.stdout
    for command in ("demo", "list", "run", "report"):
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, sub.output
        assert "Examples" in sub.stdout and f"bnlab {command}" in sub.stdout


def test_list(tmp_path):
    from bnlab import models
    from bnlab.study import builtin_studies

    result = runner.invoke(app, ["list", "presets"])
    assert result.exit_code == 0
    for name in models.presets():
        assert name in result.stdout
    result = runner.invoke(app, ["list", "studies"])
    assert result.exit_code == 0
    for name, _question in builtin_studies():
        assert name in result.stdout
    assert "demo" in result.stdout and "seed004" in result.stdout
    result = runner.invoke(app, ["list", "datasets"])
    assert result.exit_code == 0 and "digits" in result.stdout and "circles" in result.stdout
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert all(kind in result.stdout for kind in ("presets", "datasets", "studies"))


def test_list_unknown_kind_is_one_line_exit_2():
    result = runner.invoke(app, ["list", "presetz"])
    assert result.exit_code == 2
    line = _error_line(result)
    assert line.startswith("error: what: 'presetz' is not one of")
    assert "did you mean 'presets'" in line


def test_run_prints_summary_and_writes_report(tiny):
    folder, _spec, store, result = tiny
    for variant in VARIANTS:
        assert variant in result.stdout
    assert "Report:" in result.stdout and (folder / "run.html").is_file()
    runs = bnlab.study.load_runs(store)
    assert len(runs) == 6 and set(runs["variant"]) == set(VARIANTS)
    # the terminal prints the study's own verdict sentences (rich may wrap them)
    printed = " ".join(result.stdout.split())
    for verdict in bnlab.study.summarize(runs, baseline="no_bn", target=0.6)["verdict"]:
        assert " ".join(verdict.split()) in printed


def test_rerun_resumes_without_training(tiny):
    _folder, spec, store, _ = tiny
    before = bnlab.study.load_runs(store)
    result = runner.invoke(app, ["run", str(spec), "--store", str(store)])
    assert result.exit_code == 0, result.output
    after = bnlab.study.load_runs(store)
    assert list(after["run_id"]) == list(before["run_id"])  # nothing repeated


def test_changed_spec_is_refused_in_one_line(tiny):
    folder, _spec, store, _ = tiny
    changed = folder / "changed.toml"
    changed.write_text(TINY.replace("epochs = 2", "epochs = 3"))
    result = runner.invoke(app, ["run", str(changed), "--store", str(store)])
    assert result.exit_code == 2
    line = _error_line(result)
    assert "different spec" in line and "--new" in line


def test_report_html_from_store(tiny):
    folder, _spec, store, _ = tiny
    out = folder / "report.html"
    result = runner.invoke(app, ["report", str(store), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Report: {out.resolve()}" in result.stdout
    text = out.read_text()
    assert "Does BN change a two-circles MLP after two epochs?" in text
    assert text.count('<img src="data:image/png;base64,') == 3
    for variant in VARIANTS:
        assert variant in text


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_report_exports(tiny, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    folder, _spec, store, _ = tiny
    out = folder / f"export.{fmt}"
    result = runner.invoke(app, ["report", str(store), "--format", fmt, "-o", str(out)])
    assert result.exit_code == 0, result.output
    epochs = bnlab.study.load(store)
    if fmt == "json":
        payload = json.loads(out.read_text())
        assert len(payload["epochs"]) == len(epochs) == 6 * 2
        assert len(payload["runs"]) == 6
    else:
        read = pd.read_csv if fmt == "csv" else pd.read_parquet
        back = read(out)
        assert len(back) == len(epochs)
        pd.testing.assert_series_equal(
            back["val_accuracy"], epochs["val_accuracy"], check_names=False
        )
        assert len(read(folder / f"export.runs.{fmt}")) == 6


def test_report_errors_are_one_line_exit_2(tiny, tmp_path):
    _folder, _spec, store, _ = tiny
    result = runner.invoke(app, ["report", str(tmp_path / "missing.db")])
    assert result.exit_code == 2
    assert "missing.db" in _error_line(result) and "does not exist" in result.stderr
    result = runner.invoke(app, ["report", str(store), "--study", "tinny"])
    assert result.exit_code == 2
    assert "did you mean 'tiny'" in _error_line(result)
    result = runner.invoke(app, ["report", str(store), "--format", "xlsx"])
    assert result.exit_code == 2
    assert _error_line(result).startswith("error: format: 'xlsx' is not one of")


def test_bad_spec_exit_2_one_line_naming_the_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace('bn_position = "after_activation"', "bn_momentum = 1.5"))
    result = runner.invoke(app, ["run", str(bad), "--store", str(tmp_path / "x.db")])
    assert result.exit_code == 2
    line = _error_line(result)
    assert "variants.bn_after_relu.bn_momentum" in line and "1.5" in line
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(TINY.replace("epochs = 2", "epoch = 2"))
    result = runner.invoke(app, ["run", str(unknown), "--store", str(tmp_path / "y.db")])
    assert result.exit_code == 2
    assert "epoch" in _error_line(result)


def test_executor_options_are_checked_in_one_line(tiny, tmp_path):
    _folder, spec, _store, _ = tiny
    db = str(tmp_path / "e.db")
    result = runner.invoke(app, ["run", str(spec), "--store", db, "--address", "auto"])
    assert result.exit_code == 2
    assert _error_line(result) == (
        "error: address: 'auto' is an option of --executor ray, not of 'local'"
    )
    result = runner.invoke(app, ["run", str(spec), "--store", db, "--executor", "dask"])
    assert result.exit_code == 2
    assert _error_line(result).startswith("error: executor: 'dask' is not available")


def test_unexpected_errors_keep_their_traceback(tiny, monkeypatch):
    """Only bnlab's own errors are turned into one line; a bug stays visible."""
    import bnlab.report

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(bnlab.report, "render_html", broken)
    _folder, _spec, store, _ = tiny
    result = runner.invoke(app, ["report", str(store)])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_demo_plumbing(tmp_path, monkeypatch):
    """`bnlab demo` = run the built-in demo, print the summary, write the report, say where.

    The demo study itself takes about a minute; here the study runner is pointed at the tiny
    spec so the command's own work (temporary store, summary, report, last line) is tested.
    """
    import bnlab.study as study

    real_run = study.run
    asked = []
    small = tmp_path / "small.toml"
    small.write_text(TINY.replace("seeds = 2", "seeds = 1").replace("epochs = 2", "epochs = 1"))

    def tiny_run(spec, *args, **kwargs):
        asked.append(spec)
        return real_run(small, *args, **kwargs)

    monkeypatch.setattr(study, "run", tiny_run)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert asked == ["demo"]
    report = tmp_path / "report.html"
    assert report.is_file() and "bn_before_relu" in report.read_text()
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"Report: {report.resolve()}")
    assert not list(tmp_path.rglob("*.db"))  # the default store is temporary


def test_broken_doctor_never_breaks_other_commands(tmp_path, monkeypatch):
    (tmp_path / "broken_doctor_cmd.py").write_text("raise ImportError('numpy too old')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lazy = {
        "doctor": LazyCommand("doctor", "broken_doctor_cmd", "Diagnose."),
        "fix": LazyCommand("fix", "broken_doctor_cmd", "Fix."),
    }
    monkeypatch.setattr(BnlabGroup, "_lazy", lazy)
    assert runner.invoke(app, ["list", "presets"]).exit_code == 0
    assert runner.invoke(app, ["--help"]).exit_code == 0
    result = runner.invoke(app, ["doctor", "model.keras", "--data", "digits"])
    assert result.exit_code == 2
    assert "bnlab doctor is unavailable: ImportError: numpy too old" in _error_line(result)


def test_doctor_and_fix_are_registered():
    for command in ("doctor", "fix"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "unavailable" not in result.stdout
        assert "--data" in result.stdout


def test_report_with_doctor_findings(tiny):
    folder, _spec, store, _ = tiny
    findings = folder / "findings.json"
    findings.write_text(
        json.dumps(
            {
                "healthy": False,
                "findings": [
                    {
                        "id": "torch-momentum-looks-like-keras",
                        "severity": "warning",
                        "layer": "net.1",
                        "message": "momentum 0.99 in torch convention keeps 1 % of the past",
                        "evidence": {"momentum": 0.99},
                        "fix": "use momentum=0.01",
                        "confirmed": None,
                    }
                ],
            }
        )
    )
    out = folder / "with_doctor.html"
    result = runner.invoke(app, ["report", str(store), "-o", str(out), "--doctor", str(findings)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert 'id="doctor"' in text and "torch-momentum-looks-like-keras" in text
    findings.write_text("{not json")
    result = runner.invoke(app, ["report", str(store), "-o", str(out), "--doctor", str(findings)])
    assert result.exit_code == 2
    assert "is not JSON" in _error_line(result)
