"""The report's figures, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``):
no global state, no GUI backend, safe to call from any thread or a headless CI.

Conventions shared by every figure:

* one colour per variant, the same in every figure (:func:`variant_colors`;
  the baseline always gets the first colour of the palette);
* accuracies are drawn in percent (the stored values are fractions in [0, 1]);
* epochs are 1-based, as in ``History`` and Keras's progress lines;
* curves are the mean over a variant's seeds with a shaded 95 % t-interval
  (:mod:`bnlab.report.curves`).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bnlab.report.curves import band

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
)
DPI = 110
#: Shading of the train-vs-inference gap by its sign.
GAP_TRAIN_AHEAD = "#d62728"
GAP_INFER_AHEAD = "#6a3d9a"
_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.8,
    "legend.frameon": False,
    "legend.fontsize": 9,
}


def variant_colors(variants: Sequence[str], baseline: str | None = None) -> dict[str, str]:
    """A stable colour per variant: the baseline first, the rest in their given order."""
    ordered = [baseline] if baseline in variants else []
    ordered += [v for v in variants if v != baseline]
    if len(ordered) <= len(PALETTE):
        colours = list(PALETTE)
    else:
        cmap = matplotlib.colormaps["tab20"]
        colours = [matplotlib.colors.to_hex(cmap(i % 20)) for i in range(len(ordered))]
    return {name: colours[i] for i, name in enumerate(ordered)}


def to_png(fig: Figure) -> bytes:
    """Render ``fig`` with the Agg canvas to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, so the HTML needs no side files."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _new_figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _percent(values: pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=float) * 100.0


def _draw_band(
    ax,
    data: pd.DataFrame,
    color: str,
    label: str | None,
    linestyle: str = "-",
    scale: float = 100.0,
    bounds: tuple[float, float] = (0.0, 1.0),
):
    """Mean line plus shaded 95 % interval; ``scale`` 100 turns fractions into percent.

    The band is clipped to ``bounds`` (in the data's units: accuracy in [0, 1], a loss in
    [0, inf)); a t-interval of a bounded quantity may cross its bound, the quantity cannot.
    The captions say so (:func:`band_leaves_bounds`).
    """
    x = data["epoch"].to_numpy(dtype=float)
    mean = data["mean"].to_numpy(dtype=float) * scale
    ax.plot(x, mean, color=color, linestyle=linestyle, lw=1.8, label=label)
    ok = np.isfinite(data["half"].to_numpy(dtype=float))
    if ok.any():
        low = np.clip(data["low"].to_numpy(dtype=float), *bounds) * scale
        high = np.clip(data["high"].to_numpy(dtype=float), *bounds) * scale
        ax.fill_between(x[ok], low[ok], high[ok], color=color, alpha=0.16, lw=0)


