"""The tables of a study spec that hold settings: ``[train]``, ``[data]``, and a resolved variant.

The pydantic models here check structure, types and ranges; the ``[model]`` table lives in
:mod:`bnlab.study.model_table` and the whole spec in :class:`bnlab.study.spec.StudySpec`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from bnlab.errors import ConfigError

#: The tables a variant may override explicitly (``[variants.NAME.data]`` …).
SECTIONS = ("model", "data", "train")


class StrictTable(BaseModel):
    """A spec table that refuses unknown keys and coerces nothing."""

    model_config = ConfigDict(extra="forbid", strict=True)


def custom_error(message: str) -> PydanticCustomError:
    """A pydantic error whose message is ``message`` as shown to the user."""
    # The message is already the one-line text shown to the user (after the field path).
    return PydanticCustomError("bnlab", message)


class TrainSpec(StrictTable):
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
        return check_declared(info.field_name, value)

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_weight(cls, value: Any) -> Any:
        check_declared("class_weight", value)
        if value is None or value == "balanced":
            return value
        if isinstance(value, dict):
            out = {}
            for key, weight in value.items():
                if not str(key).lstrip("-").isdigit():
                    raise custom_error(f'key {key!r} is not a class index (write "0" = 2.0)')
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                    raise custom_error(f"weight {weight!r} of class {key} is not a number >= 0")
                out[str(int(key))] = float(weight)
            return out
        raise custom_error(f'{value!r} is not "balanced" or a table {{"0" = 1.0, "1" = 2.0}}')

    def fit_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`bnlab.train.fit` (class_weight keys as ints)."""
        out = self.model_dump()
        if isinstance(out["class_weight"], dict):
            out["class_weight"] = {int(k): v for k, v in out["class_weight"].items()}
        return out


def check_declared(name: str, value: Any) -> Any:
    """``value`` checked by ``fit``'s declaration of option ``name`` (returned unchanged, as
    the spec records what was written)."""
    from bnlab.train.options import check_option

    try:
        check_option(name, value)
    except ConfigError as error:
        raise custom_error(error.detail.removeprefix(": ")) from None
    return value


class DataSpec(BaseModel):
    """The ``[data]`` table: ``name`` (+ optional ``hint``) plus any loader options."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    hint: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


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
