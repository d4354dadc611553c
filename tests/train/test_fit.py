"""fit(): history contract, Keras epoch semantics, determinism, divergence, regularization."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_circles
from torch import nn

from bnlab.data.dataset import Dataset
from bnlab.errors import ConfigError, DataError
from bnlab.nn import BatchNorm, Dense
from bnlab.train import (
    batch_order,
    evaluate,
    fit,
    make_optimizer,
    per_sample_loss,
    seeded,
    train_step,
)
from bnlab.train.progress import progress_enabled

BASE_KEYS = {
    "loss",
    "data_loss",
    "reg_loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "train_eval_loss",
    "train_eval_accuracy",
}


@pytest.fixture(scope="module")
def circles() -> Dataset:
    x, y = make_circles(n_samples=200, noise=0.1, random_state=1)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return Dataset(x[:100], y[:100], x[100:], y[100:], ["outer", "inner"], "circles")


def mlp(bn: bool = False, l2: float | None = None, outputs: int = 1, seed: int = 0) -> nn.Module:
    with seeded(seed):
        layers = [Dense(2, 16, kernel_regularizer=l2), nn.ReLU()]
        if bn:
            layers.append(BatchNorm(num_features=16))
        layers.append(Dense(16, outputs, kernel_regularizer=l2))
        return nn.Sequential(*layers)


def sgd(**kw):
    return {"optimizer": "sgd", "lr": 0.05, "optimizer_options": {"momentum": 0.9}, **kw}


def test_history_contract(circles):
    seen = []
    h = fit(
        mlp(), circles, epochs=3, batch_size=16, on_epoch_end=lambda e, logs: seen.append((e, logs))
    )
    assert set(h.history) == BASE_KEYS
    assert all(len(v) == 3 for v in h.history.values())
    assert h.epoch == [1, 2, 3] and [e for e, _ in seen] == [1, 2, 3]
    assert seen[-1][1]["val_accuracy"] == h.history["val_accuracy"][-1]
    assert h.diverged_at_epoch is None and h.seconds > 0
    p = h.params
    assert p["val_source"] == "test" and p["task"] == "binary" and p["optimizer"] == "adam"
    assert p["lr"] == 1e-3 and p["steps"] == 7 and p["batch_size"] == 16 and p["seed"] == 0
    for key in ("accuracy", "val_accuracy", "train_eval_accuracy"):
        assert all(0 <= a <= 1 for a in h.history[key])
    # no regularizer: total loss is the data loss
    assert h.history["loss"] == h.history["data_loss"] and set(h.history["reg_loss"]) == {0.0}


def test_validation_set_is_used_when_present(circles):
    ds = copy.copy(circles)
    ds.x_val, ds.y_val = circles.x_train[:40], circles.y_train[:40]
    model = mlp()
    h = fit(model, ds, epochs=2, batch_size=16)
    assert h.params["val_source"] == "validation"
    assert BASE_KEYS | {"test_loss", "test_accuracy"} == set(h.history)
    val_loss, val_acc = evaluate(model, ds.x_val, ds.y_val)
    test_loss, test_acc = evaluate(model, ds.x_test, ds.y_test)
    assert h.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-6)
    assert h.history["val_accuracy"][-1] == val_acc
    assert h.history["test_loss"][-1] == pytest.approx(test_loss, rel=1e-6)
    assert h.history["test_accuracy"][-1] == test_acc


def test_epoch_metrics_equal_sequential_training_by_hand(circles):
    """fit == batch_order + train_step, with Keras's batch-size-weighted epoch means."""
    model, twin = mlp(bn=True), mlp(bn=True)
    h = fit(model, circles, epochs=2, batch_size=30, seed=4, **sgd())
    opt = make_optimizer("sgd", twin.parameters(), 0.05, momentum=0.9)
    twin.train()
    for epoch in (1, 2):
        total, hits = 0.0, 0
        batches = batch_order(100, 30, seed=4, epoch=epoch)
        assert [len(b) for b in batches] == [30, 30, 30, 10]  # a smaller last batch
        for idx in batches:
            loss, _, _, ok = train_step(twin, opt, circles.x_train[idx], circles.y_train[idx])
            total += loss.item() * len(idx)
            hits += ok.item()
        assert h.history["loss"][epoch - 1] == pytest.approx(total / 100, rel=1e-6)
        assert h.history["accuracy"][epoch - 1] == hits / 100
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_frozen_weights_make_epoch_loss_the_mean_sample_loss(circles):
    """lr = 0: every batch sees the same weights, so Keras's weighted epoch mean of batch
    losses equals the mean per-sample loss, i.e. the inference-mode training loss."""
    h = fit(mlp(), circles, epochs=1, batch_size=16, **sgd(lr=0.0))
    assert h.history["loss"][0] == pytest.approx(h.history["train_eval_loss"][0], rel=1e-6)
    assert h.history["accuracy"][0] == h.history["train_eval_accuracy"][0]


