"""bnlab.BatchNorm's own semantics, checked against closed forms."""

from __future__ import annotations

import copy

import pytest
import torch

import bnlab
from bnlab.nn import BatchNorm


def _x(*shape, seed=0, loc=0.5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale + loc


def test_training_output_and_update_closed_form():
    x = _x(10, 4, 3, 3).double()
    bn = BatchNorm(momentum=0.7, epsilon=1e-3, num_features=4).double().train()
    with torch.no_grad():
        bn.gamma.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))
        bn.beta.copy_(torch.tensor([0.0, 0.1, 0.2, -0.3]))
    y = bn(x)
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), correction=0)
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-3)
    expected = expected * bn.gamma.view(1, -1, 1, 1) + bn.beta.view(1, -1, 1, 1)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    # Keras convention: momentum is the fraction kept; the variance is the biased one.
    torch.testing.assert_close(bn.moving_mean, 0.3 * mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.moving_variance, 0.7 + 0.3 * var, rtol=1e-12, atol=1e-12)
    assert int(bn.num_batches_tracked) == 1


def test_unbiased_variance_update_closed_form():
    x = _x(6, 5).double()
    bn = BatchNorm(momentum=0.5, variance="unbiased").double().train()
    bn(x)
    torch.testing.assert_close(bn.moving_variance, 0.5 + 0.5 * x.var(0), rtol=1e-12, atol=1e-12)


def test_momentum_extremes():
    x1, x2 = _x(8, 3, seed=1), _x(8, 3, seed=2, loc=3.0)
    keep_all = BatchNorm(momentum=1.0).train()
    last_only = BatchNorm(momentum=0.0).train()
    for x in (x1, x2):
        keep_all(x)
        last_only(x)
    assert torch.equal(keep_all.moving_mean, torch.zeros(3))
    assert torch.equal(keep_all.moving_variance, torch.ones(3))
    torch.testing.assert_close(last_only.moving_mean, x2.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        last_only.moving_variance, x2.var(0, correction=0), rtol=1e-5, atol=1e-6
    )


def test_inference_uses_moving_statistics():
    bn = BatchNorm(num_features=3, epsilon=1e-2).eval()
    with torch.no_grad():
        bn.moving_mean.copy_(torch.tensor([1.0, -1.0, 0.5]))
        bn.moving_variance.copy_(torch.tensor([4.0, 0.25, 1.0]))
    x = _x(5, 3)
    expected = (x - bn.moving_mean) / torch.sqrt(bn.moving_variance + 1e-2)
    torch.testing.assert_close(bn(x), expected, rtol=1e-6, atol=1e-6)
    assert int(bn.num_batches_tracked) == 0


def test_trainable_false_is_frozen_and_in_inference_mode():
    bn = BatchNorm(num_features=3, moving_mean_initializer="ones")
    bn.trainable = False
    bn.train()
    x = _x(8, 3)
    y = bn(x)
    torch.testing.assert_close(y, (x - 1.0) / torch.sqrt(torch.tensor(1.0 + 1e-3)))
    assert torch.equal(bn.moving_mean, torch.ones(3))
    assert int(bn.num_batches_tracked) == 0
    assert not bn.gamma.requires_grad and not bn.beta.requires_grad
    bn.trainable = True
    assert bn.gamma.requires_grad
    bn(x)
    assert int(bn.num_batches_tracked) == 1


def test_regularization_loss_and_constraints():
    bn = BatchNorm(
        num_features=3,
        gamma_regularizer="l2",
        beta_regularizer=0.5,
        gamma_constraint="non_neg",
        beta_constraint={"class_name": "MaxNorm", "config": {"max_value": 1.0, "axis": 0}},
    )
    with torch.no_grad():
        bn.gamma.copy_(torch.tensor([1.0, -2.0, 3.0]))
        bn.beta.copy_(torch.tensor([3.0, 0.0, 4.0]))
    # Keras: l2 * sum(w**2), "l2" = 0.01; a float is an L2 strength
    torch.testing.assert_close(bn.regularization_loss(), torch.tensor(0.01 * 14 + 0.5 * 25))
    bn.apply_constraints()
    assert torch.equal(bn.gamma.detach(), torch.tensor([1.0, 0.0, 3.0]))
    torch.testing.assert_close(
        bn.beta.detach(), torch.tensor([0.6, 0.0, 0.8]), rtol=1e-6, atol=1e-6
    )
    assert BatchNorm(num_features=3).regularization_loss() is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_normalised_in_float32(dtype):
    x = _x(16, 4, loc=3.0)
    bn_half = BatchNorm().train()
    bn_full = BatchNorm().train()
    y_half = bn_half(x.to(dtype))
    y_full = bn_full(x.to(dtype).float())
    assert y_half.dtype == dtype
    assert bn_half.moving_mean.dtype == torch.float32 and bn_half.gamma.dtype == torch.float32
    torch.testing.assert_close(y_half, y_full.to(dtype))
    torch.testing.assert_close(bn_half.moving_variance, bn_full.moving_variance)


def test_float64_input_computes_in_float64():
    x = _x(8, 3).double()
    y = BatchNorm().train()(x)
    assert y.dtype == torch.float64


def test_lazy_build_with_optimizer_created_before():
    bn = BatchNorm(axis=-1, gamma_initializer="zeros")
    assert bn.num_features is None
    opt = torch.optim.SGD(bn.parameters(), lr=0.5)
    x = _x(8, 5, 5, 3)
    w = _x(8, 5, 5, 3, seed=9)
    (bn.train()(x) * w).sum().backward()
    assert bn.num_features == 3 and bn.gamma.shape == (3,)
    grad = bn.gamma.grad.clone()
    opt.step()
    torch.testing.assert_close(bn.gamma.detach(), -0.5 * grad)  # the optimizer updated it


def test_lazy_layer_loads_a_state_dict_and_deepcopies():
    trained = BatchNorm(momentum=0.5).train()
    trained(_x(8, 4, 2, 2))
    lazy = BatchNorm(momentum=0.5)
    twin = copy.deepcopy(lazy)  # an unbuilt layer copies too
    lazy.load_state_dict(trained.state_dict())
    x = _x(8, 4, 2, 2, seed=3)
    torch.testing.assert_close(lazy.eval()(x), trained.eval()(x), rtol=0, atol=0)
    assert lazy.num_features == 4
    twin.train()(x)
    assert twin.num_features == 4 and lazy.num_batches_tracked == 1
    built_copy = copy.deepcopy(trained)
    assert torch.equal(built_copy.moving_mean, trained.moving_mean)
    assert built_copy.moving_mean is not trained.moving_mean


def test_channel_axis_last_equals_axis_one_on_permuted_input():
    x = _x(4, 3, 5, 6)
    a = BatchNorm(axis=1, momentum=0.5).train()
    b = BatchNorm(axis=-1, momentum=0.5).train()
    ya = a(x)
    yb = b(x.permute(0, 2, 3, 1))
    torch.testing.assert_close(yb.permute(0, 3, 1, 2), ya, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.moving_variance, b.moving_variance, rtol=1e-6, atol=1e-6)


def test_torch_style_aliases_and_momentum_converters():
    bn = BatchNorm(num_features=2, epsilon=1e-4)
    assert bn.running_mean is bn.moving_mean and bn.running_var is bn.moving_variance
    assert bn.eps == 1e-4
    assert bnlab.keras_to_torch_momentum(0.99) == 0.01
    assert bnlab.torch_to_keras_momentum(0.1) == 0.9
    assert "fraction kept" in repr(bn)
