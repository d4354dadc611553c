"""The data-preparation step both engines share: a dataset checked, moved to the device once
in the model's dtype and memory layout, its labels checked against the model's outputs.

:func:`bnlab.train.fit` calls it with one model, the stacked engine with the ``K`` models of a
stack (one architecture, so the first one answers for all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from bnlab.errors import ConfigError, DataError
from bnlab.nn.probe import output_shape
from bnlab.train.class_weight import resolve_class_weight
from bnlab.train.evaluation import uses_batch_statistics
from bnlab.train.layout import to_layout, wants_channels_last


@dataclass
class TrainingData:
    """A run's splits on the device. ``val_source`` is ``"validation"`` (``x_val`` given;
    ``x_test`` is then the test set) or ``"test"`` (the test set validates; no ``x_test``).
    ``weights``: per-class loss weights on the device, or ``None``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    val_source: str
    weights: torch.Tensor | None
    num_outputs: int
    channels_last: bool

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def task(self) -> str:
        return "binary" if self.num_outputs == 1 else "multiclass"

    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"train", "val"[, "test"]}`` as :func:`bnlab.train.evaluation.epoch_metrics`
        takes them."""
        out = {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val)}
        if self.x_test is not None:
            out["test"] = (self.x_test, self.y_test)
        return out

    def nbytes(self) -> int:
        tensors = [self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def prepare_data(
    models: Sequence[nn.Module],
    dataset,
    *,
    batch_size: int,
    device: torch.device,
    class_weight,
    channels_last: bool | None,
    channels_last_on_cuda: bool = False,
) -> TrainingData:
    """Check ``dataset`` for ``models`` and move it to ``device`` (the models too).

    Inputs take the models' floating dtype (a float64 model trains on float32 data) and the
    channels-last layout when :func:`bnlab.train.layout.wants_channels_last` says so
    (``channels_last_on_cuda``: the stacked engine's default of channels-last for 4-D
    inputs on CUDA). Raises :class:`DataError` for unusable splits or labels outside the
    model's classes and :class:`ConfigError` for a batch too small for batch statistics.
    """
    x_train, y_train = checked_split(dataset, "train")
    if getattr(dataset, "x_val", None) is not None:
        val_source = "validation"
        x_val, y_val = checked_split(dataset, "val")
    else:
        val_source = "test"
        x_val, y_val = checked_split(dataset, "test")
    n_train = x_train.shape[0]
    if any(uses_batch_statistics(m) for m in models):
        if batch_size < 2:
            raise ConfigError(
                f"batch_size: {batch_size} is not >= 2; the model has BatchNorm layers in "
                "training mode, whose batch statistics need at least 2 samples",
                param="batch_size",
                value=batch_size,
                allowed=">= 2 (the model has BatchNorm layers)",
            )
        if n_train < 2:
            raise DataError(
                f"x_train: {n_train} sample is not enough for a model with BatchNorm layers "
                "in training mode (batch statistics need at least 2 samples)"
            )
    for model in models:
        model.to(device)
    model = models[0]
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    x_train = x_train.to(device, dtype)
    if channels_last is None and channels_last_on_cuda and device.type == "cuda":
        nhwc = x_train.dim() == 4
    else:
        nhwc = wants_channels_last(channels_last, model, x_train, device)
    x_train, y_train = to_layout(x_train, nhwc), y_train.to(device)
    x_val, y_val = to_layout(x_val.to(device, dtype), nhwc), y_val.to(device)
    x_test = y_test = None
    if val_source == "validation":
        x_test, y_test = checked_split(dataset, "test")
        x_test, y_test = to_layout(x_test.to(device, dtype), nhwc), y_test.to(device)

    num_outputs = probe_outputs(model, x_train)
    num_classes = 2 if num_outputs == 1 else num_outputs
    val_name = "y_val" if val_source == "validation" else "y_test"
    for name, y in (("y_train", y_train), (val_name, y_val), ("y_test", y_test)):
        check_labels(name, y, num_classes)
    weights = resolve_class_weight(class_weight, y_train, num_classes)
    if weights is not None:
        weights = weights.to(device)
    return TrainingData(
        x_train, y_train, x_val, y_val, x_test, y_test, val_source, weights, num_outputs, nhwc
    )


def checked_split(dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of one split: tensors, ``(N, ...)`` floating inputs, ``(N,)`` integer labels."""
    x = getattr(dataset, f"x_{split}", None)
    y = getattr(dataset, f"y_{split}", None)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError(
            f"dataset.x_{split}/y_{split}: {type(x).__name__}/{type(y).__name__} are not "
            "torch tensors; pass a bnlab.data.Dataset (see bnlab.data.load)"
        )
    if y.dim() != 1:
        raise DataError(
            f"y_{split}: shape {tuple(y.shape)} is not (N,); labels are class indices, "
            "not one-hot rows"
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(f"y_{split}: {y.shape[0]} labels for {x.shape[0]} samples in x_{split}")
    if x.shape[0] == 0:
        raise DataError(f"x_{split}: 0 samples; fit needs at least one")
    if not x.is_floating_point():
        raise DataError(f"x_{split}: dtype {x.dtype} is not a floating-point type")
    if y.is_floating_point() or y.is_complex():
        raise DataError(f"y_{split}: dtype {y.dtype} is not an integer type (class indices)")
    return x, y.long()


def check_labels(name: str, y: torch.Tensor | None, num_classes: int) -> None:
    """Labels of ``y`` within ``0..num_classes-1``."""
    if y is None:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(
            f"{name}: labels span {lo}..{hi}, not in 0..{num_classes - 1} (the model has "
            f"{'1 output (binary)' if num_classes == 2 else f'{num_classes} outputs'})"
        )


def probe_outputs(model: nn.Module, x_train: torch.Tensor) -> int:
    """Run two samples in inference mode: materialises lazily built layers (so the optimizer
    sees every parameter) and reads the number of output columns."""
    shape = output_shape(model, x_train[:2])
    if len(shape) != 2:
        raise ConfigError(
            f"model: output shape {shape} is not (N, num_classes) or (N, 1); "
            "bnlab trains models that return 2-D logits"
        )
    return int(shape[1])


def resolve_augment(augment):
    """``None``, or an :class:`~bnlab.train.augment.Augmenter` from one or its options."""
    if augment is None:
        return None
    from bnlab.train.augment import Augmenter

    return Augmenter.from_options(augment)
