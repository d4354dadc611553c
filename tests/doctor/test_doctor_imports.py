"""The doctor's modules import one another without cycles (types, adapters, findings, renderers)."""

from __future__ import annotations

import grimp
import pytest


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("bnlab", cache_dir=None)  # no cache folder in the tree


def _doctor_modules(graph) -> list[str]:
    return sorted(m for m in graph.modules if m == "bnlab.doctor" or m.startswith("bnlab.doctor."))


def test_no_import_cycle_among_doctor_modules(graph):
    modules = [m for m in _doctor_modules(graph) if m != "bnlab.doctor"]
    assert "bnlab.doctor.model_view" in modules and "bnlab.doctor.render" in modules
    cycles = [
        (a, b)
        for i, a in enumerate(modules)
        for b in modules[i + 1 :]
        if graph.chain_exists(a, b) and graph.chain_exists(b, a)
    ]
    assert cycles == []


def test_types_and_findings_import_no_implementation(graph):
    # the pure types and the findings data sit at the bottom of the doctor
    for low in ("bnlab.doctor.model_view", "bnlab.doctor.findings"):
        reached = {m for m in _doctor_modules(graph) if m != low and graph.chain_exists(low, m)}
        assert reached == set(), (low, reached)
    assert not graph.chain_exists("bnlab.doctor.findings", "bnlab.doctor.render")
    assert graph.chain_exists("bnlab.doctor.render", "bnlab.doctor.findings")
