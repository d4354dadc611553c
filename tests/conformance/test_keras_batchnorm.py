"""bnlab.BatchNorm against keras.layers.BatchNormalization (Keras 3, torch backend).

For every configuration of the grid both layers see the same 5 training batches. At each
step the training-mode outputs and the gradients of a weighted-sum loss with respect to the
input, gamma and beta must agree; both layers then take the same SGD step with their own
gradients. After the 5 steps the moving statistics (and renorm's extra ones) and the
inference-mode outputs and gradients must agree. Tolerance: 1e-5 (float32).
"""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch

import bnlab

TOL = {"rtol": 1e-5, "atol": 1e-5}
STEPS = 5
LR = 0.1
# The batches' spread and offset change from step to step, so momentum, renorm's r/d and
# its clipping all matter (r below rmin at step 0, above rmax later; d beyond dmax).
# Offsets stay within about 1.5 standard deviations: Keras's torch backend computes the
# variance as E[x^2] - E[x]^2, whose float32 error grows with (mean / std)^2 and would
# exceed 1e-5 by itself on strongly offset data (see test_offset_data_accuracy).
SCALES = (0.7, 1.0, 1.5, 2.0, 0.8)
SHIFTS = (0.0, 0.4, -0.3, 0.6, 0.2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tensors here are tiny: waking a second intra-op thread for each of PyTorch's
    # batch-norm kernels costs more than the work and makes the suite 3x slower on a busy
    # CPU. Results do not depend on the thread count beyond float rounding.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# (name, input shape, axis): 2-D (N, C) with axis 1 and -1; 4-D NCHW with axis 1, NHWC with -1.
LAYOUTS = [
    ("2d_axis1", (16, 6), 1),
    ("2d_axis-1", (16, 6), -1),
    ("4d_nchw_axis1", (4, 3, 5, 5), 1),
    ("4d_nhwc_axis-1", (4, 5, 5, 3), -1),
]


def _batches(shape, axis, seed):
    g = torch.Generator().manual_seed(seed)
    channels = shape[axis]
    view = [1] * len(shape)
    view[axis] = channels
    offsets = torch.linspace(-0.5, 1.0, channels).reshape(view)
    out = []
    for k in range(STEPS + 1):  # the last one is for inference
        base = torch.randn(shape, generator=g)
        out.append(base * SCALES[k % STEPS] * (1 + 0.2 * k) + offsets + SHIFTS[k % STEPS])
    weights = [torch.randn(shape, generator=g) for _ in range(STEPS + 1)]
    return out, weights


def _keras_state(layer) -> dict[str, torch.Tensor]:
    names = ["moving_mean", "moving_variance"]
    if layer.renorm:
        names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
    return {n: getattr(layer, n).value.detach().clone() for n in names}


def _params(layer, keras: bool) -> list:
    out = []
    for name in ("gamma", "beta"):
        p = getattr(layer, name)
        if p is not None:
            out.append(p.value if keras else p)
    return out


def _step_pair(k_layer, b_layer, x, w, training: bool):
    """Forward both layers on x; return outputs and gradients (input first, then params)."""
    xk = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    yk = k_layer(xk, training=training)
    b_layer.train(training)
    yb = b_layer(xb)
    k_vars = [xk] + [p for p in _params(k_layer, True) if p.requires_grad]
    b_vars = [xb] + [p for p in _params(b_layer, False) if p.requires_grad]
    gk = torch.autograd.grad((yk * w).sum(), k_vars)
    gb = torch.autograd.grad((yb * w).sum(), b_vars)
    return yk.detach(), yb.detach(), gk, gb


def check_conformance(keras, keras_kw: dict, bnlab_kw: dict, shape, axis, *, trainable=True):
    k_layer = keras.layers.BatchNormalization(axis=axis, **keras_kw)
    k_layer.build(shape)
    k_layer.trainable = trainable
    b_layer = bnlab.BatchNorm(axis=axis, **bnlab_kw)
    b_layer.trainable = trainable
    seed = zlib.crc32(repr((sorted(map(str, keras_kw.items())), shape, axis)).encode())
    xs, ws = _batches(shape, axis, seed)

    for step in range(STEPS):
        yk, yb, gk, gb = _step_pair(k_layer, b_layer, xs[step], ws[step], training=True)
        torch.testing.assert_close(
            yb, yk, **TOL, msg=lambda m, step=step: f"step {step} output: {m}"
        )
        assert len(gk) == len(gb)
        for i, (a, b) in enumerate(zip(gk, gb, strict=True)):
            torch.testing.assert_close(
                b, a, **TOL, msg=lambda m, i=i, step=step: f"step {step} grad {i}: {m}"
            )
        with torch.no_grad():  # the same SGD step on both sides, each with its own gradient
            for p, g in zip(_params(k_layer, True), gk[1:], strict=False):
                p.sub_(LR * g)
            for p, g in zip(_params(b_layer, False), gb[1:], strict=False):
                p.sub_(LR * g)

    for name, value in _keras_state(k_layer).items():
        torch.testing.assert_close(
            getattr(b_layer, name), value, **TOL, msg=lambda m, n=name: f"{n} after 5 steps: {m}"
        )
    expected_steps = STEPS if trainable else 0
    assert int(b_layer.num_batches_tracked) == expected_steps

    yk, yb, gk, gb = _step_pair(k_layer, b_layer, xs[STEPS], ws[STEPS], training=False)
    torch.testing.assert_close(yb, yk, **TOL, msg=lambda m: f"inference output: {m}")
    for a, b in zip(gk, gb, strict=True):
        torch.testing.assert_close(b, a, **TOL, msg=lambda m: f"inference grad: {m}")
    return k_layer, b_layer


# ------------------------------------------------------------------------------ the grid
GRID = [
    pytest.param(
        m, eps, center, scale, layout, id=f"m{m}-eps{eps}-c{int(center)}s{int(scale)}-{layout[0]}"
    )
    for m, eps, (center, scale), layout in itertools.product(
        (0.0, 0.5, 0.8, 0.99),
        (1e-3, 1e-5),
        itertools.product((True, False), (True, False)),
        LAYOUTS,
    )
]


@pytest.mark.parametrize("momentum, epsilon, center, scale, layout", GRID)
def test_grid(keras, momentum, epsilon, center, scale, layout):
    _, shape, axis = layout
    kw = {"momentum": momentum, "epsilon": epsilon, "center": center, "scale": scale}
    check_conformance(keras, kw, kw, shape, axis)


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay[0] for lay in LAYOUTS])
def test_non_default_initializers(keras, layout):
    _, shape, axis = layout
    keras_kw = {
        "momentum": 0.8,
        "gamma_initializer": keras.initializers.Constant(0.5),
        "beta_initializer": keras.initializers.Constant(-0.25),
        "moving_mean_initializer": keras.initializers.Constant(0.3),
        "moving_variance_initializer": keras.initializers.Constant(2.0),
    }
    bnlab_kw = {
        "momentum": 0.8,
        "gamma_initializer": {"class_name": "Constant", "config": {"value": 0.5}},
        "beta_initializer": bnlab.nn.initializers.Constant(-0.25),
        "moving_mean_initializer": bnlab.nn.initializers.Constant(0.3),
        "moving_variance_initializer": bnlab.nn.initializers.Constant(2.0),
    }
    _, b_layer = check_conformance(keras, keras_kw, bnlab_kw, shape, axis)
    assert b_layer.num_features == shape[axis]


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay[0] for lay in LAYOUTS])
@pytest.mark.parametrize("momentum", (0.0, 0.99))
def test_trainable_false_runs_in_inference_mode(keras, layout, momentum):
    _, shape, axis = layout
    kw = {
        "momentum": momentum,
        "moving_mean_initializer": "ones",
        "gamma_initializer": "ones",
    }
    _, b_layer = check_conformance(keras, kw, kw, shape, axis, trainable=False)
    # frozen: nothing moved, gamma has no gradient
    assert torch.equal(b_layer.moving_mean, torch.ones(shape[axis]))
    assert not b_layer.gamma.requires_grad


