"""Seed 004: where to put BatchNormalization in the two-circles MLP -- measured over seeds.

The seed (a Keras tutorial) trains ``circles_mlp`` once per placement and prints one
train/test accuracy each: no BN 0.838/0.846, BN after the ReLU 0.846/0.848, BN before the
ReLU 0.826/0.830, then concludes that BN "is more effective after" the activation. This
script repeats each variant over many seeds with the seed's exact setting -- make_circles(1000,
noise=0.1, random_state=1) split 500/500, SGD(lr=0.01, momentum=0.9), batch 32, 100 epochs --
and reports each mean with a 95 % t-interval (scipy), so single-run noise can be told apart
from an effect.

"test" is the final inference-mode accuracy on the 500 test points (the seed's
``model.evaluate(testX)``); "train" the final inference-mode accuracy on the training set
(its ``model.evaluate(trainX)``, bnlab's ``train_eval_accuracy``).

    python benchmarks/seed004_placement.py --seeds 20 --epochs 100 --json-out seed004.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch
from scipy import stats

from bnlab.data import load
from bnlab.models import build
from bnlab.train import fit, seeded

VARIANTS = {
    "no_bn": {"norm": "none"},
    "bn_after_relu": {"norm": "batch", "bn_position": "after_activation"},
    "bn_before_relu": {"norm": "batch", "bn_position": "before_activation"},
}
#: What the seed printed for its single run of each variant.
SEED_NUMBERS = {
    "no_bn": {"train": 0.838, "test": 0.846},
    "bn_after_relu": {"train": 0.846, "test": 0.848},
    "bn_before_relu": {"train": 0.826, "test": 0.830},
}


def t_interval(values: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and the two-sided Student-t confidence interval of the mean."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "sd": math.nan, "n": n}
    sd = statistics.stdev(values)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
    if sd == 0:
        low = high = mean
    return {"mean": mean, "low": float(low), "high": float(high), "sd": sd, "n": n}


def run(args: argparse.Namespace) -> dict:
    data = load("circles")
    runs = []
    for variant, options in VARIANTS.items():
        for seed in range(args.seeds):
            with seeded(seed):
                model = build("circles_mlp", **options)
            h = fit(
                model,
                data,
                epochs=args.epochs,
                batch_size=args.batch_size,
                optimizer="sgd",
                lr=args.lr,
                optimizer_options={"momentum": args.momentum},
                seed=seed,
                device=args.device,
                progress=False,
            )
            runs.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "test": h.last("val_accuracy"),
                    "train": h.last("train_eval_accuracy"),
                    "train_mode_accuracy": h.last("accuracy"),
                    "diverged_at_epoch": h.diverged_at_epoch,
                    "seconds": h.seconds,
                }
            )
            print(
                f"{variant:15s} seed {seed:2d}: test {runs[-1]['test']:.3f} "
                f"train {runs[-1]['train']:.3f} ({h.seconds:.1f} s)",
                file=sys.stderr,
            )
    summary = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {
            "test": t_interval([r["test"] for r in mine]),
            "train": t_interval([r["train"] for r in mine]),
            "seed_reported": SEED_NUMBERS[variant],
            "diverged": sum(r["diverged_at_epoch"] is not None for r in mine),
        }
    comparisons = {}
    for variant in ("bn_after_relu", "bn_before_relu"):
        ours = [r["test"] for r in runs if r["variant"] == variant]
        base = [r["test"] for r in runs if r["variant"] == "no_bn"]
        welch = stats.ttest_ind(ours, base, equal_var=False)
        comparisons[f"{variant} - no_bn"] = {
            "test_difference": statistics.fmean(ours) - statistics.fmean(base),
            "welch_t": float(welch.statistic),
            "p_value": float(welch.pvalue),
        }
    settings = {k: v for k, v in vars(args).items() if k != "json_out"}
    return {"settings": settings, "summary": summary, "comparisons": comparisons, "runs": runs}


def markdown(result: dict) -> str:
    rows = [
        "| variant | test acc. mean [95% CI] | seed's test | train acc. mean [95% CI] | seed's train |",
        "|---|---|---|---|---|",
    ]
    for variant, s in result["summary"].items():
        t, r, seed = s["test"], s["train"], s["seed_reported"]
        rows.append(
            f"| {variant} | {t['mean']:.3f} [{t['low']:.3f}, {t['high']:.3f}] | {seed['test']:.3f} "
            f"| {r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | {seed['train']:.3f} |"
        )
    n = result["settings"]["seeds"]
    rows.append(f"\n{n} seeds per variant; intervals are Student-t 95 % intervals of the mean.")
    for name, c in result["comparisons"].items():
        rows.append(
            f"- test accuracy {name}: {c['test_difference']:+.4f} "
            f"(Welch t = {c['welch_t']:.2f}, p = {c['p_value']:.2g})"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds per variant (0..N-1)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest for this 50-unit MLP: no thread hand-offs)",
    )
    parser.add_argument("--json-out", help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(args)
    result["seconds"] = time.perf_counter() - start
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    print()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
