"""A stack's settings and data, validated and moved to the device once (``_prepare``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bnlab.errors import ConfigError
from bnlab.train.batching import batch_sizes
from bnlab.train.class_weight import describe
from bnlab.train.devices import resolve_device
from bnlab.train.evaluation import eval_batch_size
from bnlab.train.optimizers import optimizer_name
from bnlab.train.options import (
    check_train_options,
    optimizer_settings,
    resolve_lr,
)
from bnlab.train.prepare import TrainingData, prepare_data, resolve_augment
from bnlab.train.progress import progress_enabled

RunCallback = Callable[[int, int, dict], Any]


@dataclass
class _Config:
    """Everything one stack needs besides its models, validated once."""

    epochs: int
    batch_size: int
    optimizer: str
    optimizer_options: dict
    device: torch.device
    precise_eval: bool
    train_eval: bool
    augment: Any
    loss_epsilon: float | None
    precision: str
    channels_last: bool
    cuda_graphs: bool
    dropout_rng: str
    kernels: str
    progress: bool
    on_epoch_end: RunCallback | None
    params: dict = field(default_factory=dict)


#: A stack's data: the splits on the device, as :func:`bnlab.train.prepare.prepare_data`
#: prepares them for ``fit``.
_Data = TrainingData


def _prepare(models, dataset, seeds, **kw) -> tuple[_Config, _Data, list[float]]:
    """Check the arguments with ``fit``'s configuration (:mod:`bnlab.train.options`) and
    prepare the data with ``fit``'s step (:func:`bnlab.train.prepare.prepare_data`)."""
    lr = kw.pop("lr", None)
    checked = check_train_options(kw, stacked=True)
    epochs, batch_size = checked["epochs"], checked["batch_size"]
    optimizer = checked["optimizer"]
    if not isinstance(optimizer, str):
        raise ConfigError(
            f"optimizer: {optimizer!r} is not one of 'adam', 'sgd', 'rmsprop' (the stacked "
            "engine runs Keras's optimizers; use the sequential engine for a factory)",
            param="optimizer",
            value=optimizer,
            allowed="one of 'adam', 'sgd', 'rmsprop'",
        )
    if lr is None or isinstance(lr, (int, float)):
        lrs = [lr] * len(models)
    else:
        lrs = list(lr)
        if len(lrs) != len(models):
            raise ConfigError(f"lr: {len(lrs)} learning rates for {len(models)} models")
    lrs = [resolve_lr(optimizer, v) for v in lrs]
    precise, train_eval = checked["precise_eval"], checked["train_eval"]
    loss_epsilon, callback = checked["loss_epsilon"], checked["on_epoch_end"]
    options = checked["optimizer_options"] or {}
    optimizer_settings(optimizer, options)  # names and ranges, as fit's optimizer checks them
    precision = checked["precision"]
    device = resolve_device(checked["device"])
    if precision == "tf32" and device.type != "cuda":
        raise ConfigError("precision: 'tf32' is a CUDA mode; use 'float32' or 'bf16' on CPU")
    cuda = device.type == "cuda"
    dropout_rng = checked["dropout_rng"] or ("shared" if cuda else "per_run")
    kernels = checked["kernels"] or ("stacked" if cuda else "per_run")
    augmenter = resolve_augment(checked["augment"])
    graphs = checked["cuda_graphs"]
    graphs = (cuda and dropout_rng == "shared" and augmenter is None) if graphs is None else graphs
    if graphs and not cuda:
        raise ConfigError("cuda_graphs: True needs a CUDA device")
    if graphs and (dropout_rng != "shared" or augmenter is not None):
        raise ConfigError(
            "cuda_graphs: True needs dropout_rng='shared' and no augmentation (per-run "
            "generators are not captured)"
        )
    for m in models:
        if not isinstance(m, nn.Module):
            raise ConfigError(f"models: {type(m).__name__} is not a torch.nn.Module")

    data = prepare_data(
        models,
        dataset,
        batch_size=batch_size,
        device=device,
        class_weight=checked["class_weight"],
        channels_last=checked["channels_last"],
        channels_last_on_cuda=True,
    )
    x_train, channels_last, num_outputs = data.x_train, data.channels_last, data.num_outputs
    n_train, weights, val_source, x_val = data.num_train, data.weights, data.val_source, data.x_val
    eval_bs = eval_batch_size(batch_size, x_train[0].numel(), device)
    cfg = _Config(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        optimizer_options=options,
        device=device,
        precise_eval=precise,
        train_eval=train_eval,
        augment=augmenter,
        loss_epsilon=loss_epsilon,
        precision=precision,
        channels_last=channels_last,
        cuda_graphs=bool(graphs),
        dropout_rng=dropout_rng,
        kernels=kernels,
        progress=progress_enabled(checked["progress"]),
        on_epoch_end=callback,
        params={
            "epochs": epochs,
            "batch_size": batch_size,
            "steps": len(batch_sizes(n_train, batch_size)),
            "optimizer": optimizer_name(optimizer),
            "optimizer_options": dict(options),
            "device": str(device),
            "class_weight": describe(weights),
            "precise_eval": precise,
            "train_eval": train_eval,
            "augment": None if augmenter is None else augmenter.to_options(),
            "val_source": val_source,
            "task": "binary" if num_outputs == 1 else "multiclass",
            "num_train": n_train,
            "num_val": int(x_val.shape[0]),
            "eval_batch_size": eval_bs,
            "loss_epsilon": loss_epsilon,
            "engine": "stacked",
            "precision": precision,
            "dropout_rng": dropout_rng,
            "kernels": kernels,
            "channels_last": channels_last,
        },
    )
    return cfg, data, lrs
