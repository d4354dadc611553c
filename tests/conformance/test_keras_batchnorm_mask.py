"""bnlab.BatchNorm's ``mask``, ``momentum=None`` and dtypes against Keras 3 (torch backend).

Masks: both layers see the same 4 training batches of ``(N, T, C)`` sequences with ragged
masks (some rows fully masked, some fully kept); at each step the outputs and the gradients
of a weighted-sum loss (input, gamma, beta) agree to 1e-5, both take the same SGD step,
and afterwards the moving statistics and the inference outputs (mask ignored, as Keras does)
agree. Dtypes: Keras's policies ``mixed_float16``/``mixed_bfloat16`` (16-bit inputs, float32
variables) and ``float16``/``bfloat16`` (16-bit variables) against the same tensors here.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import bnlab

TOL = {"rtol": 1e-5, "atol": 1e-5}
STEPS = 4
LR = 0.1


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mask(n, t, kind, g):
    lengths = {
        "ragged": torch.randint(1, t + 1, (n,), generator=g),
        "empty_rows": torch.tensor([t, 0, 3, 0, 1, t][:n]),
        "full": torch.full((n,), t),
        "nothing": torch.zeros(n, dtype=torch.long),  # Keras: mean 0, variance 0
    }[kind]
    return torch.arange(t)[None, :] < lengths[:, None]


def _data(shape, kind, seed):
    g = torch.Generator().manual_seed(seed)
    n, t, c = shape
    offsets = torch.linspace(-0.5, 1.0, c)
    xs, ws, masks = [], [], []
    for k in range(STEPS + 1):
        xs.append(torch.randn(shape, generator=g) * (0.7 + 0.3 * k) + offsets + 0.2 * k)
        ws.append(torch.randn(shape, generator=g))
        masks.append(_mask(n, t, kind, g))
    return xs, ws, masks


def _params(layer, keras: bool):
    out = []
    for name in ("gamma", "beta"):
        p = getattr(layer, name)
        if p is not None:
            out.append(p.value if keras else p)
    return out


def _step(k_layer, b_layer, x, w, mask, training):
    xk = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    yk = k_layer(xk, training=training, mask=mask)
    yb = b_layer.train(training)(xb, mask=mask)
    gk = torch.autograd.grad((yk * w).sum(), [xk, *_params(k_layer, True)])
    gb = torch.autograd.grad((yb * w).sum(), [xb, *_params(b_layer, False)])
    return yk.detach(), yb.detach(), gk, gb


MASK_GRID = [
    pytest.param(
        kind, m, center, scale, renorm, id=f"{kind}-m{m}-c{int(center)}s{int(scale)}-r{int(renorm)}"
    )
    for kind, m, (center, scale), renorm in itertools.product(
        ("ragged", "empty_rows", "full", "nothing"),
        (0.0, 0.8),
        ((True, True), (False, True), (True, False)),
        (False, True),
    )
]


@pytest.mark.parametrize("kind, momentum, center, scale, renorm", MASK_GRID)
def test_mask_matches_keras(keras, kind, momentum, center, scale, renorm):
    shape = (6, 5, 3)
    kw = {"momentum": momentum, "center": center, "scale": scale, "epsilon": 1e-3}
    if renorm:
        kw.update(renorm=True, renorm_momentum=0.7, renorm_clipping={"rmax": 1.3, "dmax": 0.3})
    k_layer = keras.layers.BatchNormalization(axis=-1, **kw)
    k_layer.build(shape)
    b_layer = bnlab.BatchNorm(axis=-1, **kw)
    xs, ws, masks = _data(shape, kind, seed=len(MASK_GRID) + int(momentum * 100) + 7 * renorm)
    for step in range(STEPS):
        yk, yb, gk, gb = _step(k_layer, b_layer, xs[step], ws[step], masks[step], True)
        torch.testing.assert_close(yb, yk, **TOL, msg=lambda m, s=step: f"step {s} output: {m}")
        for i, (a, b) in enumerate(zip(gk, gb, strict=True)):
            torch.testing.assert_close(
                b, a, **TOL, msg=lambda m, i=i, s=step: f"step {s} grad {i}: {m}"
            )
        with torch.no_grad():
            for p, g in zip(_params(k_layer, True), gk[1:], strict=True):
                p.sub_(LR * g)
            for p, g in zip(_params(b_layer, False), gb[1:], strict=True):
                p.sub_(LR * g)
    names = ["moving_mean", "moving_variance"]
    if renorm:
        names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
    for name in names:
        torch.testing.assert_close(getattr(b_layer, name), getattr(k_layer, name).value, **TOL)
    yk, yb, gk, gb = _step(k_layer, b_layer, xs[STEPS], ws[STEPS], masks[STEPS], False)
    torch.testing.assert_close(yb, yk, **TOL)
    for a, b in zip(gk, gb, strict=True):
        torch.testing.assert_close(b, a, **TOL)


def test_masked_positions_do_not_count(keras):
    """The masked statistics are those of the kept values alone (closed form), and the
    values under the mask do not change the moving averages."""
    x = torch.randn(4, 6, 2, generator=torch.Generator().manual_seed(0))
    mask = torch.arange(6)[None, :] < torch.tensor([6, 2, 0, 4])[:, None]
    kept = x[mask]  # (kept values, channels)
    bn = bnlab.BatchNorm(axis=-1, momentum=0.0, epsilon=1e-3).train()
    y = bn(x, mask=mask)
    torch.testing.assert_close(bn.moving_mean, kept.mean(0), **TOL)
    torch.testing.assert_close(bn.moving_variance, kept.var(0, unbiased=False), **TOL)
    expected = (x - kept.mean(0)) / torch.sqrt(kept.var(0, unbiased=False) + 1e-3)
    torch.testing.assert_close(y, expected, **TOL)  # every position normalised
    other = x.clone()
    other[~mask] = 100.0
    bn2 = bnlab.BatchNorm(axis=-1, momentum=0.0, epsilon=1e-3).train()
    bn2(other, mask=mask)
    torch.testing.assert_close(bn2.moving_mean, bn.moving_mean, **TOL)


def test_mask_of_wrong_shape_is_refused():
    bn = bnlab.BatchNorm(axis=-1).train()
    with pytest.raises(bnlab.errors.ConfigError, match=r"mask: shape \(4, 3\)"):
        bn(torch.randn(4, 5, 3), mask=torch.ones(4, 3, dtype=torch.bool))


def test_cumulative_momentum_matches_torch():
    """momentum=None is torch's cumulative average, through from_torch/to_torch both ways."""
    ref = torch.nn.BatchNorm1d(3, momentum=None)
    ours = bnlab.BatchNorm.from_torch(ref)
    g = torch.Generator().manual_seed(4)
    batches = [torch.randn(8, 3, generator=g) * (1 + k) + k for k in range(5)]
    for x in batches:
        ref.train()(x)
        ours.train()(x)
    assert ours.momentum is None
    torch.testing.assert_close(ours.moving_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(ours.moving_variance, ref.running_var, **TOL)
    # the plain average of the batches' statistics (unbiased variance, torch's convention)
    torch.testing.assert_close(
        ours.moving_mean, torch.stack([b.mean(0) for b in batches]).mean(0), **TOL
    )
    back = ours.to_torch()
    assert back.momentum is None
    x = torch.randn(8, 3, generator=g)
    back.train()(x)
    ref.train()(x)
    torch.testing.assert_close(back.running_mean, ref.running_mean, **TOL)


HALF_TOL = {torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("mixed", [True, False], ids=["mixed_policy", "half_policy"])
def test_dtype_policy_matches_keras(keras, half, mixed):
    """Keras casts the input to the policy's compute dtype, normalises in float32 and returns
    the compute dtype; bnlab reads the policy off the tensors (see bn_math.keras_dtypes)."""
    name = {torch.float16: "float16", torch.bfloat16: "bfloat16"}[half]
    policy = f"mixed_{name}" if mixed else name
    k_layer = keras.layers.BatchNormalization(axis=-1, momentum=0.5, dtype=policy)
    b_layer = bnlab.BatchNorm(axis=-1, momentum=0.5, num_features=3)
    if not mixed:
        b_layer = b_layer.to(half)  # 16-bit variables: Keras's float16/bfloat16 policy
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, generator=g) * 2 + 1
    x_in = x.to(half) if mixed else x  # mixed: 16-bit activations; else float32 input
    for training in (True, False):
        yk = k_layer(x_in, training=training)
        yb = b_layer.train(training)(x_in)
        assert yb.dtype == yk.dtype == half
        tol = HALF_TOL[half]
        torch.testing.assert_close(yb.float(), yk.float(), rtol=tol, atol=tol)
    assert b_layer.moving_mean.dtype == (torch.float32 if mixed else half)
    torch.testing.assert_close(
        b_layer.moving_mean.float(), k_layer.moving_mean.value.float(), rtol=tol, atol=tol
    )


def test_unbiased_masked_variance_counts_only_kept_values():
    x = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(6))
    mask = torch.arange(5)[None, :] < torch.tensor([5, 1, 3])[:, None]
    bn = bnlab.BatchNorm(axis=-1, momentum=0.0, variance="unbiased").train()
    bn(x, mask=mask)
    torch.testing.assert_close(bn.moving_variance, x[mask].var(0, unbiased=True), **TOL)


def test_mask_with_ghost_batches_is_refused():
    bn = bnlab.BatchNorm(axis=-1, virtual_batch_size=2).train()
    with pytest.raises(bnlab.errors.ConfigError, match="mask: .*virtual_batch_size=2"):
        bn(torch.randn(4, 5, 3), mask=torch.ones(4, 5, dtype=torch.bool))


def test_config_lists_keras_keys_first_in_keras_order(keras):
    keras_keys = [
        k for k in keras.layers.BatchNormalization().get_config() if k not in ("name", "dtype")
    ]
    config = bnlab.BatchNorm(synchronized=True).get_config()
    assert list(config)[: len(keras_keys)] == keras_keys
    assert list(config)[len(keras_keys) :] == ["virtual_batch_size", "variance", "num_features"]
    assert config["synchronized"] is True
