"""The epoch loop of one chunk of runs, top to bottom like ``fit``'s."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator

import torch

from bnlab.train.history import History
from bnlab.train.progress import EpochProgress
from bnlab.train.stacked.config import _Config, _Data
from bnlab.train.stacked.stack import _Stack


@contextlib.contextmanager
def _precision(cfg: _Config) -> Iterator[None]:
    """The CUDA backend flags a stack trains under, restored afterwards.

    TF32 matmuls and convolutions on for ``precision="tf32"`` and off otherwise (cuDNN's
    default is TF32 convolutions, which ``"float32"`` must not run); on CUDA,
    ``cudnn.benchmark`` (every step has one of two fixed shapes, so autotuning pays).
    """
    # The matmul flag is a view of the float32 matmul precision: save the precision itself
    # ("medium" would not survive a round trip through the flag).
    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    tf32 = cfg.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if cfg.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        matmul, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved
        torch.set_float32_matmul_precision(matmul)


def _train_stack(models, seeds, lrs, indices, cfg: _Config, data: _Data):
    """Train one chunk; yield ``(run_index, History)`` per run as it ends."""
    start = time.perf_counter()
    histories = {
        i: History(params={**cfg.params, "lr": lr, "seed": s, "stack_size": len(models)})
        for i, s, lr in zip(indices, seeds, lrs, strict=True)
    }
    alive = list(indices)  # run index of each position in the stack
    stack = _Stack(models, seeds, lrs, cfg, data)
    label = f"stacked x{len(models)}"
    with _precision(cfg), EpochProgress(cfg.progress, cfg.epochs, label) as bar:
        for epoch in range(1, cfg.epochs + 1):
            stack.train_epoch(epoch)
            logs = stack.epoch_logs()
            dropped = []
            for pos, (run, entry) in enumerate(zip(alive, logs, strict=True)):
                h = histories[run]
                if not all(math.isfinite(entry.get(k, math.nan)) for k in ("loss", "val_loss")):
                    h.diverged_at_epoch = epoch
                    dropped.append(pos)
                h.append(epoch, entry)
                if cfg.on_epoch_end is not None:
                    cfg.on_epoch_end(run, epoch, dict(entry))
            bar.update(epoch, _mean_logs(logs))
            if dropped:
                keep = [p for p in range(len(alive)) if p not in dropped]
                stack.finish()
                elapsed = time.perf_counter() - start
                for pos in dropped:
                    histories[alive[pos]].seconds = elapsed / len(models)
                    yield alive[pos], histories[alive[pos]]
                if not keep:
                    return
                stack = stack.restack(keep)
                alive = [alive[p] for p in keep]
    stack.finish()
    elapsed = time.perf_counter() - start
    for run in alive:
        histories[run].seconds = elapsed / len(models)
        yield run, histories[run]


def _mean_logs(logs: list[dict]) -> dict[str, float]:
    keys = ("loss", "accuracy", "val_accuracy", "train_eval_accuracy")
    out = {}
    for key in keys:
        values = [e[key] for e in logs if key in e]
        if values:
            out[key] = sum(values) / len(values)
    return out
