"""``render_html``: one study -> one self-contained HTML file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from bnlab.report import html, plots
from bnlab.report.source import StudyData, collect
from bnlab.report.summary import rows_from_summary


def render_html(
    store: str | Path | StudyData,
    out: str | Path = "report.html",
    study: str | None = None,
    *,
    diagnoses: Any = None,
) -> Path:
    """Write the HTML report of a study and return its path.

    ``store``: an SQLite store written by ``bnlab.study.run`` (or a :class:`StudyData`).
    ``study``: which study of the store (default: the one the store's API picks).
    ``diagnoses``: optional doctor findings for a "Doctor" section — a list of plain
    dicts with ``id, severity, layer, message, evidence, fix`` (a ``Diagnosis``, or
    ``Finding`` objects, are accepted as well).

    The file needs no network: inline CSS, figures as base64 PNG data URIs, no script.
    """
    data = store if isinstance(store, StudyData) else collect(store, study)
    findings = None if diagnoses is None else normalize_findings(diagnoses)
    text = build_page(data, findings)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)  # never leave a half-written report behind
    return out


def normalize_findings(diagnoses: Any) -> list[dict[str, Any]]:
    """Plain dicts from a list of dicts, ``Finding`` objects, or a ``Diagnosis``."""
    if hasattr(diagnoses, "findings"):
        diagnoses = diagnoses.findings
    elif isinstance(diagnoses, Mapping) and "findings" in diagnoses:
        diagnoses = diagnoses["findings"]
    out = []
    for item in diagnoses:
        if isinstance(item, Mapping):
            out.append(dict(item))
        elif hasattr(item, "to_dict"):
            out.append(dict(item.to_dict()))
        elif hasattr(item, "model_dump"):
            out.append(item.model_dump())
        elif is_dataclass(item):
            out.append(asdict(item))
        else:
            out.append(dict(vars(item)))
    return out


def _meta(data: StudyData) -> list[str]:
    model = data.spec.get("model") if isinstance(data.spec.get("model"), Mapping) else {}
    dataset = data.spec.get("data") if isinstance(data.spec.get("data"), Mapping) else {}
    parts = []
    if model.get("preset"):
        parts.append(f"model {model['preset']}")
    if dataset.get("name"):
        parts.append(f"data {dataset['name']}")
    parts.append(f"{len(data.variants)} variants × {len(data.seeds)} seeds")
    parts.append(f"{data.num_epochs} epochs")
    parts.append(f"{len(data.runs)} runs")
    if data.versions.get("bnlab"):
        parts.append(f"bnlab {data.versions['bnlab']}")
    return parts


def _question(data: StudyData) -> str:
    if data.question:
        return data.question
    others = [v for v in data.variants if v != data.baseline]
    return (
        f"Do {', '.join(others) or 'the variants'} change the final {data.val_set} accuracy "
        f"compared with {data.baseline}?"
    )


def _settings(data: StudyData) -> list[tuple[str, Any]]:
    """The spec's top-level settings, flattened one level (variants shown separately)."""
    items: list[tuple[str, Any]] = []
    for key, value in data.spec.items():
        if key in ("variants", "question", "name", "grid"):
            continue
        if isinstance(value, Mapping):
            items += [(f"{key}.{k}", v) for k, v in value.items() if v is not None]
        elif value is not None:
            items.append((key, value))
    items.append(("validation curves measured on", f"the {data.val_set} set"))
    if data.store:
        items.append(("store", data.store))
    return items


def _variants_table(data: StudyData) -> list[tuple[str, Any]]:
    variants = data.spec.get("variants")
    if not isinstance(variants, Mapping):
        return []
    # The store keeps the spec with sorted keys; show the variants in the study's order.
    order = [v for v in data.variants if v in variants] + [
        v for v in variants if v not in data.variants
    ]
    return [(name, variants[name] or "(no overrides)") for name in order]


def build_page(data: StudyData, findings: Iterable[Mapping[str, Any]] | None = None) -> str:
    """The complete HTML text of a report (see :func:`render_html`)."""
    variants = data.variants
    colors = plots.variant_colors(variants, data.baseline)
    rows = rows_from_summary(data.summary)
    set_name = data.val_set
    body = [html.header(f"Study “{data.name}”", _question(data), _meta(data))]
    body.append(html.verdicts([(r, r.verdict) for r in rows], colors))
    body.append('<h2 id="summary">Summary</h2>')
    body.append(
        html.summary_table(
            rows, colors, set_name=set_name, target=data.target, baseline=data.baseline or ""
        )
    )
    body.append('<h2 id="curves">Learning curves</h2>')
    body += _figures(data, variants, colors, set_name)
    body.append(html.problem_runs(data.problem_runs.to_dict("records"), total=len(data.runs)))
    if findings is not None:
        body.append(html.doctor(list(findings)))
    body.append('<h2 id="setup">Setup</h2>')
    body.append(html.key_values("Settings", _settings(data)))
    variant_rows = _variants_table(data)
    if variant_rows:
        body.append(html.key_values("Variants (overrides of the settings)", variant_rows))
    if data.versions:
        body.append(html.key_values("Versions", sorted(data.versions.items())))
    if data.spec:
        body.append(html.spec_block(data.spec))
    version = data.versions.get("bnlab") or _bnlab_version()
    return html.page(f"bnlab report: {data.name}", body, generator=f"bnlab {version}")


def _bnlab_version() -> str:
    from bnlab import __version__

    return __version__


def _embed(fig, alt: str, caption: str) -> str:
    """``fig`` as a self-contained ``<figure>`` (PNG in a data URI)."""
    return html.figure(plots.data_uri(plots.to_png(fig)), alt, caption)


def _figures(data: StudyData, variants: list[str], colors: dict, set_name: str) -> list[str]:
    epochs = data.finished_epochs
    left_out = len(data.problem_runs)
    excluded = f" {left_out} run(s) that did not finish are left out." if left_out else ""
    out = []
    fig = plots.validation_curves(epochs, variants, colors, set_name=set_name, target=data.target)
    if fig is not None:
        precise = (
            "precise_val_accuracy" in epochs.columns
            and epochs["precise_val_accuracy"].notna().any()
        )
        extra = (
            " Dashed: the same models with their BN moving averages replaced by exact statistics "
            "of the training data (precise BN) — what the weights learned, without the "
            "bookkeeping of the moving averages."
            if precise
            else ""
        )
        out.append(
            _embed(
                fig,
                f"{set_name} accuracy and loss per epoch",
                f"Accuracy and loss on the {set_name} set at the end of each epoch, in inference "
                f"mode (BN uses its moving averages). Line: mean over seeds; band: 95 % t-interval."
                f"{extra}{excluded}",
            )
        )
    fig = plots.train_mode_curves(epochs, variants, colors)
    if fig is not None:
        out.append(
            _embed(
                fig,
                "training accuracy in train mode and inference mode",
                "The training set seen two ways. Solid: accuracy in train mode (BN normalises with "
                "each batch's statistics), averaged over the epoch's batches as Keras reports it. "
                "Dashed: the same training images at the end of the epoch in inference mode (BN uses "
                "its moving averages). The shaded gap between them is the train-vs-inference gap: "
                "when it is large, the moving averages — not the weights — are what fails.",
            )
        )
    fig = plots.regularization_share(epochs, variants, colors)
    if fig is not None:
        out.append(
            _embed(
                fig,
                "regularizer share of the training loss per epoch",
                "How much of the training loss is the regularizer (e.g. L2 on the kernels: "
                "l2 × Σw², as Keras adds it) rather than the data loss, per epoch; mean over "
                "seeds with its 95 % t-interval. Before a BN layer, a kernel's scale does not "
                "change the network's output, so this part of the loss only shrinks the weights "
                "— which raises their effective learning rate.",
            )
        )
    fig = plots.final_distribution(
        data.finished_runs, variants, colors, label=f"final {set_name} accuracy (%)"
    )
    if fig is not None:
        out.append('<h2 id="distribution">Final accuracy of every run</h2>')
        out.append(
            _embed(
                fig,
                f"final {set_name} accuracy per variant",
                f"Final {set_name} accuracy of each finished run (dot), its variant's box plot "
                "(median and quartiles) and mean (diamond).",
            )
        )
    return out