def test_class_weight_balanced_scales_each_sample_loss(circles):
    ds = copy.copy(circles)
    keep = torch.cat(
        [torch.nonzero(circles.y_train == 0)[:40, 0], torch.nonzero(circles.y_train == 1)[:15, 0]]
    )
    ds.x_train, ds.y_train = circles.x_train[keep], circles.y_train[keep]
    model = mlp()
    h = fit(model, ds, epochs=1, batch_size=16, class_weight="balanced", **sgd(lr=0.0))
    w = {0: 55 / (2 * 40), 1: 55 / (2 * 15)}  # n / (n_classes * count)
    assert h.params["class_weight"] == pytest.approx(w)
    with torch.no_grad():
        per = per_sample_loss(model(ds.x_train), ds.y_train)
    weights = torch.tensor([w[int(c)] for c in ds.y_train])
    assert h.history["loss"][0] == pytest.approx((weights * per).mean().item(), rel=1e-6)
    h = fit(mlp(), ds, epochs=1, batch_size=16, class_weight={1: 3.0}, **sgd(lr=0.0))
    assert h.params["class_weight"] == {0: 1.0, 1: 3.0}


def test_l2_part_equals_l2_times_sum_of_squared_kernels(circles):
    model = mlp(l2=0.01)
    kernels = [m.weight for m in model if isinstance(m, Dense)]
    expected = 0.01 * sum(float((k.detach().double() ** 2).sum()) for k in kernels)
    h = fit(model, circles, epochs=2, batch_size=16, **sgd(lr=0.0))
    assert h.history["reg_loss"] == pytest.approx([expected] * 2, rel=1e-6)
    for i in range(2):
        total = h.history["data_loss"][i] + h.history["reg_loss"][i]
        assert h.history["loss"][i] == pytest.approx(total, rel=1e-6)
        # Keras adds the regularization to evaluation losses too
        assert h.history["train_eval_loss"][i] == pytest.approx(total, rel=1e-6)
    # with learning: the step reports the penalty of the weights it started from
    opt = make_optimizer("sgd", model.parameters(), lr=0.5)
    before = 0.01 * sum(float((k.detach().double() ** 2).sum()) for k in kernels)
    _, _, reg, _ = train_step(model.train(), opt, circles.x_train[:8], circles.y_train[:8])
    after = 0.01 * sum(float((k.detach().double() ** 2).sum()) for k in kernels)
    assert reg.item() == pytest.approx(before, rel=1e-6) and after != pytest.approx(before)


def test_deterministic_given_seed(circles):
    runs = [
        fit(mlp(bn=True, seed=1), circles, epochs=3, batch_size=16, seed=5, **sgd())
        for _ in range(2)
    ]
    assert runs[0].history == runs[1].history
    other = fit(mlp(bn=True, seed=1), circles, epochs=3, batch_size=16, seed=6, **sgd())
    assert other.history["loss"] != runs[0].history["loss"]


