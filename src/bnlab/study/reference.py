"""The reference of every study-spec key, generated from the spec's own pydantic models.

``python -m bnlab.study.reference`` writes ``docs/spec.md`` (``-o PATH`` elsewhere, ``--check``
exits 1 when the file differs from what would be generated). Nothing in the reference is
written by hand: the tables come from the fields of :class:`~bnlab.study.spec.StudySpec` and
the table models it holds (type, default, constraints, description), from each preset's
options (``bnlab.models.preset_options``) and each dataset's options
(``bnlab.data.dataset_options``), so a key added to a model appears here on the next run, and
a test fails until the committed file is regenerated.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

#: Where the reference lives in the repository.
DEFAULT_PATH = Path("docs") / "spec.md"


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "none"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    origin = typing.get_origin(annotation)
    if origin is None:
        return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    name = {dict: "table", list: "list", tuple: "list"}.get(
        origin, getattr(origin, "__name__", "?")
    )
    return name


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is PydanticUndefined:
        return "**required**"
    return _value(value)


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, dict) and not value:
        return "`{}`"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value}`"


def _constraints(field) -> str:
    parts = []
    for item in field.metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                parts.append(f"{symbol} {getattr(item, attr)}")
        if getattr(item, "max_length", None) is not None:
            parts.append(f"at most {item.max_length} characters")
        if getattr(item, "pattern", None) is not None:
            parts.append(f"matches `{item.pattern}`")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    text = doc.split("\n\n")[0].replace("\n", " ")
    return re.sub(r":\w+:`", "`", text).replace("``", "`")


#: A study the override probe varies one key of (the smallest valid spec).
_PROBE_BASE = {
    "name": "probe",
    "model": {"preset": "digits_cnn"},
    "data": {"name": "digits"},
    "train": {"epochs": 1},
}


def variant_may_set(section: str, key: str) -> bool:
    """Whether ``[variants.NAME.<section>] <key> = ...`` is accepted, asked of the spec loader
    itself (a probe spec that overrides only that key, with the base's own or default value),
    so the answer follows the loader's rules instead of restating them."""
    from bnlab.errors import ConfigError
    from bnlab.study.spec import load_spec

    base = {k: dict(v) if isinstance(v, dict) else v for k, v in _PROBE_BASE.items()}
    model = _table_models()[section]
    field = model.model_fields.get(key)
    if key in base[section]:
        value = base[section][key]
    elif field is not None and not field.is_required():
        value = field.default_factory() if field.default_factory is not None else field.default
    else:
        value = None
    spec = {**base, "variants": {"v": {section: {key: value}}}}
    try:
        load_spec(spec, check_values=False)
    except ConfigError as error:
        return "unknown option" not in str(error)
    except Exception:  # noqa: BLE001 - accepted by the structure, refused by a value check
        return True
    return True


def _fields_table(model: type[BaseModel], section: str | None = None) -> list[str]:
    head = "| key | type | default | allowed | description |"
    sep = "|---|---|---|---|---|"
    if section is not None:
        head += " a variant may override |"
        sep += "---|"
    rows = [head, sep]
    for name, field in model.model_fields.items():
        cells = [
            f"`{name}`",
            _cell(_type_name(field.annotation)),
            _cell(_default(field)),
            _cell(_constraints(field)),
            _cell(field.description or ""),
        ]
        if section is not None:
            cells.append("yes" if variant_may_set(section, name) else "no")
        rows.append("| " + " | ".join(cells) + " |")
    extra = model.model_config.get("extra")
    if extra == "allow":
        rows.append(
            "| *any other key* | | | | passed on as an option (see the tables below) |"
            + (" yes |" if section is not None else "")
        )
    return rows


def _table_models() -> dict[str, type[BaseModel]]:
    """The spec's sub-tables (``model``, ``data``, ``train``) by key, from StudySpec's fields."""
    from bnlab.study.spec import StudySpec

    out = {}
    for name, field in StudySpec.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out[name] = annotation
    return out


def _preset_section() -> list[str]:
    from bnlab import models

    lines = [
        "## Preset options (`[model]` keys)",
        "",
        "Each preset's options with its defaults (`bnlab.models.preset_options`). A variant may "
        "override any of them, as a flat key (`bn_momentum = 0.8`) or in a "
        "`[variants.NAME.model]` sub-table.",
        "",
    ]
    for preset in models.presets():
        options = models.preset_options(preset)
        lines += [f"### `{preset}`", "", "| option | type | default |", "|---|---|---|"]
        for key, value in options.items():
            kind = {"tuple": "list", "dict": "table", "NoneType": "any"}.get(
                type(value).__name__, type(value).__name__
            )
            lines.append(f"| `{key}` | {kind} | {_cell(_value(value))} |")
        lines.append("")
    return lines


def _dataset_section() -> list[str]:
    from bnlab import data

    lines = [
        "## Dataset options (`[data]` keys)",
        "",
        "Each dataset's loader options (`bnlab.data.dataset_options`) and its default pixel "
        "scale (`raw`: 0–255, `unit`: 0–1; none for tabular data). A variant may override any of "
        "them, and `name`, in a `[variants.NAME.data]` sub-table (e.g. "
        '`data = { scale = "unit" }`).',
        "",
        "| dataset | what | default scale | options |",
        "|---|---|---|---|",
    ]
    for shown, description in data.describe().items():
        name = shown.replace(":PATH", ":x")
        options = data.dataset_options(name)
        scale = _scale_of(name) or "–"
        opts = ", ".join(f"`{o}`" for o in options)
        lines.append(f"| `{shown}` | {_cell(description)} | {scale} | {opts} |")
    lines.append("")
    return lines


def _scale_of(name: str) -> str | None:
    """A dataset's default pixel scale (the registry's entry), None for tabular data."""
    from bnlab.data import registry

    try:
        return registry._resolve(name)[0].default_scale
    except Exception:  # noqa: BLE001 - a registry without the notion: no scale column value
        return None


def generate() -> str:
    """The Markdown text of the reference."""
    from bnlab.study import spec as spec_module
    from bnlab.study.spec import SECTIONS, StudySpec

    tables = _table_models()
    lines = [
        "# Study spec reference",
        "",
        "<!-- Generated by `python -m bnlab.study.reference` from the spec's pydantic models; "
        "do not edit by hand (a test compares this file with the generated text). -->",
        "",
        "A study is a TOML file (or the same structure as a dict). The layout, from "
        "`bnlab.study.spec`'s own documentation:",
        "",
        "```toml",
        *_toml_example(spec_module.__doc__ or ""),
        "```",
        "",
        "## Top-level keys",
        "",
        _first_paragraph(StudySpec),
        "",
        *_fields_table(StudySpec),
        "",
        "## Which keys a variant may override",
        "",
        f"A `[variants.NAME]` table (or a `[grid]` key) may set the keys of the "
        f"{', '.join(f'`[{s}]`' for s in SECTIONS)} tables: a flat key is a `[train]` key if "
        "`[train]` has it, else an option of the preset; data options (and the other tables' "
        "keys, explicitly) go in a sub-table `[variants.NAME.data]`, `.model`, `.train`. "
        "Top-level keys cannot be overridden.",
        "",
    ]
    for name, model in tables.items():
        lines += [
            f"## `[{name}]`",
            "",
            _first_paragraph(model),
            "",
            *_fields_table(model, section=name if name in SECTIONS else None),
            "",
        ]
    lines += _preset_section()
    lines += _dataset_section()
    return "\n".join(lines).rstrip() + "\n"


def _toml_example(doc: str) -> list[str]:
    """The indented example block of the spec module's docstring (the text after ``::``)."""
    match = re.search(r"::\n\n((?:    .*\n|\n)+)", doc)
    if not match:
        return []
    return [line[4:] for line in match.group(1).rstrip().splitlines()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnlab.study.reference", description=__doc__)
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_PATH, help="file to write")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the file differs from the generated text"
    )
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(
                f"{args.out} is out of date: run python -m bnlab.study.reference", file=sys.stderr
            )
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
