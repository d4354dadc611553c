"""What a run costs before it is trained: device memory, multiply-accumulates, stack chunks,
and the ``auto`` rule that decides whether stacking pays.

It imports nothing of :mod:`bnlab.train`: the thread policy, the stacked engine and the study's
engines (:mod:`bnlab.study.engines`) all read it.

Memory
------
:func:`estimate_memory` predicts, before anything is stacked, what one run of a stack costs
on the device: parameters, their gradients (the flat buffer plus autograd's transient copy),
the optimizer's slots and BN buffers, plus activations per training sample and per evaluated
sample, from a dry inference pass on a 2-sample batch (:func:`bnlab.nn.probe.dry_run`).
:func:`plan_chunks` turns ``max_memory`` (default: the device's free memory, or half the free
RAM on CPU) into chunk sizes: a study of ``K`` runs is trained as consecutive stacks that each fit.

The ``auto`` rule
-----------------
On CUDA, stacking pays whenever a group has two runs or more (the work is launch-bound). On
CPU the work is compute-bound unless the model is small: a stack then saves Python, autograd
and optimizer overhead per step, while for a network whose step is dominated by its
convolutions (seed 002's CNN at batch 64) the stack runs the same per-run kernels and saves
nothing (measured in ``benchmarks/RESULTS.md``). :func:`prefers_stacked` encodes the
measured crossover as a bound on multiply-accumulates per training step per run
(:data:`CPU_STACKED_MAX_MACS_PER_STEP`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from bnlab._validation import check_number
from bnlab.errors import ConfigError
from bnlab.nn.probe import dry_run

#: On CPU, stack a group when one run's training step costs at most this many
#: multiply-accumulates (forward, per step = per sample x batch size). Measured on 2 cores,
#: 2 threads, channels-last on both sides, with ``benchmarks/stacked_scaling.py`` (training
#: steps per run per second, a stack of 16 over one ``fit`` step at a time;
#: benchmarks/RESULTS.md): circles_mlp (4.8 k MAC/step) 8.7x, digits_cnn (2.7 M) 2.0x,
#: fashion_cnn at batch 4 (12 M) 2.0x, at batch 16 (48 M) 1.3x, at batch 64 (190 M, seed
#: 002) 0.73x. Break-even near 90 M; the bound sits below it.
CPU_STACKED_MAX_MACS_PER_STEP = 60_000_000

#: Optimizer state slots per parameter (Keras's optimizers, default options).
_SLOTS = {"adam": 2, "sgd": 1, "rmsprop": 1}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one run of a stack needs on the device (float32 unless stated).

    ``static``: parameters, flat gradient, autograd's transient gradient, optimizer slots and
    buffers; ``train_per_sample``: activations kept for the backward pass per training sample
    (3x the sum of every layer's output: the saved activation, its gradient, and the float32
    or expanded copies a stacked layer makes); ``eval_per_sample``: the two largest layer
    outputs per evaluated sample. ``macs_per_sample``: forward multiply-accumulates of
    convolutions and dense layers per sample.
    """

    static: int
    train_per_sample: int
    eval_per_sample: int
    macs_per_sample: int
    parameters: int

    def per_run(self, batch_size: int, eval_rows: int) -> int:
        """Peak bytes of one run in a stack (training step or evaluation chunk)."""
        return self.static + max(
            batch_size * self.train_per_sample, eval_rows * self.eval_per_sample
        )


