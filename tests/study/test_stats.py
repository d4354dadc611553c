"""Statistics against hand computations.

Expected numbers come from the textbook formulas written out here: the t quantiles from a
printed t table, the Student-t CDF by Simpson integration of its density, Holm's procedure
step by step. None of them calls the scipy function the implementation uses.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bnlab.study.stats import holm, summarize, t_interval, welch

#: Two-sided 95 % Student-t critical values t(0.975, df), from a printed t table.
T975 = {4: 2.7764451051977987, 5: 2.5705818366147395, 9: 2.2621571627409915}


def student_t_sf2(t: float, df: float, steps: int = 20000) -> float:
    """Two-sided p = 2 * P(T > |t|) by Simpson's rule on the t density from 0 to |t|."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def pdf(x: float) -> float:
        return c * (1 + x * x / df) ** (-(df + 1) / 2)

    h = abs(t) / steps
    area = pdf(0) + pdf(abs(t)) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, steps))
    return 1 - 2 * area * h / 3


def mean_sd(xs):
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def test_t_interval_matches_the_formula_with_a_table_quantile():
    xs = [0.80, 0.82, 0.85, 0.79, 0.84]
    m, sd = mean_sd(xs)  # 0.82, sqrt(0.0026 / 4)
    assert m == pytest.approx(0.82)
    half = T975[4] * sd / math.sqrt(5)
    mean, low, high = t_interval(xs)
    assert mean == pytest.approx(0.82, abs=1e-12)
    assert low == pytest.approx(0.82 - half, abs=1e-12)
    assert high == pytest.approx(0.82 + half, abs=1e-12)
    assert half == pytest.approx(0.0316563, abs=1e-7)  # 2.776445 * 0.0254951 / 2.236068


def test_t_interval_edge_cases():
    assert math.isnan(t_interval([])[0])
    mean, low, high = t_interval([0.5, math.nan])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)
    assert t_interval([0.7, 0.7, 0.7]) == (
        pytest.approx(0.7),
        pytest.approx(0.7),
        pytest.approx(0.7),
    )


def test_welch_p_value_and_interval_by_hand():
    a = [0.84, 0.86, 0.85, 0.88, 0.87, 0.83]
    b = [0.80, 0.82, 0.85, 0.79, 0.84]
    ma, sa = mean_sd(a)
    mb, sb = mean_sd(b)
    va, vb = sa**2 / len(a), sb**2 / len(b)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p = student_t_sf2(t, df)
    out = welch(a, b)
    assert out["diff"] == pytest.approx(ma - mb, abs=1e-12)
    assert out["t"] == pytest.approx(t, rel=1e-12)
    assert out["df"] == pytest.approx(df, rel=1e-12)
    assert out["p"] == pytest.approx(p, abs=1e-9)
    assert 0.005 < out["p"] < 0.05  # the numbers: t ~ 2.75 on ~7.6 df
    # interval of the difference: df is not an integer, so check the quantile it implies
    # lies between the table values of its neighbours (t decreases with df)
    q = out["ci"] / math.sqrt(va + vb)
    assert T975[9] < q < T975[5]
    assert student_t_sf2(q, df) == pytest.approx(0.05, abs=1e-7)


