"""Exports (CSV, Parquet, JSON) round-trip the study tables; the terminal summary matches."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from report_synthetic import VARIANTS, make_frames
from rich.console import Console

from bnlab.errors import ConfigError
from bnlab.report import StudyData, export
from bnlab.report.terminal import print_summary


@pytest.fixture(scope="module")
def data() -> StudyData:
    epochs, runs = make_frames(precise=True, failed=("no_bn", 1))
    return StudyData.from_frames(epochs, runs, spec={"name": "demo", "target_accuracy": 0.7})


def test_csv_round_trip(data, tmp_path):
    paths = export(data, tmp_path / "out.csv", "csv")
    assert [p.name for p in paths] == ["out.csv", "out.runs.csv"]
    epochs = pd.read_csv(paths[0])
    runs = pd.read_csv(paths[1])
    assert len(epochs) == len(data.epochs) and list(epochs.columns) == list(data.epochs.columns)
    np.testing.assert_allclose(epochs["val_accuracy"], data.epochs["val_accuracy"])
    assert runs["final_val_accuracy"].isna().sum() == data.runs["final_val_accuracy"].isna().sum()
    assert set(runs["status"]) == {"finished", "failed", "diverged"}


def test_parquet_round_trip(data, tmp_path):
    pytest.importorskip("pyarrow")
    paths = export(data, tmp_path / "out", "parquet")
    assert [p.name for p in paths] == ["out.parquet", "out.runs.parquet"]
    back = pd.read_parquet(paths[0])
    pd.testing.assert_frame_equal(back, data.epochs.reset_index(drop=True), check_dtype=False)


def test_json_has_nulls_not_nan(data, tmp_path):
    (path,) = export(data, tmp_path / "out.json", "json")
    text = path.read_text()
    assert "NaN" not in text  # strict JSON
    payload = json.loads(text)
    assert payload["study"] == "demo" and payload["spec"]["target_accuracy"] == 0.7
    assert len(payload["epochs"]) == len(data.epochs)
    failed = [r for r in payload["runs"] if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["final_val_accuracy"] is None
    first = payload["epochs"][0]
    assert math.isclose(first["val_accuracy"], float(data.epochs["val_accuracy"].iloc[0]))


def test_unknown_format_names_the_parameter(data, tmp_path):
    with pytest.raises(ConfigError, match=r"format: 'xlsx' is not one of"):
        export(data, tmp_path / "x", "xlsx")


def test_terminal_summary_shows_every_variant_and_verdict(data):
    console = Console(record=True, width=200, color_system=None)
    print_summary(data, console=console)
    text = console.export_text()
    for variant in VARIANTS:
        assert variant in text
    for verdict in data.summary["verdict"]:
        assert verdict in text
    finished = data.runs[data.runs["status"] == "finished"]
    mean = finished.loc[finished["variant"] == "bn_m099", "final_val_accuracy"].mean()
    assert f"{mean * 100:.1f} ±" in text
    assert "4/5" in text  # no_bn: one failed run of five


def test_terminal_summary_fits_80_columns_without_breaking_numbers(data):
    console = Console(record=True, width=80, color_system=None)
    print_summary(data, console=console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    finished = data.runs[data.runs["status"] == "finished"]
    for variant in VARIANTS:
        x = finished.loc[finished["variant"] == variant, "final_val_accuracy"]
        assert f"{x.mean() * 100:.1f} ± " in text  # a number is never split across lines
        assert f"■ {variant}" in text
    assert "best acc." not in text  # the column left out at this width
