"""The preset registry: name -> options, description and architecture function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bnlab._validation import check_choice
from bnlab.models.options import Option, resolve
from bnlab.models.spec import Architecture


@dataclass(frozen=True)
class Preset:
    """A named network.

    ``architecture(name, options)`` receives every option already checked and filled with
    its default (see :func:`bnlab.models.options.resolve`) and returns the layers.
    """

    name: str
    description: str
    options: dict[str, Option]
    architecture: Callable[[str, dict[str, Any]], Architecture]

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        return resolve(self.name, self.options, given)

    def defaults(self) -> dict[str, Any]:
        return {
            k: (dict(o.default) if isinstance(o.default, dict) else o.default)
            for k, o in self.options.items()
        }


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


def get(name: str) -> Preset:
    """The preset called ``name``; ConfigError with did-you-mean otherwise."""
    check_choice("preset", name, PRESETS)
    return PRESETS[name]