def test_welch_with_equal_groups_is_not_significant_and_undefined_without_spread():
    same = welch([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same["diff"] == 0 and same["p"] == pytest.approx(1.0)
    flat = welch([0.5, 0.5], [0.6, 0.6])
    assert flat["diff"] == pytest.approx(-0.1) and math.isnan(flat["p"])
    assert math.isnan(welch([0.5], [0.6, 0.7])["p"])


def test_holm_step_down_by_hand():
    p = [0.01, 0.04, 0.03, math.nan, 0.005]
    # m = 4 defined: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> max 0.06
    expected = [0.03, 0.06, 0.06, math.nan, 0.02]
    np.testing.assert_allclose(holm(p), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1, monotone
    assert holm([]).size == 0


def _runs(groups: dict[str, list[float]], diverged: dict[str, int] | None = None) -> pd.DataFrame:
    rows = []
    for variant, accs in groups.items():
        for seed, acc in enumerate(accs):
            rows.append(
                dict(
                    variant=variant,
                    seed=seed,
                    status="finished",
                    final_val_accuracy=acc,
                    final_val_loss=1 - acc,
                    best_val_accuracy=acc + 0.01,
                    epochs_to_target=float(seed + 3) if acc > 0.8 else math.nan,
                    train_eval_gap=0.02,
                )
            )
        for k in range((diverged or {}).get(variant, 0)):
            rows.append(
                dict(
                    variant=variant,
                    seed=100 + k,
                    status="diverged",
                    final_val_accuracy=0.1,
                    final_val_loss=math.nan,
                    best_val_accuracy=0.1,
                    epochs_to_target=math.nan,
                    train_eval_gap=math.nan,
                )
            )
    return pd.DataFrame(rows)


def test_summarize_numbers_holm_and_verdicts():
    base = [0.80, 0.82, 0.85, 0.79, 0.84]
    better = [0.90, 0.91, 0.92, 0.90, 0.93]
    same = [0.81, 0.83, 0.82, 0.80, 0.84]
    table = summarize(
        _runs({"no_bn": base, "bn": better, "bn_m080": same}, diverged={"bn_m080": 2}), target=0.8
    )
    assert list(table["variant"]) == ["no_bn", "bn", "bn_m080"]
    row = table.set_index("variant")
    # diverged runs are counted, not averaged
    assert row.loc["bn_m080", "n"] == 5 and row.loc["bn_m080", "n_runs"] == 7
    assert row.loc["bn_m080", "n_diverged"] == 2
    assert row.loc["bn_m080", "final_val_accuracy_mean"] == pytest.approx(sum(same) / 5)
    m, sd = mean_sd(base)
    assert row.loc["no_bn", "final_val_accuracy_half"] == pytest.approx(T975[4] * sd / math.sqrt(5))
    assert row.loc["no_bn", "final_val_accuracy_std"] == pytest.approx(sd)
    # epochs-to-target over the runs that reached it (acc > 0.8): base seeds 1, 2, 4
    assert row.loc["no_bn", "epochs_to_target_reached"] == 3
    assert row.loc["no_bn", "epochs_to_target_mean"] == pytest.approx((4 + 5 + 7) / 3)
    # Welch p-values by hand, then Holm over the two comparisons
    p_bn = student_t_sf2(welch(better, base)["t"], welch(better, base)["df"])
    p_same = student_t_sf2(welch(same, base)["t"], welch(same, base)["df"])
    lo, hi = sorted([p_bn, p_same])
    holm_lo, holm_hi = 2 * lo, max(2 * lo, hi)
    assert row.loc["bn", "p"] == pytest.approx(p_bn, abs=1e-9)
    assert row.loc["bn", "p_holm"] == pytest.approx(holm_lo if p_bn < p_same else holm_hi, abs=1e-9)
    assert row.loc["bn_m080", "p_holm"] == pytest.approx(
        holm_hi if p_bn < p_same else holm_lo, abs=1e-9
    )
    assert bool(row.loc["bn", "significant"]) and not bool(row.loc["bn_m080", "significant"])
    assert math.isnan(row.loc["no_bn", "p"]) and bool(row.loc["no_bn", "is_baseline"])
    diff = sum(better) / 5 - sum(base) / 5
    assert row.loc["bn", "diff"] == pytest.approx(diff)
    verdict = row.loc["bn", "verdict"]
    assert verdict.startswith(
        f"bn: +{100 * diff:.1f} pts ± {100 * row.loc['bn', 'diff_half']:.1f} vs no_bn"
    )
    assert "significantly higher" in verdict and "Holm" in verdict
    assert "not significant" in row.loc["bn_m080", "verdict"]
    assert "2 of 7 runs diverged" in row.loc["bn_m080", "verdict"]
    assert row.loc["no_bn", "verdict"].startswith("no_bn: baseline")


def test_summarize_explicit_baseline_and_bad_baseline():
    runs = _runs({"a": [0.5, 0.6, 0.7], "b": [0.6, 0.7, 0.8]})
    table = summarize(runs, baseline="b").set_index("variant")
    assert bool(table.loc["b", "is_baseline"])
    assert table.loc["a", "diff"] == pytest.approx(-0.1)
    from bnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="baseline: 'c' is not one of"):
        summarize(runs, baseline="c")
