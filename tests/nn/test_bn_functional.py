"""bnlab.nn.functional: the pure math, against closed forms."""

from __future__ import annotations

import torch

from bnlab.nn import functional as BF


def test_merge_moments_equals_statistics_of_the_concatenation():
    g = torch.Generator().manual_seed(0)
    parts = [
        torch.randn(n, 3, generator=g, dtype=torch.float64) * (k + 1) + 5 * k
        for k, n in enumerate((7, 1, 20))
    ]
    n, mean, m2 = 0, torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for p in parts:
        n, mean, m2 = BF.merge_moments(
            n, mean, m2, p.shape[0], p.mean(0), p.var(0, correction=0) * p.shape[0]
        )
    x = torch.cat(parts)
    assert n == 28
    torch.testing.assert_close(mean, x.mean(0), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(m2 / n, x.var(0, correction=0), rtol=1e-13, atol=1e-13)


def test_moments_bessel_and_ema():
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    mean, var = BF.moments(x, axis=2)
    torch.testing.assert_close(mean, x.mean(dim=(0, 1)))
    torch.testing.assert_close(BF.bessel(var, 20), x.var(dim=(0, 1)))
    moving = torch.ones(3, dtype=torch.float64)
    BF.ema_(moving, torch.full((3,), 3.0, dtype=torch.float64), 0.75)  # Keras: fraction kept
    torch.testing.assert_close(moving, torch.full((3,), 1.5, dtype=torch.float64))


def test_batch_norm_train_returns_unbiased_statistics():
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, mean, var_u = BF.batch_norm_train(x, None, None, 1e-3)
    torch.testing.assert_close(mean, x.mean(dim=(0, 2)))
    torch.testing.assert_close(var_u, x.var(dim=(0, 2)))
    expected = (x - mean.view(1, 2, 1)) / torch.sqrt(
        x.var(dim=(0, 2), correction=0).view(1, 2, 1) + 1e-3
    )
    torch.testing.assert_close(out, expected)


def test_renorm_correction_clipping_order_and_floor():
    mean = torch.tensor([1.0, -4.0, 0.0])
    var = torch.tensor([3.0, 0.0, 15.0])
    r, d = BF.renorm_correction(
        mean, var, torch.zeros(3), torch.tensor([1.0, 1.0, 1e-6]), 1.0, rmin=0.5, rmax=1.5, dmax=2.0
    )
    # sigma_B = sqrt(var + 1) = (2, 1, 4); sigma floored at sqrt(1) = 1
    torch.testing.assert_close(r, torch.tensor([1.5, 1.0, 1.5]))
    torch.testing.assert_close(d, torch.tensor([1.0, -2.0, 0.0]))
    scale, offset = BF.compose_renorm(r, d, torch.tensor([2.0, 2.0, 2.0]), torch.ones(3))
    torch.testing.assert_close(scale, torch.tensor([3.0, 2.0, 3.0]))
    torch.testing.assert_close(offset, torch.tensor([3.0, -3.0, 1.0]))


def test_ghost_view_groups_strided_samples():
    x = torch.arange(6.0).view(6, 1)  # samples 0..5, one channel
    v = BF.ghost_view(x, 3)  # 3 per virtual batch -> 2 virtual batches
    assert v.shape == (3, 2)
    assert v[:, 0].tolist() == [0.0, 2.0, 4.0] and v[:, 1].tolist() == [1.0, 3.0, 5.0]