def band_leaves_bounds(
    epochs: pd.DataFrame, metric: str, bounds: tuple[float, float] = (0.0, 1.0)
) -> bool:
    """True when some epoch's 95 % t-interval of ``metric`` crosses ``bounds`` (and is clipped)."""
    b = band(epochs, metric)
    if b.empty:
        return False
    low, high = b["low"].to_numpy(dtype=float), b["high"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return bool(np.any(low < bounds[0]) or np.any(high > bounds[1]))


def loss_spans_decade(curve: pd.DataFrame) -> bool:
    """True when a loss curve's means span more than a factor 10 (drawn on a log axis)."""
    mean = curve["mean"].to_numpy(dtype=float) if not curve.empty else np.array([])
    mean = mean[np.isfinite(mean) & (mean > 0)]
    return bool(mean.size and mean.max() > 10 * mean.min())


def _differs(first: pd.DataFrame, second: pd.DataFrame, tol: float = 1e-6) -> bool:
    """True when two mean curves differ somewhere (a network without BN has precise
    statistics equal to its moving averages: its precise curve would only hide the other)."""
    both = first.merge(second, on="epoch", suffixes=("_a", "_b"))
    if both.empty:
        return not second.empty
    return bool((both["mean_a"] - both["mean_b"]).abs().max() > tol)


#: One marker shape per variant for curves drawn without a band, so identical curves of two
#: variants stay visible: their markers sit on different epochs (staggered) and differ in shape.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _draw_line(ax, data: pd.DataFrame, color: str, linestyle: str, index: int = 0) -> None:
    """Mean only, no band: the precise-BN curves sit on top of banded curves."""
    x = data["epoch"].to_numpy(dtype=float)
    step = max(2, len(x) // 8)
    ax.plot(
        x,
        data["mean"].to_numpy(dtype=float) * 100.0,
        color=color,
        ls=linestyle,
        lw=1.8,
        marker=MARKERS[index % len(MARKERS)],
        markersize=5,
        markerfacecolor="white",
        markeredgewidth=1.3,
        markevery=(index % step, step),
    )


def _epoch_axis(ax, max_epoch: float) -> None:
    ax.set_xlabel("epoch")
    ax.set_xlim(1, max(max_epoch, 2))
    ax.xaxis.get_major_locator().set_params(integer=True)


def validation_curves(
    epochs: pd.DataFrame,
    variants: Sequence[str],
    colors: dict[str, str],
    *,
    set_name: str = "validation",
    target: float | None = None,
    narrow: bool = False,
) -> Figure | None:
    """Accuracy and loss on the held-out set per epoch, mean ± 95 % CI per variant.

    ``narrow``: the phone layout, accuracy above loss in one column. The loss axis is
    logarithmic when a loss curve spans more than a decade.

    ``set_name`` names the set behind ``val_accuracy`` ("validation" or "test").
    When the runs recorded ``precise_val_accuracy`` (moving averages replaced by
    exact statistics of the training data) it is drawn dashed in the same colour
    (mean only), for the variants where it differs from the moving-average curve.
    """
    acc = band(epochs, "val_accuracy")
    if acc.empty:
        return None
    loss = band(epochs, "val_loss")
    precise = band(epochs, "precise_val_accuracy")
    with matplotlib.rc_context(_RC):
        if narrow:
            fig = _new_figure(4.4, 7.2)
            ax_acc, ax_loss = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1.35, 1]})
        else:
            fig = _new_figure(10.5, 3.9)
            ax_acc, ax_loss = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
        drew_precise = False
        for index, name in enumerate(variants):
            part = acc[acc["variant"] == name]
            if not part.empty:
                _draw_band(ax_acc, part, colors[name], name)
            exact = precise[precise["variant"] == name] if not precise.empty else precise
            if not exact.empty and _differs(part, exact):
                _draw_line(ax_acc, exact, colors[name], "--", index)
                drew_precise = True
            part = loss[loss["variant"] == name] if not loss.empty else loss
            if not part.empty:
                _draw_band(ax_loss, part, colors[name], name, scale=1.0, bounds=(0.0, np.inf))
        if not loss.empty and loss_spans_decade(loss):
            ax_loss.set_yscale("log")
        max_epoch = float(acc["epoch"].max())
        if target is not None:
            ax_acc.axhline(target * 100.0, color="#777777", lw=1, ls=":")
            ax_acc.annotate(
                f"target {target * 100:g} %",
                (1, target * 100.0),
                xytext=(3, 3),
                textcoords="offset points",
                color="#555555",
                fontsize=8,
            )
        ax_acc.set_title(f"{set_name.capitalize()} accuracy (inference mode)")
        ax_acc.set_ylabel(f"{set_name} accuracy (%)")
        _epoch_axis(ax_acc, max_epoch)
        handles, labels = ax_acc.get_legend_handles_labels()
        if drew_precise:
            handles += [
                Line2D([], [], color="#444444", lw=1.8),
                Line2D([], [], color="#444444", lw=1.8, ls="--"),
            ]
            labels += ["moving averages", "exact BN statistics (markers)"]
        ncols = 2 if narrow else min(len(labels), 5)
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols)
        if loss.empty:
            ax_loss.set_visible(False)
        else:
            ax_loss.set_title(f"{set_name.capitalize()} loss")
            log = " (log scale)" if ax_loss.get_yscale() == "log" else ""
            ax_loss.set_ylabel(f"{set_name} cross-entropy (nats){log}")
            _epoch_axis(ax_loss, max_epoch)
    return fig


