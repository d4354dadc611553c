"""The report's sentences in words, generated from the statistics (never written by hand).

* :func:`answer` — one sentence that answers the study's question: each variant against the
  baseline, "no effect" unless Holm's p is below 0.05;
* :func:`exact_statistics_sentences` — where exact BN statistics (``precise_eval``) recover
  accuracy that the moving averages lose at the last epoch;
* :func:`early_lag_sentences` — where, in the first epochs, a variant's exact-statistics
  accuracy far exceeds its inference-mode accuracy (the moving averages still hold their
  initial 0/1: with momentum m they keep a weight m^steps of it);
* :func:`pair_sentences` — variants that differ only in their data (e.g. ``scale = "raw"``
  vs ``"unit"``) compared pair by pair: with and without BN, epochs to the target and the
  early gap, so a reversal between the two data settings is said in words.

Units: accuracies are fractions in [0, 1] in the inputs; the sentences speak in percent and
percentage points ("points").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bnlab.report.curves import band
from bnlab.report.fmt import is_missing
from bnlab.report.summary import ALPHA, VariantRow

#: A gap between exact-statistics and inference-mode accuracy worth a sentence (points / 100).
LAG = 0.05


def _p(p: float) -> str:
    """``p = 0.21``, ``p = 1.2e-06`` — two significant digits."""
    return f"p = {p:.2g}" if p >= 0.001 else f"p = {p:.1e}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def answer(rows: Sequence[VariantRow], baseline: str | None, set_name: str) -> str:
    """``"bn_after: no effect (+0.2 points, p = 0.52); bn_before: 1.8 points worse (p =
    1.2e-06) than no_bn in final test accuracy."``; empty without a comparison."""
    parts = []
    for r in rows:
        if r.is_baseline or is_missing(r.diff):
            continue
        points = abs(r.diff) * 100
        if is_missing(r.p_holm):
            parts.append(f"{r.variant}: {r.diff * 100:+.1f} points, untested")
        elif r.p_holm < ALPHA:
            word = "better" if r.diff > 0 else "worse"
            parts.append(f"{r.variant}: {points:.1f} points {word} ({_p(r.p_holm)})")
        else:
            parts.append(f"{r.variant}: no effect ({r.diff * 100:+.1f} points, {_p(r.p_holm)})")
    if not parts:
        return ""
    return (
        f"{'; '.join(parts)} — against {baseline} in final {set_name} accuracy "
        "(mean over seeds, Welch's t-test, Holm-adjusted)."
    )


def exact_statistics_sentences(rows: Sequence[VariantRow]) -> list[str]:
    """One sentence per variant whose exact-statistics accuracy beats inference mode."""
    out = []
    for r in rows:
        if is_missing(r.exact_gap_mean) or r.exact_gap_mean < LAG / 5:
            continue
        sure = not is_missing(r.exact_gap_half) and r.exact_gap_mean - r.exact_gap_half > 0
        out.append(
            f"With exact BN statistics {r.variant} scores {_pct(r.exact_mean)} against "
            f"{_pct(r.mean)} in inference mode: its moving averages, not its weights, cost "
            f"{r.exact_gap_mean * 100:.1f} points"
            + ("" if sure else " (within the seeds' noise)")
            + "."
        )
    return out


