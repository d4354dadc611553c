"""Each check on hand-made models and numbers: one that triggers it, one that does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from torch import nn

import bnlab
from bnlab.doctor import CHECKS, adapt
from bnlab.doctor.adapters import BNLayer
from bnlab.doctor.checks.statistics import running_vs_population
from bnlab.doctor.exam import Exam, ModeResult
from bnlab.nn import Conv2d
from bnlab.nn.regularizers import L2


def static_exam(model, **extra) -> Exam:
    """An Exam holding what the doctor reads without data (layers and graph)."""
    adapter = adapt(model)
    return Exam(framework=adapter.framework, bn=adapter.bn_layers(), graph=adapter.graph(), **extra)


def ids(exam: Exam, check: str) -> list:
    return CHECKS[check](exam)


# ---------------------------------------------------------------- structure
def test_bias_before_bn_sees_through_pooling_but_not_relu():
    hit = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.BatchNorm2d(4))
    (f,) = ids(static_exam(hit), "bias-before-bn")
    assert f.layer == "0" and f.severity == "info" and f.evidence["bias_parameters"] == 4
    miss = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
    assert ids(static_exam(miss), "bias-before-bn") == []
    no_bias = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4))
    assert ids(static_exam(no_bias), "bias-before-bn") == []


class FunctionalRelu(nn.Module):
    """F.relu between the layers: only the traced graph sees it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(self.bn(F.relu(self.fc(x))))


def test_the_fx_graph_sees_functional_calls():
    exam = static_exam(FunctionalRelu())
    assert exam.graph.source == "torch.fx"
    assert ids(exam, "bias-before-bn") == []  # fc -> relu -> bn: the bias is not wasted
    assert {n.kind for n in exam.graph.nodes.values()} >= {"input", "linear", "activation", "bn"}


def test_dropout_before_bn_through_flatten_but_not_through_a_linear_layer():
    hit = nn.Sequential(nn.Dropout(0.2), nn.Flatten(), nn.BatchNorm1d(16))
    (f,) = ids(static_exam(hit), "dropout-before-bn")
    assert f.layer == "2" and f.evidence["rate"] == 0.2
    miss = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 8), nn.BatchNorm1d(8))
    assert ids(static_exam(miss), "dropout-before-bn") == []


def test_bn_before_output_only_when_bn_makes_the_logits():
    hit = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Softmax(dim=1))
    assert [f.layer for f in ids(static_exam(hit), "bn-before-output")] == ["1"]
    miss = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    assert ids(static_exam(miss), "bn-before-output") == []


def test_l2_with_bn_through_relu_and_pool_but_not_sigmoid():
    def net(act):
        return nn.Sequential(
            Conv2d(1, 4, 3, kernel_regularizer=L2(0.01)), act, nn.MaxPool2d(2), nn.BatchNorm2d(4)
        )

    exam = static_exam(net(nn.ReLU()), regularization_loss=0.3,
                       train_mode=ModeResult(accuracy=0.9, loss=0.1, samples=10))  # fmt: skip
    (f,) = ids(exam, "l2-with-bn")
    assert f.evidence["l2"] == 0.01 and f.evidence["regularization_share"] == pytest.approx(0.75)
    assert f.severity == "warning"
    assert ids(static_exam(net(nn.Sigmoid())), "l2-with-bn") == []
    tiny = static_exam(net(nn.ReLU()), regularization_loss=1e-4,
                       train_mode=ModeResult(accuracy=0.9, loss=1.0, samples=10))  # fmt: skip
    assert ids(tiny, "l2-with-bn")[0].severity == "info"  # 0.01% of the loss: a remark


def test_untraceable_models_fall_back_to_registration_order():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3, bias=True)
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent: symbolic tracing fails
                x = x * 2
            return self.bn(self.fc(x))

    exam = static_exam(Branchy())
    assert exam.graph.source == "registration order"
    assert [f.id for f in ids(exam, "bias-before-bn")] == ["bias-before-bn"]
    assert [f.layer for f in ids(exam, "bn-before-output")] == ["bn"]


