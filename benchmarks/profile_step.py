"""Where one training step of the seed-002 CNN spends its time, per operator (CPU).

Times ``--steps`` steps of ``bnlab.train.fit``'s own step (``train_step`` with Keras Adam, the
model and batches in ``fit``'s layout: channels-last on CPU) under ``torch.profiler``, for
``fashion_cnn`` without and with BN, and sets them against the floor of the arithmetic:

* one step's floating-point work: 2 x (forward multiply-accumulates) for the forward pass
  and twice that for the backward pass (input and weight gradients), i.e. 6 x MAC per
  sample; with 1000 training images per epoch that is about 18 GFLOP per epoch per model;
* ``peak_gflops``: what this machine reaches on a large float32 matmul (2048 x 2048) with
  the same thread count, in the same run, as a practical ceiling.

``achieved_gflops`` = step FLOPs / measured step time; ``fraction_of_peak`` = achieved /
peak; ``floor_step_ms`` = step FLOPs / peak. Prints one JSON line (top operators by self CPU
time, with their share). Every number carries the load average it was taken at::

    python benchmarks/profile_step.py --threads 1 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from busy import loadavg  # noqa: E402

DEFAULT_DATA = Path(
    os.environ.get("BNLAB_DATA")
    or os.environ.get("BNLAB_SHARED_DATA")
    or HERE.parent.parent / "shared" / "data"
)
TRAIN_ROWS = 1000  # seed 002: the first 1000 training images


def matmul_gflops(repeats: int = 5, n: int = 2048) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def profile(norm: str, args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from bnlab.data import load
    from bnlab.models import build
    from bnlab.train import seeded
    from bnlab.train.engines import estimate_memory
    from bnlab.train.layout import to_layout, wants_channels_last
    from bnlab.train.optimizers import make_optimizer
    from bnlab.train.step import train_step

    data = load(
        "fashion_mnist",
        scale="raw",
        train_range=[0, TRAIN_ROWS],
        test_from="train",
        test_range=[TRAIN_ROWS, 2 * TRAIN_ROWS],
        data_dir=str(args.data_dir),
    )
    with seeded(0):
        model = build("fashion_cnn", norm=norm)
    macs = estimate_memory(model).macs_per_sample
    model.train()
    x, y = data.x_train, data.y_train
    nhwc = wants_channels_last(None, model, x, torch.device("cpu"))
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    x = to_layout(x, nhwc)
    opt = make_optimizer("adam", model.parameters())
    g = torch.Generator().manual_seed(0)
    batches = [torch.randperm(TRAIN_ROWS, generator=g)[:64] for _ in range(args.steps + 3)]
    for idx in batches[:3]:
        train_step(model, opt, x[idx], y[idx])
    load_start = loadavg()
    start = time.perf_counter()
    for idx in batches[3:]:
        train_step(model, opt, x[idx], y[idx])
    step_s = (time.perf_counter() - start) / args.steps
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for idx in batches[3:]:
            train_step(model, opt, x[idx], y[idx])
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    step_flops = 6 * macs * 64
    return {
        "norm": norm,
        "channels_last": nhwc,
        "macs_per_sample": macs,
        "step_gflop": round(step_flops / 1e9, 3),
        "epoch_gflop_training": round(6 * macs * TRAIN_ROWS / 1e9, 2),
        "step_ms": round(1e3 * step_s, 3),
        "achieved_gflops": round(step_flops / step_s / 1e9, 2),
        "loadavg": [load_start, loadavg()],
        "top_ops_self_cpu": [
            {
                "op": e.key,
                "calls_per_step": round(e.count / args.steps, 1),
                "ms_per_step": round(e.self_cpu_time_total / 1e3 / args.steps, 3),
                "share": round(e.self_cpu_time_total / total, 3),
            }
            for e in top
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--top", type=int, default=12, help="operators listed (default 12)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = {
        "benchmark": "profile_step",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loadavg_start": loadavg(),
        "peak_gflops_matmul_2048": round(matmul_gflops(), 1),
    }
    for norm in ("none", "batch"):
        entry = profile(norm, args)
        entry["fraction_of_peak"] = round(
            entry["achieved_gflops"] / out["peak_gflops_matmul_2048"], 3
        )
        entry["floor_step_ms"] = round(
            entry["step_gflop"] / out["peak_gflops_matmul_2048"] * 1e3, 3
        )
        out["no_bn" if norm == "none" else "bn"] = entry
    out["peak_gflops_matmul_2048_end"] = round(matmul_gflops(), 1)
    out["loadavg_end"] = loadavg()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
