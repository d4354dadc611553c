"""Assemble the single-file HTML report.

The page has no external resource of any kind: CSS is inline, figures are PNG
data URIs, there is no JavaScript. It opens from a mail attachment, offline,
in any browser. Every string that comes from a study (names, spec values,
error messages, doctor findings) is escaped.

On a phone (a viewport up to 640 px) each figure is swapped, by a ``<picture>``
media query, for a version drawn for that width (panels stacked in one column),
and wide tables scroll sideways inside their box with a visible hint.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from bnlab.report.fmt import DASH, num_ci, pct_ci, pts, pvalue, seconds
from bnlab.report.summary import VariantRow

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d8dee4; --soft:#f6f8fa; --accent:#0072B2;
        --bad:#b42318; --warn:#b54708; --ok:#067647; }
* { box-sizing: border-box; }
body { margin:0; background:#fff; color:var(--ink);
       font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1200px; margin:0 auto; padding:28px 32px 48px; }
header { border-bottom:1px solid var(--line); padding-bottom:14px; margin-bottom:8px; }
.kicker { color:var(--muted); font-size:13px; letter-spacing:.04em; text-transform:uppercase; }
h1 { font-size:28px; margin:2px 0 6px; }
h2 { font-size:20px; margin:34px 0 10px; padding-top:4px; }
h3 { font-size:16px; margin:18px 0 6px; }
.question { font-size:18px; color:#24292f; margin:4px 0 10px; }
.meta { color:var(--muted); font-size:13px; }
.meta span + span::before { content:" · "; }
ul.verdicts { list-style:none; padding:0; margin:8px 0; }
ul.verdicts li { padding:7px 12px; margin:5px 0; background:var(--soft); border-radius:6px;
                 border-left:5px solid var(--c,#999); }
.sig { font-weight:600; }
/* Scroll shadows (background-attachment: local) appear at an edge only while more of the
   table lies beyond it: a hint that shows exactly when the table scrolls. */
.wide { overflow-x:auto; -webkit-overflow-scrolling:touch;
        background: linear-gradient(to right, #fff 30%, rgba(255,255,255,0)) left / 40px 100% no-repeat local,
          linear-gradient(to left, #fff 30%, rgba(255,255,255,0)) right / 40px 100% no-repeat local,
          radial-gradient(farthest-side at 0 50%, rgba(0,0,0,.22), rgba(0,0,0,0)) left / 14px 100% no-repeat scroll,
          radial-gradient(farthest-side at 100% 50%, rgba(0,0,0,.22), rgba(0,0,0,0)) right / 14px 100% no-repeat scroll; }
.scroll-hint { display:none; color:var(--muted); font-size:12px; margin:4px 0 0; }
.answer { font-size:17px; background:#eef6fc; border-left:5px solid var(--accent);
          padding:9px 14px; border-radius:6px; margin:10px 0 4px; }
.story li { margin:4px 0; }
.warn { background:#fff4e5; border-left:5px solid var(--warn); padding:7px 12px;
        border-radius:6px; margin:8px 0; }
@media (max-width: 640px) {
  main { padding:16px 12px 32px; }
  h1 { font-size:22px; }
  .question { font-size:16px; }
  table { font-size:13px; }
  .scroll-hint { display:block; }
  table.kv th { width:40%; }
}
table { border-collapse:collapse; width:100%; font-size:14px; margin:6px 0 4px; }
th, td { text-align:left; padding:6px 7px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.name { white-space:nowrap; }
.swatch { display:inline-block; width:11px; height:11px; border-radius:2px; margin-right:7px;
          vertical-align:-1px; background:var(--c,#999); }
table.kv th { width:30%; white-space:normal; }
figure { margin:10px 0 6px; }
figure img { max-width:100%; height:auto; display:block; border:1px solid var(--line);
             border-radius:6px; }
figcaption, .note { color:var(--muted); font-size:13px; margin-top:6px; }
code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:13px; }
pre { background:var(--soft); padding:12px; border-radius:6px; overflow:auto; }
details summary { cursor:pointer; color:var(--accent); margin:6px 0; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px;
         font-weight:600; color:#fff; }
.badge.error { background:var(--bad); } .badge.warning { background:var(--warn); }
.badge.info { background:var(--accent); } .badge.ok { background:var(--ok); }
.finding { border:1px solid var(--line); border-radius:6px; padding:10px 14px; margin:8px 0; }
.finding .fix { margin-top:4px; }
.evidence { color:var(--muted); font-size:13px; }
footer { margin-top:40px; color:var(--muted); font-size:12px; border-top:1px solid var(--line);
         padding-top:10px; }
"""


