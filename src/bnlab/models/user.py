"""The user's own model as a study model: a torch factory, a ``.keras`` file or a Keras factory.

A study names such a model by a *descriptor*, a string ``"user:{json}"`` that travels where a
preset name travels (:class:`bnlab.study.jobs.RunRequest`, the store's run config)::

    {"kind": "factory" | "keras" | "keras_factory", "target": "/abs/file.py:build",
     "reinitialize": true}

:func:`build_user_model` builds one run's model from it and the variant's options:

* options the callable accepts are passed to it as keyword arguments; the BN options of
  :data:`bnlab.nn.surgery.BN_OPTION_KEYS` it does not take rewrite the built model (torch:
  :func:`bnlab.nn.surgery.apply_bn_options`; Keras:
  :func:`bnlab.models.keras_surgery.apply_keras_bn_options`);
* a Keras model is translated to torch (:mod:`bnlab.models.keras_translate`) when every layer
  is supported (path ``"translated"``), else it stays a Keras model (path ``"keras"``, trained
  by the study's ``keras`` engine); a torch factory's path is ``"torch"``.

Weights are drawn from the seed: torch's global RNG inside :func:`bnlab.train.seeded` (the
caller's, so that this module needs nothing above :mod:`bnlab.models`), and
``keras.utils.set_random_seed(seed)`` for Keras. ``reinitialize`` (``.keras`` files only,
default true) rebuilds the saved model with fresh weights from its layers' own initializers
(``keras.models.clone_model``); false starts every seed from the saved weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from bnlab.errors import ConfigError
from bnlab.loading import (
    accepted_keywords,
    call_factory,
    import_callable,
    import_keras,
    is_keras_model,
    load_keras_file,
)
from bnlab.nn.surgery import BN_OPTION_KEYS, apply_bn_options

PREFIX = "user:"
KINDS = ("factory", "keras", "keras_factory")
PATHS = ("torch", "translated", "keras")


def descriptor(kind: str, target: str, reinitialize: bool = True) -> str:
    """The descriptor string of a user model (see the module docstring)."""
    blob = {"kind": kind, "target": target}
    if kind == "keras":
        blob["reinitialize"] = bool(reinitialize)
    return PREFIX + json.dumps(blob, sort_keys=True)


def is_user_model(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def parse(name: str) -> dict[str, Any]:
    return json.loads(name[len(PREFIX) :])


def field_of(kind: str) -> str:
    return f"model.{kind}"


def label(name: str) -> str:
    """``factory 'nets.py:build'`` (for messages)."""
    info = parse(name)
    return f"{info['kind']} {Path(info['target'].split(':')[0]).name + _attr(info)!r}"


def _attr(info) -> str:
    return ":" + info["target"].rsplit(":", 1)[1] if info["kind"] != "keras" else ""


def _callable(info: dict[str, Any]):
    return import_callable(info["target"], field_of(info["kind"]))


def option_keys(name: str) -> tuple[list[str], bool]:
    """``(keys, takes_any)``: the options a variant may set (callable's keywords + BN keys)."""
    info = parse(name)
    if info["kind"] == "keras":
        return list(BN_OPTION_KEYS), False
    names, takes_any = accepted_keywords(_callable(info))
    return sorted(names) + [k for k in BN_OPTION_KEYS if k not in names], takes_any


def data_options(name: str) -> dict[str, Any]:
    """The callable's keywords the study may fill from the data (``num_classes``, and
    ``input_shape`` channels first for a torch factory), with their defaults."""
    info = parse(name)
    if info["kind"] == "keras":
        return {}
    import inspect

    fn = _callable(info)
    names, _ = accepted_keywords(fn)
    wanted = {"num_classes"} | ({"input_shape"} if info["kind"] == "factory" else set())
    params = inspect.signature(fn).parameters
    out = {}
    for key in sorted(names & wanted):
        default = params[key].default
        missing = default is inspect.Parameter.empty or default is None
        out[key] = (() if key == "input_shape" else None) if missing else default
    return out


@dataclass
class BuiltModel:
    """One run's model: ``module`` (torch, None on the Keras path), ``keras`` (the Keras
    model it came from, None for a torch factory) and ``path``."""

    module: nn.Module | None
    keras: Any
    path: str


def build_user_model(
    name: str, options: dict[str, Any], *, seed: int, force_keras: bool = False
) -> BuiltModel:
    """Build the model of descriptor ``name`` with ``options`` for ``seed`` (module doc).

    Call it inside ``bnlab.train.seeded(seed)`` for a torch model's initial weights (the
    study does: :meth:`bnlab.study.jobs.RunRequest.build`); Keras's RNG is seeded here.
    """
    info = parse(name)
    kind, field = info["kind"], field_of(info["kind"])
    options = dict(options)
    if kind == "keras":
        call_opts, bn_opts = {}, {k: options.pop(k) for k in list(options) if k in BN_OPTION_KEYS}
        if options:
            raise ConfigError(f"{next(iter(options))}: not an option of a .keras model")
    else:
        fn = _callable(info)
        names, takes_any = accepted_keywords(fn)
        bn_opts = {
            k: options.pop(k) for k in list(options) if k in BN_OPTION_KEYS and k not in names
        }
        call_opts = options
        bad = [k for k in call_opts if k not in names and not takes_any]
        if bad:
            raise ConfigError(f"{bad[0]}: {info['target']} takes no option {bad[0]!r}")
    if kind == "keras":
        keras = import_keras(field)
        keras.utils.set_random_seed(seed)
        model = load_keras_file(Path(info["target"]), field)
        if info.get("reinitialize", True):
            model = keras.models.clone_model(model)  # fresh weights, the layers' initializers
    else:
        if kind == "keras_factory":
            import_keras(field).utils.set_random_seed(seed)
        model = call_factory(fn, info["target"], field, call_opts)
    if isinstance(model, nn.Module) and not is_keras_model(model):
        if kind == "keras_factory":
            raise ConfigError(
                f"{field}: {info['target']} returned a torch module, not a Keras model; "
                "name it with factory = ... instead"
            )
        return BuiltModel(apply_bn_options(model, **bn_opts), None, "torch")
    if not is_keras_model(model):
        raise ConfigError(
            f"{field}: {info['target']} returned a {type(model).__name__}, not a "
            f"{'torch.nn.Module' if kind == 'factory' else 'Keras model'}"
        )
    return _keras_model(model, bn_opts, force_keras)


def _keras_model(model, bn_opts: dict[str, Any], force_keras: bool) -> BuiltModel:
    from bnlab.models.keras_surgery import apply_keras_bn_options
    from bnlab.models.keras_translate import translate, unsupported_layers

    model, deferred = apply_keras_bn_options(model, **bn_opts)
    if force_keras or unsupported_layers(model):
        if deferred:
            key = next(iter(deferred))
            raise ConfigError(
                f"{key}: {deferred[key]!r} has no Keras 3 layer, and this model trains with "
                f"Keras (layer {_first_unsupported(model)!r} has no torch translation)"
            )
        return BuiltModel(None, model, "keras")
    module = translate(model)
    if deferred:
        apply_bn_options(module, **deferred)
    return BuiltModel(module, model, "translated")


def _first_unsupported(model) -> str:
    from bnlab.models.keras_translate import unsupported_layers

    bad = unsupported_layers(model)
    return bad[0][0] if bad else "?"


def fallback_note(model) -> str | None:
    """The one-line note printed when a Keras model trains with Keras (None if it translates)."""
    from bnlab.models.keras_translate import unsupported_layers

    bad = unsupported_layers(model)
    if not bad:
        return None
    return f"layer {bad[0][0]!r}: {bad[0][1]}; it trains with Keras (engine 'keras')"
