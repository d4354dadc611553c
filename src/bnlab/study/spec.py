"""Study specs: which preset, on which data, trained how, under which variants and seeds.

A spec is a TOML file (or the same structure as a dict) in four parts: top-level keys, then
``[model]``, ``[data]`` and ``[train]`` tables holding the base settings, then the variants::

    name = "demo"                       # letters, digits, _ . -  (the store's key)
    question = "Does BN help a small CNN fed raw 0-255 pixels, and does its momentum matter?"
    seeds = 5                           # a count (seeds 0..4) or a list: [0, 7, 42]
    target_accuracy = 0.9               # optional, for epochs-to-target (fraction of val_accuracy)
    baseline = "no_bn"                  # optional; default: the first variant

    [model]                             # preset + any of its options (bnlab list presets)
    preset = "digits_cnn"               # or the user's own model: bnlab.study.model_table

    [data]                              # dataset name + any of its loader options
    name = "digits"
    scale = "raw"
    hint = "..."                        # optional: appended to the DataError when data is absent

    [train]                             # bnlab.train.fit settings
    epochs = 10                         # required
    batch_size = 32                     # default 32
    optimizer = "adam"                  # adam | sgd | rmsprop (Keras's update rules)
    lr = 0.001                          # default: Keras's default for the optimizer
    optimizer_options = {}              # e.g. {momentum = 0.9} for sgd
    class_weight = "balanced"           # or {"0" = 1.0, "1" = 3.0}; default none
    precise_eval = false                # also evaluate with exact BN statistics each epoch
    augment = {rotation = 15, hflip = true, width_shift = 0.1, height_shift = 0.1}

    [variants.no_bn]                    # one table per variant; its keys override the base
    norm = "none"
    [variants.bn_m099]                  # an empty table = the base settings
    [variants.bn_m080]
    bn_momentum = 0.8
    epochs = 20                         # train keys work too
    [variants.bn_m080.data]             # data (or model/train) overrides go in a sub-table
    train_range = [0, 500]

    [grid]                              # optional: a product of values, one variant per point
    bn_momentum = [0.99, 0.8]
    l2 = [0.0, 0.01]

A flat key in a variant or in ``[grid]`` is a ``[train]`` key if ``[train]`` has it, else an
option of the preset; data options need the ``data`` sub-table. Grid points are named
``bn_momentum=0.99,l2=0.01``. With both ``[variants]`` and ``[grid]``, every variant is crossed
with every grid point (``no_bn,l2=0.01``). Every run of a variant uses the same seeds.

:func:`load_spec` validates everything it can without data: types and ranges, unknown keys
(with a did-you-mean), the preset and dataset names, every preset option (by building each
variant's network on the ``meta`` device: no weights are allocated), optimizer settings,
augmentation, and ``batch_size >= 2`` for networks with batch normalization. Every problem is a
one-line :class:`bnlab.errors.ConfigError` naming the field path, the value and what is
allowed, e.g. ``variants.bn.bn_momentum: 1.5 is not in [0, 1]``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError, DataError
from bnlab.study import model_table
from bnlab.study.model_table import ModelSpec
from bnlab.study.spec_hints import join_problems, with_shape_hint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: The tables a variant may override explicitly (``[variants.NAME.data]`` …).
SECTIONS = ("model", "data", "train")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _custom(message: str) -> PydanticCustomError:
    # The message is already the one-line text shown to the user (after the field path).
    return PydanticCustomError("bnlab", message)


class TrainSpec(_Strict):
    """The ``[train]`` table: keyword arguments of :func:`bnlab.train.fit`.

    Each value is checked first by ``fit``'s own declaration of the option
    (:mod:`bnlab.train.options`), so a spec refuses what ``fit`` refuses with ``fit``'s words
    behind the field path (``train.epochs: 0 is not >= 1``). One rule is the spec's own: a
    study refuses ``lr = 0`` (``fit`` accepts it to evaluate frozen weights; a study of
    networks that never move measures nothing).
    """

    epochs: int = Field(ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: str = "adam"
    lr: float | None = Field(None, gt=0)
    optimizer_options: dict[str, Any] = Field(default_factory=dict)
    class_weight: Any = None
    precise_eval: bool = False
    augment: dict[str, Any] | None = None

    @field_validator(
        "epochs",
        "batch_size",
        "optimizer",
        "lr",
        "optimizer_options",
        "precise_eval",
        "augment",
        mode="before",
    )
    @classmethod
    def _declared(cls, value: Any, info: ValidationInfo) -> Any:
        return _check_declared(info.field_name, value)

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_weight(cls, value: Any) -> Any:
        _check_declared("class_weight", value)
        if value is None or value == "balanced":
            return value
        if isinstance(value, dict):
            out = {}
            for key, weight in value.items():
                if not str(key).lstrip("-").isdigit():
                    raise _custom(f'key {key!r} is not a class index (write "0" = 2.0)')
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                    raise _custom(f"weight {weight!r} of class {key} is not a number >= 0")
                out[str(int(key))] = float(weight)
            return out
        raise _custom(f'{value!r} is not "balanced" or a table {{"0" = 1.0, "1" = 2.0}}')

    def fit_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`bnlab.train.fit` (class_weight keys as ints)."""
        out = self.model_dump()
        if isinstance(out["class_weight"], dict):
            out["class_weight"] = {int(k): v for k, v in out["class_weight"].items()}
        return out