def lag_by_epoch(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per variant and epoch: mean inference-mode and exact-statistics accuracy and their gap.

    Columns ``variant, epoch, inference, exact, lag`` (``lag = exact - inference``, fractions);
    empty when no run recorded ``precise_val_accuracy``.
    """
    infer = band(epochs, "val_accuracy")
    exact = band(epochs, "precise_val_accuracy")
    if infer.empty or exact.empty:
        return pd.DataFrame(columns=["variant", "epoch", "inference", "exact", "lag"])
    both = infer[["variant", "epoch", "mean"]].merge(
        exact[["variant", "epoch", "mean"]], on=["variant", "epoch"], suffixes=("_i", "_e")
    )
    both = both.rename(columns={"mean_i": "inference", "mean_e": "exact"})
    both["lag"] = both["exact"] - both["inference"]
    return both


def _first_reached(curve: pd.DataFrame, column: str, target: float) -> int | None:
    hit = curve.loc[curve[column] >= target, "epoch"]
    return int(hit.min()) if len(hit) else None


def early_lag_sentences(
    epochs: pd.DataFrame, variants: Sequence[str], target: float | None
) -> list[str]:
    """For each variant whose mean exact-statistics accuracy exceeds its inference-mode
    accuracy by more than :data:`LAG` in some epoch: the epochs of that lag with both numbers,
    and when each curve first reaches ``target``."""
    lag = lag_by_epoch(epochs)
    out = []
    for name in variants:
        curve = lag[lag["variant"] == name].sort_values("epoch")
        big = curve[curve["lag"] > LAG]
        if big.empty:
            continue
        first, last = int(big["epoch"].min()), int(big["epoch"].max())
        worst = big.loc[big["lag"].idxmax()]
        span = f"epoch {first}" if first == last else f"epochs {first}–{last}"
        text = (
            f"{name}: in {span} its inference-mode accuracy lags what its weights can do — "
            f"at epoch {int(worst['epoch'])} {_pct(worst['inference'])} with the moving "
            f"averages against {_pct(worst['exact'])} with exact BN statistics"
        )
        if target is not None:
            seen = _first_reached(curve, "inference", target)
            real = _first_reached(curve, "exact", target)
            if real is not None:
                when = (
                    f"reaches {target * 100:g} % at epoch {seen}"
                    if seen is not None
                    else f"never reaches {target * 100:g} %"
                )
                text += (
                    f"; its mean curve {when} in inference mode but reaches it at epoch {real} "
                    "with exact statistics"
                )
        out.append(text + ".")
    return out


def pair_sentences(
    rows: Sequence[VariantRow],
    settings: Mapping[str, Mapping[str, Any]],
    epochs: pd.DataFrame,
    target: float | None,
) -> list[str]:
    """Compare BN against no BN within each data setting, when the study has several.

    ``settings``: per variant its effective options (``norm`` and ``data.*`` keys, from
    :func:`bnlab.report.effective.variant_settings`). Variants are grouped by their data
    options; each group with one variant without BN (``norm = "none"``) and one with BN gets
    a sentence with both variants' epochs to target, final accuracies and the BN variant's
    worst early lag.
    """
    by_name = {r.variant: r for r in rows}
    groups: dict[str, list[str]] = {}
    for name, opts in settings.items():
        data_key = ", ".join(
            f"{k[5:]} = {v}" for k, v in sorted(opts.items()) if k.startswith("data.")
        )
        groups.setdefault(data_key, []).append(name)
    if len(groups) < 2:
        return []
    lag = lag_by_epoch(epochs)
    out = []
    effects: list[tuple[str, VariantRow, VariantRow]] = []
    for data_key, names in groups.items():
        plain = [n for n in names if settings[n].get("norm") == "none" and n in by_name]
        normed = [
            n for n in names if settings[n].get("norm") not in (None, "none") and n in by_name
        ]
        if len(plain) != 1 or not normed:
            continue
        base = by_name[plain[0]]
        for name in normed:
            r = by_name[name]
            effects.append((data_key or "the base data", r, base))
            text = (
                f"With {data_key or 'the base data'}: {name} ends at {_pct(r.mean)} against "
                f"{_pct(base.mean)} for {base.variant}"
            )
            if target is not None and not (is_missing(r.ett_mean) and is_missing(base.ett_mean)):
                text += (
                    f"; it reaches {target * 100:g} % {_epochs(r)}, {base.variant} {_epochs(base)}"
                )
            curve = lag[lag["variant"] == name]
            if not curve.empty:
                first = curve.sort_values("epoch").iloc[0]
                if first["lag"] > LAG:
                    text += (
                        f"; after epoch {int(first['epoch'])} its inference-mode accuracy is "
                        f"{_pct(first['inference'])} while the same weights with exact BN "
                        f"statistics score {_pct(first['exact'])} — the moving averages still "
                        "hold much of their initial 0 (mean) and 1 (variance)"
                    )
                else:
                    text += (
                        f"; its inference-mode and exact-statistics accuracy agree from epoch "
                        f"{int(first['epoch'])} (within {abs(first['lag']) * 100:.1f} points)"
                    )
            out.append(text + ".")
    helps = [e for e in effects if e[1].mean > e[2].mean]
    hurts = [e for e in effects if e[1].mean < e[2].mean]
    if helps and hurts:
        good, bad = helps[0], hurts[0]
        exact = (
            f", although with exact BN statistics {bad[1].variant} scores {_pct(bad[1].exact_mean)}"
            if not is_missing(bad[1].exact_mean)
            else ""
        )
        out.insert(
            0,
            f"The data setting reverses what BN does in inference mode: with {good[0]} BN helps "
            f"({good[1].variant} {_pct(good[1].mean)} vs {good[2].variant} {_pct(good[2].mean)}), "
            f"with {bad[0]} it hurts ({bad[1].variant} {_pct(bad[1].mean)} vs {bad[2].variant} "
            f"{_pct(bad[2].mean)}){exact}.",
        )
    return out


def _epochs(r: VariantRow) -> str:
    """``"at epoch 8.8"`` (mean over the runs that reached the target, with how many did)."""
    if is_missing(r.ett_mean):
        return f"in none of its {r.n} runs"
    reached = "" if r.ett_reached in (None, r.n) else f" ({r.ett_reached} of {r.n} runs)"
    return f"at epoch {r.ett_mean:.1f}{reached}"


__all__ = [
    "LAG",
    "answer",
    "early_lag_sentences",
    "exact_statistics_sentences",
    "lag_by_epoch",
    "pair_sentences",
]
