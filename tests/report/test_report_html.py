"""The HTML report: self-contained, the right numbers, every section, escaped text.

Built from synthetic frames that follow the ``bnlab.study.load`` contract, so the
expected numbers are recomputed here by hand formulas from the same frames.
"""

from __future__ import annotations

import base64
import math
import re
import struct

import numpy as np
import pytest
from report_synthetic import VARIANTS, make_frames

from bnlab.report import StudyData, html, render_html
from bnlab.report.curves import band, t_halfwidth

# t quantile for 2 degrees of freedom in closed form: F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
T975_DF2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))
# Two-sided 95 % Student-t quantiles from the printed tables, by degrees of freedom.
T975 = {3: 3.182446305, 4: 2.776445105}

SPEC = {
    "name": "demo",
    "question": "Does BN with momentum 0.99 hurt a small CNN on raw pixels?",
    "model": {"preset": "digits_cnn"},
    "data": {"name": "digits", "scale": "raw"},
    "epochs": 8,
    "seeds": 5,
    "target_accuracy": 0.7,
    "variants": {"no_bn": {"norm": "none"}, "bn_m099": {}, "bn_m080": {"bn_momentum": 0.8}},
}


def _study(**kw) -> StudyData:
    epochs, runs = make_frames(**kw)
    return StudyData.from_frames(epochs, runs, spec=SPEC, versions={"bnlab": "0.1.0", "torch": "x"})