def estimate_memory(
    model: nn.Module, *, optimizer: str = "adam", input_shape: tuple[int, ...] | None = None
) -> MemoryEstimate:
    """Predict one run's device memory from ``model`` without training it.

    ``input_shape`` (per sample) defaults to ``model.bnlab_meta["input_shape"]``.
    """
    if input_shape is None:
        meta = getattr(model, "bnlab_meta", None) or {}
        if "input_shape" not in meta:
            raise ConfigError(
                "input_shape: not given and the model has no bnlab_meta['input_shape']"
            )
        input_shape = tuple(meta["input_shape"])
    outputs: list[int] = []
    macs = 0

    def hook(name, module, inputs, output):
        nonlocal macs
        per_sample = output[0].numel()
        outputs.append(per_sample)
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += per_sample * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else None
    dry_run(model, torch.zeros((2, *input_shape), device=device, dtype=dtype), hook)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    slots = _SLOTS.get(optimizer, 2)
    static = 4 * params + 4 * trainable * (2 + slots) + buffers
    top = sorted(outputs, reverse=True)[:2]
    return MemoryEstimate(
        static=static,
        train_per_sample=3 * 4 * sum(outputs) + 4 * math.prod(input_shape),
        eval_per_sample=4 * sum(top),
        macs_per_sample=macs,
        parameters=params,
    )


def available_memory(device: torch.device | str) -> int:
    """Bytes a stack may use by default: 90% of the free CUDA memory, half the free RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.9 * free)
    try:
        return int(0.5 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 4 GiB
        return 4 << 30


def plan_chunks(
    model: nn.Module,
    runs: int,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    max_memory: int | None = None,
    chunk_size: int | None = None,
    optimizer: str = "adam",
    data_bytes: int = 0,
    eval_rows: int = 1024,
    input_shape: tuple[int, ...] | None = None,
    estimate: MemoryEstimate | None = None,
) -> list[int]:
    """Sizes of the consecutive stacks that train ``runs`` runs of ``model`` within memory.

    ``max_memory`` bytes (default :func:`available_memory`) must hold the data
    (``data_bytes``, shared by the stack) plus ``k`` times one run's
    :meth:`MemoryEstimate.per_run`. The runs are split into the fewest chunks that fit, as
    equal as possible (e.g. 10 runs, 4 fit -> ``[4, 3, 3]``). ``chunk_size`` caps a chunk.
    ``estimate``: one run's :func:`estimate_memory`, when the caller has it already.
    """
    if runs < 1:
        return []
    if max_memory is None:
        max_memory = available_memory(device)
    else:
        check_number("max_memory", max_memory, low=1, integer=True)
    if chunk_size is not None:
        check_number("chunk_size", chunk_size, low=1, integer=True)
    if estimate is None:
        estimate = estimate_memory(model, optimizer=optimizer, input_shape=input_shape)
    per_run = estimate.per_run(batch_size, eval_rows)
    room = int(max_memory) - int(data_bytes)
    fit = room // per_run if room > 0 else 0
    if fit < 1:
        raise ConfigError(
            f"max_memory: {int(max_memory)} bytes is not enough for one run of this model: "
            f"the data take {int(data_bytes)} bytes and one run needs {per_run} bytes "
            f"({estimate.parameters} parameters, batch {batch_size}, evaluation chunks of "
            f"{eval_rows}); allow at least {int(data_bytes) + per_run} bytes"
        )
    cap = min(runs, fit, chunk_size or runs)
    chunks = math.ceil(runs / cap)
    base, extra = divmod(runs, chunks)
    return [base + (1 if i < extra else 0) for i in range(chunks)]


def prefers_stacked(
    model: nn.Module, *, runs: int, batch_size: int, device: torch.device | str
) -> bool:
    """The ``auto`` rule: stack ``runs`` runs of ``model`` on ``device``?

    CUDA: yes from two runs on. CPU: yes from two runs on when one run's training step is at
    most :data:`CPU_STACKED_MAX_MACS_PER_STEP` multiply-accumulates (overhead-bound models).
    """
    if runs < 2:
        return False
    if torch.device(device).type == "cuda":
        return True
    estimate = estimate_memory(model)
    return estimate.macs_per_sample * batch_size <= CPU_STACKED_MAX_MACS_PER_STEP


__all__ = [
    "CPU_STACKED_MAX_MACS_PER_STEP",
    "MemoryEstimate",
    "available_memory",
    "estimate_memory",
    "plan_chunks",
    "prefers_stacked",
]
