"""Declarative parameter constraints, in the style of scikit-learn's ``_param_validation``.

A constraint says what a parameter accepts (:attr:`Constraint.allowed`, in words, the text
after ``"is not"`` in the error), checks a value (:meth:`Constraint.check`, which returns it
normalised or raises :class:`bnlab.errors.ConfigError` with ``param``, ``value`` and
``allowed`` set) and can produce one value it refuses (:meth:`Constraint.invalid`, for tests
that every consumer of a constraint refuses the same value with the same message, as
scikit-learn's ``generate_invalid_param_val`` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError


class Constraint:
    """What a parameter accepts."""

    allowed: str = "valid"

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def normalise(self, value: Any) -> Any:
        return value

    def hint(self, value: Any) -> str:
        return ""

    def check(self, name: str, value: Any) -> Any:
        """``value`` normalised, or a ConfigError ``"<name>: <value!r> is not <allowed>"``."""
        if not self.accepts(value):
            raise ConfigError.invalid(name, value, self.allowed, self.hint(value))
        return self.normalise(value)

    def invalid(self) -> Any:
        """One value this constraint refuses."""
        raise NotImplementedError


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _g(bound: float) -> str:
    return format(bound, "g") if isinstance(bound, float) else str(bound)


@dataclass(frozen=True)
class Interval(Constraint):
    """A finite ``int`` (``integer=True``) or real number between ``low`` and ``high``.

    With one bound the text is ``">= 1"`` / ``"> 0"``; with two, ``"in [0, 1)"``.
    """

    low: float | None = None
    high: float | None = None
    closed: str = "both"  # "both", "left", "right", "neither"
    integer: bool = False

    def _in(self, value: float) -> bool:
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        lo = self.low is None or (value >= self.low if left else value > self.low)
        hi = self.high is None or (value <= self.high if right else value < self.high)
        return lo and hi

    def accepts(self, value: Any) -> bool:
        if not _is_real(value) or not math.isfinite(value):
            return False
        if self.integer and not float(value).is_integer():
            return False
        return self._in(value)

    def normalise(self, value: Any) -> Any:
        return int(value) if self.integer else value

    @property
    def kind(self) -> str:
        return "an integer" if self.integer else "a number"

    @property
    def range(self) -> str:
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        if self.high is None:
            return f"{'>=' if left else '>'} {_g(self.low)}"
        if self.low is None:
            return f"{'<=' if right else '<'} {_g(self.high)}"
        return f"in {'[' if left else '('}{_g(self.low)}, {_g(self.high)}{']' if right else ')'}"

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return f"{self.kind} {self.range}" if self.low is not None or self.high else self.kind

    def check(self, name: str, value: Any) -> Any:
        # Type first ("'ten' is not an integer"), then the range ("0 is not >= 1").
        if not _is_real(value) or (self.integer and not float(value).is_integer()):
            raise ConfigError.invalid(name, value, self.kind)
        if not math.isfinite(value):
            raise ConfigError.invalid(name, value, "a finite number")
        if not self._in(value):
            raise ConfigError.invalid(name, value, self.range)
        return self.normalise(value)

    def invalid(self) -> Any:
        if self.low is not None:
            return self.low - 1
        return self.high + 1


@dataclass(frozen=True)
class Choice(Constraint):
    """One of ``values`` (strings compared case-insensitively when ``lower``)."""

    values: tuple
    lower: bool = False

    def _key(self, value: Any) -> Any:
        return value.lower() if self.lower and isinstance(value, str) else value

    def accepts(self, value: Any) -> bool:
        try:
            return self._key(value) in self.values
        except TypeError:  # unhashable
            return False

    def normalise(self, value: Any) -> Any:
        return self._key(value)

    def hint(self, value: Any) -> str:
        return did_you_mean(value, self.values) if isinstance(value, str) else ""

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(repr(v) for v in self.values)

    def invalid(self) -> Any:
        return f"not-{self.values[0]}"


class Boolean(Constraint):
    allowed = "True or False"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def invalid(self) -> Any:
        return "yes"


class IsCallable(Constraint):
    allowed = "callable"

    def accepts(self, value: Any) -> bool:
        return callable(value)

    def invalid(self) -> Any:
        return 3


class Mapping(Constraint):
    allowed = "a dict"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def invalid(self) -> Any:
        return [1]


@dataclass(frozen=True)
class InstanceOf(Constraint):
    """An instance of a class named ``path`` (``"module:Class"``, imported when checked)."""

    path: str
    label: str

    def accepts(self, value: Any) -> bool:
        import importlib

        module, name = self.path.split(":")
        return isinstance(value, getattr(importlib.import_module(module), name))

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return self.label

    def invalid(self) -> Any:
        return 3


class AnyOf(Constraint):
    """Any of ``options`` (``None`` among them means the value may be ``None``)."""

    def __init__(self, *options: Constraint | None, allowed: str | None = None):
        self.options = options
        self._allowed = allowed

    def _constraints(self) -> list[Constraint]:
        return [c for c in self.options if c is not None]

    def accepts(self, value: Any) -> bool:
        if value is None and None in self.options:
            return True
        return any(c.accepts(value) for c in self._constraints())

    def normalise(self, value: Any) -> Any:
        for c in self._constraints():
            if c.accepts(value):
                return c.normalise(value)
        return value

    def hint(self, value: Any) -> str:
        return next((h for c in self._constraints() if (h := c.hint(value))), "")

    @property
    def allowed(self) -> str:  # type: ignore[override]
        if self._allowed is not None:
            return self._allowed
        parts = (["None"] if None in self.options else []) + [
            c.allowed for c in self._constraints()
        ]
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]

    def check(self, name: str, value: Any) -> Any:
        constraints = self._constraints()
        if len(constraints) == 1 and value is not None and None in self.options:
            c = constraints[0]
            if isinstance(c, Interval) and _is_real(value):
                return c.check(name, value)  # a number out of range: say the range
        return super().check(name, value)

    def invalid(self) -> Any:
        for c in self._constraints():
            candidate = c.invalid()
            if not self.accepts(candidate):
                return candidate
        raise ValueError("no invalid value found")  # pragma: no cover


#: The default of a parameter that has none (it must be given).
REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()


@dataclass(frozen=True)
class Param:
    """One declared parameter: its constraint, default and a one-line description."""

    name: str
    constraint: Constraint
    default: Any = REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, value: Any) -> Any:
        return self.constraint.check(self.name, value)


def check_params(params: Sequence[Param], given: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of ``params`` checked and normalised, defaults filled in."""
    out = {}
    for p in params:
        if p.name in given:
            out[p.name] = p.check(given[p.name])
        elif p.required:
            raise ConfigError(f"{p.name}: missing; it is required", param=p.name)
        else:
            out[p.name] = p.default
    return out
