"""Synthetic study frames that follow the ``bnlab.study.load`` / ``load_runs`` contract.

Used to test the report's layout and arithmetic independently of training.
Values come from a seeded generator, so every number a test derives from them is
recomputed by the test itself, never hard-coded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VARIANTS = ("no_bn", "bn_m099", "bn_m080")


def make_frames(
    *,
    variants=VARIANTS,
    seeds: int = 5,
    epochs: int = 8,
    precise: bool = False,
    diverged: tuple[str, int, int] | None = ("bn_m080", 3, 4),
    failed: tuple[str, int] | None = None,
    validation: bool = False,
    rng_seed: int = 0,
    regularized: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs_df, runs_df) for a study ``demo``; ``diverged`` = (variant, seed, epoch);
    ``regularized`` names the variant whose loss carries a regularizer term of 0.1."""
    rng = np.random.default_rng(rng_seed)
    rows, runs = [], []
    run_id = 0
    for vi, variant in enumerate(variants):
        for seed in range(seeds):
            run_id += 1
            status, div_at, error = "finished", None, None
            if diverged and diverged[:2] == (variant, seed):
                status, div_at = "diverged", diverged[2]
            if failed and failed == (variant, seed):
                status, error = "failed", "RuntimeError: out of memory"
            last = epochs if status == "finished" else (div_at or 0)
            ceiling = 0.80 + 0.05 * vi
            for epoch in range(1, last + 1):
                progress = 1 - np.exp(-epoch / 2.5)
                acc = min(ceiling * progress + rng.normal(0, 0.01), 1.0)
                val = min(acc - 0.03 + rng.normal(0, 0.015), 1.0)
                gap = 0.25 * (vi == 1) * np.exp(-epoch / 6)
                row = {
                    "study": "demo",
                    "run_id": f"r{run_id}",
                    "variant": variant,
                    "seed": seed,
                    "status": status,
                    "diverged_at_epoch": div_at,
                    "epoch": epoch,
                    "loss": 2.0 * (1 - progress) + 0.1 * (variant == regularized),
                    "data_loss": 2.0 * (1 - progress),
                    "reg_loss": 0.1 * (variant == regularized),
                    "accuracy": acc,
                    "val_loss": 2.1 * (1 - progress) + 0.2,
                    "val_accuracy": val,
                    "train_eval_loss": 2.0 * (1 - progress),
                    "train_eval_accuracy": acc - gap,
                }
                if status == "diverged" and epoch == last:
                    row.update(loss=np.nan, data_loss=np.nan, val_loss=np.nan, val_accuracy=0.1)
                if precise:
                    row["precise_val_accuracy"] = val + 0.01
                    row["precise_train_eval_accuracy"] = acc - 0.01
                if validation:
                    row["test_loss"] = row["val_loss"] + 0.05
                    row["test_accuracy"] = val - 0.01
                rows.append(row)
            runs.append(
                {
                    "study": "demo",
                    "run_id": f"r{run_id}",
                    "variant": variant,
                    "seed": seed,
                    "status": status,
                    "diverged_at_epoch": div_at,
                    "error": error,
                    "seconds": 1.5 + rng.uniform(0, 1),
                }
            )
    epochs_df = pd.DataFrame(rows)
    runs_df = pd.DataFrame(runs)
    metrics = [
        c
        for c in epochs_df.columns
        if c not in ("study", "run_id", "variant", "seed", "status", "diverged_at_epoch", "epoch")
    ]
    last = epochs_df.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")
    for m in metrics:
        runs_df[f"final_{m}"] = runs_df["run_id"].map(last[m])
    best = epochs_df.loc[epochs_df.groupby("run_id")["val_accuracy"].idxmax()].set_index("run_id")
    runs_df["best_val_accuracy"] = runs_df["run_id"].map(best["val_accuracy"])
    runs_df["best_epoch"] = runs_df["run_id"].map(best["epoch"])
    reached = epochs_df[epochs_df["val_accuracy"] >= 0.7].groupby("run_id")["epoch"].min()
    runs_df["epochs_to_target"] = runs_df["run_id"].map(reached)
    runs_df["train_eval_gap"] = runs_df["final_accuracy"] - runs_df["final_train_eval_accuracy"]
    return epochs_df, runs_df
