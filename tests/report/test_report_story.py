"""What the report says in words and numbers: the exact-statistics column, the answer sentence,
bounded bands, the gap shading, effective options and the doctor's provenance.

Expected numbers are recomputed here from the same synthetic frames (report_synthetic), never
hard-coded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import to_hex
from report_synthetic import VARIANTS, make_frames

from bnlab.report import StudyData, html, plots, render_html, story
from bnlab.report.summary import rows_from_summary
from bnlab.study.spec import load_spec
from bnlab.study.stats import t_interval

SPEC = load_spec("demo").to_dict()


def _study(**kw) -> StudyData:
    epochs, runs = make_frames(**kw)
    return StudyData.from_frames(epochs, runs, spec=SPEC, versions={"bnlab": "0.1.0"})


PAYLOAD = {
    "healthy": True,
    "model_info": {"model": "net.keras", "data": "digits", "data_options": {"scale": "unit"}},
    "findings": [],
}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """One rendered report (drawing its figures is the slow part): precise curves, a store
    that no longer exists, and a doctor payload."""
    data = _study(precise=True, diverged=None)
    folder = tmp_path_factory.mktemp("story")
    data.store = str(folder / "gone.db")  # a temporary store already deleted
    text = render_html(data, folder / "r.html", diagnoses=PAYLOAD).read_text(encoding="utf-8")
    return data, text


def test_exact_statistics_column_matches_hand_computation(page):
    data, text = page
    assert "with exact BN statistics" in text and "exact − inference" in text
    for variant in VARIANTS:
        part = data.runs[data.runs["variant"] == variant]
        exact = part["final_precise_val_accuracy"].to_numpy()
        gap = exact - part["final_val_accuracy"].to_numpy()
        n = len(exact)
        mean = exact.mean()
        half = 2.776445105 * exact.std(ddof=1) / math.sqrt(n)  # t(0.975, 4)
        assert f"{mean * 100:.1f} ± {half * 100:.1f} %" in text, variant
        gap_half = 2.776445105 * gap.std(ddof=1) / math.sqrt(n)
        assert f"{gap.mean() * 100:+.1f} pts ± {gap_half * 100:.1f}" in text, variant


def test_no_exact_column_without_precise_eval():
    data = _study(precise=False)
    rows = rows_from_summary(data.summary, data.runs)
    table = html.summary_table(rows, {}, set_name="test", target=0.9, baseline="no_bn")
    assert "with exact BN statistics" not in table and "final test acc." in table


def test_answer_sentence_from_the_statistics():
    data = _study(diverged=None)
    rows = rows_from_summary(data.summary, data.runs)
    sentence = story.answer(rows, "no_bn", "test")
    for r in rows:
        if r.is_baseline:
            continue
        if r.p_holm < 0.05:
            word = "better" if r.diff > 0 else "worse"
            assert f"{r.variant}: {abs(r.diff) * 100:.1f} points {word}" in sentence
        else:
            assert f"{r.variant}: no effect ({r.diff * 100:+.1f} points" in sentence
    assert sentence.endswith("(mean over seeds, Welch's t-test, Holm-adjusted).")
    assert "against no_bn in final test accuracy" in sentence


def test_exact_sentence_names_what_the_moving_averages_cost():
    data = _study(precise=True, diverged=None)
    epochs, runs = data.epochs.copy(), data.runs.copy()
    lost = runs["variant"] == "bn_m099"
    runs.loc[lost, "final_precise_val_accuracy"] += 0.2  # exact statistics recover 20 points
    rows = rows_from_summary(StudyData.from_frames(epochs, runs, spec=SPEC).summary, runs)
    sentences = story.exact_statistics_sentences(rows)
    (mine,) = [s for s in sentences if s.startswith("With exact BN statistics bn_m099")]
    exact = runs.loc[lost, "final_precise_val_accuracy"].mean()
    assert f"scores {exact * 100:.1f} %" in mine
    gap = (
        runs.loc[lost, "final_precise_val_accuracy"] - runs.loc[lost, "final_val_accuracy"]
    ).mean()
    assert f"cost {gap * 100:.1f} points." in mine


def test_accuracy_bands_stay_in_bounds_and_loss_goes_log():
    epochs, _ = make_frames(diverged=None)
    rng = np.random.default_rng(1)
    # very noisy accuracies near 1 and losses spanning two decades
    epochs["val_accuracy"] = np.clip(0.97 + rng.normal(0, 0.05, len(epochs)), 0, 1)
    epochs["val_loss"] = 10.0 ** (-epochs["epoch"] / 4) * 10
    assert plots.band_leaves_bounds(epochs, "val_accuracy")  # the t-interval crosses 100 %
    colors = plots.variant_colors(list(VARIANTS), "no_bn")
    fig = plots.validation_curves(epochs, list(VARIANTS), colors)
    ax_acc, ax_loss = fig.axes[:2]
    for poly in ax_acc.collections:
        ys = np.concatenate([p.vertices[:, 1] for p in poly.get_paths()])
        assert ys.max() <= 100.0 + 1e-9 and ys.min() >= -1e-9
    for poly in ax_loss.collections:
        ys = np.concatenate([p.vertices[:, 1] for p in poly.get_paths()])
        assert ys.min() >= 0.0
    assert ax_loss.get_yscale() == "log"
    flat, _ = make_frames(diverged=None)
    fig = plots.validation_curves(flat, list(VARIANTS), colors)
    assert fig.axes[1].get_yscale() == "linear"  # 2.1 * (1 - progress) + 0.2 spans < 10x


def test_gap_shaded_by_sign():
    epochs, _ = make_frames(diverged=None)
    # no_bn: inference ahead of train mode; bn_m099: train mode ahead (the synthetic gap)
    mask = epochs["variant"] == "no_bn"
    epochs.loc[mask, "train_eval_accuracy"] = epochs.loc[mask, "accuracy"] + 0.05
    colors = plots.variant_colors(list(VARIANTS), "no_bn")
    fig = plots.train_mode_curves(epochs, list(VARIANTS), colors)

    def shaded(ax, color):
        return [
            c
            for c in ax.collections
            if len(c.get_paths()) and to_hex(c.get_facecolor()[0][:3]) == color.lower()
        ]

    no_bn, bn_m099 = fig.axes[0], fig.axes[1]
    assert shaded(no_bn, plots.GAP_INFER_AHEAD) and not shaded(bn_m099, plots.GAP_INFER_AHEAD)
    assert shaded(bn_m099, plots.GAP_TRAIN_AHEAD)


def test_coinciding_exact_curves_get_distinct_staggered_markers():
    epochs, _ = make_frames(precise=True, diverged=None)
    same = epochs[epochs["variant"] == "bn_m080"].set_index(["seed", "epoch"])
    mask = epochs["variant"] == "bn_m099"
    epochs.loc[mask, "precise_val_accuracy"] = (
        epochs[mask].set_index(["seed", "epoch"]).index.map(same["precise_val_accuracy"]).to_numpy()
    )
    colors = plots.variant_colors(list(VARIANTS), "no_bn")
    fig = plots.validation_curves(epochs, list(VARIANTS), colors)
    dashed = [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert len({line.get_marker() for line in dashed}) == len(dashed)
    starts = {line.get_markevery()[0] for line in dashed[1:]}
    assert len(starts) == 2  # neighbours mark different epochs


def test_setup_shows_effective_options_and_no_vanished_store(page):
    _, text = page
    setup = text[text.index('id="setup"') :]
    assert "0.001 (adam&#x27;s default)" in setup
    assert "gone.db" not in setup
    variants = setup[setup.index("Variants (effective") :]
    # bn_m099 keeps the preset's momentum: shown although the spec does not name it
    row = variants[variants.index("bn_m099</td>") :].split("</tr>")[0]
    assert "<td>0.99</td>" in row and "<td>0.001</td>" in row and "after_activation" in row
    row = variants[variants.index("no_bn</td>") :].split("</tr>")[0]
    assert "– (no BN)" in row


def test_doctor_section_names_model_and_data_and_warns():
    findings = [
        {
            "id": "momentum-too-high-for-steps",
            "severity": "warning",
            "message": "m",
            "evidence": {"weight": 0.723456789, "per_layer": [0.1234567] * 20, "steps": 33},
            "fix": "f",
        }
    ]
    study_data = {"name": "digits", "scale": "raw"}
    same = html.doctor(
        findings,
        {"model": "week9.keras", "data": "digits", "data_options": {"scale": "raw"}},
        study_data,
    )
    assert "week9.keras" in same and "Not the study" not in same
    assert "weight = 0.723;" in same and "steps = 33" in same
    assert "… (20 values, from 0.123 to 0.123)" in same
    assert '"' not in same.split("Evidence:")[1].split("</div>")[0]  # no JSON quoting
    other = html.doctor(findings, {"model": "m.keras", "data": "mnist"}, study_data)
    assert "Not the study's data" in other and "&#x27;mnist&#x27;" in other
    unknown = html.doctor(findings, {}, study_data)
    assert "do not say which model file and data" in unknown


def test_render_html_reads_the_doctor_payload(page):
    _, text = page
    doctor = text[text.index('id="doctor"') : text.index('id="setup"')]
    assert "net.keras" in doctor and "scale = unit here, &#x27;raw&#x27;" not in doctor
    assert "scale = unit here, raw in the study" in doctor


@pytest.mark.parametrize(
    "value,shown",
    [(0.000123456, "0.000123"), (1234.5678, "1.23e+03"), (3, "3"), ({"a": 0.5}, "{a: 0.5}")],
)
def test_readable_numbers(value, shown):
    assert html.readable(value) == shown


def test_t_interval_is_the_column_arithmetic():
    mean, low, high = t_interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and (high - low) / 2 == pytest.approx(
        4.302652730 * 0.1 / math.sqrt(3)
    )
