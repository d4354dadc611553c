"""The terminal summary (``bnlab run`` / ``bnlab demo``): the exact-statistics numbers where
``precise_eval`` ran, and no column cut at 80 columns.

Expected numbers are recomputed from the same synthetic frames (report_synthetic).
"""

from __future__ import annotations

import io
import math

import pytest
from report_synthetic import VARIANTS, make_frames
from rich.console import Console

from bnlab.report import StudyData
from bnlab.report.terminal import render
from bnlab.study.spec import load_spec

SPEC = load_spec("demo").to_dict()


def _printed(data: StudyData, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(render(data, width=width))
    return out.getvalue()


def _exact_text(data: StudyData, variant: str) -> str:
    exact = data.runs[data.runs["variant"] == variant]["final_precise_val_accuracy"].to_numpy()
    half = 2.776445105 * exact.std(ddof=1) / math.sqrt(len(exact))  # t(0.975, 4)
    return f"{exact.mean() * 100:.1f} ± {half * 100:.1f}"


@pytest.mark.parametrize("width", [80, 100, 125])
def test_exact_statistics_shown_and_no_column_cut(width):
    epochs, runs = make_frames(precise=True, diverged=None)
    data = StudyData.from_frames(epochs, runs, spec=SPEC, versions={"bnlab": "0.1.0"})
    text = _printed(data, width)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    words = " ".join(text.split())  # captions wrap at the width
    for variant in VARIANTS:
        assert _exact_text(data, variant) in text, (width, variant)
    assert "epochs to" in text  # the last column survives every width
    if width < 110:
        assert "best-epoch accuracy: in the HTML report" in words  # dropped, and said so
    else:
        assert "exact BN %" in text and "best acc." in text


def test_no_exact_numbers_without_precise_eval():
    epochs, runs = make_frames(precise=False, diverged=None)
    data = StudyData.from_frames(epochs, runs, spec=SPEC, versions={"bnlab": "0.1.0"})
    text = _printed(data, 125)
    assert "exact BN" not in text
