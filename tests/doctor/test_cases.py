"""The doctor's precision and recall over the labelled cases are both 1.0.

The same numbers are printed by ``python benchmarks/doctor_cases.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _case_names() -> list[str]:
    # Collection-time import of the cases package (the `cases` fixture shares the module).
    name = "bnlab_doctor_cases"
    if name not in sys.modules:
        here = Path(__file__).resolve().parent / "cases"
        spec = importlib.util.spec_from_file_location(
            name, here / "__init__.py", submodule_search_locations=[str(here)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sorted(sys.modules[name].CASES)


def test_the_case_set_is_big_enough_and_covers_both_frameworks(cases):
    every = list(cases.CASES.values())
    assert len(every) >= 20
    assert sum(c.healthy for c in every) >= 6
    assert {c.framework for c in every} == {"torch", "keras"}
    from bnlab.doctor import FINDING_IDS

    # every check id is expected by at least one case (so recall covers all of them)
    expected = set().union(*(c.expect for c in every))
    assert expected == set(FINDING_IDS)


def test_precision_and_recall_are_one(cases, case_results):
    score = cases.score(list(case_results.values()))
    assert score["failures"] == []
    assert score["precision"] == 1.0
    assert score["recall"] == 1.0
    assert score["tp"] >= 25


@pytest.mark.parametrize("name", _case_names())
def test_case(name, cases, case_results):
    if name not in case_results:
        pytest.skip("Keras (torch backend) is not installed")
    c, r = cases.CASES[name], case_results[name]
    assert c.expect <= r.produced, f"missing {sorted(c.expect - r.produced)}"
    assert not (c.forbid & r.produced), f"unexpected {sorted(c.forbid & r.produced)}"
    if c.healthy:
        assert r.diagnosis.healthy
    assert r.diagnosis.passes <= 2
