"""Load the model a user names on the command line, never unpickling their files.

``MODEL`` is one of:

* a Keras file, ``.keras`` (or legacy ``.h5``/``.hdf5``), read with
  ``keras.saving.load_model(path, safe_mode=True)`` (no lambda deserialisation);
* ``module:factory`` or ``path/to/file.py:factory``: a function returning a ``torch.nn.Module``
  or a Keras model, plus ``--weights FILE.pt`` (a state_dict read with
  ``torch.load(weights_only=True)``) or, for Keras, a ``.weights.h5`` file;
* a bnlab run id in a study store: not supported, because studies record metrics, not weights
  (a clear error says so and how to export a model instead).

A bare ``.pt``/``.pth`` holding a whole pickled model is refused with
:class:`~bnlab.errors.UnsafeFileError`: loading it would run arbitrary code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from bnlab.errors import ConfigError, DataError, UnsafeFileError
from bnlab.loading import first_line, import_callable
from bnlab.loading import load_keras_file as _load_keras_file

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_FACTORY = re.compile(r"^(?P<module>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")
FORMATS = ".keras / .h5 Keras files, or module:factory (with --weights FILE.pt)"


def _first_line(exc: BaseException) -> str:
    return first_line(exc)


def load_state_dict(path: Path, what: str = "weights") -> dict:
    """A state_dict from ``path`` via ``torch.load(weights_only=True)``; refuses full pickles."""
    if not path.is_file():
        raise DataError(f"{what}: no such file: {str(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
        if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
            raise UnsafeFileError(
                f"{what}: {str(path)!r} is a full pickle (loading it would run arbitrary "
                "code, which bnlab never does); save model.state_dict() with torch.save and "
                "pass MODEL as module:factory with --weights FILE.pt"
            ) from None
        raise DataError(
            f"{what}: cannot read {str(path)!r} as a PyTorch file ({_first_line(exc)})"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # a checkpoint dict that wraps the weights
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{what}: {str(path)!r} holds a {type(obj).__name__}, not a state_dict")
    return obj


def load_keras_file(path: Path) -> Any:
    from bnlab.doctor.keras_adapter import import_keras

    import_keras()  # the doctor's own backend check first
    return _load_keras_file(path, "MODEL")


def _import_factory(spec: str, module_name: str, attr: str):
    return import_callable(spec, "MODEL", module_name=module_name, attr=attr)


def build_from_factory(spec: str, weights: Path | None) -> Any:
    """``module:factory`` -> the model it returns, with ``weights`` loaded into it."""
    match = _FACTORY.match(spec)
    factory = _import_factory(spec, match["module"], match["attr"])
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"MODEL: {spec}() failed ({_first_line(exc)})") from None
    from bnlab.doctor.adapters import is_keras_model

    if is_keras_model(model):
        if weights is not None:
            if not weights.is_file():
                raise DataError(f"weights: no such file: {str(weights)!r}")
            try:
                model.load_weights(str(weights))
            except Exception as exc:  # noqa: BLE001
                raise DataError(
                    f"weights: cannot load {str(weights)!r} ({_first_line(exc)})"
                ) from None
        return model
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"MODEL: {spec}() returned a {type(model).__name__}, not a model")
    if weights is not None:
        state = load_state_dict(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(
                f"weights: {str(weights)!r} does not fit the model from {spec} ({_first_line(exc)})"
            ) from None
    return model


def load_model(
    spec: str, *, weights: str | Path | None = None, store: str | Path | None = None
) -> Any:
    """The model named by ``spec`` (see the module docstring); raises a bnlab error otherwise."""
    weights = Path(weights) if weights is not None else None
    path = Path(spec)
    suffix = path.suffix.lower()
    if _FACTORY.match(spec) and not path.exists():
        return build_from_factory(spec, weights)
    if suffix in KERAS_SUFFIXES or spec.lower().endswith(".weights.h5"):
        if not path.is_file():
            raise DataError(f"MODEL: no such file: {spec!r}")
        return load_keras_file(path)
    if suffix in TORCH_SUFFIXES:
        load_state_dict(path, "MODEL")  # refuses full pickles with the reason
        raise ConfigError(
            f"MODEL: {spec!r} holds only weights (a state_dict); name the architecture as "
            f"module:factory and pass the file as --weights {spec}"
        )
    if path.exists():
        raise ConfigError(f"MODEL: {spec!r} is not a model format the doctor reads ({FORMATS})")
    if store is not None:
        raise ConfigError(
            f"MODEL: {spec!r} is not a file; as a run id of {str(store)!r} it would need the "
            "run's weights, which bnlab studies do not store (they record metrics); rebuild "
            "the model and pass it as module:factory with --weights FILE.pt"
        )
    raise DataError(f"MODEL: no such file: {spec!r} (expected {FORMATS})")


def save_model(model: Any, out: str | Path) -> Path:
    """Write ``model`` in its own format: Keras -> ``.keras``; PyTorch -> a state_dict file."""
    from bnlab.doctor.adapters import is_keras_model

    out = Path(out)
    if is_keras_model(model):
        if out.suffix.lower() not in (".keras", ".h5"):
            raise ConfigError(f"out: {str(out)!r} must end in .keras for a Keras model")
        model.save(str(out))
    else:
        torch.save(model.state_dict(), out)
    return out