def _check_declared(name: str, value: Any) -> Any:
    """``value`` checked by ``fit``'s declaration of option ``name`` (returned unchanged, as
    the spec records what was written)."""
    from bnlab.train.options import check_option

    try:
        check_option(name, value)
    except ConfigError as error:
        raise _custom(error.detail.removeprefix(": ")) from None
    return value


class DataSpec(BaseModel):
    """The ``[data]`` table: ``name`` (+ optional ``hint``) plus any loader options."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    hint: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class StudySpec(_Strict):
    """A validated study spec (see the module docstring for the TOML layout).

    Build one with :func:`load_spec`; constructing it directly checks only the structure.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    question: str = ""
    model: ModelSpec
    data: DataSpec
    train: TrainSpec
    seeds: Any = Field(5, validate_default=True)
    target_accuracy: float | None = Field(None, gt=0, le=1)
    baseline: str | None = None
    variants: dict[str, dict[str, Any]] | None = None
    grid: dict[str, Any] | None = None
    _expanded: list[Variant] | None = PrivateAttr(default=None)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> list[int]:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise _custom(f"{value!r} is not a count >= 1 (or give a list of seeds)")
            return list(range(value))
        if isinstance(value, (list, tuple)) and value:
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
                raise _custom(f"{list(value)!r} is not a list of integers >= 0")
            if len(set(value)) != len(value):
                raise _custom(f"{list(value)!r} repeats a seed")
            return list(value)
        raise _custom(f"{value!r} is not a count >= 1 or a non-empty list of integer seeds")

    # -- derived views ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The spec in its TOML layout, defaults filled in (what the store records)."""
        out = self.model_dump(exclude={"model", "data"})
        out["model"] = self.model.table()
        out["data"] = {"name": self.data.name, **self.data.options}
        if self.data.hint is not None:
            out["data"]["hint"] = self.data.hint
        for key in ("variants", "grid"):
            if out[key] is None:
                del out[key]
        return out

    def expand(self) -> list[Variant]:
        """Every variant, resolved (explicit variants first, crossed with the grid)."""
        if self._expanded is None:
            self._expanded = _expand(self)
        return list(self._expanded)

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.expand()]

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.variant_names[0]

    def runs(self) -> list[tuple[str, int]]:
        """Every ``(variant, seed)`` of the study, variant-major."""
        return [(v, s) for v in self.variant_names for s in self.seeds]


@dataclass(frozen=True)
class Variant:
    """One variant with everything resolved.

    ``sources`` maps each option key that the variant (or grid point) overrides to the field
    path it came from (``variants.bn.bn_momentum``, ``grid.l2``), for error messages.
    """

    name: str
    preset: str
    model_options: dict[str, Any]
    data_name: str
    data_options: dict[str, Any]
    train: TrainSpec
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def data_key(self) -> str:
        """A short hash naming this variant's data configuration (equal data share one load)."""
        blob = json.dumps([self.data_name, self.data_options], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# -- loading ------------------------------------------------------------------------------
def builtin_dir() -> Path:
    """The folder of the built-in study files (``bnlab/studies``, shipped as package data)."""
    return Path(str(resources.files("bnlab") / "studies"))


def builtin_studies() -> list[tuple[str, str]]:
    """``(name, question)`` of every built-in study, sorted by name."""
    out = []
    for path in sorted(builtin_dir().glob("*.toml")):
        with path.open("rb") as fh:
            out.append((path.stem, str(tomllib.load(fh).get("question", ""))))
    return out


def read_spec_source(source: str | os.PathLike | dict) -> dict[str, Any]:
    """The raw dict of a spec given as a dict, a TOML path or a built-in study name."""
    if isinstance(source, dict):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        names = [name for name, _ in builtin_studies()]
        if str(source) in names:
            path = builtin_dir() / f"{source}.toml"
        elif path.suffix == ".toml" or os.sep in str(source):
            raise DataError(f"study: file {str(source)!r} does not exist")
        else:
            raise ConfigError(
                f"study: {str(source)!r} is neither a TOML file nor a built-in study"
                f"{did_you_mean(str(source), names)}; built-in studies: {', '.join(names)}"
            )
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"study: {str(path)!r} is not valid TOML ({error})") from None


