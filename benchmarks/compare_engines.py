"""Do two stores of one study (one per engine) give the same summary statistics?

``bnlab run seed002 --engine stacked`` and ``--engine sequential`` should agree within the
runs' own spread. This script reads both stores with
:func:`bnlab.study.load_runs`, summarises each as the report does
(:func:`bnlab.study.stats.summarize`: mean, sd of the final test accuracy per variant, the
Welch p-value of each variant against the baseline) and compares them:

* per variant, the difference of the two engines' means against the runs' own spread (Welch's
  test between the engines' runs, and the difference in units of the standard error);
* per run (same variant and seed), the largest absolute difference of the final test
  accuracy (on CPU, with the same thread count, both engines train the same run bit for bit:
  0).

Prints one JSON line. ``agree`` is true when no variant's engine-vs-engine Welch p-value is
below 0.05. Run from the repository root::

    python benchmarks/compare_engines.py /tmp/s002_stacked.db /tmp/s002_sequential.db
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _summary(store: Path, baseline: str | None, target: float | None):
    from bnlab.study import load_runs
    from bnlab.study.stats import summarize

    runs = load_runs(store)
    table = summarize(runs, baseline=baseline, target=target)
    out = {}
    for row in table.to_dict("records"):
        out[row["variant"]] = {
            "n": int(row["n"]),
            "final_val_accuracy_mean": round(float(row["final_val_accuracy_mean"]), 4),
            "final_val_accuracy_sd": round(float(row["final_val_accuracy_std"]), 4),
            "epochs_to_target_mean": _num(row.get("epochs_to_target_mean")),
            "p_vs_baseline": _num(row.get("p"), 4),
            "verdict": row.get("verdict"),
        }
    return runs, out


def _num(value, digits: int = 2):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacked", type=Path, help="store written with --engine stacked")
    parser.add_argument("sequential", type=Path, help="store written with --engine sequential")
    parser.add_argument("--baseline", default="no_bn")
    parser.add_argument("--target", type=float, default=0.8)
    args = parser.parse_args(argv)

    from bnlab.study.stats import welch

    runs_a, sum_a = _summary(args.stacked, args.baseline, args.target)
    runs_b, sum_b = _summary(args.sequential, args.baseline, args.target)
    comparison, agree = {}, True
    for variant in sum_a:
        a = runs_a[(runs_a["variant"] == variant) & (runs_a["status"] == "finished")]
        b = runs_b[(runs_b["variant"] == variant) & (runs_b["status"] == "finished")]
        test = welch(a["final_val_accuracy"], b["final_val_accuracy"])
        pairs = a.merge(b, on="seed", suffixes=("_a", "_b"))
        per_run = (pairs["final_val_accuracy_a"] - pairs["final_val_accuracy_b"]).abs()
        se = math.sqrt(
            a["final_val_accuracy"].var(ddof=1) / len(a)
            + b["final_val_accuracy"].var(ddof=1) / len(b)
        )
        comparison[variant] = {
            "diff_of_means": round(test["diff"], 5),
            "diff_in_standard_errors": round(test["diff"] / se, 3) if se > 0 else 0.0,
            "welch_p": _num(test["p"], 4),
            "paired_runs": len(pairs),
            "max_abs_diff_per_run": round(float(per_run.max()), 5) if len(pairs) else None,
        }
        if test["p"] == test["p"] and test["p"] < 0.05:  # NaN (identical runs) agrees
            agree = False
    print(
        json.dumps(
            {
                "benchmark": "compare_engines",
                "stacked": {"store": str(args.stacked), "summary": sum_a},
                "sequential": {"store": str(args.sequential), "summary": sum_b},
                "stacked_vs_sequential": comparison,
                "agree": agree,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
