"""Fixtures of the doctor's tests: the labelled cases, built and diagnosed once per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

CASES_DIR = Path(__file__).resolve().parent / "cases"


def load_cases():
    """The ``cases`` package, imported by file path (tests/ is not a package)."""
    name = "bnlab_doctor_cases"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, CASES_DIR / "__init__.py", submodule_search_locations=[str(CASES_DIR)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def cases():
    return load_cases()


@pytest.fixture(scope="session")
def case_results(cases):
    """``{name: CaseResult}`` for every case usable here (Keras ones need Keras on torch)."""
    return {c.name: cases.run_case(c) for c in cases.selected()}