def _attr_color(color: str | None) -> str:
    return f' style="--c:{escape(color)}"' if color else ""


def _swatch(name: str, colors: Mapping[str, str]) -> str:
    return f'<span class="swatch"{_attr_color(colors.get(name))}></span>{escape(name)}'


def header(title: str, question: str, meta: Sequence[str]) -> str:
    spans = "".join(f"<span>{escape(m)}</span>" for m in meta if m)
    return (
        '<header><div class="kicker">bnlab study report</div>'
        f'<h1>{escape(title)}</h1><p class="question">{escape(question)}</p>'
        f'<div class="meta">{spans}</div></header>'
    )


def verdicts(items: Sequence[tuple[VariantRow, str]], colors: Mapping[str, str]) -> str:
    lis = []
    for row, text in items:
        cls = ' class="sig"' if row.significant else ""
        lis.append(
            f"<li{_attr_color(colors.get(row.variant))}><span{cls}>{escape(text)}</span></li>"
        )
    return '<h2 id="verdict">What the runs say</h2><ul class="verdicts">' + "".join(lis) + "</ul>"


def summary_table(
    rows: Sequence[VariantRow],
    colors: Mapping[str, str],
    *,
    set_name: str,
    target: float | None,
    baseline: str,
) -> str:
    target_head = f"epochs to {target * 100:g} %" if target is not None else "epochs to target"
    exact = any(r.exact_n for r in rows)
    head = [
        ("variant", ""),
        ("runs", "num"),
        (f"final {set_name} acc.", "num"),
        *([("with exact BN statistics", "num"), ("exact − inference", "num")] if exact else []),
        ("best epoch acc.", "num"),
        (target_head, "num"),
        ("train − inference gap", "num"),
        (f"Δ vs {baseline}", "num"),
        ("p (Holm)", "num"),
    ]
    out = ['<div class="wide"><table><thead><tr>']
    out += [f'<th class="{c}">{escape(h)}</th>' for h, c in head]
    out.append("</tr></thead><tbody>")
    for r in rows:
        runs = f"{r.n}" if r.n == r.n_total else f"{r.n} of {r.n_total}"
        if r.ett_reached is not None and target is not None:
            ett = f"{num_ci(r.ett_mean, r.ett_half)} ({r.ett_reached}/{r.n})"
        else:
            ett = num_ci(r.ett_mean, r.ett_half)
        gap = pts(r.gap_mean, r.gap_half)
        diff = "baseline" if r.is_baseline else pts(r.diff, r.diff_half)
        p = "" if r.is_baseline else pvalue(r.p_holm)
        cells = [
            (_swatch(r.variant, colors), "name"),
            (escape(runs), "num"),
            (escape(pct_ci(r.mean, r.half)), "num"),
            *(
                [
                    (escape(pct_ci(r.exact_mean, r.exact_half)), "num"),
                    (escape(pts(r.exact_gap_mean, r.exact_gap_half)), "num"),
                ]
                if exact
                else []
            ),
            (escape(pct_ci(r.best_mean, r.best_half)), "num"),
            (escape(ett), "num"),
            (escape(gap), "num"),
            (escape(diff), "num"),
            (escape(p), "num"),
        ]
        out.append("<tr>" + "".join(f'<td class="{c}">{v}</td>' for v, c in cells) + "</tr>")
    out.append("</tbody></table></div>")
    out.append(SCROLL_HINT)
    exact_note = (
        " “With exact BN statistics”: the same last-epoch weights with the BN moving averages "
        "replaced by exact statistics of the training data (precise BN), and its difference to "
        "inference mode per run — what the moving averages cost."
        if exact
        else ""
    )
    out.append(
        '<p class="note">Means over seeds ± half-width of the 95 % t-interval. '
        f"Accuracy in inference mode on the {escape(set_name)} set at the last epoch; "
        "“best epoch” is each run's best epoch; epochs to the target are averaged over the "
        "runs that reached it (k/n: how many did). The train − inference gap is training "
        "accuracy in train mode (batch statistics) minus the same training images in inference "
        "mode (moving averages), at the last epoch. Δ: difference of means with the Welch "
        "interval; p: Welch's t-test against the baseline, Holm-adjusted over all variants."
        f"{escape(exact_note)}</p>"
    )
    return "\n".join(out)