# ----------------------------------------------------------------- settings
def test_torch_momentum_that_looks_like_keras():
    (f,) = ids(static_exam(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, momentum=0.99))),
               "torch-momentum-looks-like-keras")  # fmt: skip
    assert f.evidence["keras_equivalent"]["1"] == pytest.approx(0.01)
    assert "0.01" in f.fix
    ok = static_exam(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, momentum=0.1)))
    assert ids(ok, "torch-momentum-looks-like-keras") == []
    # bnlab.BatchNorm takes Keras's convention: 0.99 is right there
    keras_style = static_exam(nn.Sequential(nn.Linear(2, 3), bnlab.BatchNorm(0.99, num_features=3)))
    assert ids(keras_style, "torch-momentum-looks-like-keras") == []


@pytest.mark.parametrize(("batch", "severity"), [(1, "error"), (8, "warning"), (32, None)])
def test_small_batch(batch, severity):
    exam = static_exam(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)), train_batch_size=batch)
    found = ids(exam, "small-batch")
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_small_ghost_batches_are_small_batches():
    bn = bnlab.BatchNorm(virtual_batch_size=4, num_features=3)
    (f,) = ids(static_exam(nn.Sequential(nn.Linear(2, 3), bn)), "small-batch")
    assert f.evidence["samples_per_bn_batch"] == {"1": 4}


def test_frozen_bn_in_train_mode_is_the_trap_and_eval_mode_is_not():
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    for p in net.parameters():
        p.requires_grad_(False)
    assert [f.id for f in ids(static_exam(net.train()), "frozen-bn-in-train-mode")] == [
        "frozen-bn-in-train-mode"
    ]
    assert ids(static_exam(net.eval()), "frozen-bn-in-train-mode") == []
    keras_semantics = nn.Sequential(nn.Linear(2, 3), bnlab.BatchNorm(num_features=3))
    keras_semantics[1].trainable = False  # frozen AND inference mode: the right way
    assert ids(static_exam(keras_semantics.train()), "frozen-bn-in-train-mode") == []


# --------------------------------------------------------------- statistics
def _layer(path="bn", momentum=0.99, steps=None, eps=1e-3, n=4) -> BNLayer:
    return BNLayer(path=path, kind="bnlab.BatchNorm", num_features=n, momentum=momentum,
                   native_momentum=momentum, epsilon=eps, steps=steps, variance="biased",
                   has_params=True, params_frozen=False, uses_batch_stats_in_training=True,
                   in_train_mode=False)  # fmt: skip


def _stats_exam(layer, running, population, **extra) -> Exam:
    exam = static_exam(nn.Identity(), **extra)
    exam.bn = [layer]
    exam.running = {layer.path: running}
    exam.population = {layer.path: (*population, 1000)}
    return exam


def test_the_initial_weight_estimate_recovers_momentum_to_the_power_steps():
    mu, var = np.array([50.0, -20.0, 8.0, 30.0]), np.array([25.0, 4.0, 9.0, 100.0])
    w = 0.99**60
    running = (w * 0.0 + (1 - w) * mu, w * 1.0 + (1 - w) * var)  # stationary statistics
    exam = _stats_exam(_layer(steps=60), running, (mu, var))
    dist = running_vs_population(exam, "bn", 1e-3)
    assert dist["estimated_initial_weight"] == pytest.approx(w, abs=1e-3)
    (f,) = ids(exam, "momentum-too-high-for-steps")
    assert f.evidence["layers"]["bn"]["initial_weight"] == pytest.approx(w)
    assert "0.926" in f.fix  # 0.01 ** (1 / 60): the momentum that fades the start below 1%


def test_momentum_is_fine_once_the_statistics_are_current():
    mu, var = np.array([50.0, -20.0, 8.0, 30.0]), np.array([25.0, 4.0, 9.0, 100.0])
    # many steps, or a recalibrated layer (running == population) despite few steps
    assert (
        ids(_stats_exam(_layer(steps=2000), (mu, var), (mu, var)), "momentum-too-high-for-steps")
        == []
    )
    assert (
        ids(_stats_exam(_layer(steps=10), (mu, var), (mu, var)), "momentum-too-high-for-steps")
        == []
    )


