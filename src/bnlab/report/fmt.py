"""Number formatting shared by the HTML and terminal reports.

Accuracies are stored as fractions in [0, 1] and shown in percent; differences
of accuracies are shown in percentage points ("pts"). A missing value (None or
NaN) is shown as an en dash.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "–"


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA."""
    if value is None:
        return True
    try:
        return bool(math.isnan(float(value)))
    except (TypeError, ValueError):
        return False


def pct(value: Any, digits: int = 1) -> str:
    """A fraction as percent: ``0.8123 -> '81.2 %'``."""
    return DASH if is_missing(value) else f"{float(value) * 100:.{digits}f} %"


def pct_ci(mean: Any, half: Any, digits: int = 1) -> str:
    """Mean ± half-width of a fraction, in percent: ``'81.2 ± 1.3 %'``."""
    if is_missing(mean):
        return DASH
    if is_missing(half):
        return f"{float(mean) * 100:.{digits}f} %"
    return f"{float(mean) * 100:.{digits}f} ± {float(half) * 100:.{digits}f} %"


def pts(value: Any, half: Any = None, digits: int = 1) -> str:
    """A difference of fractions in percentage points: ``'+0.4 pts ± 0.9'``."""
    if is_missing(value):
        return DASH
    text = f"{float(value) * 100:+.{digits}f} pts"
    return text if is_missing(half) else f"{text} ± {float(half) * 100:.{digits}f}"


def num_ci(mean: Any, half: Any, digits: int = 1) -> str:
    """A plain mean ± half-width (e.g. epochs): ``'4.2 ± 0.8'``."""
    if is_missing(mean):
        return DASH
    if is_missing(half):
        return f"{float(mean):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {float(half):.{digits}f}"


def pvalue(p: Any) -> str:
    """A p-value with two significant digits, ``'< 0.001'`` below that."""
    if is_missing(p):
        return DASH
    p = float(p)
    return "< 0.001" if p < 0.001 else f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def seconds(value: Any) -> str:
    """Wall-clock seconds as ``'12.3 s'`` or ``'2 min 05 s'``."""
    if is_missing(value):
        return DASH
    value = float(value)
    if value < 120:
        return f"{value:.1f} s"
    minutes, sec = divmod(int(round(value)), 60)
    return f"{minutes} min {sec:02d} s"
