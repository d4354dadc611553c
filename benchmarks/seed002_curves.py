"""Seed 002: does BN make the Fashion-MNIST CNN converge in fewer epochs? Logged curves.

The seed trains ``fashion_cnn`` with and without BN on the first 1000 Fashion-MNIST
training images (raw 0-255 pixels), validates on the next 1000, Adam, batch 64, 100 epochs,
plots the accuracy curves and concludes that "the batch normalisation model converges in
far fewer epochs" and ends "marginally better". This script runs the same two trainings
with bnlab on the real data, writes the curves (PNG) and every per-epoch metric (JSON) into
``--out-dir``, and reports the first epoch at which each run reaches 80 % test accuracy.

    python benchmarks/seed002_curves.py --data-dir ../shared/data --out-dir seed002

With ``--precise-eval`` the BN run also records its accuracy with exact BN statistics
(recomputed on the training set each epoch), drawn dashed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from bnlab.data import load
from bnlab.models import build
from bnlab.train import fit, seeded

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("BNLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
VARIANTS = {"no_bn": {"norm": "none"}, "bn": {"norm": "batch"}}


def first_epoch_at(values: list[float], target: float) -> int | None:
    """1-based epoch of the first value >= target, or None."""
    return next((i + 1 for i, v in enumerate(values) if v >= target), None)


def plot(histories: dict[str, dict], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"no_bn": "tab:blue", "bn": "tab:orange"}
    for name, h in histories.items():
        epochs = range(1, len(h["val_accuracy"]) + 1)
        c = colors[name]
        ax_acc.plot(epochs, h["accuracy"], color=c, alpha=0.45, label=f"train ({name})")
        ax_acc.plot(epochs, h["val_accuracy"], color=c, label=f"test ({name})")
        if "precise_val_accuracy" in h and name == "bn":
            ax_acc.plot(
                epochs,
                h["precise_val_accuracy"],
                color=c,
                linestyle="--",
                label="test, exact BN statistics (bn)",
            )
        ax_loss.plot(epochs, h["val_loss"], color=c, label=f"test loss ({name})")
        ax_loss.plot(epochs, h["loss"], color=c, alpha=0.45, label=f"train loss ({name})")
    ax_acc.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Fashion-MNIST 1000/1000, Adam, batch 64")
    ax_acc.set_ylim(0, 1.0)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (nats)", yscale="log", title="loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.80)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precise-eval", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data = load(
        "fashion_mnist",
        data_dir=str(args.data_dir),
        train_range=[0, 1000],
        test_from="train",
        test_range=[1000, 2000],
    )
    histories, result = {}, {"settings": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    for name, options in VARIANTS.items():
        with seeded(args.seed):
            model = build("fashion_cnn", **options)
        h = fit(
            model,
            data,
            epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer="adam",
            seed=args.seed,
            device=args.device,
            precise_eval=args.precise_eval and name == "bn",
        )
        histories[name] = h.history
        first = first_epoch_at(h.history["val_accuracy"], args.target)
        result["runs"][name] = {
            "first_epoch_at_target": first,
            "final_val_accuracy": h.last("val_accuracy"),
            "best_val_accuracy": max(h.history["val_accuracy"]),
            "final_train_accuracy": h.last("accuracy"),
            "diverged_at_epoch": h.diverged_at_epoch,
            "seconds": h.seconds,
            "val_accuracy": h.history["val_accuracy"],
            "history": h.history,
        }
        if "precise_val_accuracy" in h.history:
            result["runs"][name]["first_epoch_at_target_precise"] = first_epoch_at(
                h.history["precise_val_accuracy"], args.target
            )
        print(
            f"{name}: first epoch with test accuracy >= {args.target:.0%}: {first}; "
            f"final {h.last('val_accuracy'):.3f}, best {max(h.history['val_accuracy']):.3f} "
            f"({h.seconds:.0f} s)"
        )
    plot(histories, args.out_dir / "seed002_curves.png", args.target)
    with open(args.out_dir / "seed002_curves.json", "w") as f:
        json.dump(result, f, indent=1, allow_nan=True)
    print(f"wrote {args.out_dir / 'seed002_curves.png'} and {args.out_dir / 'seed002_curves.json'}")
    summary = {
        n: {k: v for k, v in r.items() if k not in ("history", "val_accuracy")}
        for n, r in result["runs"].items()
    }
    print(json.dumps(summary, indent=2, default=lambda v: None if math.isnan(v) else v))
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"total {time.perf_counter() - start:.0f} s")
    raise SystemExit(code)