def test_degenerate_channels():
    var = np.array([1.0, 0.0, 0.0, 2.0])  # half the channels constant on the data
    exam = _stats_exam(_layer(), (np.zeros(4), var), (np.zeros(4), var))
    (f,) = ids(exam, "degenerate-channels")
    assert f.evidence["constant_on_data"] == [1, 2] and f.evidence["fraction"] == 0.5
    one_dead = np.array([1.0, 0.0, 3.0, 2.0])  # one dead unit of four... is 25%: reported
    assert ids(_stats_exam(_layer(n=4), (np.zeros(4), one_dead), (np.zeros(4), one_dead)),
               "degenerate-channels")  # fmt: skip
    healthy = np.array([1.0, 0.5, 3.0, 2.0])
    assert ids(_stats_exam(_layer(), (np.zeros(4), healthy), (np.zeros(4), healthy)),
               "degenerate-channels") == []  # fmt: skip
    # a collapsed running variance with varying inputs blows inference up: always reported
    collapsed = _stats_exam(
        _layer(n=8), (np.zeros(8), np.r_[0.0, np.ones(7)]), (np.zeros(8), np.ones(8))
    )
    (f,) = ids(collapsed, "degenerate-channels")
    assert f.evidence["collapsed_running_variance"] == [0]


@pytest.mark.parametrize(("scale", "found"), [(255.0, True), (1.0, False), (0.001, True)])
def test_unnormalized_inputs(scale, found):
    exam = static_exam(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
    exam.input_mean, exam.input_std = np.array([0.4 * scale]), np.array([0.3 * scale])
    exam.input_min, exam.input_max = 0.0, scale
    assert bool(ids(exam, "unnormalized-inputs")) is found


def test_unnormalized_inputs_need_bn_and_respect_a_rescaling_layer(keras):
    exam = static_exam(nn.Sequential(nn.Linear(2, 3)))  # no BN: not the doctor's business
    exam.input_mean, exam.input_std, exam.input_min, exam.input_max = (
        np.array([100.0]),
        np.array([80.0]),
        0.0,
        255.0,
    )
    assert ids(exam, "unnormalized-inputs") == []
    model = keras.Sequential([keras.Input((2,)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Dense(3), keras.layers.BatchNormalization()])  # fmt: skip
    exam = static_exam(model)
    exam.input_mean, exam.input_std, exam.input_min, exam.input_max = (
        np.array([100.0]),
        np.array([80.0]),
        0.0,
        255.0,
    )
    assert ids(exam, "unnormalized-inputs") == []


# ----------------------------------------------------------------- behaviour
def _behaviour(train, inference, recal) -> Exam:
    exam = static_exam(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
    exam.train_mode = ModeResult(train, 0.1, 100)
    exam.inference = ModeResult(inference, 0.5, 100)
    exam.recalibrated = None if recal is None else ModeResult(recal, 0.1, 100)
    return exam


def test_stale_running_stats_needs_the_intervention_to_close_most_of_the_gap():
    (f,) = ids(_behaviour(0.95, 0.45, 0.94), "stale-running-stats")
    assert f.confirmed is True and f.evidence["closed_fraction"] == pytest.approx(0.98)
    assert ids(_behaviour(0.95, 0.45, 0.94), "train-eval-gap") == []
    (g,) = ids(_behaviour(0.95, 0.45, 0.55), "train-eval-gap")
    assert g.confirmed is None and ids(_behaviour(0.95, 0.45, 0.55), "stale-running-stats") == []
    assert ids(_behaviour(0.95, 0.93, None), "stale-running-stats") == []  # 0.02: no gap
    assert ids(_behaviour(0.95, 0.93, None), "train-eval-gap") == []


# --------------------------------------------------------------------- keras
def test_keras_graph_splits_fused_activations_and_follows_branches(keras):
    layers = keras.layers
    inp = keras.Input((6,))
    a = layers.Dense(4, name="d1")(inp)  # linear, with bias, straight into BN
    b = layers.BatchNormalization(name="bn1")(a)
    c = layers.Dense(
        4, activation="relu", name="d2", kernel_regularizer=keras.regularizers.L2(0.1)
    )(b)
    d = layers.BatchNormalization(name="bn2")(c)
    out = layers.Dense(3, activation="softmax", name="out")(layers.Add()([b, d]))
    exam = static_exam(keras.Model(inp, out))
    assert exam.graph.source == "keras graph"
    assert exam.graph.nodes["d2.activation"].attrs["fn"] == "relu"
    assert exam.graph.nodes["add"].inputs == ["bn1", "bn2"]
    assert [f.layer for f in ids(exam, "bias-before-bn")] == ["d1"]  # d2's ReLU saves its bias
    assert [f.layer for f in ids(exam, "l2-with-bn")] == ["d2"]  # through ReLU
    assert ids(exam, "bn-before-output") == []
    assert exam.graph.outputs == ["out.activation"]
