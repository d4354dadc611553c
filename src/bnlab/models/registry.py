"""The preset registry: name -> options, description and architecture function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bnlab.models.options import Option, resolve
from bnlab.models.spec import Architecture
from bnlab.registry import Registry


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


#: Every preset by name (a :class:`bnlab.registry.Registry`).
PRESETS = Registry("preset")


def register(preset: Preset) -> Preset:
    """Add ``preset`` under its name (a name registered twice is a ConfigError)."""
    return PRESETS.register(preset.name, preset)


def get(name: str) -> Preset:
    """The preset called ``name``; ConfigError with did-you-mean otherwise."""
    return PRESETS.lookup(name)
