"""The doctor shows progress on large data (plain lines off a terminal) and fits 80 columns."""

from __future__ import annotations

import torch
from rich.console import Console
from torch import nn

from bnlab.doctor import Diagnosis, Finding, diagnose


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_plain_progress_lines_on_large_data_unless_disabled(monkeypatch, capsys):
    x, y = torch.randn(12_000, 4), torch.randint(0, 3, (12_000,))
    monkeypatch.delenv("BNLAB_NO_PROGRESS", raising=False)
    diagnose(_model(), (x, y), batch_size=1000)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("doctor:")]
    assert 1 <= len(lines) <= 2 * 4  # at most four lines per pass
    assert "pass 1" in lines[0] and lines[-1].split(": ")[-1].startswith("12000/12000 samples")
    monkeypatch.setenv("BNLAB_NO_PROGRESS", "1")
    diagnose(_model(), (x, y), batch_size=1000)
    assert "doctor:" not in capsys.readouterr().err
    monkeypatch.delenv("BNLAB_NO_PROGRESS")
    diagnose(_model(), (x[:500], y[:500]))  # small data: finished before anyone waits
    assert "doctor:" not in capsys.readouterr().err


def test_findings_read_at_80_columns():
    long = "a sentence of evidence " * 8
    diag = Diagnosis(
        findings=[
            Finding(
                id="stale-running-stats",
                severity="error",
                message=long,
                fix="recalibrate " * 10,
                confirmed=True,
            ),
            Finding(
                id="bias-before-bn", severity="info", layer="features.0.conv", message="m", fix="f"
            ),
        ],  # fmt: skip
        model_info={"framework": "torch", "bn_layers": 2},
        passes=2,
    )
    console = Console(record=True, width=80)
    console.print(diag)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "x error  stale-running-stats  (confirmed by intervention)" in text
    assert "i info  bias-before-bn  at features.0.conv" in text
    # message and fix keep their indent on every wrapped line, and no word is cut
    body = [line for line in lines if "sentence" in line]
    assert len(body) >= 2 and all(line.startswith("  ") for line in body)
    assert text.count("sentence") == 8
