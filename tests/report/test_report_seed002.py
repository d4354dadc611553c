"""The built-in seed002 study: four variants (raw and unit pixels, with and without BN), and a
report that compares BN with no BN within each pixel scale, in words and with its numbers.

Tiny size on the real Fashion-MNIST (skipped when ../shared/data is absent): 2 seeds, 2
epochs, 256 training images.
"""

from __future__ import annotations

import html as htmllib

from bnlab.report import StudyData, effective, story
from bnlab.report.render import build_page
from bnlab.report.source import collect
from bnlab.report.summary import VariantRow, rows_from_summary
from bnlab.study import run
from bnlab.study.spec import load_spec


def test_seed002_has_the_raw_and_unit_pairs():
    variants = load_spec("seed002").expand()
    assert [(v.name, v.model_options["norm"], v.data_options["scale"]) for v in variants] == [
        ("no_bn", "none", "raw"),
        ("bn", "batch", "raw"),
        ("no_bn_unit", "none", "unit"),
        ("bn_unit", "batch", "unit"),
    ]


def test_seed002_report_compares_within_each_scale(shared_data, tmp_path):
    spec = load_spec("seed002").to_dict()
    spec["seeds"] = [0, 1]
    spec["train"]["epochs"] = 2
    spec["data"].update(train_range=[0, 256], test_range=[1000, 1256])
    store = tmp_path / "seed002.db"
    run(spec, store=store, data_dir=shared_data, progress=False)
    data: StudyData = collect(store)
    assert data.variants == ["no_bn", "bn", "no_bn_unit", "bn_unit"]
    text = htmllib.unescape(build_page(data))
    rows = {r.variant: r for r in rows_from_summary(data.summary, data.runs)}
    for scale, bn, plain in (("raw", "bn", "no_bn"), ("unit", "bn_unit", "no_bn_unit")):
        sentence = (
            f"With scale = {scale}: {bn} ends at {rows[bn].mean * 100:.1f} % against "
            f"{rows[plain].mean * 100:.1f} % for {plain}"
        )
        assert sentence in text
    raw_helps = rows["bn"].mean > rows["no_bn"].mean
    unit_helps = rows["bn_unit"].mean > rows["no_bn_unit"].mean
    reversal = "The data setting reverses what BN does in inference mode" in text
    assert reversal == (raw_helps != unit_helps)
    # the exact-statistics column is there for all four
    assert text.count("with exact BN statistics") >= 1
    assert all(rows[v].exact_n == 2 for v in rows)


def _row(variant, mean, exact=float("nan"), ett=float("nan")):
    return VariantRow(
        variant,
        variant == "no_bn",
        4,
        4,
        mean,
        0.01,
        exact_mean=exact,
        ett_mean=ett,
        ett_reached=0 if ett != ett else 4,
    )


def test_reversal_sentence_states_the_numbers():
    import pandas as pd

    rows = [
        _row("no_bn", 0.799),
        _row("bn", 0.825),
        _row("no_bn_unit", 0.806),
        _row("bn_unit", 0.373, exact=0.830),
    ]
    settings = {
        "no_bn": {"norm": "none", "data.scale": "raw"},
        "bn": {"norm": "batch", "data.scale": "raw"},
        "no_bn_unit": {"norm": "none", "data.scale": "unit"},
        "bn_unit": {"norm": "batch", "data.scale": "unit"},
    }
    sentences = story.pair_sentences(rows, settings, pd.DataFrame(), 0.8)
    assert sentences[0] == (
        "The data setting reverses what BN does in inference mode: with scale = raw BN helps "
        "(bn 82.5 % vs no_bn 79.9 %), with scale = unit it hurts (bn_unit 37.3 % vs "
        "no_bn_unit 80.6 %), although with exact BN statistics bn_unit scores 83.0 %."
    )
    same = {k: {**v, "data.scale": "raw"} for k, v in settings.items()}
    assert story.pair_sentences(rows, same, pd.DataFrame(), 0.8) == []  # one data setting


def test_effective_settings_fill_in_the_scale_default():
    spec = load_spec("demo").to_dict()
    del spec["data"]["scale"]
    settings = effective.variant_settings(spec)
    assert settings["bn_m099"]["data.scale"] == "raw (default)"
