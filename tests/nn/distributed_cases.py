"""The cases of test_distributed.py: deterministic data, and what each process computes.

Imported by the test process (to compute the single-process references) and by the two
spawned processes (``torch.multiprocessing.spawn`` pickles :func:`worker` by module name).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

import bnlab
from bnlab.nn import precise_bn_stats

STEPS = 3


def sync_cases():
    """name -> (layer kwargs, per-rank batch sizes, sample shape, with mask)."""
    return {
        "nchw": ({"axis": 1, "momentum": 0.8}, (4, 4), (3, 5, 5), False),
        "nhwc_unequal": ({"axis": -1, "momentum": 0.5, "epsilon": 1e-5}, (3, 6), (4, 4, 2), False),
        "sequence_mask": (
            {"axis": -1, "momentum": 0.9, "variance": "unbiased"},
            (5, 3),
            (7, 3),
            True,
        ),
        "renorm": (
            {
                "axis": 1,
                "momentum": 0.9,
                "renorm": True,
                "renorm_momentum": 0.6,
                "renorm_clipping": {"rmax": 1.2, "dmax": 0.2},
            },
            (4, 4),
            (3,),
            False,
        ),  # fmt: skip
        "cumulative": ({"axis": 1, "momentum": None}, (6, 2), (2, 3), False),
    }


def sync_data(name: str, step: int):
    """The concatenated batch of step ``step`` (both ranks' samples), its loss weights, mask."""
    kwargs, sizes, shape, with_mask = sync_cases()[name]
    g = torch.Generator().manual_seed(1000 * step + len(name))
    n = sum(sizes)
    x = torch.randn(n, *shape, generator=g) * (1.0 + 0.5 * step) + 0.3 * step
    w = torch.randn(n, *shape, generator=g)
    mask = None
    if with_mask:
        lengths = torch.randint(0, shape[0] + 1, (n,), generator=g)
        mask = torch.arange(shape[0])[None, :] < lengths[:, None]
    return x, w, mask


def run_sync(name: str, rank: int | None):
    """Train one layer STEPS steps on rank ``rank``'s part (``None``: the whole batch).

    Returns per step the output and the gradients (input, gamma, beta) and, at the end, the
    state_dict. The layer's parameters do not move (the gradients are compared instead).
    """
    kwargs, sizes, _, _ = sync_cases()[name]
    layer = bnlab.BatchNorm(synchronized=rank is not None, **kwargs).train()
    start = 0 if rank in (None, 0) else sizes[0]
    stop = sum(sizes) if rank is None else start + sizes[rank]
    steps = []
    for step in range(STEPS):
        x, w, mask = sync_data(name, step)
        x = x[start:stop].clone().requires_grad_(True)
        m = None if mask is None else mask[start:stop]
        y = layer(x, mask=m)
        grads = torch.autograd.grad((y * w[start:stop]).sum(), [x, layer.gamma, layer.beta])
        steps.append([y.detach(), *grads])
    return steps, {k: v.clone() for k, v in layer.state_dict().items()}


class SmallNet(nn.Module):
    """A torch BN2d after a conv and a bnlab BN on (N, C) features, for recalibration."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)
        self.bn2 = bnlab.BatchNorm(num_features=5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv(x)))
        return self.bn2(self.fc(x.flatten(1)))


def recal_batches():
    g = torch.Generator().manual_seed(7)
    return [torch.randn(6, 2, 6, 6, generator=g) * (1 + k) + k for k in range(4)]


def recalibrate(rank: int | None) -> dict:
    """precise_bn_stats on rank's shard (batches 2r, 2r+1), or on all four batches."""
    model = SmallNet()
    batches = recal_batches()
    shard = batches if rank is None else batches[2 * rank : 2 * rank + 2]
    precise_bn_stats(model, shard)
    return {k: v.clone() for k, v in model.state_dict().items()}


def doctor_recalibrate(rank: int | None) -> dict:
    """bnlab.recalibrate (the doctor's entry point) on an (x, y) shard of tensors."""
    x = torch.cat(recal_batches())
    y = torch.zeros(len(x), dtype=torch.long)
    if rank is not None:
        half = len(x) // 2
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
    fixed = bnlab.recalibrate(SmallNet(), (x, y), batch_size=6)
    return {k: v.clone() for k, v in fixed.state_dict().items()}


def worker(rank: int, port: int, out: str) -> None:
    """One of two gloo processes on loopback: every case, results saved to ``out``."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        results = {name: run_sync(name, rank) for name in sync_cases()}
        results["recalibrate"] = recalibrate(rank)
        results["doctor_recalibrate"] = doctor_recalibrate(rank)
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()
