"""Keras's optimizer updates, checked against closed forms and against Keras's own optimizers."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.train import KerasAdam, KerasRMSprop, KerasSGD, make_optimizer


def _param(values) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def _step(opt, param, grad) -> None:
    param.grad = torch.as_tensor(grad, dtype=param.dtype).clone()
    opt.step()


def test_adam_single_step_matches_keras_closed_form():
    w0 = np.array([0.5, -1.0, 2.0, 0.0])
    g = np.array([0.3, -2e-6, 1e-9, 5.0])
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-7
    p = _param(w0)
    _step(KerasAdam([p]), p, g)
    # Keras: both bias corrections folded into alpha, epsilon added to sqrt(v).
    m, v = (1 - b1) * g, (1 - b2) * g**2
    alpha = lr * math.sqrt(1 - b2) / (1 - b1)
    expected = w0 - alpha * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12, atol=0)
    # torch.optim.Adam puts eps on sqrt(v_hat): for small gradients the steps differ a lot,
    # so this test fails if KerasAdam is ever replaced by it.
    q = _param(w0)
    _step(torch.optim.Adam([q], lr=lr, eps=eps), q, g)
    assert abs(q[1].item() - p[1].item()) > 1e-4


def test_adam_two_steps_closed_form_and_amsgrad():
    w0, g1, g2 = np.array([1.0, -1.0]), np.array([0.5, -0.25]), np.array([-0.1, 0.05])
    lr, b1, b2, eps = 0.01, 0.8, 0.99, 1e-7
    for amsgrad in (False, True):
        p = _param(w0)
        opt = KerasAdam([p], lr=lr, beta_1=b1, beta_2=b2, amsgrad=amsgrad)
        _step(opt, p, g1)
        _step(opt, p, g2)
        m1, v1 = (1 - b1) * g1, (1 - b2) * g1**2
        w1 = w0 - lr * math.sqrt(1 - b2) / (1 - b1) * m1 / (np.sqrt(v1) + eps)
        m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2**2
        if amsgrad:
            v2 = np.maximum(v1, v2)
        w2 = w1 - lr * math.sqrt(1 - b2**2) / (1 - b1**2) * m2 / (np.sqrt(v2) + eps)
        np.testing.assert_allclose(p.detach().numpy(), w2, rtol=1e-12)
        assert opt.iterations == 2


def test_sgd_momentum_is_keras_velocity_form():
    w0, g1, g2 = np.array([1.0, 2.0]), np.array([0.5, -1.0]), np.array([0.25, 0.75])
    lr, mom = 0.1, 0.9
    p = _param(w0)
    opt = KerasSGD([p], lr=lr, momentum=mom)
    _step(opt, p, g1)
    _step(opt, p, g2)
    m1 = -lr * g1
    m2 = mom * m1 - lr * g2
    np.testing.assert_allclose(p.detach().numpy(), w0 + m1 + m2, rtol=1e-12)

    p = _param(w0)
    opt = KerasSGD([p], lr=lr, momentum=mom, nesterov=True)
    _step(opt, p, g1)
    _step(opt, p, g2)
    w1 = w0 + mom * m1 - lr * g1
    np.testing.assert_allclose(p.detach().numpy(), w1 + mom * m2 - lr * g2, rtol=1e-12)

    p = _param(w0)
    _step(KerasSGD([p], lr=lr), p, g1)
    np.testing.assert_allclose(p.detach().numpy(), w0 - lr * g1, rtol=1e-12)


def test_sgd_differs_from_torch_sgd_when_lr_changes():
    # Keras keeps lr inside the velocity, torch outside: the same after a change of lr
    # only if the implementation is the Keras one.
    w0, g = np.array([1.0]), np.array([1.0])
    p = _param(w0)
    opt = KerasSGD([p], lr=0.1, momentum=0.9)
    _step(opt, p, g)
    opt.param_groups[0]["lr"] = 0.01
    _step(opt, p, g)
    expected = w0 + (-0.1) + (0.9 * -0.1 - 0.01)
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12)


def test_rmsprop_epsilon_inside_the_square_root():
    w0, g1, g2 = np.array([1.0, -3.0]), np.array([2e-4, -1.0]), np.array([1e-4, 0.5])
    lr, rho, eps = 1e-3, 0.9, 1e-7
    p = _param(w0)
    opt = KerasRMSprop([p])
    _step(opt, p, g1)
    _step(opt, p, g2)
    v1 = (1 - rho) * g1**2
    w1 = w0 - lr * g1 / np.sqrt(v1 + eps)
    v2 = rho * v1 + (1 - rho) * g2**2
    np.testing.assert_allclose(p.detach().numpy(), w1 - lr * g2 / np.sqrt(v2 + eps), rtol=1e-12)

    p = _param(w0)
    opt = KerasRMSprop([p], momentum=0.5, centered=True)
    _step(opt, p, g1)
    mg = (1 - rho) * g1
    inc = lr * g1 / np.sqrt(v1 - mg**2 + eps)
    np.testing.assert_allclose(p.detach().numpy(), w0 - inc, rtol=1e-12)


def test_state_dict_round_trip_keeps_the_step_count():
    g1, g2 = np.array([0.3, -0.2]), np.array([0.1, 0.4])
    p = _param([1.0, 2.0])
    opt = KerasAdam([p])
    _step(opt, p, g1)
    saved, w1 = copy.deepcopy(opt.state_dict()), p.detach().clone()  # torch shares tensors
    _step(opt, p, g2)
    q = torch.nn.Parameter(w1.clone())
    resumed = KerasAdam([q])
    resumed.load_state_dict(saved)
    assert resumed.iterations == 1
    _step(resumed, q, g2)  # step 2's bias correction, not step 1's
    assert torch.equal(q, p)


def test_parameters_without_gradient_are_left_alone():
    a, b = _param([1.0]), _param([2.0])
    opt = KerasAdam([a, b])
    a.grad = torch.ones_like(a)
    opt.step()
    assert b.item() == 2.0 and a.item() != 1.0 and b not in opt.state


def test_make_optimizer_names_defaults_and_errors():
    p = [_param([1.0])]
    assert isinstance(make_optimizer("Adam", p), KerasAdam)
    assert make_optimizer("adam", p).param_groups[0]["lr"] == 1e-3
    sgd = make_optimizer("sgd", p, momentum=0.9)
    assert sgd.param_groups[0]["lr"] == 0.01 and sgd.param_groups[0]["momentum"] == 0.9
    assert make_optimizer("rmsprop", p, lr=0.5).param_groups[0]["lr"] == 0.5
    adamw = make_optimizer(torch.optim.AdamW, p, lr=0.2, weight_decay=0.0)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 0.2
    with pytest.raises(ConfigError, match=r"optimizer: 'adma'.*did you mean 'adam'"):
        make_optimizer("adma", p)
    with pytest.raises(ConfigError, match=r"unknown option 'momentun'.*did you mean 'momentum'"):
        make_optimizer("sgd", p, momentun=0.9)
    with pytest.raises(ConfigError, match=r"lr: -1"):
        make_optimizer("sgd", p, lr=-1)
    with pytest.raises(ConfigError, match=r"beta_1: 1.0"):
        make_optimizer("adam", p, beta_1=1.0)
    with pytest.raises(ConfigError, match=r"optimizer: 3"):
        make_optimizer(3, p)


@pytest.mark.keras
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("adam", {"learning_rate": 0.01}),
        ("adam", {"learning_rate": 0.01, "amsgrad": True}),
        ("sgd", {"learning_rate": 0.05, "momentum": 0.9}),
        ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
        ("rmsprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True}),
    ],
)
def test_same_updates_as_keras_optimizers(keras, name, kwargs):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype("float32")
    grads = [
        rng.normal(size=(3, 4)).astype("float32") * 10.0 ** rng.integers(-6, 1) for _ in range(6)
    ]
    k_opt = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }[name](**kwargs)
    var = keras.Variable(w0)
    options = {k: v for k, v in kwargs.items() if k != "learning_rate"}
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = make_optimizer(name, [p], lr=kwargs["learning_rate"], **options)
    for g in grads:
        k_opt.apply([keras.ops.convert_to_tensor(g)], [var])
        _step(opt, p, g)
    np.testing.assert_allclose(
        p.detach().numpy(), keras.ops.convert_to_numpy(var), rtol=1e-6, atol=1e-7
    )


@pytest.mark.keras
def test_adam_bit_for_bit_with_keras_over_40_steps(keras):
    """Keras's torch backend computes ``beta**t`` with ``torch.pow``; at t = 4, 9, 20 and 34
    float32 ``np.power`` rounds it differently, so this holds only with torch's rounding."""
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(5, 7)).astype("float32")
    k_opt = keras.optimizers.Adam(learning_rate=1e-3)
    var = keras.Variable(w0)
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = make_optimizer("adam", [p], lr=1e-3)
    for step in range(1, 41):
        # float32 gradients: Keras adds a float64 gradient to its float32 moments unrounded.
        g = (rng.normal(size=(5, 7)) * 10.0 ** rng.integers(-6, 1)).astype("float32")
        k_opt.apply([keras.ops.convert_to_tensor(g)], [var])
        _step(opt, p, g)
        np.testing.assert_array_equal(
            p.detach().numpy(), keras.ops.convert_to_numpy(var), err_msg=f"step {step}"
        )
