"""Spec errors as one line addressed to a field path: pydantic's errors translated, and
:class:`~bnlab.errors.ConfigError` from ``fit``'s helpers renamed to where the value was set."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError
from bnlab.study.spec_hints import join_problems

#: What to write for a required key that is missing, by its field path.
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


def pydantic_message(error: ValidationError, prefix: str, model: type[BaseModel]) -> str:
    """Every error of ``error`` as ``path: value is not ...``, on one line (typos first).

    ``model`` is the pydantic model that was validated (it names the allowed keys of an
    unknown one); ``prefix`` is the field path of that model inside the spec (``""`` at the
    top).
    """
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


def rename_error(error: ConfigError, path_of, fallback: str) -> str:
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
