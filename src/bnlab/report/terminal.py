"""The study summary as a rich table — what ``bnlab run`` and ``bnlab demo`` print at the end.

Same rows and the same verdict sentences as the HTML report (both read
:func:`bnlab.report.summary.rows_from_summary`), and the same colour per variant.
Accuracies in percent, differences in percentage points, ± = half-width of the
95 % t-interval.
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from bnlab.report.fmt import DASH, is_missing, pvalue
from bnlab.report.plots import variant_colors
from bnlab.report.source import StudyData, collect
from bnlab.report.summary import rows_from_summary


def _ci(mean: float, half: float, scale: float = 100.0, sign: bool = False) -> str:
    """``mean ± half`` scaled (100: fractions -> percent or points), units in the header."""
    if is_missing(mean):
        return DASH
    text = f"{mean * scale:+.1f}" if sign else f"{mean * scale:.1f}"
    return text if is_missing(half) else f"{text} ± {half * scale:.1f}"


def summary_table(data: StudyData, *, compact: bool = False) -> Table:
    """One row per variant: runs, final accuracy, with exact BN statistics (where the study
    ran ``precise_eval``), Δ and Holm p, gap, best, epochs-to-target.

    Units sit in the headers (``%`` for accuracies, ``pts`` for differences);
    ``compact`` leaves out the best-epoch column and moves the exact-statistics numbers into
    the caption, so the table fits 80 columns (and says so).
    """
    colors = variant_colors(data.variants, data.baseline)
    variants = rows_from_summary(data.summary, data.runs)
    exact = any(r.exact_n for r in variants)  # precise_eval ran: the moving averages' cost
    caption = "gap = accuracy on the training set in train mode − in inference mode"
    if compact:
        caption += "; best-epoch accuracy: in the HTML report"
        if exact:
            caption += "\nfinal acc. with exact BN statistics:" + "".join(
                f"\n  {r.variant}: {_ci(r.exact_mean, r.exact_half)} %" for r in variants if r.exact_n
            )
    target = f"epochs to {data.target * 100:g}%" if data.target is not None else "epochs to target"
    table = Table(
        title=f"{data.name}: mean ± 95 % CI over seeds ({data.val_set} set, inference mode)",
        title_justify="left",
        header_style="bold",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    wide_exact = exact and not compact
    heads = ["runs", "final acc. %", *(["exact BN %"] if wide_exact else [])]
    heads += [f"Δ pts vs {data.baseline}", "p Holm", "gap pts"]
    heads += [] if compact else ["best acc. %"]
    rows = []
    for r in variants:
        cells = [
            Text("■ ", style=colors[r.variant]) + Text(r.variant),
            Text(f"{r.n}" if r.n == r.n_total else f"{r.n}/{r.n_total}"),
            Text(_ci(r.mean, r.half)),
            *([Text(_ci(r.exact_mean, r.exact_half))] if wide_exact else []),
            Text("baseline" if r.is_baseline else _ci(r.diff, r.diff_half, sign=True)),
            Text("" if r.is_baseline else pvalue(r.p_holm), style="bold" if r.significant else ""),
            Text(_ci(r.gap_mean, r.gap_half, sign=True)),
        ]
        cells += [] if compact else [Text(_ci(r.best_mean, r.best_half))]
        rows.append([*cells, Text(_ci(r.ett_mean, r.ett_half, scale=1.0))])
    # Headers may wrap onto two lines; the numbers never do (min_width = widest cell).
    for i, head in enumerate(["variant", *heads, target]):
        widest = max((row[i].cell_len for row in rows), default=0)
        table.add_column(head, justify="left" if i == 0 else "right", min_width=widest)
    for row in rows:
        table.add_row(*row)
    return table


def verdict_lines(data: StudyData) -> list[Text]:
    """The per-variant sentences, significant ones in bold."""
    colors = variant_colors(data.variants, data.baseline)
    return [
        Text("■ ", style=colors[r.variant]) + Text(r.verdict, style="bold" if r.significant else "")
        for r in rows_from_summary(data.summary)
    ]


#: Below this console width the table leaves out its best-epoch column.
WIDE = 110


def render(data: StudyData, *, width: int = WIDE) -> Group:
    """Question, table and verdicts as one renderable, laid out for ``width`` columns."""
    parts = []
    if data.question:
        parts.append(Text(data.question, style="italic"))
    # The exact-statistics column takes about 13 more columns.
    exact = any(r.exact_n for r in rows_from_summary(data.summary, data.runs))
    parts.append(summary_table(data, compact=width < WIDE + (13 if exact else 0)))
    parts.extend(verdict_lines(data))
    return Group(*parts)


def print_summary(
    store: str | Path | StudyData, study: str | None = None, *, console: Console | None = None
) -> StudyData:
    """Print the summary of a study (a store path or :class:`StudyData`) and return its data."""
    data = store if isinstance(store, StudyData) else collect(store, study)
    console = console or Console()
    console.print(render(data, width=console.width))
    return data
