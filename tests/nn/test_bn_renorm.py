"""Batch renormalization beyond the Keras grid: closed forms and the clipping schedule."""

from __future__ import annotations

import json

import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm, Ramp, renorm_ramp


def _xs(n, shape=(16, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * (0.5 + 0.4 * k) + 0.7 * k for k in range(n)]


def test_renorm_r_d_closed_form_first_step():
    x = _xs(1)[0].double()
    bn = BatchNorm(renorm=True, epsilon=1e-3, num_features=3).double()
    with torch.no_grad():
        bn.renorm_mean.copy_(torch.tensor([0.5, -0.5, 0.0]))
        bn.renorm_stddev.copy_(torch.tensor([2.0, 0.5, 0.01]))  # the last is floored at sqrt(eps)
    y = bn.train()(x)
    mean, var = x.mean(0), x.var(0, correction=0)
    sigma_b = torch.sqrt(var + 1e-3)
    sigma = torch.tensor([2.0, 0.5, 1e-3**0.5], dtype=torch.float64)
    r = sigma_b / sigma
    d = (mean - torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64)) / sigma
    expected = (x - mean) / sigma_b * r + d
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_renorm_inference_statistics_follow_keras_stddev_form():
    bn = BatchNorm(renorm=True, momentum=0.5, epsilon=1e-3, num_features=3).double()
    x = _xs(1)[0].double()
    bn.train()(x)
    sigma_b = torch.sqrt(x.var(0, correction=0) + 1e-3)
    stddev = 0.5 * 1.0 + 0.5 * sigma_b
    torch.testing.assert_close(bn.moving_stddev, stddev, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.moving_variance, stddev**2 - 1e-3, rtol=1e-12, atol=1e-12)


def test_tight_clipping_is_plain_batch_norm():
    """rmin = rmax = 1 and dmax = 0 force r = 1, d = 0: the paper's warm-up phase."""
    renorm = BatchNorm(renorm=True, renorm_clipping={"rmax": 1, "rmin": 1, "dmax": 0}, momentum=0.5)
    plain = BatchNorm(momentum=0.5)
    for x in _xs(3):
        w = torch.linspace(-1, 1, x.numel()).view_as(x)
        outs = []
        for layer in (renorm, plain):
            xx = x.clone().requires_grad_(True)
            y = layer.train()(xx)
            outs.append((y, *torch.autograd.grad((y * w).sum(), [xx, layer.gamma])))
        for a, b in zip(*outs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(renorm.moving_mean, plain.moving_mean, rtol=1e-6, atol=1e-6)


def test_ramp_values():
    ramp = Ramp(10, 20, 1.0, 3.0)
    assert [ramp(s) for s in (0, 10, 15, 20, 99)] == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert Ramp(10, 20, 1.0, 3.0, reciprocal=True)(15) == 0.5
    torch.testing.assert_close(ramp(torch.tensor(15)), torch.tensor(2.0))
    sched = renorm_ramp(rmax=3, dmax=5, warmup_steps=5000, rmax_end_step=40000, dmax_end_step=25000)
    assert sched["rmax"](0) == 1.0 and sched["rmax"](40000) == 3.0
    assert sched["rmin"](40000) == pytest.approx(1 / 3)
    assert (
        sched["dmax"](5000) == 0.0 and sched["dmax"](15000) == 2.5 and sched["dmax"](30000) == 5.0
    )
    with pytest.raises(ConfigError, match=r"end_step: 5 is not in \[10"):
        Ramp(10, 5, 1.0, 3.0)
    with pytest.raises(ConfigError, match="rmax: 0.5"):
        renorm_ramp(rmax=0.5)


def test_scheduled_clipping_equals_fixed_clipping_at_each_step():
    """A layer on the schedule computes, at step s, what a fixed-clipping layer with the
    schedule's values at s computes from the same state."""
    sched = renorm_ramp(rmax=2.0, dmax=1.0, warmup_steps=1, rmax_end_step=3, dmax_end_step=4)
    scheduled = BatchNorm(renorm=True, renorm_clipping=sched, renorm_momentum=0.5, num_features=3)
    for step, x in enumerate(_xs(5)):
        fixed = BatchNorm(
            renorm=True,
            renorm_clipping={k: float(v(step)) for k, v in sched.items()},
            renorm_momentum=0.5,
            num_features=3,
        )
        fixed.load_state_dict(scheduled.state_dict())
        assert int(scheduled.num_batches_tracked) == step
        y_s = scheduled.train()(x)
        y_f = fixed.train()(x)
        torch.testing.assert_close(y_s, y_f, rtol=0, atol=0)
        for name in ("moving_mean", "moving_variance", "renorm_mean", "renorm_stddev"):
            assert torch.equal(getattr(scheduled, name), getattr(fixed, name))
    # the schedule did clip: at step 0 (rmax = 1, dmax = 0) the output is plain BN
    first = BatchNorm(renorm=True, renorm_clipping=sched, num_features=3)
    x = _xs(1)[0] * 5 + 3
    y = first.train()(x)
    torch.testing.assert_close(
        y, (x - x.mean(0)) / torch.sqrt(x.var(0, correction=0) + 1e-3), rtol=1e-5, atol=1e-5
    )


def test_schedule_survives_the_config_round_trip():
    bn = BatchNorm(renorm=True, renorm_clipping=renorm_ramp(), num_features=2)
    config = json.loads(json.dumps(bn.get_config()))
    assert config["renorm_clipping"]["rmin"]["config"]["reciprocal"] is True
    again = BatchNorm.from_config(config)
    assert again.renorm_clipping == bn.renorm_clipping


def test_custom_callable_schedule_works_but_is_not_serializable():
    bn = BatchNorm(
        renorm=True, renorm_clipping={"rmax": lambda step: 1.0 + 0.0 * step}, num_features=2
    )
    bn.train()(torch.randn(8, 2))
    with pytest.raises(ConfigError, match=r"renorm_clipping\['rmax'\]: .*cannot be serialized"):
        bn.get_config()
