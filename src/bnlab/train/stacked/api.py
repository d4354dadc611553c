"""The public entry points: :func:`fit_stacked` and :func:`iter_fit_stacked`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bnlab.errors import ConfigError
from bnlab.train.history import History
from bnlab.train.memory import estimate_memory, plan_chunks
from bnlab.train.seeding import check_seed
from bnlab.train.stacked.config import RunCallback, _prepare
from bnlab.train.stacked.loop import _train_stack
from bnlab.train.threads import training_threads


def fit_stacked(
    models: Sequence[nn.Module],
    dataset,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 32,
    optimizer: str = "adam",
    lr: float | Sequence[float | None] | None = None,
    device: str | torch.device = "cpu",
    class_weight: str | dict | None = None,
    precise_eval: bool = False,
    train_eval: bool = True,
    augment=None,
    progress: bool | None = None,
    on_epoch_end: RunCallback | None = None,
    optimizer_options: dict | None = None,
    loss_epsilon: float | None = None,
    precision: str = "float32",
    channels_last: bool | None = None,
    cuda_graphs: bool | None = None,
    dropout_rng: str | None = None,
    kernels: str | None = None,
    max_memory: int | None = None,
    chunk_size: int | None = None,
) -> list[History]:
    """Train ``models`` (one per run, same architecture) at once; one History per run.

    Every argument shared with :func:`bnlab.train.fit` means the same, per run; run ``i`` is
    ``fit(models[i], dataset, seed=seeds[i], lr=lr[i], ...)`` computed in a stack. The models
    are trained in place (their final weights and BN statistics are written back).

    Parameters beyond ``fit``'s
    ---------------------------
    seeds:
        One seed per run: its data order, dropout stream and augmentation stream (the
        initial weights are the models' own: build each inside ``bnlab.train.seeded(seed)``).
    lr:
        One learning rate for all runs, or one per run (``None`` = Keras's default).
    on_epoch_end:
        ``f(run_index, epoch, logs)`` after each epoch of each run still training.
    precision:
        ``"float32"`` (default; TF32 switched off, cuDNN's default included), ``"tf32"``
        (CUDA TF32 matmuls/convolutions) or ``"bf16"`` (autocast; BN statistics, parameters,
        optimizer and loss stay float32). The backend flags are restored afterwards.
    channels_last:
        Channels-last activations and conv weights (default: on CUDA, and on CPU where
        ``fit`` uses them: convolutional models on 4-D inputs, :mod:`bnlab.train.layout`).
    cuda_graphs:
        Capture the training step in a CUDA graph per batch size (default: on CUDA when
        ``dropout_rng="shared"`` and no augmentation); falls back to eager on failure.
    dropout_rng:
        ``"per_run"`` (CPU default: each run draws ``fit``'s masks) or ``"shared"``.
    kernels:
        ``"per_run"`` (CPU default): convolutions and dense layers run one call per run, the
        kernels ``fit`` runs, so each run's arithmetic is bit for bit its own (Adam with
        Keras's epsilon of 1e-7 turns a 1e-6 relative rounding difference in a near-zero
        gradient into a learning-rate-sized step, so kernels that sum in another order
        drift apart at the 1e-4 level within a few steps). ``"stacked"`` (CUDA default): one
        grouped convolution / batched matmul for the whole stack (same function, other
        rounding). ``"vmap"``: ``torch.func.vmap`` over the unmodified module
        (:class:`~bnlab.train.stacked.VmapModel`): any architecture, a user's own module
        included; runs must share BN momentum/epsilon and dropout rates.
    max_memory, chunk_size:
        Bytes the stack may use on the device (default: what is free) and an explicit upper
        bound on runs per stack; larger studies are trained in consecutive chunks
        (:func:`bnlab.train.memory.plan_chunks`).

    ``History.params`` holds ``fit``'s settings plus ``engine="stacked"``, ``stack_size`` and
    ``precision``; ``History.seconds`` is the run's share of its chunk's wall-clock time.
    """
    histories: dict[int, History] = {}
    for index, history in iter_fit_stacked(
        models,
        dataset,
        seeds=seeds,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        device=device,
        class_weight=class_weight,
        precise_eval=precise_eval,
        train_eval=train_eval,
        augment=augment,
        progress=progress,
        on_epoch_end=on_epoch_end,
        optimizer_options=optimizer_options,
        loss_epsilon=loss_epsilon,
        precision=precision,
        channels_last=channels_last,
        cuda_graphs=cuda_graphs,
        dropout_rng=dropout_rng,
        kernels=kernels,
        max_memory=max_memory,
        chunk_size=chunk_size,
    ):
        histories[index] = history
    return [histories[i] for i in range(len(models))]


def iter_fit_stacked(models: Sequence[nn.Module], dataset, *, seeds, **kw):
    """Like :func:`fit_stacked`, yielding ``(run_index, History)`` as each chunk finishes
    (diverged runs as soon as they are dropped)."""
    models = list(models)
    seeds = [check_seed(s) for s in seeds]
    if len(seeds) != len(models):
        raise ConfigError(f"seeds: {len(seeds)} seeds for {len(models)} models")
    if not models:
        return
    cfg, data, lrs = _prepare(models, dataset, seeds, **kw)
    input_shape = tuple(data.x_train.shape[1:])
    estimate = estimate_memory(models[0], optimizer=cfg.optimizer, input_shape=input_shape)
    sizes = plan_chunks(
        models[0],
        len(models),
        batch_size=cfg.batch_size,
        device=cfg.device,
        max_memory=kw.get("max_memory"),
        chunk_size=kw.get("chunk_size"),
        optimizer=cfg.optimizer,
        data_bytes=data.nbytes(),
        eval_rows=cfg.params["eval_batch_size"],
        estimate=estimate,
    )
    start = 0
    for size in sizes:
        idx = list(range(start, start + size))
        # A stack of K runs costs K runs' multiply-accumulates per step.
        macs = estimate.macs_per_sample * cfg.batch_size * size
        with training_threads(macs, cfg.device):
            yield from _train_stack(
                [models[i] for i in idx],
                [seeds[i] for i in idx],
                [lrs[i] for i in idx],
                idx,
                cfg,
                data,
            )
        start += size
