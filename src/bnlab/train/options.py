"""The training configuration: every option of :func:`bnlab.train.fit` with its constraint
and default, declared once (scikit-learn's ``_parameter_constraints`` style).

:func:`bnlab.train.fit`, the stacked engine (:mod:`bnlab.train.stacked`, which adds
:data:`STACK_PARAMS`) and a study spec's ``[train]`` table
(:class:`bnlab.study.spec.TrainSpec`) all check their options with :data:`TRAIN_PARAMS`, so
one invalid value gets one message everywhere (a spec puts its field path in front:
``train.epochs: 0 is not >= 1``). The optimizers' own options (``beta_1``, ``momentum``, ...)
are declared in :data:`OPTIMIZER_PARAMS` and checked by :func:`optimizer_settings`, which
:class:`~bnlab.train.optimizers.KerasAdam` & co. and the stacked optimizer share.
"""

from __future__ import annotations

from typing import Any

import torch

from bnlab._constraints import (
    AnyOf,
    Boolean,
    Choice,
    Constraint,
    InstanceOf,
    Interval,
    IsCallable,
    Mapping,
    Param,
    check_params,
)
from bnlab._validation import check_options

#: Keras's optimizers by name, with Keras's default learning rate.
DEFAULT_LR = {"adam": 1e-3, "sgd": 1e-2, "rmsprop": 1e-3}

OPTIMIZER_NAMES = Choice(tuple(DEFAULT_LR), lower=True)


class Device(Constraint):
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device`` (availability is
    :func:`bnlab.train.devices.resolve_device`'s to check)."""

    allowed = "one of 'cpu', 'cuda', 'auto'"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, torch.device):
            return True
        if isinstance(value, str) and value.startswith("cuda:") and value[5:].isdigit():
            return True
        return isinstance(value, str) and value in ("cpu", "cuda", "auto")

    def hint(self, value: Any) -> str:
        return Choice(("cpu", "cuda", "auto")).hint(value)

    def invalid(self) -> Any:
        return "tpu"


#: Every option of ``fit`` but the model and the dataset, in signature order.
TRAIN_PARAMS: tuple[Param, ...] = (
    Param("epochs", Interval(1, integer=True), doc="passes over the training set"),
    Param("batch_size", Interval(1, integer=True), 32, "samples per training step"),
    Param(
        "optimizer",
        AnyOf(
            OPTIMIZER_NAMES,
            IsCallable(),
            allowed="one of 'adam', 'sgd', 'rmsprop' or an optimizer factory",
        ),
        "adam",
        "Keras's Adam/SGD/RMSprop by name, or a factory f(params, **options)",
    ),
    Param("lr", AnyOf(None, Interval(0)), None, "learning rate (None: Keras's default)"),
    Param("seed", Interval(0, 2**63 - 1, integer=True), 0, "the run seed"),
    Param("device", Device(), "cpu", "cpu | cuda | cuda:N | auto"),
    Param(
        "class_weight",
        AnyOf(
            None,
            Choice(("balanced",)),
            Mapping(),
            allowed="'balanced', a dict {class: weight} or None",
        ),
        None,
        "per-class loss weights",
    ),
    Param("precise_eval", Boolean(), False, "also evaluate with exact BN statistics"),
    Param("train_eval", Boolean(), True, "also evaluate the training set in inference mode"),
    Param(
        "augment",
        AnyOf(
            None,
            InstanceOf("bnlab.train.augment:Augmenter", "an Augmenter"),
            Mapping(),
            allowed="None, an Augmenter or a dict of options",
        ),
        None,
        "training-batch augmentation",
    ),
    Param("progress", AnyOf(None, Boolean()), None, "a progress bar (None: when interactive)"),
    Param("on_epoch_end", AnyOf(None, IsCallable()), None, "f(epoch, logs) after each epoch"),
    Param("optimizer_options", AnyOf(None, Mapping()), None, "the optimizer's own options"),
    Param(
        "loss_epsilon",
        AnyOf(None, Interval(0, 0.5, closed="neither")),
        None,
        "None: cross-entropy from logits; a float: Keras's torch-backend clipping",
    ),
    Param("channels_last", AnyOf(None, Boolean()), None, "memory layout (None: where faster)"),
)