def _imgs(text: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', text)


def _png_size(uri: str) -> tuple[int, int]:
    head = "data:image/png;base64,"
    assert uri.startswith(head)
    png = base64.b64decode(uri[len(head) :], validate=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    return width, height


FINDINGS = [
    {
        "id": "stale-running-stats",
        "severity": "error",
        "layer": "features.2",
        "message": "inference accuracy 0.44 <script>alert(1)</script>",
        "evidence": {"train_mode_accuracy": 0.99, "inference_accuracy": 0.44},
        "fix": "bnlab fix model.keras --data digits -o fixed.keras",
        "confirmed": True,
    },
    {
        "id": "bias-before-bn",
        "severity": "info",
        "layer": "conv1",
        "message": "wasted",
        "evidence": {},
        "fix": "use_bias=False",
    },
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    data = _study(precise=True, failed=("no_bn", 2))
    out = render_html(
        data, tmp_path_factory.mktemp("r") / "sub" / "report.html", diagnoses=FINDINGS
    )
    return data, out.read_text(encoding="utf-8")


def test_self_contained_with_decodable_figures(report):
    _, text = report
    assert text.startswith("<!DOCTYPE html>")
    # no external resource of any kind: no links, scripts, remote URLs or relative sources
    assert not re.search(r"<(link|script|iframe)\b", text, re.I)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", text, re.I)
    assert "url(" not in text
    images = _imgs(text)
    assert len(images) == 3  # held-out curves, train vs inference mode, final distribution
    for uri in images:
        width, height = _png_size(uri)
        assert width > 300 and height > 200


def test_summary_numbers_match_hand_computation(report):
    data, text = report
    runs = data.runs[data.runs["status"] == "finished"]
    for variant in VARIANTS:
        x = runs.loc[runs["variant"] == variant, "final_val_accuracy"].to_numpy()
        n = len(x)
        mean = x.sum() / n
        sd = math.sqrt(((x - mean) ** 2).sum() / (n - 1))
        half = T975[n - 1] * sd / math.sqrt(n)
        assert f"{mean * 100:.1f} ± {half * 100:.1f} %" in text, variant
    # 5 runs per variant, one failed (no_bn) and one diverged (bn_m080): "4 of 5"
    assert text.count(">4 of 5<") == 2


def test_verdicts_question_and_sections(report):
    data, text = report
    assert SPEC["question"] in text
    for verdict in data.summary["verdict"]:
        assert verdict.replace("'", "&#x27;") in text
    for anchor in ("verdict", "summary", "curves", "distribution", "problems", "doctor", "setup"):
        assert f'id="{anchor}"' in text
    assert "bn_momentum" in text and "digits_cnn" in text  # the spec is shown


def test_problem_runs_table(report):
    _, text = report
    section = text[text.index('id="problems"') : text.index('id="doctor"')]
    assert "diverged" in section and "failed" in section
    assert "RuntimeError: out of memory" in section
    assert "loss became NaN or infinite" in section
    assert "2 of 15 runs did not finish" in section
    assert "None: all 15 runs finished." in html.problem_runs([], total=15)


def test_names_the_held_out_set(report, tmp_path):
    _, on_test = report
    on_val = render_html(_study(validation=True), tmp_path / "b.html").read_text()
    assert "Accuracy and loss on the test set" in on_test
    assert "validation set" not in on_test.split('id="setup"')[0]
    assert "Accuracy and loss on the validation set" in on_val
    assert "final validation acc." in on_val


def test_doctor_section_escapes_text(report):
    _, text = report
    doctor = text[text.index('id="doctor"') : text.index('id="setup"')]
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doctor
    assert "stale-running-stats" in doctor and "bias-before-bn" in doctor
    assert "train_mode_accuracy = 0.99" in doctor
    assert doctor.count("confirmed by intervention") == 1
    assert "No BN problem found" in html.doctor([])


def test_band_against_hand_formula():
    import pandas as pd

    frame = pd.DataFrame(
        {
            "variant": ["a"] * 3 + ["b"] * 3 + ["a"],
            "epoch": [1, 1, 1, 1, 1, 1, 2],
            "acc": [0.5, 0.6, 0.7, 0.2, 0.2, np.nan, 0.9],
        }
    )
    out = band(frame, "acc").set_index(["variant", "epoch"])
    a1 = out.loc[("a", 1)]
    assert a1["n"] == 3 and a1["mean"] == pytest.approx(0.6)
    assert a1["half"] == pytest.approx(T975_DF2 * 0.1 / math.sqrt(3), rel=1e-9)
    b1 = out.loc[("b", 1)]  # the NaN is left out of the pool; zero spread -> zero width
    assert b1["n"] == 2 and b1["half"] == pytest.approx(0.0)
    assert math.isnan(out.loc[("a", 2)]["half"])  # one run: no interval
    assert list(band(frame, "absent").columns)[:2] == ["variant", "epoch"]
    assert t_halfwidth(np.array([1.0]), np.array([3]))[0] == pytest.approx(T975_DF2 / math.sqrt(3))


def test_precise_curves_are_drawn_dashed():
    from bnlab.report import plots

    epochs, _ = make_frames(precise=True, diverged=None)
    colors = plots.variant_colors(list(VARIANTS), "no_bn")
    fig = plots.validation_curves(epochs, list(VARIANTS), colors)
    acc_axis = fig.axes[0]
    styles = [line.get_linestyle() for line in acc_axis.lines]
    assert styles.count("-") == len(VARIANTS) and styles.count("--") == len(VARIANTS)
    plain, _ = make_frames(precise=False, diverged=None)
    fig = plots.validation_curves(plain, list(VARIANTS), colors)
    assert [line.get_linestyle() for line in fig.axes[0].lines].count("--") == 0


def test_regularizer_share_is_drawn_only_when_a_variant_has_one(tmp_path):
    from bnlab.report import plots

    epochs, _ = make_frames(regularized="bn_m080", diverged=None)
    share = epochs.assign(s=epochs["reg_loss"] / epochs["loss"])
    first = share[(share["variant"] == "bn_m080") & (share["epoch"] == 1)]["s"]
    progress = 1 - math.exp(-1 / 2.5)
    assert np.allclose(first, 0.1 / (2.0 * (1 - progress) + 0.1))  # the quantity plotted
    colors = plots.variant_colors(VARIANTS)
    assert plots.regularization_share(epochs, VARIANTS, colors) is not None
    plain, _ = make_frames(diverged=None)
    assert plots.regularization_share(plain, VARIANTS, colors) is None

    text = render_html(_study(regularized="bn_m080"), tmp_path / "r.html").read_text()
    assert len(_imgs(text)) == 4
    assert 'alt="regularizer share of the training loss per epoch"' in text


def test_variant_colours_are_stable():
    from bnlab.report.plots import PALETTE, variant_colors

    colors = variant_colors(["bn", "no_bn", "bn_m080"], baseline="no_bn")
    assert colors["no_bn"] == PALETTE[0]  # the baseline always gets the first colour
    assert colors == variant_colors(["bn", "no_bn", "bn_m080"], baseline="no_bn")
    many = variant_colors([f"v{i}" for i in range(12)])
    assert len(set(many.values())) == 12


def test_variant_without_finished_runs_and_single_seed(tmp_path):
    epochs, runs = make_frames(seeds=1, diverged=None)
    for frame in (epochs, runs):
        frame.loc[frame["variant"] == "bn_m080", "status"] = "diverged"
    data = StudyData.from_frames(epochs, runs, spec=SPEC)
    text = render_html(data, tmp_path / "edge.html").read_text()
    assert ">0 of 1<" in text  # bn_m080: its only run diverged
    assert len(_imgs(text)) == 3  # one seed: curves without bands, still drawn
    assert "1 of 3 runs did not finish" in text
    assert 'id="doctor"' not in text  # the section needs diagnoses
