"""What the doctor reports: one :class:`Finding` per problem, gathered in a :class:`DiagnosisData`
(:class:`bnlab.doctor.diagnosis.Diagnosis` adds the terminal and HTML renderings).

A finding has a stable kebab-case ``id`` (scripts and tests match on it), a ``severity``
(``"error"`` > ``"warning"`` > ``"info"``), the ``layer`` it applies to (module path for
PyTorch, layer name for Keras; several joined by ``", "``; ``None`` for the whole model), a
one-sentence ``message``, the ``evidence`` (the numbers behind it, JSON-able) and a concrete
``fix``. ``confirmed`` is ``True`` when the doctor proved the cause by intervening on a copy
of the model, ``None`` when no intervention applies.

A diagnosis is *healthy* when it holds no warning and no error (``info`` findings are
remarks, such as wasted bias parameters, that do not harm the model).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

Severity = Literal["error", "warning", "info"]
SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays (recursively) to plain JSON types.

    Non-finite floats become ``None`` so the JSON stays standard.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def layer_summary(paths: list[str]) -> str:
    """A finding's ``layer`` text for several layers: all of up to three, else the first three
    and how many more."""
    return (
        ", ".join(paths) if len(paths) <= 3 else f"{', '.join(paths[:3])} (+{len(paths) - 3} more)"
    )


class Finding(BaseModel):
    """One BN problem: what, where, the numbers behind it and what to do."""

    model_config = ConfigDict(frozen=True)

    id: str
    severity: Severity
    layer: str | None = None
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    fix: str
    confirmed: bool | None = None

    @field_validator("id")
    @classmethod
    def _kebab(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"id: {value!r} is not kebab-case (e.g. 'stale-running-stats')")
        return value

    @field_validator("evidence", mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return jsonable(value)


class DiagnosisData(BaseModel):
    """The doctor's verdict on one model and one data set, as plain data.

    ``passes`` counts the passes over the diagnosed (training) data; ``model_info`` holds
    what the doctor read (framework, BN layers, accuracies in both modes, ...).
    """

    findings: list[Finding] = Field(default_factory=list)
    model_info: dict[str, Any] = Field(default_factory=dict)
    passes: int = 0

    @field_validator("model_info", mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return jsonable(value)

    @property
    def healthy(self) -> bool:
        """``True`` when no finding is a warning or an error."""
        return not any(f.severity in ("error", "warning") for f in self.findings)

    @property
    def ids(self) -> set[str]:
        """The ids of every finding (a set: a check may report several layers)."""
        return {f.id for f in self.findings}

    def get(self, finding_id: str) -> list[Finding]:
        """Every finding with this id (empty when none)."""
        return [f for f in self.findings if f.id == finding_id]

    def sorted_findings(self) -> list[Finding]:
        """Findings ordered by severity, errors first (stable within a severity)."""
        return sorted(self.findings, key=lambda f: SEVERITY_RANK[f.severity])

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "passes": self.passes,
            "model_info": self.model_info,
            "findings": [f.model_dump() for f in self.sorted_findings()],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def __str__(self) -> str:
        if not self.findings:
            return "healthy: no BN problem found"
        return "\n".join(
            f"[{f.severity}] {f.id}" + (f" ({f.layer})" if f.layer else "") + f": {f.message}"
            for f in self.sorted_findings()
        )