SCROLL_HINT = '<p class="scroll-hint">⇆ the table scrolls sideways</p>'


def answer(text: str, story: Sequence[str]) -> str:
    """The one-sentence answer to the study's question, and the sentences that explain it."""
    out = []
    if text:
        out.append(f'<p class="answer"><b>Answer:</b> {escape(text)}</p>')
    if story:
        out.append('<ul class="story">' + "".join(f"<li>{escape(s)}</li>" for s in story) + "</ul>")
    return "\n".join(out)


#: The widest viewport (CSS px) that gets the narrow drawing of a figure.
NARROW_MAX = 640


def figure(uri: str, alt: str, caption: str, narrow_uri: str | None = None) -> str:
    """A figure; with ``narrow_uri`` a ``<picture>`` that shows it on viewports up to
    :data:`NARROW_MAX` px wide instead of ``uri``."""
    img = f'<img src="{uri}" alt="{escape(alt)}">'
    if narrow_uri:
        img = (
            f'<picture><source media="(max-width: {NARROW_MAX}px)" srcset="{narrow_uri}">'
            f"{img}</picture>"
        )
    return f"<figure>{img}<figcaption>{escape(caption)}</figcaption></figure>"


def problem_runs(runs: Iterable[Mapping[str, Any]], total: int) -> str:
    runs = list(runs)
    out = ['<h2 id="problems">Diverged and failed runs</h2>']
    if not runs:
        out.append(f'<p class="note">None: all {total} runs finished.</p>')
        return "\n".join(out)
    out.append(
        '<table><thead><tr><th>variant</th><th class="num">seed</th><th>status</th>'
        '<th class="num">epoch</th><th>error</th><th class="num">time</th></tr></thead><tbody>'
    )
    for r in runs:
        epoch = r.get("diverged_at_epoch")
        epoch = DASH if epoch is None or epoch != epoch else str(int(epoch))
        error = r.get("error")
        error = "" if error is None or error != error else str(error)
        if r.get("status") == "diverged" and not error:
            error = "loss became NaN or infinite"
        out.append(
            f'<tr><td>{escape(str(r.get("variant")))}</td><td class="num">{escape(str(r.get("seed")))}'
            f'</td><td>{escape(str(r.get("status")))}</td><td class="num">{epoch}</td>'
            f'<td>{_error_cell(error)}</td><td class="num">{seconds(r.get("seconds"))}</td></tr>'
        )
    out.append("</tbody></table>")
    out.append(
        f'<p class="note">{len(runs)} of {total} runs did not finish. They are left out of '
        "the curves and of the statistics above.</p>"
    )
    return "\n".join(out)


def _error_cell(error: str) -> str:
    """The error's first line; a stored traceback (the lines after it) folds away."""
    first, _, rest = error.strip().partition("\n")
    cell = f"<code>{escape(first)}</code>"
    if rest.strip():
        cell += f"<details><summary>traceback</summary><pre>{escape(rest)}</pre></details>"
    return cell


def doctor(
    findings: Sequence[Mapping[str, Any]],
    source: Mapping[str, Any] | None = None,
    study_data: Mapping[str, Any] | None = None,
) -> str:
    """The Doctor section: what was diagnosed, a warning when it is not the study's, findings.

    ``source``: ``model`` (file or factory), ``data`` (name or path) and ``data_options`` of
    the diagnosis, when known. ``study_data``: the study's ``[data]`` table, to compare.
    """
    out = ['<h2 id="doctor">Doctor</h2>']
    out += _diagnosed_on(source or {}, study_data or {})
    if not findings:
        out.append('<p><span class="badge ok">healthy</span> No BN problem found.</p>')
        return "\n".join(out)
    for f in findings:
        severity = str(f.get("severity", "info"))
        sev_cls = severity if severity in ("error", "warning", "info") else "info"
        layer = f.get("layer")
        layer_html = f" in <code>{escape(str(layer))}</code>" if layer else ""
        confirmed = f.get("confirmed")
        conf = " · confirmed by intervention" if confirmed else ""
        evidence = f.get("evidence") or {}
        if isinstance(evidence, Mapping):
            ev = "; ".join(f"{escape(str(k))} = {escape(readable(v))}" for k, v in evidence.items())
        else:
            ev = escape(readable(evidence))
        out.append(
            f'<div class="finding"><span class="badge {sev_cls}">{escape(severity)}</span> '
            f"<code>{escape(str(f.get('id', '')))}</code>{layer_html}{conf}"
            f"<div>{escape(str(f.get('message', '')))}</div>"
            + (f'<div class="evidence">Evidence: {ev}</div>' if ev else "")
            + (
                f'<div class="fix"><b>Fix:</b> {escape(str(f.get("fix")))}</div>'
                if f.get("fix")
                else ""
            )
            + "</div>"
        )
    return "\n".join(out)


