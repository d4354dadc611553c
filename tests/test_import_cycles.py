"""The architecture holds: no import cycle between the modules of a bnlab package, the
layers contract of pyproject.toml is kept, and no module grows past 500 lines."""

from __future__ import annotations

from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

SRC = Path(__file__).resolve().parents[1] / "src" / "bnlab"


@pytest.fixture(scope="module")
def graph():
    # Imports under ``if TYPE_CHECKING:`` never run, so they cannot form a cycle.
    return grimp.build_graph("bnlab", exclude_type_checking_imports=True)


def cycles_within(graph, package: str) -> list[list[str]]:
    """Strongly connected components of more than one module among ``package``'s modules
    (Tarjan), each an import cycle."""
    nodes = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {
        m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in nodes)
        for m in nodes
    }
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    g = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        g.add_module(m)
    g.add_import(importer="p.a", imported="p.b")
    g.add_import(importer="p.b", imported="p.a")
    g.add_import(importer="p.c", imported="p.a")
    assert cycles_within(g, "p") == [["p.a", "p.b"]]


@pytest.mark.parametrize("package", ["bnlab.train", "bnlab.nn", "bnlab.models", "bnlab.study"])
def test_no_import_cycle_inside(graph, package):
    # A package's __init__ re-exporting its modules is not a cycle worth the name, but a
    # module importing a sibling that imports it back is.
    cycles = [c for c in cycles_within(graph, package) if package not in c]
    assert not cycles, cycles


def test_no_import_cycle_inside_the_doctor(graph):
    cycles = [c for c in cycles_within(graph, "bnlab.doctor") if "bnlab.doctor" not in c]
    assert not cycles, cycles


def test_layers_contract_is_kept():
    import os
    import shutil
    import subprocess

    command = shutil.which("lint-imports")
    if command is None:
        pytest.skip("import-linter is not installed (pip install 'bnlab[dev]')")
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    done = subprocess.run(
        [command, "--no-cache"], cwd=SRC.parents[1], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "0 broken" in done.stdout


def test_no_module_over_500_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long