def test_dropout_masks_come_from_the_seed_and_spare_the_caller_rng(circles):
    def model():
        with seeded(0):
            return nn.Sequential(Dense(2, 32), nn.ReLU(), nn.Dropout(0.5), Dense(32, 1))

    torch.manual_seed(42)
    a = fit(model(), circles, epochs=2, batch_size=16, seed=3)
    after_a = torch.rand(1)
    torch.manual_seed(7)
    b = fit(model(), circles, epochs=2, batch_size=16, seed=3)
    assert a.history == b.history
    torch.manual_seed(42)
    assert torch.equal(torch.rand(1), after_a)  # fit restored the global RNG


def test_divergence_stops_and_is_recorded(circles):
    h = fit(mlp(), circles, epochs=5, batch_size=16, **sgd(lr=1e12))
    assert h.diverged_at_epoch is not None and h.diverged_at_epoch <= 5
    assert len(h.epoch) == h.diverged_at_epoch
    assert set(h.history) == BASE_KEYS
    assert all(len(v) == h.diverged_at_epoch for v in h.history.values())
    assert not math.isfinite(h.history["loss"][-1]) or not math.isfinite(h.history["val_loss"][-1])
    healthy = fit(mlp(), circles, epochs=2, batch_size=16, **sgd())
    assert healthy.diverged_at_epoch is None


def test_batch_of_one_with_batchnorm_is_refused_up_front(circles):
    with pytest.raises(ConfigError, match=r"batch_size: 1 is not >= 2.*BatchNorm"):
        fit(mlp(bn=True), circles, epochs=1, batch_size=1)
    h = fit(mlp(), circles, epochs=1, batch_size=1)  # no BN: fine
    assert h.params["steps"] == 100
    frozen = mlp(bn=True)
    frozen[2].trainable = False  # Keras: a frozen BN runs in inference mode
    assert fit(frozen, circles, epochs=1, batch_size=1).params["steps"] == 100


def test_last_single_sample_is_merged_not_fed_to_batchnorm(circles):
    ds = copy.copy(circles)
    ds.x_train, ds.y_train = circles.x_train[:33], circles.y_train[:33]
    h = fit(mlp(bn=True), ds, epochs=2, batch_size=16)  # 16 + 17, never a batch of 1
    assert h.params["steps"] == 2 and h.diverged_at_epoch is None


def test_precise_eval_equals_full_batch_statistics(circles):
    """With all training samples in one statistics batch, exact BN statistics make the
    inference-mode model compute what the training-mode model computes on that batch."""
    pytest.importorskip("bnlab.nn.precise")
    model = mlp(bn=True)
    h = fit(model, circles, epochs=1, batch_size=16, precise_eval=True, **sgd())
    assert {"precise_val_accuracy", "precise_train_eval_accuracy"} <= set(h.history)
    with torch.no_grad():
        model.train()
        logits = model(circles.x_train)
        model.eval()
    moving = model[2].moving_mean.clone()
    full_batch_acc = ((logits[:, 0] > 0).long() == circles.y_train).float().mean().item()
    assert h.history["precise_train_eval_accuracy"][0] == pytest.approx(full_batch_acc)
    # momentum 0.99 after 7 steps: the moving statistics are far from the data's
    assert h.history["train_eval_accuracy"][0] != h.history["precise_train_eval_accuracy"][0]
    assert torch.equal(moving, model[2].moving_mean.clone())
    plain = fit(mlp(), circles, epochs=1, batch_size=16, precise_eval=True)
    assert plain.history["precise_val_accuracy"] == plain.history["val_accuracy"]


def test_augmentation_only_in_training(circles):
    pytest.importorskip("bnlab.train.augment")
    img = Dataset(
        torch.rand(40, 1, 8, 8),
        torch.arange(40) % 2,
        torch.rand(20, 1, 8, 8),
        torch.arange(20) % 2,
        ["a", "b"],
        "tiny",
    )

    def cnn():
        with seeded(0):
            return nn.Sequential(nn.Flatten(), Dense(64, 2))

    aug = {"rotation": 30, "width_shift": 0.2, "hflip": True}
    plain = fit(cnn(), img, epochs=1, batch_size=8, **sgd(lr=0.0))
    a = fit(cnn(), img, epochs=1, batch_size=8, augment=aug, **sgd(lr=0.0))
    b = fit(cnn(), img, epochs=1, batch_size=8, augment=aug, **sgd(lr=0.0))
    assert a.history == b.history and a.params["augment"]["rotation"] == 30
    assert a.history["loss"] != plain.history["loss"]  # training batches were transformed
    assert a.history["train_eval_loss"] == plain.history["train_eval_loss"]  # evaluation not
    with pytest.raises(ConfigError, match="augment"):
        fit(cnn(), img, epochs=1, augment="flip")