def load_spec(
    source: str | os.PathLike | dict | StudySpec, *, check_values: bool = True
) -> StudySpec:
    """Parse and validate a spec from a dict, a TOML file path or a built-in study name.

    ``check_values=False`` skips the checks that need the presets (building each variant's
    network on the meta device, optimizer and augmentation settings); the store uses it to
    re-read specs it validated when they were first run.
    """
    if isinstance(source, StudySpec):
        return source
    raw = model_table.resolve_model_paths(read_spec_source(source), model_table.base_dir(source))
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_pydantic_message(error)) from None
    _check_names(spec)
    variants = spec.expand()
    if spec.baseline is not None and spec.baseline not in {v.name for v in variants}:
        names = [v.name for v in variants]
        raise ConfigError(
            f"baseline: {spec.baseline!r} is not a variant{did_you_mean(spec.baseline, names)}; "
            f"variants: {', '.join(names)}"
        )
    if check_values:
        problems = []
        for variant in variants:  # every variant's problems at once, not the first only
            try:
                _check_variant(variant)
            except ConfigError as error:
                problems.append(with_shape_hint(str(error), variant.model_options))
        if problems:
            raise ConfigError(join_problems(problems))
    return spec


# -- pydantic error -> one line -------------------------------------------------------------
_REQUIRED = {
    "name": 'give the study a name, e.g. name = "my_study"',
    "model": 'add a [model] table with preset = "..." (bnlab list presets)',
    "model.preset": 'name a preset, e.g. preset = "fashion_cnn" (bnlab list presets)',
    "data": 'add a [data] table with name = "..." (bnlab list datasets)',
    "data.name": 'name a dataset, e.g. name = "digits" (bnlab list datasets)',
    "train": "add a [train] table with at least epochs = N",
    "train.epochs": "give the number of training epochs, e.g. epochs = 10",
}
_KINDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _pydantic_message(error: ValidationError, prefix: str = "", model: type = StudySpec) -> str:
    """Every error of ``error`` as ``path: value is not ...``, on one line (typos first)."""
    return join_problems([_error_text(e, prefix, model) for e in error.errors()])


def _error_text(first: Any, prefix: str, model: type) -> str:
    """One pydantic error as ``path: value is not ...``."""
    loc = [str(p) for p in first["loc"]]
    path = ".".join([prefix, *loc] if prefix else loc) or "spec"
    kind, value, ctx = first["type"], first.get("input"), first.get("ctx") or {}
    if kind == "missing":
        text = f"{path}: missing; {_REQUIRED.get('.'.join(loc), 'this key is required')}"
    elif kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        text = (
            f"{path}: unknown key{did_you_mean(loc[-1], allowed)}; "
            f"allowed keys: {', '.join(allowed)}"
        )
    elif kind in _KINDS:
        text = f"{path}: {value!r} is not {_KINDS[kind]}"
    elif kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        bound = format(bound, "g") if isinstance(bound, float) else bound
        text = f"{path}: {value!r} is not {_BOUNDS[kind]} {bound}"
    elif kind == "string_pattern_mismatch":
        text = f"{path}: {value!r} is not a name of letters, digits, '_', '.' and '-'"
    elif kind == "bnlab":
        text = f"{path}: {first['msg']}"
    else:
        text = f"{path}: {value!r}: {first['msg']}"
    return text


