"""Epoch batch order: Keras's shuffled consecutive batches, a last single sample merged."""

from __future__ import annotations

import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.train import batch_order, batch_sizes, derive_seed, seeded


@pytest.mark.parametrize(
    "n, batch_size, sizes",
    [
        (64, 32, [32, 32]),
        (65, 32, [32, 33]),  # a last batch of 1 joins the previous one
        (33, 32, [33]),
        (66, 32, [32, 32, 2]),  # 2 samples are a batch of their own, as in Keras
        (500, 32, [32] * 15 + [20]),  # seed 004: 500 samples, Keras's default batch of 32
        (1000, 64, [64] * 15 + [40]),  # seed 002
        (5, 10, [5]),
        (1, 32, [1]),
        (3, 1, [1, 1, 1]),  # batch_size 1 asks for single samples
    ],
)
def test_batch_sizes(n, batch_size, sizes):
    assert batch_sizes(n, batch_size) == sizes
    batches = batch_order(n, batch_size, seed=0, epoch=1)
    assert [len(b) for b in batches] == sizes


def test_each_epoch_is_a_permutation_of_all_samples():
    batches = batch_order(101, 10, seed=3, epoch=2)
    assert [len(b) for b in batches] == [10] * 9 + [11]
    assert sorted(torch.cat(batches).tolist()) == list(range(101))


def test_order_depends_only_on_n_seed_and_epoch():
    first = torch.cat(batch_order(200, 32, seed=7, epoch=1))
    # Global RNG state is irrelevant to the order.
    with seeded(123):
        torch.rand(5)
        again = torch.cat(batch_order(200, 32, seed=7, epoch=1))
    assert torch.equal(first, again)
    assert not torch.equal(first, torch.cat(batch_order(200, 32, seed=7, epoch=2)))
    assert not torch.equal(first, torch.cat(batch_order(200, 32, seed=8, epoch=1)))
    unshuffled = torch.cat(batch_order(10, 4, seed=7, epoch=1, shuffle=False))
    assert unshuffled.tolist() == list(range(10))


def test_derived_seeds_are_distinct_per_stream_and_key():
    seeds = {derive_seed(0, s, e) for s in ("shuffle", "dropout", "augment") for e in (1, 2)}
    assert len(seeds) == 6
    assert derive_seed(5, "shuffle", 1) == derive_seed(5, "shuffle", 1)


def test_seeded_restores_the_global_rng():
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    with seeded(1):
        a = torch.rand(2)
    with seeded(1):
        b = torch.rand(2)
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected)


def test_bad_arguments():
    with pytest.raises(ConfigError, match=r"batch_size: 0"):
        batch_sizes(10, 0)
    with pytest.raises(ConfigError, match=r"seed: -1"):
        batch_order(10, 2, seed=-1, epoch=1)
