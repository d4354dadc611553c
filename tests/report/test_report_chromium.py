"""The report in a real browser: headless Chromium loads it, decodes every image, logs no error.

Skipped (with the reason printed) when no Chromium is installed; CI installs Debian's
``chromium``. The screenshot is kept as a test artifact: ``artifacts/report.png`` at the
repository root, or ``$BNLAB_ARTIFACTS/report.png``.
"""

from __future__ import annotations

import pytest
from report_chromium import artifacts_dir, find_chromium, probe, screenshot
from report_synthetic import make_frames

from bnlab.report import StudyData, render_html

SPEC = {
    "name": "demo",
    "question": "Does BN with Keras's default momentum 0.99 hurt a small CNN on raw pixels?",
    "model": {"preset": "digits_cnn"},
    "data": {"name": "digits", "scale": "raw"},
    "epochs": 8,
    "batch_size": 32,
    "seeds": 5,
    "target_accuracy": 0.7,
    "variants": {"no_bn": {"norm": "none"}, "bn_m099": {}, "bn_m080": {"bn_momentum": 0.8}},
}
FINDINGS = [
    {
        "id": "stale-running-stats",
        "severity": "error",
        "layer": "features.2",
        "message": "Training images score 0.99 in train mode but 0.44 in inference mode.",
        "evidence": {
            "train_mode_accuracy": 0.99,
            "inference_accuracy": 0.44,
            "after_recalibration": 0.985,
        },
        "fix": "bnlab fix MODEL --data DATA -o FIXED, or lower the BN momentum to 0.9",
        "confirmed": True,
    }
]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        print("SKIP reason: no Chromium found (apt-get install chromium, or set BNLAB_CHROMIUM)")
        pytest.skip("no Chromium found (apt-get install chromium, or set BNLAB_CHROMIUM)")
    return path


def test_report_loads_in_chromium(chromium, tmp_path):
    epochs, runs = make_frames(precise=True, failed=("no_bn", 2))
    data = StudyData.from_frames(epochs, runs, spec=SPEC, versions={"bnlab": "0.1.0"})
    page = render_html(data, tmp_path / "report.html", diagnoses=FINDINGS)
    seen = probe(chromium, page)
    assert seen["title"] == "bnlab report: demo"
    assert len(seen["images"]) == 3
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert seen["errors"] == []
    assert "CONSOLE" not in seen["stderr"]
    shot = screenshot(chromium, page, artifacts_dir() / "report.png", height=seen["height"])
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_probe_detects_a_broken_image(chromium, tmp_path):
    """Control: the same probe reports an undecodable image and a console error."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>t</title></head><body>"
        '<img src="data:image/png;base64,AAAA"><script>console.error("boom")</script>'
        "</body></html>"
    )
    seen = probe(chromium, page)
    assert seen["images"][0]["width"] == 0
    assert "boom" in seen["errors"]


@pytest.mark.parametrize("width", [390, 1400])
def test_report_reads_on_a_phone_and_a_desktop(chromium, tmp_path, width):
    """At 390 px every figure is its narrow drawing and nothing overflows the page sideways
    (wide tables scroll inside their box, with the hint shown); at 1400 px the wide drawings
    and no hint. Screenshots: ``report_390.png`` and ``report_1400.png`` in the artifacts."""
    epochs, runs = make_frames(precise=True, failed=("no_bn", 2))
    data = StudyData.from_frames(epochs, runs, spec=SPEC, versions={"bnlab": "0.1.0"})
    page = render_html(data, tmp_path / "report.html", diagnoses=FINDINGS)
    seen = probe(chromium, page, width=width)
    assert seen["errors"] == []
    assert len(seen["images"]) == 3
    # headless Chromium keeps its window at least 500 px wide; the page is laid out at that
    # width, still under the 640 px phone breakpoint
    narrow = seen["viewport"] <= 640
    assert narrow == (width == 390), seen["viewport"]
    assert seen["page_width"] <= seen["viewport"]  # nothing pushes the page sideways
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0, image
        assert image["narrow"] == narrow, image
        assert image["shown"] <= seen["viewport"], image
    for table in seen["tables"]:
        if table["scrolls"]:
            assert table["hint"] == ("block" if narrow else "none"), table
    if narrow:
        assert any(t["scrolls"] for t in seen["tables"])  # the summary table does scroll
    shot = screenshot(
        chromium, page, artifacts_dir() / f"report_{width}.png", width=width, height=seen["height"]
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