def test_multiclass_model_and_label_checks(circles):
    h = fit(mlp(outputs=2), circles, epochs=1, batch_size=16)
    assert h.params["task"] == "multiclass"
    ds = copy.copy(circles)
    ds.y_test = circles.y_test + 1
    with pytest.raises(DataError, match=r"y_test: labels span 1..2, not in 0..1"):
        fit(mlp(), ds, epochs=1)
    ds = copy.copy(circles)
    ds.y_train = circles.y_train.float()
    with pytest.raises(DataError, match=r"y_train: dtype torch.float32 is not an integer type"):
        fit(mlp(), ds, epochs=1)
    ds.y_train = circles.y_train[:-1]
    with pytest.raises(DataError, match=r"y_train: 99 labels for 100 samples"):
        fit(mlp(), ds, epochs=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, r"epochs: 0"),
        ({"epochs": 1, "batch_size": 0}, r"batch_size: 0"),
        ({"epochs": 1, "optimizer": "adamw"}, r"optimizer: 'adamw'"),
        ({"epochs": 1, "lr": -0.1}, r"lr: -0.1"),
        ({"epochs": 1, "device": "tpu"}, r"device: 'tpu'"),
        ({"epochs": 1, "seed": 1.5}, r"seed: 1.5"),
        ({"epochs": 1, "progress": "yes"}, r"progress: 'yes'"),
        ({"epochs": 1, "on_epoch_end": 3}, r"on_epoch_end: 3"),
        ({"epochs": 1, "class_weight": "auto"}, r"class_weight: 'auto'"),
        ({"epochs": 1, "optimizer_options": {"momentun": 0.9}, "optimizer": "sgd"}, "momentun"),
        ({"epochs": 1, "loss_epsilon": 1}, r"loss_epsilon: 1"),
    ],
)
def test_bad_arguments_name_the_parameter(circles, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fit(mlp(), circles, **kwargs)


def test_devices_and_mode_restoration(circles):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device: 'cuda' is not available"):
            fit(mlp(), circles, epochs=1, device="cuda")
    model = mlp(bn=True).eval()
    h = fit(model, circles, epochs=1, device="auto")
    assert h.params["device"] in ("cpu", "cuda") and not model.training
    assert not any(m.training for m in model.modules())
    double = mlp().double()  # float32 data are cast to the model's dtype
    assert fit(double, circles, epochs=1).diverged_at_epoch is None
    assert double[0].weight.dtype == torch.float64


def test_evaluate_closed_form():
    model = nn.Sequential(Dense(2, 2, kernel_regularizer=0.5))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        model[0].bias.zero_()
    x = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([1, 1, 0])
    # logits (1, 2), (2, 0), (0, 0); class 1, class 0, class 0 (tie -> 0)
    ce = [math.log(1 + math.exp(-1)), math.log(1 + math.exp(2)), math.log(2)]
    loss, acc = evaluate(model, x, y, batch_size=2)
    assert loss == pytest.approx(np.mean(ce) + 0.5 * (1 + 4), rel=1e-6)
    assert acc == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="batch_size: 0"):
        evaluate(model, x, y, batch_size=0)


def test_progress_switch(circles, monkeypatch, capsys):
    monkeypatch.setenv("BNLAB_NO_PROGRESS", "1")
    assert progress_enabled(None) is False
    assert progress_enabled(True) is True and progress_enabled(False) is False
    fit(mlp(), circles, epochs=2, progress=True)
    assert "loss 0." in capsys.readouterr().err  # the bar shows the last epoch's metrics
    fit(mlp(), circles, epochs=2)
    assert capsys.readouterr().err == ""
