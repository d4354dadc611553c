"""Ghost batch normalization (virtual_batch_size), tf-keras semantics."""

from __future__ import annotations

import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm


def _x(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 1.5 + torch.linspace(-1, 1, shape[1]).view(
        1, -1, *([1] * (len(shape) - 2))
    )


def _set_affine(bn):
    with torch.no_grad():
        bn.gamma.copy_(torch.linspace(0.5, 2.0, bn.num_features))
        bn.beta.copy_(torch.linspace(-0.3, 0.3, bn.num_features))


@pytest.mark.parametrize("shape", [(12, 4), (12, 4, 3, 3)])
def test_virtual_batch_equal_to_batch_is_plain_bn(shape):
    x = _x(*shape)
    w = _x(*shape, seed=1)
    ghost = BatchNorm(momentum=0.6, virtual_batch_size=12, num_features=4).train()
    plain = BatchNorm(momentum=0.6, num_features=4).train()
    _set_affine(ghost)
    _set_affine(plain)
    results = []
    for layer in (ghost, plain):
        xx = x.clone().requires_grad_(True)
        y = layer(xx)
        results.append((y, *torch.autograd.grad((y * w).sum(), [xx, layer.gamma, layer.beta])))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(ghost.moving_mean, plain.moving_mean)
    assert torch.equal(ghost.moving_variance, plain.moving_variance)


@pytest.mark.parametrize("variance", ["biased", "unbiased"])
@pytest.mark.parametrize("shape, axis", [((12, 4), 1), ((12, 4, 3, 3), 1), ((12, 3, 3, 4), -1)])
def test_each_virtual_batch_is_normalised_separately(shape, axis, variance):
    """Closed form: virtual batch g holds samples g, g+G, ... (tf-keras's reshape)."""
    vbs, eps, m = 3, 1e-3, 0.6
    x = _x(*shape).double()
    bn = BatchNorm(
        momentum=m,
        epsilon=eps,
        axis=axis,
        virtual_batch_size=vbs,
        variance=variance,
        num_features=4,
    ).double()
    _set_affine(bn)
    y = bn.train()(x)

    groups = shape[0] // vbs
    axis_ = axis % x.dim()
    dims = [d for d in range(x.dim()) if d != axis_]
    view = [1] * x.dim()
    view[axis_] = 4
    expected = torch.empty_like(x)
    means, variances = [], []
    for g in range(groups):
        xv = x[g::groups]
        mean = xv.mean(dim=dims, keepdim=True)
        var = xv.var(dim=dims, keepdim=True, correction=0)
        expected[g::groups] = (xv - mean) / torch.sqrt(var + eps) * bn.gamma.view(view) + (
            bn.beta.view(view)
        )
        n = xv.numel() // 4
        means.append(mean.flatten())
        variances.append(var.flatten() * (n / (n - 1) if variance == "unbiased" else 1.0))
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    # moving statistics: one update with the average of the virtual batches' statistics
    mean_avg = torch.stack(means).mean(0)
    var_avg = torch.stack(variances).mean(0)
    torch.testing.assert_close(bn.moving_mean, (1 - m) * mean_avg, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.moving_variance, m + (1 - m) * var_avg, rtol=1e-12, atol=1e-12)
    assert int(bn.num_batches_tracked) == 1


def test_gradients_equal_separate_plain_layers():
    """d loss / d (x, gamma, beta) of ghost BN = sum over virtual batches of plain BN's."""
    x = _x(8, 3, 2, 2)
    w = _x(8, 3, 2, 2, seed=4)
    ghost = BatchNorm(virtual_batch_size=2, num_features=3).train()
    plain = BatchNorm(num_features=3).train()
    _set_affine(ghost)
    _set_affine(plain)
    xg = x.clone().requires_grad_(True)
    gx, gg, gb = torch.autograd.grad((ghost(xg) * w).sum(), [xg, ghost.gamma, ghost.beta])
    groups = 4
    xp = x.clone().requires_grad_(True)
    loss = sum((plain(xp[g::groups]) * w[g::groups]).sum() for g in range(groups))
    px, pg, pb = torch.autograd.grad(loss, [xp, plain.gamma, plain.beta])
    for a, b in ((gx, px), (gg, pg), (gb, pb)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_batch_not_a_multiple_is_refused_in_training_only():
    bn = BatchNorm(virtual_batch_size=4, num_features=3).train()
    with pytest.raises(
        ConfigError, match=r"virtual_batch_size: 4 does not divide the batch size 10"
    ):
        bn(torch.randn(10, 3))
    bn.eval()
    assert bn(torch.randn(10, 3)).shape == (10, 3)  # inference has no virtual batches


def test_virtual_batch_of_one_sample_per_channel_is_refused():
    bn = BatchNorm(virtual_batch_size=1, num_features=3).train()
    with pytest.raises(
        ConfigError, match=r"batch: 4 sample\(s\).*1 value per channel per virtual batch"
    ):
        bn(torch.randn(4, 3))
    # with spatial positions one sample per virtual batch is enough
    assert bn(torch.randn(4, 3, 2, 2)).shape == (4, 3, 2, 2)


def test_ghost_with_renorm_uses_the_averaged_statistics_for_r_and_d():
    x = _x(6, 2).double()
    bn = BatchNorm(
        virtual_batch_size=3,
        renorm=True,
        renorm_momentum=0.5,
        epsilon=1e-3,
        num_features=2,
        moving_variance_initializer={"class_name": "Constant", "config": {"value": 4.0}},
    ).double()
    y = bn.train()(x)
    groups = 2
    means = torch.stack([x[g::groups].mean(0) for g in range(groups)])
    variances = torch.stack([x[g::groups].var(0, correction=0) for g in range(groups)])
    sigma_b = torch.sqrt(variances.mean(0) + 1e-3)
    r = sigma_b / 2.0  # renorm_stddev starts at sqrt(4)
    d = means.mean(0) / 2.0
    for g in range(groups):
        xhat = (x[g::groups] - means[g]) / torch.sqrt(variances[g] + 1e-3)
        torch.testing.assert_close(y[g::groups], xhat * r + d, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.renorm_stddev, 0.5 * 2.0 + 0.5 * sigma_b, rtol=1e-12, atol=1e-12)
