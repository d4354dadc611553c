"""Synchronized BN and exact recalibration across 2 processes (gloo on loopback, CPU).

The two processes are spawned once for the whole module; each runs every case on its half
of the data and saves what it computed. The references are one process over the
concatenated data: synchronized BN must give the outputs and input gradients of plain BN
on the concatenated batch (each rank its rows), gamma/beta gradients whose sum over the
ranks is the concatenated batch's, and the same moving statistics on both ranks; the
distributed recalibration must give both processes the single-process statistics.
"""

from __future__ import annotations

import socket
import warnings

import distributed_cases
import pytest
import torch

import bnlab
from bnlab.nn import distributed

TOL = {"rtol": 1e-5, "atol": 1e-5}
RECAL_TOL = {"rtol": 1e-6, "atol": 1e-6}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    out = tmp_path_factory.mktemp("dist")
    torch.multiprocessing.spawn(
        distributed_cases.worker, args=(_free_port(), str(out)), nprocs=2, join=True
    )
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.parametrize("name", list(distributed_cases.sync_cases()))
def test_synchronized_equals_one_batch(ranks, name):
    ref_steps, ref_state = distributed_cases.run_sync(name, None)
    for step, ref in enumerate(ref_steps):
        (y0, gx0, gg0, gb0), (y1, gx1, gg1, gb1) = (r[name][0][step] for r in ranks)
        y, gx, gg, gb = ref
        torch.testing.assert_close(
            torch.cat([y0, y1]), y, **TOL, msg=lambda m, s=step: f"{name} step {s} output: {m}"
        )
        torch.testing.assert_close(
            torch.cat([gx0, gx1]),
            gx,
            **TOL,
            msg=lambda m, s=step: f"{name} step {s} input grad: {m}",
        )
        torch.testing.assert_close(
            gg0 + gg1, gg, **TOL, msg=lambda m, s=step: f"{name} step {s} gamma grad: {m}"
        )
        torch.testing.assert_close(
            gb0 + gb1, gb, **TOL, msg=lambda m, s=step: f"{name} step {s} beta grad: {m}"
        )
    for key, value in ref_state.items():
        for r in ranks:
            torch.testing.assert_close(
                r[name][1][key], value, **TOL, msg=lambda m, k=key: f"{name} {k}: {m}"
            )


def test_local_statistics_would_differ(ranks):
    """The cases are sensitive: each rank's own statistics give a different output."""
    _, sizes, _, _ = distributed_cases.sync_cases()["nhwc_unequal"]
    x, _, _ = distributed_cases.sync_data("nhwc_unequal", 0)
    local = bnlab.BatchNorm(axis=-1, momentum=0.5, epsilon=1e-5).train()(x[: sizes[0]])
    assert not torch.allclose(local, ranks[0]["nhwc_unequal"][0][0][0], atol=1e-3)


@pytest.mark.parametrize("case", ["recalibrate", "doctor_recalibrate"])
def test_distributed_recalibration_equals_one_process(ranks, case):
    single = getattr(distributed_cases, case)(None)
    untouched = distributed_cases.SmallNet().state_dict()
    for key, value in single.items():
        a, b = ranks[0][case][key], ranks[1][case][key]
        assert torch.equal(a, b), f"{case} {key}: the two processes differ"
        torch.testing.assert_close(a, value, **RECAL_TOL, msg=lambda m, k=key: f"{case} {k}: {m}")
    assert not torch.allclose(single["bn1.running_var"], untouched["bn1.running_var"])
    # a shard alone would not give these numbers
    shard = distributed_cases.SmallNet()
    bnlab.nn.precise_bn_stats(shard, distributed_cases.recal_batches()[:2])
    assert not torch.allclose(shard.bn1.running_mean, single["bn1.running_mean"], atol=1e-3)


def test_synchronized_without_process_group_is_local_and_warns_once(monkeypatch):
    monkeypatch.setattr(distributed, "_warned_inactive", False)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    plain = bnlab.BatchNorm(momentum=0.5).train()
    synced = bnlab.BatchNorm(momentum=0.5, synchronized=True).train()
    with pytest.warns(RuntimeWarning, match="no torch.distributed process group"):
        y = synced(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        synced(x)  # once per process
    torch.testing.assert_close(y, plain(x), rtol=0, atol=0)
    assert synced.get_config()["synchronized"] is True
    assert bnlab.BatchNorm.from_config(synced.get_config()).synchronized is True
