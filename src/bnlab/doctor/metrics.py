"""Loss, accuracy and agreement from logits, summed over batches.

Logits follow bnlab's contract: ``(N, K)`` for K-class problems (softmax cross-entropy),
``(N, 1)`` or ``(N,)`` for binary ones (sigmoid, threshold at logit 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bnlab._validation import check_choice
from bnlab.errors import DataError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES = ("auto", "cross_entropy", "binary_cross_entropy")


def is_binary(logits: torch.Tensor) -> bool:
    return logits.dim() == 1 or logits.shape[-1] == 1


def predictions(logits: torch.Tensor) -> torch.Tensor:
    if is_binary(logits):
        return (logits.reshape(-1) > 0).long()
    return logits.argmax(dim=-1)


def resolve_loss(loss: str | LossFn | None) -> LossFn:
    """``None``/``"auto"`` picks cross-entropy from the logits' shape; a callable is used as is.

    A callable gets ``(logits, y)`` and returns the batch's *mean* loss.
    """
    if callable(loss):
        return loss
    name = check_choice("loss", "auto" if loss is None else loss, LOSSES)

    def auto(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        binary = is_binary(logits) if name == "auto" else name == "binary_cross_entropy"
        if binary:
            return F.binary_cross_entropy_with_logits(logits.reshape(-1), y.reshape(-1).float())
        return F.cross_entropy(logits, y.reshape(-1).long())

    return auto


class Meter:
    """Sums of loss, correct predictions and sample counts for one forward mode."""

    def __init__(self, loss_fn: LossFn) -> None:
        self.loss_fn = loss_fn
        self.n = 0
        self.labelled = 0
        self.loss_sum = 0.0
        self.correct = 0

    def add(self, logits: torch.Tensor, y: torch.Tensor | None) -> None:
        n = logits.shape[0]
        self.n += n
        if y is None:
            return
        self.labelled += n
        y = y.to(logits.device)
        if y.shape[0] != n:
            raise DataError(f"data: a batch has {n} inputs but {y.shape[0]} labels")
        self.loss_sum += float(self.loss_fn(logits.float(), y)) * n
        self.correct += int((predictions(logits) == y.reshape(-1).long()).sum())

    @property
    def accuracy(self) -> float | None:
        """Fraction of labelled samples predicted right (``None`` without labels)."""
        return self.correct / self.labelled if self.labelled else None

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.labelled if self.labelled else None


class Agreement:
    """Fraction of samples on which two forward modes predict the same class."""

    def __init__(self) -> None:
        self.n = 0
        self.same = 0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.n += a.shape[0]
        self.same += int((predictions(a) == predictions(b)).sum())

    @property
    def value(self) -> float | None:
        return self.same / self.n if self.n else None
