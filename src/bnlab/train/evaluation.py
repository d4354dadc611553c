"""Inference-mode evaluation, and evaluation with exact ("precise") BN statistics.

Evaluation runs the model in inference mode (every module's ``eval()``; BN uses its moving
statistics, dropout is off) without gradients, then restores every module's train/eval
flag. Losses are Keras's: the mean data loss over the samples (unweighted) plus the
regularization loss, so they are comparable with the training ``loss``. In inference mode
the result does not depend on the evaluation batch size (up to float rounding).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bnlab._validation import check_positive_int
from bnlab.errors import DataError
from bnlab.nn import regularization_loss
from bnlab.nn.probe import train_mode
from bnlab.nn.surgery import find_bn_layers
from bnlab.train.losses import num_correct, per_sample_loss

#: Upper bound on the number of input values per evaluation batch (64 Mi float32 values
#: = 256 MiB of input): keeps wide inputs (224x224x3) from exhausting memory.
_EVAL_INPUT_BUDGET = 1 << 26


def mode(model: nn.Module, training: bool):
    """Put every module in training or inference mode; restore each flag on exit
    (:func:`bnlab.nn.probe.train_mode`)."""
    return train_mode(model, training)


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """Every PyTorch ``BatchNorm*d`` and :class:`bnlab.BatchNorm` in ``model``
    (:func:`bnlab.nn.surgery.find_bn_layers` without the names)."""
    return [m for _, m in find_bn_layers(model)]


def uses_batch_statistics(model: nn.Module) -> bool:
    """True when some BN layer normalises with batch statistics in training mode.

    A bnlab ``BatchNorm`` with ``trainable = False`` runs in inference mode even while
    training (Keras semantics), so it does not count.
    """
    return any(getattr(m, "trainable", True) for m in batchnorm_layers(model))


def eval_batch_size(batch_size: int, sample_numel: int, device: torch.device | str = "cpu") -> int:
    """The batch size ``fit`` evaluates with: at least ``batch_size``, up to 1024 samples on
    a GPU and 256 on CPU, as long as the batch's input stays under 64 Mi values.

    On CPU smaller chunks keep the activations in cache: an inference pass of ``fashion_cnn``
    over 1000 images took 60 ms in chunks of 256 and 96 ms in one chunk of 1000 (2 cores).
    """
    cap = 256 if torch.device(device).type == "cpu" else 1024
    return max(batch_size, min(cap, _EVAL_INPUT_BUDGET // max(1, sample_numel)))


@torch.no_grad()
def evaluate_sums(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
    *,
    loss_epsilon: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of per-sample data losses, number correct)`` as device tensors, no host sync.

    ``x``/``y`` are evaluated in chunks of ``batch_size`` on the model's device.
    """
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"y: {y.shape[0]} labels for {x.shape[0]} samples; x and y must have the same "
            "number of rows"
        )
    if x.shape[0] == 0:
        raise DataError("x: 0 samples; evaluation needs at least one")
    device = _model_device(model)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    with mode(model, False):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device, non_blocking=True)
            yb = y[start : start + batch_size].to(device, non_blocking=True)
            logits = model(xb)
            loss_sum += per_sample_loss(logits, yb, loss_epsilon).sum(dtype=torch.float64)
            correct += num_correct(logits, yb)
    return loss_sum, correct


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
    *,
    loss_epsilon: float | None = None,
) -> tuple[float, float]:
    """``(loss, accuracy)`` of ``model`` on ``(x, y)`` in inference mode, like Keras's
    ``model.evaluate``: ``loss`` is the mean cross-entropy (nats) plus the regularization
    loss; ``accuracy`` is the fraction correct. The model's train/eval flags are restored.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    loss_sum, correct = evaluate_sums(model, x, y, batch_size, loss_epsilon=loss_epsilon)
    with torch.no_grad():
        reg = regularization_loss(model)
    n = x.shape[0]
    loss_sum, correct, reg = torch.stack(
        [loss_sum, correct.to(torch.float64), reg.to(torch.float64)]
    ).tolist()
    return loss_sum / n + reg, correct / n


def precise_copy(
    model: nn.Module, x: torch.Tensor, batch_size: int, *, max_batches: int | None = None
) -> nn.Module:
    """A deep copy of ``model`` whose BN layers hold exact population statistics of ``x``.

    The statistics are recomputed by :func:`bnlab.nn.precise.precise_bn_stats` over ``x``
    in chunks of ``batch_size`` (its cost: one forward pass over ``x``). ``model`` itself is
    not touched.
    """
    from bnlab.nn.precise import precise_bn_stats

    twin = copy.deepcopy(model)
    device = _model_device(twin)
    batches = (
        x[start : start + batch_size].to(device, non_blocking=True)
        for start in range(0, x.shape[0], batch_size)
    )
    precise_bn_stats(twin, batches, max_batches=max_batches)
    return twin


def epoch_metrics(
    model: nn.Module,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    eval_bs: int,
    *,
    precise: bool,
    train_eval: bool,
    loss_epsilon: float | None,
) -> dict[str, float]:
    """Every inference-mode metric ``fit`` records at the end of an epoch, read from the
    device in one transfer: ``{val,train_eval,test}_{loss,accuracy}`` (losses with the
    regularization loss added, as Keras reports them) and ``precise_*_accuracy``.

    ``splits``: ``(x, y)`` of ``"train"`` and ``"val"``, and of ``"test"`` when it is not the
    validation set. ``precise``: also evaluate a copy whose BN statistics were recomputed
    exactly on the training set (for a model without BN layers the plain accuracies are
    copied). ``train_eval=False`` skips every metric of the training set (the exact
    statistics are still taken on it)."""
    x_train = splits["train"][0]
    sets = {"val": splits["val"]}
    if train_eval:
        sets["train_eval"] = splits["train"]
    if "test" in splits:
        sets["test"] = splits["test"]
    recompute = precise and bool(batchnorm_layers(model))
    names, values = [], []
    for name, (x, y) in sets.items():
        loss_sum, correct = evaluate_sums(model, x, y, eval_bs, loss_epsilon=loss_epsilon)
        names += [f"{name}_loss", f"{name}_accuracy"]
        values += [loss_sum / x.shape[0], correct.double() / x.shape[0]]
    precise_sets = [s for s in ("val", "train_eval") if s in sets]
    if recompute:
        twin = precise_copy(model, x_train, eval_bs)
        for name in precise_sets:
            x, y = sets[name]
            _, correct = evaluate_sums(twin, x, y, eval_bs, loss_epsilon=loss_epsilon)
            names.append(f"precise_{name}_accuracy")
            values.append(correct.double() / x.shape[0])
    with torch.no_grad():
        reg = regularization_loss(model).double()
    numbers = dict(zip(names, torch.stack(values).tolist(), strict=True))
    reg = float(reg)
    for key in names:
        if key.endswith("_loss"):
            numbers[key] += reg
    if precise and not recompute:
        # Without BN layers the exact statistics change nothing: same numbers, no extra pass.
        for name in precise_sets:
            numbers[f"precise_{name}_accuracy"] = numbers[f"{name}_accuracy"]
    return numbers


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
