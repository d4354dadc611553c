"""A stack's epoch logs: each run's training means and evaluations, keyed as ``fit`` keys them.

One host synchronisation per epoch: the training sums, the evaluations and the
regularization losses come to the host as one tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from bnlab.train.evaluation import epoch_metrics
from bnlab.train.layout import model_layout
from bnlab.train.stacked.batchnorm import StackedBatchNorm
from bnlab.train.stacked.evaluation import _swapped_stats, evaluate_stacked, precise_stats_stacked

if TYPE_CHECKING:
    from bnlab.train.stacked.stack import _Stack


def epoch_logs(stack: _Stack) -> list[dict[str, float]]:
    """Read the epoch's training sums and run every evaluation: one host sync."""
    # kernels="vmap" has no stacked BN layer to swap statistics in: fit's own evaluation.
    if stack.cfg.kernels == "vmap" or (
        stack.cfg.device.type == "cpu" and stack.cfg.kernels == "per_run"
    ):
        return _logs_per_model(stack)
    cfg, d = stack.cfg, stack.data
    train = _train_table(stack)
    rows = cfg.params["eval_batch_size"]
    sets = {"val": (d.x_val, d.y_val)}
    if cfg.train_eval:
        sets["train_eval"] = (d.x_train, d.y_train)
    if d.x_test is not None:
        sets["test"] = (d.x_test, d.y_test)
    names, values = [], []
    kw = {
        "loss_epsilon": cfg.loss_epsilon,
        "channels_last": cfg.channels_last,
        "autocast": stack.autocast(),
    }
    for name, (x, y) in sets.items():
        loss_sum, correct = evaluate_stacked(stack.model, x, y, rows, **kw)
        names += [f"{name}_loss", f"{name}_accuracy"]
        values += [loss_sum / x.shape[0], correct.double() / x.shape[0]]
    has_bn = any(isinstance(m, StackedBatchNorm) for m in stack.model.modules())
    precise_sets = [s for s in ("val", "train_eval") if s in sets]
    if cfg.precise_eval and has_bn:
        stats = precise_stats_stacked(stack.model, d.x_train, rows, channels_last=cfg.channels_last)
        with _swapped_stats(stats):
            for name in precise_sets:
                x, y = sets[name]
                _, correct = evaluate_stacked(stack.model, x, y, rows, **kw)
                names.append(f"precise_{name}_accuracy")
                values.append(correct.double() / x.shape[0])
    with torch.no_grad():
        reg = stack.model.regularization().double()
    # One device-to-host transfer for the whole epoch: (K, 4 + metrics + 1), all float64.
    width = train.shape[1]
    rows_k = torch.cat((train, torch.stack(values, 1), reg.view(-1, 1)), 1).tolist()
    logs = []
    for row in rows_k:
        entry = _train_entry(row[:width])
        if math.isfinite(entry["loss"]):
            numbers = dict(zip(names, row[width:-1], strict=True))
            for key in names:
                if key.endswith("_loss"):
                    numbers[key] += row[-1]
            if cfg.precise_eval and not has_bn:
                for name in precise_sets:
                    numbers[f"precise_{name}_accuracy"] = numbers[f"{name}_accuracy"]
            entry.update(numbers)
        logs.append(entry)
    return logs


def _train_table(stack: _Stack) -> torch.Tensor:
    """``(K, 4)`` on the device: each run's epoch means of loss, data loss, regularization
    loss and training accuracy (train mode)."""
    n = stack.data.x_train.shape[0]
    return torch.cat((stack.sums, stack.correct.double().view(-1, 1)), 1) / n


def _logs_per_model(stack: _Stack) -> list[dict[str, float]]:
    """CPU: every run evaluated by ``fit``'s own code, on its model (written back first).

    One stacked pass over the shared evaluation sets runs the K per-run convolutions and
    then concatenates their channels-last outputs along the channels (a strided copy)
    over a K-times larger working set: on 2 cores it was 2.9x slower than K separate
    passes (``fashion_cnn``, K = 4). Here each run's metrics are ``fit``'s by
    construction. On a GPU the single stacked pass is the point and stays.
    """
    cfg, d = stack.cfg, stack.data
    train = _train_table(stack).tolist()
    stack.model.unstack_into(stack.models)
    rows = cfg.params["eval_batch_size"]
    splits = {"train": (d.x_train, d.y_train), "val": (d.x_val, d.y_val)}
    if d.x_test is not None:
        splits["test"] = (d.x_test, d.y_test)
    logs = []
    for model, row in zip(stack.models, train, strict=True):
        entry = _train_entry(row)
        if math.isfinite(entry["loss"]):
            with model_layout(model, cfg.channels_last):
                entry.update(
                    epoch_metrics(
                        model,
                        splits,
                        rows,
                        precise=cfg.precise_eval,
                        train_eval=cfg.train_eval,
                        loss_epsilon=cfg.loss_epsilon,
                    )
                )
        logs.append(entry)
    return logs


def _train_entry(row: Sequence[float]) -> dict[str, float]:
    """A run's training metrics of the epoch, keyed as ``fit`` keys them."""
    loss, data_loss, reg_loss, hits = row
    return {"loss": loss, "data_loss": data_loss, "reg_loss": reg_loss, "accuracy": hits}
