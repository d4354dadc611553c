"""The options each variant really ran with, defaults filled in, for the report's Setup section.

A stored spec records only what the study file says: ``lr`` is ``None`` when the optimizer's
default was used, a variant that keeps the preset's BN momentum does not mention it. This
module re-reads the spec with :func:`bnlab.study.spec.load_spec` (no presets are built) and
fills in what training used: the optimizer's Keras default learning rate, the preset's
options (``norm``, ``bn_momentum`` in Keras's convention: the fraction kept, ``bn_epsilon``,
``bn_position``) and the dataset's default pixel ``scale``.

Every function returns ``{}`` for a spec it cannot read (an older store, a spec written by
hand for a test): the report then shows the spec as recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Preset options shown for every variant even when they are the preset's default.
BN_KEYS = ("norm", "bn_momentum", "bn_epsilon", "bn_position")


def _spec(raw: Mapping[str, Any]):
    from bnlab.study.spec import load_spec

    try:
        return load_spec(dict(raw), check_values=False)
    except Exception:  # noqa: BLE001 - an unreadable spec only means "show it as recorded"
        return None


def _default_scale(name: str) -> str | None:
    """The pixel scale a dataset loads with when the study does not set one."""
    try:
        from bnlab.data import registry

        entry, _ = registry._resolve(name)
    except Exception:  # noqa: BLE001 - an unknown or path-less dataset: nothing to add
        return None
    return getattr(entry, "default_scale", None)


def _preset_defaults(preset: Any) -> dict[str, Any]:
    if not isinstance(preset, str):
        return {}
    try:
        from bnlab import models

        return dict(models.preset_options(preset))
    except Exception:  # noqa: BLE001 - a model without a preset has no defaults to show
        return {}


def _lr(optimizer: Any, lr: Any) -> Any:
    try:
        from bnlab.train.optimizers import resolve_lr

        return resolve_lr(optimizer, lr)
    except Exception:  # noqa: BLE001
        return lr


def train_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[train]`` options with their effective values (``lr`` resolved), or ``{}``."""
    spec = _spec(raw)
    if spec is None:
        return {}
    out = spec.train.model_dump()
    if out.get("lr") is None:
        resolved = _lr(out.get("optimizer"), None)
        if resolved is not None:
            out["lr"] = f"{resolved:g} ({out.get('optimizer')}'s default)"
    return out


def variant_settings(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per variant (study order): its BN options, every option it overrides and its data scale.

    Keys are ``norm, bn_momentum, bn_epsilon, bn_position`` (``–`` for the last three without
    BN), then each overridden model key, ``data.<key>`` for the data options (``data.scale``
    always, default filled in) and ``train.<key>`` for overridden train options.
    """
    spec = _spec(raw)
    if spec is None:
        return {}
    base_train = spec.train.model_dump()
    out: dict[str, dict[str, Any]] = {}
    for variant in spec.expand():
        defaults = _preset_defaults(variant.preset)
        model = {**defaults, **variant.model_options}
        row: dict[str, Any] = {}
        for key in BN_KEYS:
            if key in model:
                row[key] = model[key]
        if model.get("norm") == "none":
            for key in BN_KEYS[1:]:
                if key in row:
                    row[key] = "– (no BN)"
        for key, value in variant.model_options.items():
            row.setdefault(key, value)
        data = dict(variant.data_options)
        if "scale" not in data:
            scale = _default_scale(variant.data_name)
            if scale is not None:
                data["scale"] = f"{scale} (default)"
        if variant.data_name != spec.data.name:
            row["data.name"] = variant.data_name
        for key in sorted(data):
            if key == "scale" or data[key] != spec.data.options.get(key):
                row[f"data.{key}"] = data[key]
        train = variant.train.model_dump()
        for key, value in train.items():
            if value != base_train.get(key):
                row[f"train.{key}"] = value
        out[variant.name] = row
    return out
