"""Statistics of a study: per-variant intervals, Welch's t-tests against the baseline, Holm.

Input is the per-run table of :func:`bnlab.study.load_runs` (one row per run). Only runs with
status ``finished`` enter the numbers; diverged and failed runs are counted (``n_diverged``,
``n_failed``) and named in the verdict, because a final accuracy after a NaN says nothing about
the variant's accuracy but the divergence itself is a finding.

Conventions:

* accuracies are fractions in [0, 1] in the table; the verdict sentences speak in percentage
  points (``pts``), 1 pt = 0.01;
* ``*_ci_low`` / ``*_ci_high`` are two-sided 95 % Student-t intervals of the mean,
  ``mean -/+ t(0.975, n-1) * std / sqrt(n)`` with the sample standard deviation (``ddof=1``);
* the difference to the baseline uses Welch's unequal-variance t-test; its ``diff_ci`` is the
  half-width of the Welch 95 % interval of the difference of means (Welch-Satterthwaite degrees
  of freedom);
* p-values of all variants against the baseline are adjusted together with Holm's step-down
  method (family = the non-baseline variants with a defined p-value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from bnlab._validation import check_choice

CONFIDENCE = 0.95
ALPHA = 0.05

#: Columns of the runs table that the summary describes (each gets _mean/_std/_half/_ci_low/_ci_high).
SUMMARY_METRICS: tuple[str, ...] = (
    "final_val_accuracy",
    "final_val_loss",
    "best_val_accuracy",
    "epochs_to_target",
    "train_eval_gap",
)


def t_interval(
    values: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval ``(mean, low, high)`` of ``values`` (NaNs dropped).

    ``low``/``high`` are NaN with fewer than two values; with zero spread they equal the mean.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = (
        float(sps.t.ppf(0.5 + confidence / 2, x.size - 1))
        * float(x.std(ddof=1))
        / math.sqrt(x.size)
    )
    return mean, mean - half, mean + half


def welch(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> dict[str, float]:
    """Welch's t-test of ``mean(a) - mean(b)``.

    Returns ``diff`` (mean(a) - mean(b)), ``ci`` (half-width of the interval of the
    difference), ``t``, ``df`` (Welch-Satterthwaite) and two-sided ``p``. Every value but
    ``diff`` is NaN when a group has fewer than two values or both groups have zero spread.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    out = dict(diff=math.nan, ci=math.nan, t=math.nan, df=math.nan, p=math.nan)
    if x.size == 0 or y.size == 0:
        return out
    out["diff"] = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return out
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se2 = va + vb
    if se2 == 0:
        return out
    df = se2**2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    se = math.sqrt(se2)
    t = out["diff"] / se
    out.update(
        t=float(t),
        df=float(df),
        p=float(2 * sps.t.sf(abs(t), df)),
        ci=float(sps.t.ppf(0.5 + confidence / 2, df) * se),
    )
    return out


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order (NaN entries stay NaN, not counted).

    With the ``m`` defined p-values sorted ascending, ``p_(i)`` (i = 1..m) becomes
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))``.
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = defined.size
    running = 0.0
    for rank, idx in enumerate(defined[np.argsort(p[defined], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted


def summarize(
    runs: pd.DataFrame,
    baseline: str | None = None,
    target: float | None = None,
    *,
    metric: str = "final_val_accuracy",
) -> pd.DataFrame:
    """One row per variant (in order of first appearance) describing ``runs``.

    Columns:

    * ``variant, n`` (finished runs, the ones in the numbers), ``n_runs`` (stored runs),
      ``n_diverged, n_failed``;
    * for each column ``c`` of :data:`SUMMARY_METRICS`: ``c_mean, c_std, c_half`` (half-width
      of the 95 % t-interval) ``, c_ci_low, c_ci_high``; ``epochs_to_target_reached`` counts the
      finished runs that reached the target (the epochs-to-target numbers are over those only);
    * the comparison of ``metric`` with ``baseline`` (default: the first variant):
      ``is_baseline, diff`` (variant mean - baseline mean, a fraction) ``, diff_half`` (half-width
      of the Welch 95 % interval of the difference) ``, t, df, p, p_holm, significant``
      (``p_holm < 0.05``) and ``verdict``, one sentence.

    ``target`` (a fraction) is only used in the wording of the verdicts; epochs-to-target come
    from the ``epochs_to_target`` column that :func:`bnlab.study.load_runs` computes.
    """
    if runs.empty:
        return pd.DataFrame(columns=["variant", "n", "n_runs", "verdict"])
    variants = list(dict.fromkeys(runs["variant"]))
    baseline = variants[0] if baseline is None else check_choice("baseline", baseline, variants)
    ok = runs[runs["status"] == "finished"]
    rows = []
    for variant in variants:
        mine = runs[runs["variant"] == variant]
        done = ok[ok["variant"] == variant]
        row: dict = dict(
            variant=variant,
            n=len(done),
            n_runs=len(mine),
            n_diverged=int((mine["status"] == "diverged").sum()),
            n_failed=int((mine["status"] == "failed").sum()),
        )
        for column in SUMMARY_METRICS:
            values = _values(done, variant, column)
            finite = values[~np.isnan(values)]
            mean, low, high = t_interval(finite)
            row[f"{column}_mean"] = mean
            row[f"{column}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
            row[f"{column}_half"] = (high - low) / 2
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = low, high
        row["epochs_to_target_reached"] = int(
            np.count_nonzero(~np.isnan(_values(done, variant, "epochs_to_target")))
        )
        rows.append(row)
    table = pd.DataFrame(rows)

    base_values = _values(ok, baseline, metric)
    tests = [
        welch(_values(ok, v, metric), base_values) if v != baseline else welch([], [])
        for v in variants
    ]
    for key in ("diff", "ci", "t", "df", "p"):
        table["diff_half" if key == "ci" else key] = [test[key] for test in tests]
    table["is_baseline"] = table["variant"] == baseline
    table.loc[table["is_baseline"], ["diff", "diff_half", "t", "df", "p"]] = math.nan
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    table["significant"] = table["p_holm"] < ALPHA
    table["verdict"] = [_verdict(row, baseline, metric, target) for row in table.to_dict("records")]
    return table


def _values(frame: pd.DataFrame, variant: str, column: str) -> np.ndarray:
    if column not in frame:
        return np.array([])
    return frame.loc[frame["variant"] == variant, column].to_numpy(dtype=float)


def _pts(x: float) -> str:
    return f"{100 * x:.1f}"


def _verdict(row: dict, baseline: str, metric: str, target: float | None) -> str:
    """One sentence, e.g. ``bn_m080: +0.4 pts ± 0.9 vs no_bn, not significant (p=0.41, Holm)``."""
    name = metric.removeprefix("final_")
    troubles = []
    if row["n_diverged"]:
        troubles.append(f"{row['n_diverged']} of {row['n_runs']} runs diverged")
    if row["n_failed"]:
        troubles.append(f"{row['n_failed']} of {row['n_runs']} runs failed")
    if target is not None and row["n"]:
        troubles.append(f"{row['epochs_to_target_reached']}/{row['n']} reached {100 * target:g}%")
    tail = f"; {', '.join(troubles)}" if troubles else ""
    mean = row.get(f"{metric}_mean", math.nan)
    if row["is_baseline"]:
        half = row.get(f"{metric}_half", math.nan)
        spread = f" ± {_pts(half)}" if not math.isnan(half) else ""
        level = f"{_pts(mean)}%{spread}" if not math.isnan(mean) else "no finished runs"
        return f"{row['variant']}: baseline, {name} {level} (n={row['n']}){tail}"
    if math.isnan(row["diff"]):
        return f"{row['variant']}: no comparison with {baseline} (no finished runs){tail}"
    diff = f"{'+' if row['diff'] >= 0 else '-'}{_pts(abs(row['diff']))} pts"
    if math.isnan(row["p"]):
        return f"{row['variant']}: {diff} vs {baseline}, not tested (needs >= 2 runs with spread){tail}"
    if row["significant"]:
        word = "significantly higher" if row["diff"] > 0 else "significantly lower"
    else:
        word = "not significant"
    return (
        f"{row['variant']}: {diff} ± {_pts(row['diff_half'])} vs {baseline}, {word} "
        f"(p={_p(row['p_holm'])}, Holm){tail}"
    )


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"
