"""Per-epoch mean and 95 % confidence band of a metric across a variant's runs.

The learning curves of a report are not single runs: at every epoch the runs
of one variant (different seeds) are pooled into a mean and a two-sided 95 %
Student-t interval ``mean ± t(0.975, n-1) · sd / sqrt(n)`` (``sd`` with
``ddof=1``). With one run at an epoch there is no interval (NaN half-width).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def t_halfwidth(sd: np.ndarray, n: np.ndarray, confidence: float = CONFIDENCE) -> np.ndarray:
    """Half-width of the two-sided t-interval of a mean; NaN where ``n < 2``."""
    sd = np.asarray(sd, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = stats.t.ppf(0.5 + confidence / 2.0, n - 1.0)
        half = q * sd / np.sqrt(n)
    return np.where(n >= 2, half, np.nan)


def band(epochs: pd.DataFrame, metric: str, group: str = "variant") -> pd.DataFrame:
    """Mean and confidence band of ``metric`` per ``group`` and epoch.

    ``epochs`` is the run x epoch frame of ``bnlab.study.load`` (columns ``run_id``,
    ``epoch``, the group column and ``metric``). NaN values (a metric a run did
    not record, or epochs after it stopped) are left out of that epoch's pool.

    Returns columns ``group, epoch, n, mean, sd, half, low, high`` sorted by
    group order of appearance and epoch; empty when the metric is absent.
    """
    columns = [group, "epoch", "n", "mean", "sd", "half", "low", "high"]
    if metric not in epochs.columns:
        return pd.DataFrame(columns=columns)
    data = epochs[[group, "epoch", metric]].dropna(subset=[metric])
    if data.empty:
        return pd.DataFrame(columns=columns)
    grouped = data.groupby([group, "epoch"], sort=False)[metric]
    out = grouped.agg(n="count", mean="mean", sd="std").reset_index()
    out["half"] = t_halfwidth(out["sd"].to_numpy(), out["n"].to_numpy())
    out["low"] = out["mean"] - out["half"]
    out["high"] = out["mean"] + out["half"]
    order = {name: i for i, name in enumerate(pd.unique(data[group]))}
    out = out.sort_values([group, "epoch"], key=lambda s: s.map(order) if s.name == group else s)
    return out.reset_index(drop=True)[columns]
