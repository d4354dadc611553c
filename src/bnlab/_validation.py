"""Argument checks shared by every constructor.

Each check raises :class:`bnlab.errors.ConfigError` with a message of the form
``"<name>: <value!r> is not <what is allowed>"`` so the user sees the parameter,
the value received and the valid range in one line (the style of
scikit-learn's ``_param_validation``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from bnlab.errors import ConfigError


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    match = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Check ``value`` is one of ``choices``; suggest the closest one otherwise."""
    choices = list(choices)
    if value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError.invalid(name, value, f"one of {allowed}", hint)
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> Any:
    """Check ``value`` is a finite real (or integer) number inside the given interval."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        integer and not float(value).is_integer()
    ):
        raise ConfigError.invalid(name, value, kind)
    if not math.isfinite(value):
        raise ConfigError.invalid(name, value, "a finite number")
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        right = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise ConfigError.invalid(name, value, f"in {left}, {right}")
    return int(value) if integer else value


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Check ``value`` is an integer >= ``minimum``."""
    return check_number(name, value, low=minimum, integer=True)


def check_options(where: str, given: dict[str, Any], valid: Iterable[str]) -> None:
    """Reject keyword options not in ``valid``, listing the valid ones and the closest match."""
    valid = sorted(valid)
    for key in given:
        if key not in valid:
            raise ConfigError(
                f"{where}: unknown option {key!r}{did_you_mean(key, valid)}; "
                f"valid options are {', '.join(valid)}",
                param=where,
                value=key,
                allowed=f"one of {', '.join(valid)}",
            )