PRECISIONS = ("float32", "tf32", "bf16")
DROPOUT_RNG = ("per_run", "shared")
KERNELS = ("stacked", "per_run", "vmap")

#: The stacked engine's options beyond ``fit``'s (see :func:`bnlab.train.stacked.fit_stacked`).
STACK_PARAMS: tuple[Param, ...] = (
    Param("precision", Choice(PRECISIONS), "float32", "float32 | tf32 | bf16"),
    Param("cuda_graphs", AnyOf(None, Boolean()), None, "capture the step in CUDA graphs"),
    Param("dropout_rng", AnyOf(None, Choice(DROPOUT_RNG)), None, "per_run | shared"),
    Param("kernels", AnyOf(None, Choice(KERNELS)), None, "stacked | per_run | vmap"),
    Param("max_memory", AnyOf(None, Interval(1, integer=True)), None, "bytes a stack may use"),
    Param("chunk_size", AnyOf(None, Interval(1, integer=True)), None, "most runs per stack"),
)

_UNIT = Interval(0, 1, closed="left")  # [0, 1)
_FRACTION = Interval(0, 1)  # [0, 1]
_NON_NEGATIVE = Interval(0)

#: Each named optimizer's own options (Keras's names, ranges and defaults).
OPTIMIZER_PARAMS: dict[str, tuple[Param, ...]] = {
    "adam": (
        Param("beta_1", _UNIT, 0.9),
        Param("beta_2", _UNIT, 0.999),
        Param("epsilon", _NON_NEGATIVE, 1e-7),
        Param("amsgrad", Boolean(), False),
    ),
    "sgd": (Param("momentum", _FRACTION, 0.0), Param("nesterov", Boolean(), False)),
    "rmsprop": (
        Param("rho", _FRACTION, 0.9),
        Param("momentum", _FRACTION, 0.0),
        Param("epsilon", _NON_NEGATIVE, 1e-7),
        Param("centered", Boolean(), False),
    ),
}

_BY_NAME = {p.name: p for p in (*TRAIN_PARAMS, *STACK_PARAMS)}


def param(name: str) -> Param:
    """The declared training option ``name``."""
    return _BY_NAME[name]


def check_option(name: str, value: Any) -> Any:
    """``value`` of the training option ``name`` checked and normalised."""
    return _BY_NAME[name].check(value)


def check_train_options(options: dict[str, Any], *, stacked: bool = False) -> dict[str, Any]:
    """Every training option checked and normalised, defaults filled in (``fit``'s, plus the
    stacked engine's with ``stacked=True``). Unknown keys are refused with a did-you-mean."""
    params = (*TRAIN_PARAMS, *STACK_PARAMS) if stacked else TRAIN_PARAMS
    check_options("fit_stacked" if stacked else "fit", options, [p.name for p in params])
    return check_params(params, options)


def resolve_lr(optimizer: Any, lr: float | None) -> float | None:
    """``lr`` validated, or Keras's default for a named optimizer (``None`` for a factory)."""
    if lr is not None:
        return float(check_option("lr", lr))
    if isinstance(optimizer, str):
        return DEFAULT_LR[OPTIMIZER_NAMES.check("optimizer", optimizer)]
    return None


def optimizer_settings(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """A named optimizer's options checked against :data:`OPTIMIZER_PARAMS`, defaults filled.

    Unknown names are refused as ``optimizer_options (adam): unknown option ...``.
    """
    key = OPTIMIZER_NAMES.check("optimizer", name)
    params = OPTIMIZER_PARAMS[key]
    check_options(f"optimizer_options ({key})", options, [p.name for p in params])
    return check_params(params, options)


def invalid_values() -> dict[str, Any]:
    """One refused value per training option (for tests that every consumer refuses it)."""
    return {p.name: p.constraint.invalid() for p in TRAIN_PARAMS}


__all__ = [
    "DEFAULT_LR",
    "DROPOUT_RNG",
    "KERNELS",
    "OPTIMIZER_PARAMS",
    "PRECISIONS",
    "STACK_PARAMS",
    "TRAIN_PARAMS",
    "check_option",
    "check_train_options",
    "invalid_values",
    "optimizer_settings",
    "param",
    "resolve_lr",
]
