"""Where a study spec comes from: a dict, a TOML file or a built-in study name.

Kept below :mod:`bnlab.study.spec` and :mod:`bnlab.study.model_table` (both read the built-in
folder) so that neither has to import the other for it.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError, DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


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
