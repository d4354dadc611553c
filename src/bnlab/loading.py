"""Import a user's callable and read a user's Keras file, never unpickling anything.

Shared by the doctor (``bnlab doctor module:factory``, ``model.keras``) and studies of the
user's own model (``[model] factory = "file.py:build"``, ``keras = "model.keras"``). Every
failure is one bnlab error whose message starts with ``field`` (``MODEL``, ``model.factory``
...) and names the value.

* ``"file.py:build"`` runs the file as a module (a fresh module object each time);
  ``"pkg.mod:build"`` imports it like ``python -m`` would (the current folder importable);
* a Keras file is read with ``keras.saving.load_model(path, safe_mode=True)``: a Lambda
  layer or custom code is refused with :class:`bnlab.errors.UnsafeFileError`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError, DataError, UnsafeFileError

#: ``module:attribute`` (the module may be a path ending in ``.py``).
FACTORY_PATTERN = re.compile(r"^(?P<module>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")


def first_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"`` (what a one-line error quotes)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def import_module_of(spec: str, module_name: str, field: str):
    """The module named ``module_name`` (a ``.py`` path or a dotted name) of ``spec``."""
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise DataError(f"{field}: no such file: {module_name!r}")
            mod_spec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            return module
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # like `python -m`: the current folder imports
        return importlib.import_module(module_name)
    except (DataError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
        raise ConfigError(
            f"{field}: cannot import {module_name!r} from {spec!r} ({first_line(exc)})"
        ) from None


def import_callable(spec: str, field: str, *, module_name: str | None = None, attr=None):
    """The callable ``spec`` = ``"module:attr"`` names (``attr`` may be dotted).

    A missing attribute suggests the closest callable of the module.
    """
    if module_name is None or attr is None:
        match = FACTORY_PATTERN.match(spec)
        if match is None:
            raise ConfigError(
                f"{field}: {spec!r} is not 'file.py:function' or 'package.module:function'"
            )
        module_name, attr = match["module"], match["attr"]
    module = import_module_of(spec, module_name, field)
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = [n for n, v in vars(target).items() if callable(v) and not n.startswith("_")]
            raise ConfigError(
                f"{field}: {module_name!r} has no attribute {attr!r} (from {spec!r})"
                f"{did_you_mean(part, names)}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{field}: {spec!r} is not callable")
    return target


def accepted_keywords(fn) -> tuple[set[str], bool]:
    """``(names, takes_any)``: the keyword parameters of ``fn``, and whether it has ``**kw``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def call_factory(fn, spec: str, field: str, options: dict[str, Any] | None = None) -> Any:
    """``fn(**options)``; an exception it raises becomes a ConfigError quoting its message."""
    options = dict(options or {})
    try:
        return fn(**options)
    except Exception as exc:  # noqa: BLE001
        args = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ConfigError(f"{field}: {spec}({args}) failed ({first_line(exc)})") from None


def import_keras(field: str = "model"):
    """Keras 3 (the torch backend unless ``KERAS_BACKEND`` says otherwise), or a ConfigError."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as exc:
        raise ConfigError(
            f"{field}: Keras models need the keras extra (pip install bnlab[keras])"
        ) from exc
    return keras


def load_keras_file(path: Path, field: str = "MODEL") -> Any:
    """``keras.saving.load_model(path, safe_mode=True)`` with one-line errors."""
    keras = import_keras(field)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{field}: no such file: {str(path)!r}")
    try:
        return keras.saving.load_model(str(path), safe_mode=True)
    except Exception as exc:  # noqa: BLE001
        if "safe_mode" in str(exc) or "unsafe" in str(exc).lower():
            raise UnsafeFileError(
                f"{field}: {str(path)!r} needs unsafe deserialisation (a Lambda layer or custom "
                "code); bnlab loads Keras files with safe_mode=True only"
            ) from None
        raise DataError(
            f"{field}: cannot load {str(path)!r} as a Keras model ({first_line(exc)})"
        ) from None


def is_keras_model(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 model (checked without importing Keras)."""
    return any(
        c.__module__.startswith("keras") and c.__name__ in ("Model", "Functional", "Sequential")
        for c in type(obj).__mro__
    )
