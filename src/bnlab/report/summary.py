"""Per-variant summary rows and the one-sentence verdicts of a report.

The statistics and the verdict sentences come from
:func:`bnlab.study.stats.summarize`; this module only turns its per-variant frame
into :class:`VariantRow` objects that the HTML and terminal reports both print,
so the two always show the same numbers and words.

Units: accuracies and gaps are fractions in [0, 1] (shown in percent / points);
epochs-to-target is in epochs (1-based); ``half`` fields are half-widths of
two-sided 95 % t-intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bnlab.report.fmt import is_missing

ALPHA = 0.05


@dataclass(frozen=True)
class VariantRow:
    """What the report says about one variant (fractions, not percent)."""

    variant: str
    is_baseline: bool
    n: int
    n_total: int
    mean: float
    half: float
    std: float = float("nan")
    best_mean: float = float("nan")
    best_half: float = float("nan")
    ett_mean: float = float("nan")
    ett_half: float = float("nan")
    ett_reached: int | None = None
    gap_mean: float = float("nan")
    gap_half: float = float("nan")
    loss_mean: float = float("nan")
    loss_half: float = float("nan")
    diff: float = float("nan")
    diff_half: float = float("nan")
    p: float = float("nan")
    p_holm: float = float("nan")
    n_diverged: int = 0
    n_failed: int = 0
    verdict: str = ""
    exact_n: int = 0
    exact_mean: float = float("nan")
    exact_half: float = float("nan")
    exact_gap_mean: float = float("nan")
    exact_gap_half: float = float("nan")

    @property
    def significant(self) -> bool | None:
        """Holm-adjusted p below 0.05; None for the baseline or when untested."""
        return None if is_missing(self.p_holm) else bool(self.p_holm < ALPHA)


def _get(record: Mapping[str, Any], *names: str, default: Any = float("nan")) -> Any:
    for name in names:
        if name in record and not is_missing(record[name]):
            return record[name]
    return default


def _stat(record: Mapping[str, Any], metric: str, stat: str) -> float:
    """``<metric>_<stat>`` of a summary row; ``half`` falls back to the interval's bounds."""
    value = _get(record, f"{metric}_{stat}")
    if stat == "half" and is_missing(value):
        value = (_get(record, f"{metric}_ci_high") - _get(record, f"{metric}_ci_low")) / 2.0
    return float(value)


def rows_from_summary(summary: pd.DataFrame, runs: pd.DataFrame | None = None) -> list[VariantRow]:
    """Turn :func:`bnlab.study.stats.summarize`'s per-variant frame into report rows.

    Column names are those documented by ``summarize``: ``<m>_mean``, ``<m>_std``,
    ``<m>_half`` (or ``<m>_ci_low``/``<m>_ci_high``) for ``m`` in ``final_val_accuracy``,
    ``final_val_loss``, ``best_val_accuracy``, ``epochs_to_target``, ``train_eval_gap``;
    ``epochs_to_target_reached``; ``diff``, ``diff_half``, ``p``, ``p_holm``, ``verdict``.

    With ``runs`` (the per-run table) each row also gets the exact-statistics numbers of
    :func:`exact_statistics` where the runs recorded ``final_precise_val_accuracy``.
    """
    exact = exact_statistics(runs) if runs is not None else {}
    rows = []
    for record in summary.to_dict("records"):
        rows.append(
            VariantRow(
                variant=str(record["variant"]),
                is_baseline=bool(record.get("is_baseline", False)),
                n=int(_get(record, "n", default=0)),
                n_total=int(_get(record, "n_runs", "n", default=0)),
                mean=_stat(record, "final_val_accuracy", "mean"),
                half=_stat(record, "final_val_accuracy", "half"),
                std=_stat(record, "final_val_accuracy", "std"),
                best_mean=_stat(record, "best_val_accuracy", "mean"),
                best_half=_stat(record, "best_val_accuracy", "half"),
                ett_mean=_stat(record, "epochs_to_target", "mean"),
                ett_half=_stat(record, "epochs_to_target", "half"),
                ett_reached=int(_get(record, "epochs_to_target_reached", default=0)),
                gap_mean=_stat(record, "train_eval_gap", "mean"),
                gap_half=_stat(record, "train_eval_gap", "half"),
                loss_mean=_stat(record, "final_val_loss", "mean"),
                loss_half=_stat(record, "final_val_loss", "half"),
                diff=float(_get(record, "diff")),
                diff_half=float(_get(record, "diff_half")),
                p=float(_get(record, "p")),
                p_holm=float(_get(record, "p_holm")),
                n_diverged=int(_get(record, "n_diverged", default=0)),
                n_failed=int(_get(record, "n_failed", default=0)),
                verdict=str(_get(record, "verdict", default="")),
                **exact.get(str(record["variant"]), {}),
            )
        )
    return rows


def exact_statistics(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per variant: final held-out accuracy with exact BN statistics, and its gap to inference.

    ``exact_mean``/``exact_half``: mean and 95 % t half-width over the finished runs of
    ``final_precise_val_accuracy`` (the run's last-epoch weights with the moving averages
    replaced by exact statistics of the training data, ``precise_eval=True``).
    ``exact_gap_*``: the same for the per-run difference ``final_precise_val_accuracy -
    final_val_accuracy`` (exact statistics minus moving averages; > 0 when the moving averages
    cost accuracy). Variants without the column, or whose runs never recorded it, are absent.
    """
    from bnlab.study.stats import t_interval

    column = "final_precise_val_accuracy"
    if column not in runs.columns:
        return {}
    done = runs[runs["status"] == "finished"] if "status" in runs.columns else runs
    out: dict[str, dict[str, Any]] = {}
    for variant, part in done.groupby("variant", sort=False):
        exact = part[column].to_numpy(dtype=float)
        keep = ~np.isnan(exact)
        if not keep.any():
            continue
        gap = exact[keep] - part["final_val_accuracy"].to_numpy(dtype=float)[keep]
        mean, low, high = t_interval(exact[keep])
        gap_mean, gap_low, gap_high = t_interval(gap)
        out[str(variant)] = dict(
            exact_n=int(keep.sum()),
            exact_mean=mean,
            exact_half=(high - low) / 2,
            exact_gap_mean=gap_mean,
            exact_gap_half=(gap_high - gap_low) / 2,
        )
    return out
