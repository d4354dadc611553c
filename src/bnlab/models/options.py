"""Preset options: their defaults, their checks, and resolution of what a user passed.

Every option is an :class:`Option` (a default and a check that returns the normalised
value or raises :class:`bnlab.errors.ConfigError` naming the option and the value).
:data:`COMMON` holds the options most presets share; a preset picks the ones that make
sense for it and may change their defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bnlab._validation import check_choice, check_number, check_options, check_positive_int
from bnlab.errors import ConfigError
from bnlab.models.spec import Architecture, Layer, NormSettings
from bnlab.nn import norm_kinds

Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Option:
    """One preset option: its default and the check that normalises a given value."""

    default: Any
    check: Check
    doc: str = ""

    def with_default(self, default: Any) -> Option:
        return replace(self, default=default)


def _norm_kind(name: str, value: Any) -> str:
    # norm_kinds() is read per call: bnlab.nn's registry may gain kinds after import.
    return check_choice(name, value, norm_kinds())


def _unit_interval(name: str, value: Any) -> float:
    return float(check_number(name, value, low=0.0, high=1.0))


def _positive(name: str, value: Any) -> float:
    return float(check_number(name, value, low=0.0, low_inclusive=False))


def _non_negative(name: str, value: Any) -> float:
    return float(check_number(name, value, low=0.0))


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{name}: {value!r} is not a dict of keyword options")
    return dict(value)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: {value!r} is not true or false")
    return value


def _dropout(name: str, value: Any) -> float | tuple[float, ...]:
    """A rate in [0, 1) for every dropout layer, or a sequence of one rate per layer."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(
            float(check_number(f"{name}[{i}]", v, low=0.0, high=1.0, high_inclusive=False))
            for i, v in enumerate(value)
        )
    return float(check_number(name, value, low=0.0, high=1.0, high_inclusive=False))


def choice(*choices: Any) -> Check:
    return lambda name, value: check_choice(name, value, choices)


def shape(ndim: int) -> Check:
    """A check for an input shape of ``ndim`` positive integers (channels first)."""
    what = "(C, H, W)" if ndim == 3 else "(features,)"

    def check(name: str, value: Any) -> tuple[int, ...]:
        if isinstance(value, int) and not isinstance(value, bool) and ndim == 1:
            value = (value,)
        if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != ndim:
            raise ConfigError(f"{name}: {value!r} is not a shape {what} of {ndim} integers")
        return tuple(check_positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))

    return check


def positive_int(name: str, value: Any) -> int:
    return check_positive_int(name, value)


def classes(name: str, value: Any) -> int:
    return check_positive_int(name, value, minimum=2)


#: Options shared by the presets. ``bn_momentum`` follows Keras: fraction *kept*.
COMMON: dict[str, Option] = {
    "norm": Option(
        "batch",
        _norm_kind,
        "normalization kind in every norm slot (bnlab.nn.make_norm); 'none' = the no-BN baseline",
    ),
    "bn_momentum": Option(
        0.99,
        _unit_interval,
        "Keras convention: fraction of the moving statistics kept per step (torch 0.1 = 0.9)",
    ),
    "bn_epsilon": Option(1e-3, _positive, "added to the variance before the square root"),
    "norm_options": Option({}, _mapping, "extra keyword options for make_norm"),
    "bn_position": Option(
        "after_activation",
        choice("after_activation", "before_activation"),
        "norm after the ReLU (the seeds) or between the conv/dense and its ReLU",
    ),
    "l2": Option(0.0, _non_negative, "Keras L2 kernel regularizer strength: l2 * sum(w**2)"),
    "dropout": Option(0.0, _dropout, "one rate for every dropout layer, or one rate per layer"),
    "num_classes": Option(10, classes, "number of classes (logits)"),
    "input_shape": Option((1, 28, 28), shape(3), "input shape, channels first (C, H, W)"),
}


def pick(*names: str, **defaults: Any) -> dict[str, Option]:
    """The common options ``names`` with the preset's ``defaults`` applied."""
    out = {n: COMMON[n] for n in names}
    for key, value in defaults.items():
        out[key] = out[key].with_default(value)
    return out


def standard(**defaults: Any) -> dict[str, Option]:
    """Every common option (a CNN preset's set) with the preset's ``defaults`` applied."""
    return pick(*COMMON, **defaults)


def resolve(preset: str, options: Mapping[str, Option], given: Mapping[str, Any]) -> dict:
    """Every option of ``preset``: the given value, checked, or the default.

    Unknown keys raise ConfigError listing the valid options.
    """
    check_options(preset, given, options)
    out = {}
    for name, opt in options.items():
        value = given.get(name, opt.default)
        out[name] = opt.check(name, value)
    return out


def dropout_rates(value: float | tuple[float, ...], defaults: Sequence[float]) -> list[float]:
    """The rate of each dropout layer: ``value`` for all, or one per layer.

    ``defaults`` only gives the count (and the seed's rates, which is what the option's
    default is).
    """
    if isinstance(value, tuple):
        if len(value) != len(defaults):
            raise ConfigError(
                f"dropout: {list(value)!r} gives {len(value)} rate(s) but the preset has "
                f"{len(defaults)} dropout layers; give one rate for all or {len(defaults)} rates"
            )
        return list(value)
    return [value] * len(defaults)


def norm_settings(o: Mapping[str, Any]) -> NormSettings:
    """The :class:`NormSettings` of resolved options ``o`` (Keras momentum convention)."""
    return NormSettings(
        kind=o["norm"],
        momentum=o["bn_momentum"],
        epsilon=o["bn_epsilon"],
        options=dict(o["norm_options"]),
    )


def classifier(preset: str, o: Mapping[str, Any], layers: Sequence[Layer]) -> Architecture:
    """The :class:`Architecture` of a multiclass preset from its resolved options ``o``."""
    return Architecture(
        preset=preset,
        layers=tuple(layers),
        input_shape=o["input_shape"],
        num_classes=o["num_classes"],
        task="multiclass",
        norm=norm_settings(o),
        l2=o["l2"],
    )
