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

This module holds the whole spec (:class:`StudySpec`) and :func:`load_spec`; the parts live
beside it: the ``[train]``/``[data]`` tables and :class:`Variant` in
:mod:`~bnlab.study.spec_tables`, ``[model]`` in :mod:`~bnlab.study.model_table`, reading
sources in :mod:`~bnlab.study.spec_sources`, variant expansion in
:mod:`~bnlab.study.spec_variants`, value checks in :mod:`~bnlab.study.spec_checks` and the
one-line error text in :mod:`~bnlab.study.spec_errors`.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, field_validator

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError
from bnlab.study import model_table
from bnlab.study.model_table import ModelSpec
from bnlab.study.spec_checks import check_dataset, check_names, check_variant
from bnlab.study.spec_errors import pydantic_message
from bnlab.study.spec_hints import join_problems, with_shape_hint
from bnlab.study.spec_sources import builtin_dir, builtin_studies, read_spec_source
from bnlab.study.spec_tables import (
    SECTIONS,
    DataSpec,
    StrictTable,
    TrainSpec,
    Variant,
    custom_error,
)
from bnlab.study.spec_variants import expand_variants

__all__ = [
    "SECTIONS",
    "DataSpec",
    "ModelSpec",
    "StudySpec",
    "TrainSpec",
    "Variant",
    "builtin_dir",
    "builtin_studies",
    "check_dataset",
    "load_spec",
    "read_spec_source",
]


class StudySpec(StrictTable):
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
                raise custom_error(f"{value!r} is not a count >= 1 (or give a list of seeds)")
            return list(range(value))
        if isinstance(value, (list, tuple)) and value:
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
                raise custom_error(f"{list(value)!r} is not a list of integers >= 0")
            if len(set(value)) != len(value):
                raise custom_error(f"{list(value)!r} repeats a seed")
            return list(value)
        raise custom_error(f"{value!r} is not a count >= 1 or a non-empty list of integer seeds")

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
            self._expanded = expand_variants(self)
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
        raise ConfigError(pydantic_message(error, "", StudySpec)) from None
    check_names(spec)
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
                check_variant(variant)
            except ConfigError as error:
                problems.append(with_shape_hint(str(error), variant.model_options))
        if problems:
            raise ConfigError(join_problems(problems))
    return spec
