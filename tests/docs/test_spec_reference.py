"""docs/spec.md is the text ``python -m bnlab.study.reference`` generates from the spec models."""

from __future__ import annotations

from pathlib import Path

from bnlab.study import reference
from bnlab.study.spec import DataSpec, ModelSpec, StudySpec, TrainSpec

REPO = Path(__file__).resolve().parents[2]


def test_committed_reference_is_the_generated_one():
    committed = (REPO / reference.DEFAULT_PATH).read_text(encoding="utf-8")
    assert committed == reference.generate(), (
        "docs/spec.md is out of date: run python -m bnlab.study.reference"
    )


def test_every_field_of_every_table_is_listed():
    text = reference.generate()
    for model in (StudySpec, ModelSpec, DataSpec, TrainSpec):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, name


def test_override_column_asks_the_loader():
    # a variant may change any [train] key and the dataset, never the preset or the data hint
    assert reference.variant_may_set("train", "epochs")
    assert reference.variant_may_set("train", "lr")
    assert reference.variant_may_set("data", "name")
    assert not reference.variant_may_set("model", "preset")
    assert not reference.variant_may_set("data", "hint")


def test_check_mode_detects_a_stale_file(tmp_path):
    stale = tmp_path / "spec.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert reference.main(["--check", "-o", str(stale)]) == 1
    assert reference.main(["-o", str(stale)]) == 0
    assert reference.main(["--check", "-o", str(stale)]) == 0
