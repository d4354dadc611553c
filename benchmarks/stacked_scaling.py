"""Throughput of the stacked engine against the stack size K, next to one-by-one training.

For each K (default 1, 4, 16, 64, 256) the script builds K models of one preset (default the
seed-002 network ``fashion_cnn`` with BN) and times ``--steps`` training steps of the stack
(the stacked engine's own step: forward, per-run loss, backward, stacked Keras Adam) after
``--warmup`` untimed steps. The baseline is ``bnlab.train.fit``'s step (``train_step`` with
Keras Adam) on one model, the unit the sequential engine repeats. Training steps only:
evaluation, which the study also runs every epoch, is not timed here.

Reported per K: ``run_steps_per_s`` (training steps of one run per second, all runs of the
stack together) and ``runs_per_s``: full seed-002 runs per second, i.e. run-steps per second
divided by the steps of one run (``--run-steps``, default 1600 = 100 epochs x 16 batches of
64 out of 1000 images), an extrapolation from the timed steps. ``speedup`` is the stack's
run-steps per second over the sequential baseline's.

Prints one JSON line; writes the curve to ``--out`` (PNG, matplotlib Agg). Run from the
repository root::

    python benchmarks/stacked_scaling.py                      # fashion_cnn, CPU: ~2-4 min
    python benchmarks/stacked_scaling.py --preset circles_mlp --batch-size 32 --no-plot
    python benchmarks/stacked_scaling.py --device cuda --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(
    os.environ.get("BNLAB_DATA")
    or os.environ.get("BNLAB_SHARED_DATA")
    or REPO.parent / "shared" / "data"
)
#: Data each preset is timed on (the study that uses it).
PRESET_DATA = {
    "fashion_cnn": (
        "fashion_mnist",
        {
            "scale": "raw",
            "train_range": [0, 1000],
            "test_from": "train",
            "test_range": [1000, 2000],
        },
    ),
    "circles_mlp": ("circles", {}),
    "digits_cnn": ("digits", {}),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(n: int, batch: int, k: int, count: int, device) -> list[torch.Tensor]:
    """``count`` index batches ``(batch, k)``: run j's samples in column j (own order)."""
    from bnlab.train.batching import permutation

    out = []
    for step in range(count):
        epoch, offset = divmod(step * batch, n - batch + 1)
        cols = [permutation(n, seed, epoch + 1)[offset : offset + batch] for seed in range(k)]
        out.append(torch.stack(cols, 1).to(device))
    return out


def time_stacked(models, dataset, k: int, args, device) -> tuple[float, float]:
    """Seconds per step of a stack of ``k`` runs, and the batch size used."""
    from bnlab.train.stacked import _prepare, _Stack

    cfg, data, lrs = _prepare(
        models,
        dataset,
        list(range(k)),
        epochs=1,
        batch_size=args.batch_size,
        optimizer="adam",
        device=device,
        kernels=args.kernels,
        progress=False,
    )
    stack = _Stack(models, list(range(k)), lrs, cfg, data)
    stack.model.train()
    n = data.x_train.shape[0]
    batches = _batches(n, args.batch_size, k, args.warmup + args.steps, device)
    for idx in batches[: args.warmup]:
        stack.run_step(idx)
    _sync(device)
    start = time.perf_counter()
    for idx in batches[args.warmup :]:
        stack.run_step(idx)
    _sync(device)
    return (time.perf_counter() - start) / args.steps


def time_sequential(model, dataset, args, device) -> float:
    """Seconds per step of ``fit``'s training step on one model."""
    from bnlab.train.layout import to_layout, wants_channels_last
    from bnlab.train.optimizers import make_optimizer
    from bnlab.train.step import train_step

    model = model.to(device).train()
    x, y = dataset.x_train.to(device), dataset.y_train.to(device)
    # fit's memory layout for this model and device (channels-last for a CNN on CPU)
    nhwc = wants_channels_last(None, model, x, torch.device(device))
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    x = to_layout(x, nhwc)
    opt = make_optimizer("adam", model.parameters())
    batches = _batches(x.shape[0], args.batch_size, 1, args.warmup + args.steps, device)
    for idx in batches[: args.warmup]:
        train_step(model, opt, x[idx[:, 0]], y[idx[:, 0]])
    _sync(device)
    start = time.perf_counter()
    for idx in batches[args.warmup :]:
        train_step(model, opt, x[idx[:, 0]], y[idx[:, 0]])
    _sync(device)
    return (time.perf_counter() - start) / args.steps


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [row["k"] for row in result["stacked"]]
    runs = [row["runs_per_s"] for row in result["stacked"]]
    seq = result["sequential"]["runs_per_s"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(ks, runs, "o-", label="stacked engine (K runs as one model)")
    ax.axhline(seq, color="grey", linestyle="--", label="sequential (fit, one run at a time)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(
        xlabel="runs in the stack (K)",
        ylabel=f"runs per second ({result['run_steps']} training steps each)",
        title=(
            f"{result['preset']} (norm={result['norm']}), batch {result['batch_size']}, "
            f"{result['device']}, {result['threads']} threads"
        ),
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion_cnn", choices=sorted(PRESET_DATA))
    parser.add_argument("--norm", default="batch", help="the preset's norm option (default batch)")
    parser.add_argument("--ks", default="1,4,16,64,256", help="stack sizes (default 1,4,16,64,256)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 64, or 32 for MLP/digits"
    )
    parser.add_argument("--steps", type=int, default=6, help="timed steps per K (default 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument(
        "--run-steps", type=int, default=1600, help="steps of one run (default 1600)"
    )
    parser.add_argument(
        "--kernels", default=None, help="per_run or stacked (default: the engine's)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "stacked_scaling.png")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 64 if args.preset == "fashion_cnn" else 32
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("BNLAB_NO_PROGRESS", "1")
    ks = [int(k) for k in args.ks.split(",")]

    from bnlab.data import load
    from bnlab.models import build
    from bnlab.train import seeded
    from bnlab.train.memory import estimate_memory

    device = torch.device(args.device)
    name, options = PRESET_DATA[args.preset]
    if name == "fashion_mnist":
        options = {**options, "data_dir": str(args.data_dir)}
    dataset = load(name, **options)

    def models(k: int):
        out = []
        for seed in range(k):
            with seeded(seed):
                out.append(build(args.preset, norm=args.norm))
        return out

    macs = estimate_memory(models(1)[0]).macs_per_sample
    t0 = time.perf_counter()
    seq_step = time_sequential(models(1)[0], dataset, args, device)
    rows = []
    for k in ks:
        step = time_stacked(models(k), dataset, k, args, device)
        run_steps = k / step
        rows.append(
            {
                "k": k,
                "step_ms": round(1e3 * step, 3),
                "run_steps_per_s": round(run_steps, 2),
                "runs_per_s": round(run_steps / args.run_steps, 5),
                "speedup": round(run_steps * seq_step, 3),
            }
        )
        print(f"[stacked_scaling] K={k}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    result = {
        "benchmark": "stacked_scaling",
        "preset": args.preset,
        "norm": args.norm,
        "batch_size": args.batch_size,
        "macs_per_step": macs * args.batch_size,
        "kernels": args.kernels or ("stacked" if device.type == "cuda" else "per_run"),
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "steps": args.steps,
        "run_steps": args.run_steps,
        "sequential": {
            "step_ms": round(1e3 * seq_step, 3),
            "run_steps_per_s": round(1 / seq_step, 2),
            "runs_per_s": round(1 / seq_step / args.run_steps, 5),
        },
        "stacked": rows,
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    if not args.no_plot:
        plot(result, args.out)
        result["plot"] = str(args.out)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