def train_mode_curves(
    epochs: pd.DataFrame,
    variants: Sequence[str],
    colors: dict[str, str],
    *,
    max_cols: int = 4,
    narrow: bool = False,
) -> Figure | None:
    """Training accuracy in train mode vs inference mode, one panel per variant.

    Solid: ``accuracy`` (train mode: batch statistics, averaged over the epoch's
    batches as Keras reports it). Dashed: ``train_eval_accuracy`` (the same
    training images in inference mode, with the moving averages, at epoch end).
    Dotted: ``precise_train_eval_accuracy`` when present and different from the
    dashed curve (networks without BN have nothing to recalibrate). The shaded area
    between the solid and dashed means is the train-vs-inference gap: red where train
    mode is ahead (the usual BN trouble), purple where inference mode is ahead. ``narrow``:
    the phone layout, one panel per row.
    """
    train = band(epochs, "accuracy")
    infer = band(epochs, "train_eval_accuracy")
    if train.empty or infer.empty:
        return None
    precise = band(epochs, "precise_train_eval_accuracy")
    shown = [v for v in variants if (train["variant"] == v).any()]
    cols = 1 if narrow else min(max_cols, len(shown))
    rows = math.ceil(len(shown) / cols)
    max_epoch = float(train["epoch"].max())
    with matplotlib.rc_context(_RC):
        width = 4.4 if narrow else min(10.5, 3.2 * cols + 0.6)
        fig = _new_figure(width, 2.9 * rows + (1.0 if narrow else 0.5))
        axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False)).ravel()
        drew_precise = False
        for ax, name in zip(axes, shown, strict=False):
            color = colors[name]
            t = train[train["variant"] == name]
            i = infer[infer["variant"] == name]
            _draw_band(ax, t, color, "train mode (batch statistics)")
            _draw_band(ax, i, color, "inference mode (moving averages)", linestyle="--")
            both = t.merge(i, on="epoch", suffixes=("_t", "_i"))
            upper, lower = _percent(both["mean_t"]), _percent(both["mean_i"])
            for where, shade in (
                (upper >= lower, GAP_TRAIN_AHEAD),
                (upper < lower, GAP_INFER_AHEAD),
            ):
                ax.fill_between(
                    both["epoch"].to_numpy(dtype=float),
                    upper,
                    lower,
                    where=where,
                    interpolate=True,
                    color=shade,
                    alpha=0.14,
                    lw=0,
                )
            p = precise[precise["variant"] == name] if not precise.empty else precise
            if not p.empty and _differs(i, p):
                _draw_line(ax, p, color, ":", shown.index(name))
                drew_precise = True
            ax.set_title(name, color=color)
            _epoch_axis(ax, max_epoch)
        for ax in axes[len(shown) :]:
            ax.set_visible(False)
        for ax in axes[::cols]:
            ax.set_ylabel("training accuracy (%)")
        legend = [
            Line2D([], [], color="#444444", lw=1.8),
            Line2D([], [], color="#444444", lw=1.8, ls="--"),
        ]
        labels = ["train mode (batch statistics)", "inference mode (moving averages)"]
        if drew_precise:
            legend.append(Line2D([], [], color="#444444", lw=1.8, ls=":"))
            labels.append("inference mode (exact BN statistics)")
        legend += [Patch(color=GAP_TRAIN_AHEAD, alpha=0.3), Patch(color=GAP_INFER_AHEAD, alpha=0.3)]
        labels += ["gap: train mode ahead", "gap: inference mode ahead"]
        ncols = 1 if narrow else min(len(labels), 3)
        fig.legend(legend, labels, loc="outside lower center", ncols=ncols)
    return fig