RENORM = [
    ("no_clipping", None),
    ("empty_clipping", {}),
    ("clip_all", {"rmax": 1.2, "rmin": 0.9, "dmax": 0.1}),
    ("clip_rmax", {"rmax": 1.1}),
    ("clip_rmin_dmax", {"rmin": 0.95, "dmax": 0.05}),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay[0] for lay in LAYOUTS])
@pytest.mark.parametrize("clipping", [c for _, c in RENORM], ids=[n for n, _ in RENORM])
@pytest.mark.parametrize("momentum, renorm_momentum", [(0.99, 0.99), (0.5, 0.8)])
def test_renorm(keras, layout, clipping, momentum, renorm_momentum):
    _, shape, axis = layout
    kw = {
        "momentum": momentum,
        "renorm": True,
        "renorm_clipping": clipping,
        "renorm_momentum": renorm_momentum,
    }
    check_conformance(keras, kw, kw, shape, axis)


@pytest.mark.parametrize("center, scale", [(False, True), (True, False), (False, False)])
def test_renorm_without_gamma_or_beta(keras, center, scale):
    kw = {
        "renorm": True,
        "renorm_clipping": {"rmax": 1.2, "rmin": 0.9, "dmax": 0.1},
        "renorm_momentum": 0.7,
        "center": center,
        "scale": scale,
    }
    check_conformance(keras, kw, kw, (4, 3, 5, 5), 1)


