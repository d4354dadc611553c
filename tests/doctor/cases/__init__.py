"""Labelled models for the BN doctor: each case must produce some finding ids and must not produce others.

A case builds a small model (trained for a few steps on digits or circles, in memory),
the data to diagnose it on and the ``diagnose`` keyword arguments. ``expect`` lists ids the
doctor must report, ``forbid`` ids it must not; a *healthy* case forbids every id except
those in ``allow`` (remarks such as wasted biases) and requires ``Diagnosis.healthy``.

Precision and recall are counted over (case, id) labels: a true positive is an expected id
reported, a false negative an expected id missed, a false positive a forbidden id reported.

This package is loaded by file path (see :func:`load`), by the tests and by
``benchmarks/doctor_cases.py``.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any


@dataclass
class Setup:
    model: Any
    data: Any
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    framework: str  # "torch" or "keras"
    builder: Callable[[], Setup]
    expect: frozenset[str]
    forbid_ids: frozenset[str]
    healthy: bool
    allow: frozenset[str]
    description: str

    @property
    def forbid(self) -> frozenset[str]:
        if not self.healthy:
            return self.forbid_ids
        from bnlab.doctor import FINDING_IDS

        return frozenset(FINDING_IDS) - self.expect - self.allow

    def setup(self) -> Setup:
        return _cached_setup(self.name)


CASES: dict[str, Case] = {}


def case(name, framework, *, expect=(), forbid=(), healthy=False, allow=()):
    """Register a builder as a labelled case."""

    def register(fn: Callable[[], Setup]) -> Callable[[], Setup]:
        CASES[name] = Case(
            name, framework, fn, frozenset(expect), frozenset(forbid), healthy, frozenset(allow),
            " ".join((fn.__doc__ or "").split()),
        )  # fmt: skip
        return fn

    return register


@cache
def _cached_setup(name: str) -> Setup:
    return CASES[name].builder()


@dataclass
class CaseResult:
    name: str
    framework: str
    produced: set[str]
    tp: int
    fp: int
    fn: int
    healthy_ok: bool
    seconds: float
    cpu_seconds: float
    diagnosis: Any

    @property
    def passed(self) -> bool:
        return self.fp == 0 and self.fn == 0 and self.healthy_ok


def run_case(c: Case) -> CaseResult:
    from bnlab.doctor import diagnose

    start, cpu = time.perf_counter(), time.process_time()
    s = c.setup()
    diag = diagnose(s.model, s.data, **s.kwargs)
    produced = diag.ids
    return CaseResult(
        name=c.name,
        framework=c.framework,
        produced=produced,
        tp=len(c.expect & produced),
        fp=len(c.forbid & produced),
        fn=len(c.expect - produced),
        healthy_ok=diag.healthy if c.healthy else True,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu,
        diagnosis=diag,
    )


def score(results: list[CaseResult]) -> dict:
    tp = sum(r.tp for r in results)
    fp = sum(r.fp for r in results)
    fn = sum(r.fn for r in results)
    return {
        "cases": len(results),
        "torch": sum(r.framework == "torch" for r in results),
        "keras": sum(r.framework == "keras" for r in results),
        "healthy": sum(CASES[r.name].healthy for r in results),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "failures": [
            {
                "case": r.name,
                "missing": sorted(CASES[r.name].expect - r.produced),
                "unexpected": sorted(CASES[r.name].forbid & r.produced),
                "healthy_ok": r.healthy_ok,
            }
            for r in results
            if not r.passed
        ],
    }


def keras_available() -> bool:
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        return False
    return keras.backend.backend() == "torch"


def selected(frameworks: tuple[str, ...] | None = None) -> list[Case]:
    """Every case whose framework is usable here (Keras cases need Keras on torch)."""
    if frameworks is None:
        frameworks = ("torch", "keras") if keras_available() else ("torch",)
    return [c for c in CASES.values() if c.framework in frameworks]


from . import keras_cases, torch_cases, trap_cases  # noqa: E402,F401  (registration side effect)


def load(name: str = "bnlab_doctor_cases"):
    """Import this package by file path under ``name`` (it is not on sys.path)."""
    if name in sys.modules:
        return sys.modules[name]
    here = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location(
        name, here / "__init__.py", submodule_search_locations=[str(here)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
