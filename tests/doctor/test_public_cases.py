"""benchmarks/doctor_public_cases.py: the doctor on cases from public BN bug reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "doctor_public_cases.py"


def _module():
    if "doctor_public_cases" in sys.modules:
        return sys.modules["doctor_public_cases"]
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("doctor_public_cases", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["doctor_public_cases"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def test_every_case_names_a_public_source_and_both_frameworks_are_covered():
    module = _module()
    cases = list(module.PUBLIC.values())
    assert len(cases) >= 15
    assert {c.framework for c in cases} == {"torch", "keras"}
    for c in cases:
        assert c.source.startswith("https://github.com/"), c.name  # the thread's address
        assert c.build.__doc__, c.name
        assert not c.expect & c.forbid, c.name


def test_precision_recall_and_time_per_model(capsys):
    module = _module()
    status = module.main([])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["failures"] == [] and status == 0
    assert out["precision"] == 1.0 and out["recall"] >= 0.9
    assert out["cases"] >= 15 and out["seconds_per_model_max"] < 10
    assert out["neuralint_published"] == {
        "precision": 1.0, "recall": 0.705, "source": "Nikanjam et al., 2021 (own set)",
    }  # fmt: skip