def _fields_at(model: type, loc: list[str]) -> list[str]:
    """Field names of the pydantic model found at ``loc`` inside ``model``."""
    for part in loc:
        info = model.model_fields.get(part)
        annotation = getattr(info, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


# -- semantic checks ------------------------------------------------------------------------
def _check_names(spec: StudySpec) -> None:
    from bnlab import models

    presets = models.presets()
    if spec.model.preset is None:
        model_table.check_source(spec.model)
    elif spec.model.preset not in presets:
        raise ConfigError(
            f"model.preset: {spec.model.preset!r} is not a preset"
            f"{did_you_mean(spec.model.preset, presets)}; presets: {', '.join(presets)}"
        )
    check_dataset(spec.data.name, spec.data.options, "data")


def check_dataset(name: str, options: dict[str, Any], path: str) -> None:
    """``name`` is a dataset :mod:`bnlab.data` knows and ``options`` are options it takes.

    ``path`` is the field path of the data table (``data`` or ``variants.NAME.data``). A local
    path that does not exist yet is accepted here (it may be relative to ``--data-dir``); the
    loader reports it at run time.
    """
    from bnlab import data

    try:
        valid = list(data.dataset_options(name))
    except ConfigError as error:
        raise ConfigError(f"{path}.name: {str(error).removeprefix('name: ')}") from None
    except DataError:
        return
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"{path}.{key}: unknown option of dataset {name!r}{did_you_mean(key, valid)}; "
                f"valid options: {', '.join(valid)}"
            )


def _expand(spec: StudySpec) -> list[Variant]:
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
        raise ConfigError(_pydantic_message(error, where, TrainSpec)) from None
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


def _check_variant(variant: Variant) -> None:
    """Value checks that need the preset, the optimizer and the augmenter (no data, no weights)."""
    from bnlab import models
    from bnlab.train.augment import Augmenter
    from bnlab.train.evaluation import uses_batch_statistics
    from bnlab.train.optimizers import make_optimizer

    def model_path(key: str) -> str | None:
        if key not in variant.model_options:
            return None
        return variant.sources.get(key, f"model.{key}")

    def train_path(key: str) -> str | None:
        if key not in TrainSpec.model_fields:
            return None
        return variant.sources.get(f"train.{key}", f"train.{key}")

    def optimizer_path(key: str) -> str | None:
        # The optimizer's own options (beta_1, momentum, ...) sit in optimizer_options.
        return train_path(key) or f"{train_path('optimizer_options')}.{key}"

    def augment_path(key: str) -> str | None:
        return train_path(key) if key == "augment" else f"{train_path('augment')}.{key}"

    try:
        if variant.preset.startswith("user:"):  # the user's model: built once, on the CPU
            net = model_table.check_user_variant(variant)
        else:
            with torch.device("meta"):  # checks every option and shape without allocating
                net = models.build(variant.preset, **variant.model_options)
    except ConfigError as error:
        if variant.preset.startswith("user:"):
            raise
        raise ConfigError(_rename(error, model_path, _section_path(variant, "model"))) from None
    train = variant.train
    if train.batch_size < 2 and net is not None and uses_batch_statistics(net):
        raise ConfigError(
            f"{train_path('batch_size')}: {train.batch_size} is too small for variant "
            f"{variant.name!r}, whose network has batch normalization: the statistics of a "
            "batch of one sample are its own values (variance 0); use batch_size >= 2"
        )
    try:
        make_optimizer(
            train.optimizer,
            [torch.nn.Parameter(torch.zeros(1))],
            train.lr,
            **train.optimizer_options,
        )
    except ConfigError as error:
        raise ConfigError(_rename(error, optimizer_path, _section_path(variant, "train"))) from None
    try:
        Augmenter.from_options(train.augment)
    except ConfigError as error:
        raise ConfigError(_rename(error, augment_path, train_path("augment"))) from None


def _section_path(variant: Variant, section: str) -> str:
    """``variants.NAME`` when the variant overrides something in ``section``, else ``section``."""
    for key, path in variant.sources.items():
        if (section == "model" and "." not in key) or key.startswith(f"{section}."):
            return path.rsplit(".", 1)[0]
    return section


def _rename(error: ConfigError, path_of, fallback: str) -> str:
    """The message of ``error`` addressed to the field path of its parameter.

    ``path_of(key)`` maps the parameter's leading name to its field path (or ``None``); the
    rest of the parameter (``[1]``, `` (sgd)``) is kept. An error raised without a
    ``param`` field (a message about several settings) is put under ``fallback``.
    """
    if error.param is None:
        return f"{fallback}: {error}"
    head = re.split(r"[ .\[]", error.param, maxsplit=1)[0]
    path = path_of(head)
    if path is None:
        return f"{fallback}: {error}"
    return str(error.at(path + error.param[len(head) :]))
