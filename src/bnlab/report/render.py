"""``render_html``: one study -> one self-contained HTML file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from bnlab.report import effective, html, plots, story
from bnlab.report.curves import band
from bnlab.report.source import StudyData, collect
from bnlab.report.summary import rows_from_summary


def render_html(
    store: str | Path | StudyData,
    out: str | Path = "report.html",
    study: str | None = None,
    *,
    diagnoses: Any = None,
    diagnosed_on: Mapping[str, Any] | None = None,
) -> Path:
    """Write the HTML report of a study and return its path.

    ``store``: an SQLite store written by ``bnlab.study.run`` (or a :class:`StudyData`).
    ``study``: which study of the store (default: the one the store's API picks).
    ``diagnoses``: optional doctor findings for a "Doctor" section — a list of plain
    dicts with ``id, severity, layer, message, evidence, fix`` (a ``Diagnosis``, or
    ``Finding`` objects, are accepted as well; so is the object ``bnlab doctor --json``
    prints).
    ``diagnosed_on``: ``model``, ``data`` and ``data_options`` of the diagnosis, named in the
    section and compared with the study's data; default: those keys of ``diagnoses`` (or of
    its ``model_info``) when it is a mapping or a ``Diagnosis``.

    The file needs no network: inline CSS, figures as base64 PNG data URIs, no script.
    """
    data = store if isinstance(store, StudyData) else collect(store, study)
    findings = None if diagnoses is None else normalize_findings(diagnoses)
    source = dict(diagnosed_on) if diagnosed_on is not None else diagnosis_source(diagnoses)
    text = build_page(data, findings, source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)  # never leave a half-written report behind
    return out


def diagnosis_source(diagnoses: Any) -> dict[str, Any]:
    """``model``, ``data``, ``data_options`` named by a diagnosis payload, where it has them."""
    if diagnoses is None:
        return {}
    if isinstance(diagnoses, Mapping):
        places = [diagnoses, diagnoses.get("model_info") or {}]
    else:
        places = [getattr(diagnoses, "model_info", None) or {}]
    out: dict[str, Any] = {}
    for place in places:
        if not isinstance(place, Mapping):
            continue
        for key in ("model", "data", "data_options"):
            if place.get(key) is not None:
                out.setdefault(key, place[key])
    if "model" in out and not isinstance(out["model"], str):
        out.pop("model")
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
    """The spec's top-level settings, flattened one level (variants shown separately), with
    the effective value of each default the spec left open (e.g. the optimizer's lr)."""
    train = effective.train_settings(data.spec)
    items: list[tuple[str, Any]] = []
    for key, value in data.spec.items():
        if key in ("variants", "question", "name", "grid"):
            continue
        if isinstance(value, Mapping):
            section = {**value, **train} if key == "train" and train else value
            items += [(f"{key}.{k}", v) for k, v in section.items() if v is not None]
        elif value is not None:
            items.append((key, value))
    items.append(("validation curves measured on", f"the {data.val_set} set"))
    # A temporary store (bnlab demo's default) is gone once the report is written.
    if data.store and Path(data.store).exists():
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


def build_page(
    data: StudyData,
    findings: Iterable[Mapping[str, Any]] | None = None,
    diagnosed_on: Mapping[str, Any] | None = None,
) -> str:
    """The complete HTML text of a report (see :func:`render_html`)."""
    variants = data.variants
    colors = plots.variant_colors(variants, data.baseline)
    rows = rows_from_summary(data.summary, data.runs)
    set_name = data.val_set
    body = [html.header(f"Study “{data.name}”", _question(data), _meta(data))]
    epochs = data.finished_epochs
    settings = effective.variant_settings(data.spec)
    sentences = (
        story.exact_statistics_sentences(rows)
        + story.pair_sentences(rows, settings, epochs, data.target)
        + story.early_lag_sentences(epochs, variants, data.target)
    )
    body.append(html.answer(story.answer(rows, data.baseline, set_name), sentences))
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
        study_data = data.spec.get("data") if isinstance(data.spec.get("data"), Mapping) else {}
        body.append(html.doctor(list(findings), diagnosed_on or {}, study_data))
    body.append('<h2 id="setup">Setup</h2>')
    body.append(html.key_values("Settings", _settings(data)))
    if settings:
        order = [v for v in variants if v in settings] + [v for v in settings if v not in variants]
        body.append(
            html.settings_table(
                "Variants (effective options; defaults filled in)",
                {v: settings[v] for v in order},
                colors,
            )
        )
    else:
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


def _embed(draw, alt: str, caption: str) -> str | None:
    """``draw(narrow=...)`` as a self-contained ``<figure>``: the wide drawing, and the narrow
    one for phones (PNGs in data URIs); None when there is nothing to draw."""
    wide = draw(narrow=False)
    if wide is None:
        return None
    narrow = draw(narrow=True)
    narrow_uri = plots.data_uri(plots.to_png(narrow)) if narrow is not None else None
    return html.figure(plots.data_uri(plots.to_png(wide)), alt, caption, narrow_uri)


def _figures(data: StudyData, variants: list[str], colors: dict, set_name: str) -> list[str]:
    epochs = data.finished_epochs
    left_out = len(data.problem_runs)
    excluded = f" {left_out} run(s) that did not finish are left out." if left_out else ""
    out: list[str | None] = []
    precise = (
        "precise_val_accuracy" in epochs.columns and epochs["precise_val_accuracy"].notna().any()
    )
    extra = (
        " Dashed with markers: the same models with their BN moving averages replaced by exact "
        "statistics of the training data (precise BN) — what the weights learned, without the "
        "bookkeeping of the moving averages; each variant's markers have their own shape and "
        "epochs, so curves that coincide stay visible."
        if precise
        else ""
    )
    clipped = [
        what
        for what, metric, bounds in (
            ("accuracy bands to [0, 100] %", "val_accuracy", (0.0, 1.0)),
            ("loss bands at 0", "val_loss", (0.0, float("inf"))),
        )
        if plots.band_leaves_bounds(epochs, metric, bounds)
    ]
    clip_note = (
        f" Where a t-interval crosses a bound it is clipped ({' and '.join(clipped)})."
        if clipped
        else ""
    )
    loss = band(epochs, "val_loss")
    log_note = (
        " The loss axis is logarithmic (it spans more than a decade)."
        if (not loss.empty and plots.loss_spans_decade(loss))
        else ""
    )
    out.append(
        _embed(
            lambda narrow: plots.validation_curves(
                epochs, variants, colors, set_name=set_name, target=data.target, narrow=narrow
            ),
            f"{set_name} accuracy and loss per epoch",
            f"Accuracy and loss on the {set_name} set at the end of each epoch, in inference "
            f"mode (BN uses its moving averages). Line: mean over seeds; band: 95 % t-interval."
            f"{extra}{clip_note}{log_note}{excluded}",
        )
    )
    out.append(
        _embed(
            lambda narrow: plots.train_mode_curves(epochs, variants, colors, narrow=narrow),
            "training accuracy in train mode and inference mode",
            "The training set seen two ways. Solid: accuracy in train mode (BN normalises with "
            "each batch's statistics), averaged over the epoch's batches as Keras reports it. "
            "Dashed: the same training images at the end of the epoch in inference mode (BN uses "
            "its moving averages). The shaded gap between them is the train-vs-inference gap, "
            "red where train mode is ahead, purple where inference mode is ahead: when the red gap "
            "is large, the moving averages — not the weights — are what fails.",
        )
    )
    out.append(
        _embed(
            lambda narrow: plots.regularization_share(epochs, variants, colors, narrow=narrow),
            "regularizer share of the training loss per epoch",
            "How much of the training loss is the regularizer (e.g. L2 on the kernels: "
            "l2 × Σw², as Keras adds it) rather than the data loss, per epoch; mean over "
            "seeds with its 95 % t-interval. Before a BN layer, a kernel's scale does not "
            "change the network's output, so this part of the loss only shrinks the weights "
            "— which raises their effective learning rate.",
        )
    )
    final = _embed(
        lambda narrow: plots.final_distribution(
            data.finished_runs,
            variants,
            colors,
            label=f"final {set_name} accuracy (%)",
            narrow=narrow,
        ),
        f"final {set_name} accuracy per variant",
        f"Final {set_name} accuracy of each finished run (dot), its variant's box plot "
        "(median and quartiles) and mean (diamond).",
    )
    if final is not None:
        out.append('<h2 id="distribution">Final accuracy of every run</h2>')
        out.append(final)
    return [item for item in out if item is not None]