def regularization_share(
    epochs: pd.DataFrame, variants: Sequence[str], colors: dict[str, str], *, narrow: bool = False
) -> Figure | None:
    """The regularizer's share of the training loss per epoch, ``reg_loss / loss`` in %.

    ``reg_loss`` is what the kernel/gamma/beta regularizers add (Keras: ``l2 * sum(w**2)``)
    and ``loss`` the total training loss, both means over the epoch's batches. Drawn only
    when some variant has a regularizer; the others appear as a flat zero line.
    """
    if "reg_loss" not in epochs.columns or not (epochs["reg_loss"].fillna(0) > 0).any():
        return None
    frame = epochs.assign(reg_share=epochs["reg_loss"] / epochs["loss"])
    share = band(frame, "reg_share")
    if share.empty:
        return None
    with matplotlib.rc_context(_RC):
        fig = _new_figure(4.4 if narrow else 6.4, 3.6 if narrow else 3.4)
        ax = fig.subplots()
        for name in variants:
            v = share[share["variant"] == name]
            if not v.empty:
                _draw_band(ax, v, colors[name], name)
        ax.set_ylabel("regularizer share of the loss (%)")
        _epoch_axis(ax, float(share["epoch"].max()))
        ax.legend(loc="best")
    return fig


def final_distribution(
    runs: pd.DataFrame,
    variants: Sequence[str],
    colors: dict[str, str],
    *,
    metric: str = "final_val_accuracy",
    label: str = "final validation accuracy (%)",
    seed: int = 0,
    narrow: bool = False,
) -> Figure | None:
    """Box plot plus every run as a dot (jittered horizontally), one column per variant.

    ``narrow``: the phone layout, variant names rotated under a 4.4-inch-wide axis."""
    if metric not in runs.columns:
        return None
    values = [
        runs.loc[runs["variant"] == v, metric].dropna().to_numpy(dtype=float) for v in variants
    ]
    if not any(len(v) for v in values):
        return None
    jitter = np.random.default_rng(seed)
    with matplotlib.rc_context(_RC):
        width = 4.4 if narrow else max(4.5, 1.35 * len(variants) + 1.8)
        fig = _new_figure(width, 4.6 if narrow else 3.9)
        ax = fig.subplots()
        positions = np.arange(1, len(variants) + 1)
        kept = [(p, _percent(v)) for p, v in zip(positions, values, strict=True) if len(v)]
        ax.boxplot(
            [v for _, v in kept],
            positions=[p for p, _ in kept],
            widths=0.5,
            showfliers=False,
            medianprops={"color": "#333333"},
            boxprops={"color": "#888888"},
            whiskerprops={"color": "#888888"},
            capprops={"color": "#888888"},
        )
        for pos, name, vals in zip(positions, variants, values, strict=True):
            if len(vals):
                x = pos + jitter.uniform(-0.14, 0.14, size=len(vals))
                ax.scatter(
                    x,
                    _percent(vals),
                    s=26,
                    color=colors[name],
                    alpha=0.85,
                    zorder=3,
                    edgecolors="white",
                    linewidths=0.6,
                )
                ax.scatter(
                    [pos], [_percent(vals).mean()], marker="D", s=30, color="#222222", zorder=4
                )
        ax.set_xticks(
            positions, [f"{v}\n(n={len(x)})" for v, x in zip(variants, values, strict=True)]
        )
        for tick, name in zip(ax.get_xticklabels(), variants, strict=True):
            tick.set_color(colors[name])
            if narrow and len(variants) > 2:
                tick.set_rotation(35)
                tick.set_horizontalalignment("right")
        ax.set_xlim(0.4, len(variants) + 0.6)
        ax.set_ylabel(label)
        ax.set_title("Final accuracy of every run (diamond: mean)")
        ax.grid(axis="x", visible=False)
    return fig
