"""A spec's variants expanded: explicit ``[variants.NAME]`` tables crossed with the ``[grid]``,
each override routed to the ``[model]``, ``[data]`` or ``[train]`` settings it changes.

Every problem is a one-line :class:`~bnlab.errors.ConfigError` named by the field path the
override was written at (``variants.bn.bn_momentum``, ``grid.l2``).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError, DataError
from bnlab.study import model_table
from bnlab.study.spec_errors import pydantic_message
from bnlab.study.spec_tables import SECTIONS, TrainSpec, Variant

if TYPE_CHECKING:  # the spec holds its variants; this module only reads the spec
    from bnlab.study.spec import StudySpec


def expand_variants(spec: StudySpec) -> list[Variant]:
    """Every variant of ``spec``, resolved (explicit variants first, crossed with the grid)."""
    train_keys = list(TrainSpec.model_fields)
    base_options = spec.model.options
    _check_model_keys(spec.model.descriptor, base_options, "model", model_table.option_names)
    explicit = spec.variants
    if explicit is not None and not explicit:
        raise ConfigError(
            "variants: the table is empty; add at least one [variants.NAME] table "
            "(an empty one means the base settings) or a [grid]"
        )
    if explicit is None and not spec.grid:
        raise ConfigError(
            "variants: missing; a study compares variants: add [variants.NAME] tables "
            '(e.g. [variants.no_bn] norm = "none" and an empty [variants.bn]) or a [grid]'
        )
    if spec.grid is not None and not spec.grid:
        raise ConfigError("grid: the table is empty; give each key a list of values")
    points: list[tuple[str, dict[str, Any], str]] = [("", {}, "")]
    if spec.grid:
        flat_grid = _flatten_sections(spec.grid, "grid")
        for path, values in flat_grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: {values!r} is not a non-empty list of values")
        keys = list(flat_grid)
        points = []
        for combo in itertools.product(*(flat_grid[k] for k in keys)):
            label = ",".join(
                f"{k.removeprefix('grid.')}={_label(v)}" for k, v in zip(keys, combo, strict=True)
            )
            points.append((label, dict(zip(keys, combo, strict=True)), "grid"))
    tables = explicit if explicit is not None else {"": {}}
    out = []
    for vname, table in tables.items():
        if vname and not re.fullmatch(r"[A-Za-z0-9_.\-+=,@ ]+", vname):
            raise ConfigError(f"variants.{vname}: is not a name of letters, digits and _ . - + =")
        flat = _flatten_sections(table, f"variants.{vname}")
        for label, grid_values, _ in points:
            name = ",".join(p for p in (vname, label) if p)
            overrides = {**flat, **grid_values}
            out.append(_resolve(spec, name, overrides, train_keys))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"variants: the names {names!r} repeat; rename the variants")
    return out


def _flatten_sections(table: dict[str, Any], path: str) -> dict[str, Any]:
    """``{"bn_momentum": .8, "data": {"train_range": [...]}}`` -> path-keyed flat overrides.

    Keys become ``"<path>.<key>"`` (flat keys) or ``"<path>.data.<key>"`` (section tables).
    """
    out = {}
    for key, value in table.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}.{key}: {value!r} is not a table of {key} options")
            for sub, sub_value in value.items():
                out[f"{path}.{key}.{sub}"] = sub_value
        else:
            out[f"{path}.{key}"] = value
    return out


def _resolve(
    spec: StudySpec, name: str, overrides: dict[str, Any], train_keys: list[str]
) -> Variant:
    preset_keys = model_table.option_names(spec.model.descriptor)
    any_key = preset_keys is None  # a factory taking **kwargs takes every option
    preset_keys = preset_keys or []
    model_opts = dict(spec.model.options)
    data_name, data_opts = spec.data.name, dict(spec.data.options)
    train_dict = spec.train.model_dump()
    sources: dict[str, str] = {}
    train_sources: dict[str, str] = {}
    for path, value in overrides.items():
        parts = path.split(".")
        key = parts[-1]
        section = parts[-2] if len(parts) >= 3 and parts[-2] in SECTIONS else None
        if section is None:
            in_model = any_key or key in preset_keys
            section = "train" if key in train_keys else "model" if in_model else None
        if section is None:
            raise ConfigError(
                f"{path}: unknown option{did_you_mean(key, train_keys + preset_keys)}; a variant "
                f"sets [train] keys ({', '.join(train_keys)}) or options of "
                f"{spec.model.label} ({', '.join(preset_keys)}); data options go in a "
                "'data' sub-table"
            )
        if section == "model":
            if not any_key and key not in preset_keys:
                raise ConfigError(
                    f"{path}: unknown option of {spec.model.kind} {spec.model.label}"
                    f"{did_you_mean(key, preset_keys)}; valid options: {', '.join(preset_keys)}"
                )
            model_opts[key] = value
            sources[key] = path
        elif section == "train":
            train_dict[key] = value
            train_sources[key] = path
        elif key == "name":
            if not isinstance(value, str):
                raise ConfigError(f"{path}: {value!r} is not a dataset name")
            data_name = value
            sources["data.name"] = path
        else:
            data_opts[key] = value
            sources[f"data.{key}"] = path
    try:
        train = TrainSpec.model_validate(train_dict)
    except ValidationError as error:
        bad = str(error.errors()[0]["loc"][0])
        where = train_sources.get(bad, f"train.{bad}").rsplit(".", 1)[0]
        raise ConfigError(pydantic_message(error, where, TrainSpec)) from None
    sources.update({f"train.{k}": v for k, v in train_sources.items()})
    if any(key.startswith("data.") for key in sources):
        _check_variant_data(data_name, data_opts, sources)
    return Variant(
        name, spec.model.descriptor, model_opts, str(data_name), data_opts, train, sources
    )


def _check_variant_data(name: str, options: dict[str, Any], sources: dict[str, str]) -> None:
    """The variant's dataset and data options, errors named by where each key was set."""
    from bnlab import data

    try:
        valid = list(data.dataset_options(name))
    except ConfigError as error:
        where = sources.get("data.name", "data.name")
        raise ConfigError(f"{where}: {str(error).removeprefix('name: ')}") from None
    except DataError:
        return
    for key in options:
        if key not in valid:
            where = sources.get(f"data.{key}", f"data.{key}")
            raise ConfigError(
                f"{where}: unknown option of dataset {name!r}{did_you_mean(key, valid)}; "
                f"valid options: {', '.join(valid)}"
            )


def _check_model_keys(preset: str, options: dict[str, Any], path: str, preset_options) -> None:
    valid = preset_options(preset)
    if valid is None:  # a factory taking **kwargs
        return
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"{path}.{key}: unknown option of {model_table.describe(preset)}{did_you_mean(key, valid)}; "
                f"valid options: {', '.join(valid)}"
            )


def _label(value: Any) -> str:
    """A grid value as it appears in a variant name: 0.8, none, true, [0,1000]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
