"""bnlab: a laboratory and a doctor for batch normalization.

``bnlab.BatchNorm`` is Keras's ``BatchNormalization`` in PyTorch (momentum is the
fraction of the running value *kept*, Keras's convention). Studies train many
variants x seeds and report statistics; the doctor names what is wrong with the BN
of a trained model and proves it by intervening on a copy.

The monitor watches BN while you train: ``bnlab.keras.BNMonitor(validation_data=...)`` (a
Keras 3 callback), ``bnlab.torch.BNMonitor(model, val_data)`` (plain PyTorch loops) and
``bnlab.lightning.BNMonitor()`` (a Lightning callback), with the doctor's findings.

``import bnlab`` imports neither Keras, TensorFlow nor Lightning; sub-packages load lazily
(``bnlab.keras`` imports Keras, ``bnlab.lightning`` Lightning).
"""

from __future__ import annotations

import importlib
from typing import Any

from bnlab.errors import ConfigError, DataError, UnsafeFileError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.momentum import keras_to_torch_momentum, torch_to_keras_momentum

__version__ = "0.1.0"

_SUBMODULES = {
    "nn", "models", "data", "train", "study", "report", "doctor", "cli", "errors", "monitor",
    "keras", "torch", "lightning",
}  # fmt: skip
_LAZY_ATTRS = {
    "diagnose": ("bnlab.doctor", "diagnose"),
    "recalibrate": ("bnlab.doctor", "recalibrate"),
    "freeze": ("bnlab.doctor.freeze", "freeze"),
    "Diagnosis": ("bnlab.doctor", "Diagnosis"),
    "Finding": ("bnlab.doctor", "Finding"),
    "Dataset": ("bnlab.data", "Dataset"),
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"bnlab.{name}")
    if name in _LAZY_ATTRS:
        module, attr = _LAZY_ATTRS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'bnlab' has no attribute {name!r}")


__all__ = [
    "BatchNorm",
    "ConfigError",
    "DataError",
    "UnsafeFileError",
    "keras_to_torch_momentum",
    "torch_to_keras_momentum",
    "diagnose",
    "recalibrate",
    "freeze",
    "__version__",
]
