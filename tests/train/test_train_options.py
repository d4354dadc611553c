"""One declared training configuration: fit, the stacked engine and a study spec refuse
every invalid option value with the same message (a spec puts its field path in front)."""

from __future__ import annotations

import pytest
import torch

from bnlab import models
from bnlab.data import load
from bnlab.errors import ConfigError
from bnlab.study import load_spec
from bnlab.study.spec import TrainSpec
from bnlab.train import KerasAdam, KerasRMSprop, KerasSGD, fit, seeded
from bnlab.train.options import (
    OPTIMIZER_PARAMS,
    TRAIN_PARAMS,
    check_train_options,
    invalid_values,
    optimizer_settings,
)
from bnlab.train.stacked import fit_stacked

SPEC = {
    "name": "options",
    "seeds": 1,
    "model": {"preset": "circles_mlp"},
    "data": {"name": "circles", "n_samples": 40},
    "train": {"epochs": 1},
}


@pytest.fixture(scope="module")
def circles():
    return load("circles", n_samples=40)


def mlp(seed: int = 0) -> torch.nn.Module:
    with seeded(seed):
        return models.build("circles_mlp")


def refusal(call) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call()
    return info.value


@pytest.mark.parametrize("name", [p.name for p in TRAIN_PARAMS])
def test_every_training_option_is_refused_alike_by_fit_the_stack_and_a_spec(circles, name):
    bad = invalid_values()[name]
    options = {"epochs": 1, "progress": False, name: bad}
    by_fit = refusal(lambda: fit(mlp(), circles, **options))
    assert by_fit.param == name and by_fit.value == bad and by_fit.allowed
    assert str(by_fit).startswith(f"{name}: {bad!r} is not ")

    stack_options = dict(options)
    seeds = [0, 1]
    if name == "seed":
        seeds = [stack_options.pop("seed"), 1]
    by_stack = refusal(lambda: fit_stacked([mlp(0), mlp(1)], circles, seeds=seeds, **stack_options))
    assert str(by_stack) == str(by_fit)

    if name in TrainSpec.model_fields:
        spec = {**SPEC, "train": {**SPEC["train"], name: bad}}
        by_spec = refusal(lambda: load_spec(spec))
        assert str(by_spec) == f"train.{by_fit}"


def test_every_training_option_is_declared_once_with_its_default():
    import inspect

    signature = inspect.signature(fit).parameters
    declared = {p.name: p for p in TRAIN_PARAMS}
    assert list(declared) == [n for n in signature if n not in ("model", "dataset")]
    for name, p in declared.items():
        if not p.required:
            assert signature[name].default == p.default, name
    defaults = check_train_options({"epochs": 3})
    assert defaults["batch_size"] == 32 and defaults["optimizer"] == "adam"
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        check_train_options({"epochs": 3, "batchsize": 8})


@pytest.mark.parametrize(
    "name, cls", [("adam", KerasAdam), ("sgd", KerasSGD), ("rmsprop", KerasRMSprop)]
)
def test_optimizer_option_ranges_hold_for_the_optimizers_and_the_stack(circles, name, cls):
    """Each declared optimizer option: its invalid value is refused by the optimizer class and
    by the stacked engine with the same message (the stack did not check ranges before)."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    for p in OPTIMIZER_PARAMS[name]:
        bad = p.constraint.invalid()
        options = {p.name: bad}
        by_class = refusal(lambda options=options: cls(params, **options))
        assert by_class.param == p.name and by_class.value == bad
        by_stack = refusal(
            lambda options=options: fit_stacked(
                [mlp(0), mlp(1)],
                circles,
                seeds=[0, 1],
                epochs=1,
                optimizer=name,
                optimizer_options=options,
                progress=False,
            )
        )
        assert str(by_stack) == str(by_class)
    assert optimizer_settings(name, {}) == {
        p.name: p.default for p in OPTIMIZER_PARAMS[name]
    }


def test_lr_zero_fit_accepts_a_spec_refuses_on_purpose(circles):
    history = fit(mlp(), circles, epochs=1, optimizer="sgd", lr=0.0, progress=False)
    assert history.params["lr"] == 0.0
    spec = {**SPEC, "train": {"epochs": 1, "lr": 0}}
    assert str(refusal(lambda: load_spec(spec))) == "train.lr: 0 is not > 0"


def test_the_stack_casts_inputs_to_the_model_dtype_and_checks_label_dtype(circles):
    """Drift once between fit and the stack: float64 models got float32 inputs, float labels
    passed unchecked. Both now go through one preparation step."""
    double = [mlp(0).double(), mlp(1).double()]
    alone = mlp(0).double()
    h_stack = fit_stacked(double, circles, seeds=[0, 1], epochs=1, progress=False)[0]
    h_alone = fit(alone, circles, epochs=1, seed=0, progress=False)
    # The stack takes its per-sample losses in float32 (for bf16 autocast), fit in float64.
    assert h_stack.history["loss"][0] == pytest.approx(h_alone.history["loss"][0], rel=1e-6)
    assert double[0][0].weight.dtype == torch.float64
    bad = load("circles", n_samples=40)
    bad.y_train = bad.y_train.float()
    message = str(refusal_data(lambda: fit(mlp(), bad, epochs=1, progress=False)))
    assert "y_train: dtype torch.float32 is not an integer type" in message
    stacked = refusal_data(lambda: fit_stacked([mlp(0)], bad, seeds=[0], epochs=1, progress=False))
    assert str(stacked) == message


def refusal_data(call):
    from bnlab.errors import DataError

    with pytest.raises(DataError) as info:
        call()
    return info.value
