"""Training that computes what Keras computes: optimizers, losses, the epoch loop, history.

The public entry point is :func:`fit`; its building blocks are public too so that other
engines (the stacked multi-model engine, the Keras parity tests) reuse the same
arithmetic: :func:`make_optimizer` (Keras's Adam/SGD/RMSprop updates), :func:`train_step`
(one ``train_on_batch``), :func:`batch_order` (an epoch's shuffled batches) and
:func:`seeded` (where the seed applies to the initial weights).
"""

from __future__ import annotations

import importlib
from typing import Any

from bnlab.train.batching import batch_order, batch_sizes
from bnlab.train.class_weight import balanced_class_weight, resolve_class_weight
from bnlab.train.devices import resolve_device
from bnlab.train.evaluation import evaluate, precise_copy
from bnlab.train.fit import fit
from bnlab.train.history import History
from bnlab.train.losses import data_loss, num_correct, per_sample_loss
from bnlab.train.optimizers import KerasAdam, KerasRMSprop, KerasSGD, make_optimizer
from bnlab.train.seeding import derive_seed, seeded
from bnlab.train.step import train_step


def __getattr__(name: str) -> Any:
    # The augmenter is optional at import time: fit loads it only when `augment` is given.
    if name == "Augmenter":
        return importlib.import_module("bnlab.train.augment").Augmenter
    raise AttributeError(f"module 'bnlab.train' has no attribute {name!r}")


__all__ = [
    "Augmenter",
    "History",
    "KerasAdam",
    "KerasRMSprop",
    "KerasSGD",
    "balanced_class_weight",
    "batch_order",
    "batch_sizes",
    "data_loss",
    "derive_seed",
    "evaluate",
    "fit",
    "make_optimizer",
    "num_correct",
    "per_sample_loss",
    "precise_copy",
    "resolve_class_weight",
    "resolve_device",
    "seeded",
    "train_step",
]