def _diagnosed_on(source: Mapping[str, Any], study: Mapping[str, Any]) -> list[str]:
    model, data = source.get("model"), source.get("data")
    options = dict(source.get("data_options") or {})
    if model is None and data is None:
        return [
            '<p class="warn">The findings do not say which model file and data they were '
            "diagnosed on; they may not be this study's.</p>"
        ]
    what = []
    if model is not None:
        what.append(f"model <code>{escape(str(model))}</code>")
    if data is not None:
        opts = ", ".join(f"{k} = {readable(v)}" for k, v in sorted(options.items()))
        what.append(
            f"data <code>{escape(str(data))}</code>" + (f" ({escape(opts)})" if opts else "")
        )
    out = [f"<p>Diagnosed on {' and '.join(what)}.</p>"]
    differ = []
    if study.get("name") is not None and data is not None and str(data) != str(study["name"]):
        differ.append(f"the data is {data!r}, the study trained on {study['name']!r}")
    for key, value in options.items():
        if key in study and study[key] != value:
            differ.append(f"{key} = {readable(value)} here, {readable(study[key])} in the study")
    if study.get("scale") is not None and data is not None and "scale" not in options:
        differ.append(f"no scale given here, {study['scale']!r} in the study")
    if differ:
        out.append(
            '<p class="warn">Not the study\'s data: ' + escape("; ".join(differ)) + ". The "
            "findings describe that model on that data, not the runs above.</p>"
        )
    return out


def readable(value: Any) -> str:
    """A value as a person reads it: numbers to 3 significant digits, lists and tables in
    full (long numeric lists as their first values, count and range), no JSON quoting."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {readable(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(value) > 8 and len(numbers) == len(value):
            head = ", ".join(readable(v) for v in value[:5])
            return (
                f"[{head}, … ({len(value)} values, from {readable(float(min(numbers)))} "
                f"to {readable(float(max(numbers)))})]"
            )
        return "[" + ", ".join(readable(v) for v in value) + "]"
    return str(value)


def settings_table(
    title: str, settings: Mapping[str, Mapping[str, Any]], colors: Mapping[str, str]
) -> str:
    """One row per variant, one column per option any variant has (``–`` where it has none)."""
    keys: list[str] = []
    for row in settings.values():
        keys += [k for k in row if k not in keys]
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    body = "".join(
        f'<tr><td class="name">{_swatch(name, colors)}</td>'
        + "".join(f"<td>{escape(readable(row.get(k, DASH)))}</td>" for k in keys)
        + "</tr>"
        for name, row in settings.items()
    )
    return (
        f'<h3>{escape(title)}</h3><div class="wide"><table><thead><tr><th>variant</th>{head}'
        f"</tr></thead><tbody>{body}</tbody></table></div>{SCROLL_HINT}"
    )


def key_values(title: str, items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td><code>{escape(readable(v))}</code></td></tr>"
        for k, v in items
    )
    return f'<h3>{escape(title)}</h3><table class="kv">{rows}</table>'


def spec_block(spec: Mapping[str, Any]) -> str:
    text = json.dumps(spec, indent=2, sort_keys=False, default=str)
    return (
        "<details><summary>Full study specification (JSON)</summary>"
        f"<pre>{escape(text)}</pre></details>"
    )


def page(title: str, body: Sequence[str], *, generator: str) -> str:
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>\n"
        + "\n".join(body)
        + f"\n<footer>Generated by {escape(generator)} on {escape(stamp)}. "
        "Self-contained file: no network access needed.</footer></main></body></html>\n"
    )
