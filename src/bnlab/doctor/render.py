"""Render a :class:`~bnlab.doctor.findings.DiagnosisData` for a terminal (rich) and for HTML."""

from __future__ import annotations

import html as _html
import json

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from bnlab.doctor.findings import DiagnosisData as Diagnosis

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_HTML_COLOUR = {"error": "#b00020", "warning": "#9a6700", "info": "#0b6e99"}
_CONFIRMED = {True: "yes", False: "no", None: "-"}


def _summary(diagnosis: Diagnosis) -> str:
    info = diagnosis.model_info
    parts = [f"{info.get('framework', '?')} model", f"{info.get('bn_layers', 0)} BN layer(s)"]
    if info.get("train_mode_accuracy") is not None:
        parts.append(
            f"accuracy on the training data: {info['train_mode_accuracy']:.4f} in train mode, "
            f"{info['inference_accuracy']:.4f} in inference mode"
        )
    parts.append(f"{diagnosis.passes} pass(es) over the data")
    return "; ".join(parts)


def rich_table(diagnosis: Diagnosis) -> Table:
    table = Table(title="BN doctor", show_lines=True, expand=False)
    for name in ("severity", "id", "layer", "message", "fix", "confirmed"):
        table.add_column(name, overflow="fold")
    for f in diagnosis.sorted_findings():
        table.add_row(
            Text(f.severity, style=_STYLE[f.severity]),
            f.id,
            f.layer or "(model)",
            f.message,
            f.fix,
            _CONFIRMED[f.confirmed],
        )
    return table


_MARK = {"error": "x", "warning": "!", "info": "i"}


def _block(f) -> Group:
    """One finding as a few wrapped lines: readable at 80 columns (a table is not)."""
    head = Text()
    head.append(f"{_MARK[f.severity]} {f.severity}", style=_STYLE[f.severity])
    head.append(f"  {f.id}", style="bold")
    if f.layer:
        head.append(f"  at {f.layer}", style="dim")
    if f.confirmed:
        head.append("  (confirmed by intervention)", style="green")
    fix = Text("fix: ", style="bold")
    fix.append(f.fix)
    return Group(head, Padding(Text(f.message), (0, 0, 0, 2)), Padding(fix, (0, 0, 0, 2)))


def rich_renderable(diagnosis: Diagnosis) -> Group:
    """The summary line, then one compact block per finding (errors first), then the verdict."""
    head = Text(_summary(diagnosis), style="dim")
    if not diagnosis.findings:
        return Group(head, Text("healthy: no BN problem found", style="bold green"))
    verdict = (
        Text("healthy (remarks only)", style="bold green")
        if diagnosis.healthy
        else Text(f"{len(diagnosis.findings)} finding(s)", style="bold")
    )
    blocks = []
    for f in diagnosis.sorted_findings():
        blocks.extend([_block(f), Text("")])
    return Group(head, Text(""), *blocks, verdict)


def html_section(diagnosis: Diagnosis) -> str:
    esc = _html.escape
    rows = []
    for f in diagnosis.sorted_findings():
        evidence = esc(json.dumps(f.evidence, indent=1, sort_keys=True))
        rows.append(
            "<tr>"
            f'<td style="color:{_HTML_COLOUR[f.severity]};font-weight:bold">{esc(f.severity)}</td>'
            f"<td><code>{esc(f.id)}</code></td>"
            f"<td><code>{esc(f.layer or '(model)')}</code></td>"
            f"<td>{esc(f.message)}</td>"
            f"<td>{esc(f.fix)}</td>"
            f"<td>{_CONFIRMED[f.confirmed]}</td>"
            f"<td><details><summary>numbers</summary><pre>{evidence}</pre></details></td>"
            "</tr>"
        )
    if rows:
        body = (
            '<table class="bnlab-doctor-findings" style="border-collapse:collapse">'
            "<thead><tr><th>severity</th><th>id</th><th>layer</th><th>message</th>"
            "<th>fix</th><th>confirmed</th><th>evidence</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    else:
        body = "<p><strong>healthy</strong>: no BN problem found.</p>"
    return (
        '<section class="bnlab-doctor">'
        "<h2>BN doctor</h2>"
        f"<p>{esc(_summary(diagnosis))}</p>"
        f"{body}"
        "</section>"
    )
