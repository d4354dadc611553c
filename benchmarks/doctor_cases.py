"""Precision and recall of the BN doctor over the labelled cases in tests/doctor/cases/.

Each case is a small model (PyTorch or Keras 3, trained a few steps on digits/circles in
memory) labelled with the finding ids the doctor must and must not report. Prints one JSON
line: case counts, true/false positives, false negatives, precision, recall, seconds and the
failing cases. Run from the repository root::

    python benchmarks/doctor_cases.py            # every case (Keras ones when Keras is installed)
    python benchmarks/doctor_cases.py --framework torch --verbose
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
CASES_DIR = Path(__file__).resolve().parents[1] / "tests" / "doctor" / "cases"


def load_cases():
    import importlib.util

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["torch", "keras"], action="append")
    parser.add_argument("--verbose", action="store_true", help="one line per case on stderr")
    args = parser.parse_args(argv)
    cases = load_cases()
    start, cpu = time.perf_counter(), time.process_time()
    results = []
    for c in cases.selected(tuple(args.framework) if args.framework else None):
        r = cases.run_case(c)
        results.append(r)
        if args.verbose:
            mark = "ok  " if r.passed else "FAIL"
            print(
                f"{mark} {r.name:40s} {r.seconds:6.2f}s wall {r.cpu_seconds:6.2f}s cpu "
                f"{sorted(r.produced)}",
                file=sys.stderr,
            )
    out = cases.score(results)
    out["seconds"] = round(time.perf_counter() - start, 2)
    out["cpu_seconds"] = round(time.process_time() - cpu, 2)
    print(json.dumps(out))
    return 0 if out["precision"] == 1.0 and out["recall"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