def test_renorm_clipping_is_exercised(keras):
    """The clipped case differs from the unclipped one, so the grid really tests clipping."""
    shape, axis = (4, 3, 5, 5), 1
    kw = {"renorm": True, "renorm_momentum": 0.7}
    _, clipped = check_conformance(
        keras,
        {**kw, "renorm_clipping": {"rmax": 1.2, "rmin": 0.9, "dmax": 0.1}},
        {**kw, "renorm_clipping": {"rmax": 1.2, "rmin": 0.9, "dmax": 0.1}},
        shape,
        axis,
    )
    _, free = check_conformance(keras, kw, kw, shape, axis)
    # same batches (the seed depends on the Keras arguments only through the clipping)
    xs, _ = _batches(shape, axis, 0)
    clipped.train()
    free.train()
    assert not torch.allclose(clipped(xs[0]), free(xs[0]), atol=1e-3)


def test_from_keras_config(keras):
    """A bnlab layer built from a Keras layer's get_config() matches that layer."""
    k_layer = keras.layers.BatchNormalization(
        axis=1,
        momentum=0.7,
        epsilon=1e-4,
        gamma_initializer=keras.initializers.Constant(1.5),
        moving_variance_initializer="ones",
        gamma_regularizer=keras.regularizers.L2(0.05),
        beta_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.02),
        beta_constraint="non_neg",
        renorm=True,
        renorm_clipping={"rmax": 1.3, "dmax": 0.2},
    )
    b_layer = bnlab.BatchNorm.from_config(k_layer.get_config())
    assert b_layer.renorm_clipping == {"rmax": 1.3, "dmax": 0.2}
    assert b_layer.momentum == 0.7 and b_layer.epsilon == 1e-4 and b_layer.axis == 1
    shape = (4, 3, 5, 5)
    k_layer.build(shape)
    xs, ws = _batches(shape, 1, 7)
    for step in range(STEPS):
        yk, yb, gk, gb = _step_pair(k_layer, b_layer, xs[step], ws[step], training=True)
        torch.testing.assert_close(yb, yk, **TOL)
        for a, b in zip(gk, gb, strict=True):
            torch.testing.assert_close(b, a, **TOL)
    # Keras's regularization losses (model.losses) and constraints
    keras_loss = sum(k_layer.losses)
    torch.testing.assert_close(b_layer.regularization_loss(), keras_loss, **TOL)
    with torch.no_grad():
        k_layer.beta.value.copy_(torch.tensor([-1.0, 0.5, -0.1]))
        b_layer.beta.copy_(torch.tensor([-1.0, 0.5, -0.1]))
    b_layer.apply_constraints()
    expected = k_layer.beta_constraint(k_layer.beta.value)
    torch.testing.assert_close(b_layer.beta.detach(), expected.detach(), **TOL)
    assert torch.equal(b_layer.beta.detach(), torch.tensor([0.0, 0.5, 0.0]))


def test_offset_data_accuracy(keras):
    """Why the grid keeps offsets moderate, and why bnlab does not copy Keras's variance formula.

    On data whose mean is 16 standard deviations from zero, Keras's E[x^2] - E[x]^2 loses
    digits to cancellation; bnlab's statistics (torch's two-pass kernel) stay close to the
    float64 truth.
    """
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 4, generator=g) * 0.5 + 8.0
    w = torch.randn(64, 4, generator=g)
    k_layer = keras.layers.BatchNormalization(axis=1, momentum=0.0, epsilon=1e-5)
    k_layer.build(x.shape)
    b_layer = bnlab.BatchNorm(axis=1, momentum=0.0, epsilon=1e-5).train()
    truth = bnlab.BatchNorm(axis=1, momentum=0.0, epsilon=1e-5).double().train()

    def run(layer, xx, keras_layer=False):
        xx = xx.clone().requires_grad_(True)
        y = layer(xx, training=True) if keras_layer else layer(xx)
        (dx,) = torch.autograd.grad((y * w.to(y.dtype)).sum(), [xx])
        var = layer.moving_variance.value if keras_layer else layer.moving_variance
        return y.detach().double(), dx.double(), var.detach().double()

    t_y, t_dx, t_var = run(truth, x.double())
    k_y, k_dx, k_var = run(k_layer, x, keras_layer=True)
    b_y, b_dx, b_var = run(b_layer, x)
    # the exact population variance of x, for the record
    torch.testing.assert_close(t_var, x.double().var(0, correction=0))

    def err(a, b):
        return (a - b).abs().max().item()

    assert err(b_var, t_var) < 1e-6 < err(k_var, t_var)
    assert err(b_y, t_y) < 1e-5 < err(k_y, t_y)
    assert err(b_dx, t_dx) < 1e-5 < err(k_dx, t_dx)
