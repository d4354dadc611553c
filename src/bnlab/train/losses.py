"""Keras's losses and accuracy, computed from logits.

Conventions
-----------
* Models return logits: ``(N, C)`` for a multiclass task, ``(N, 1)`` for a binary one. The
  task is read from the logits' shape (one column means binary), so the functions here
  need no model metadata.
* Per-sample losses are categorical cross-entropy (``-log softmax(z)[y]``) or binary
  cross-entropy (``-[y log s(z) + (1-y) log(1-s(z))]``), reduced like Keras's
  ``"sum_over_batch_size"``: ``sum(w_i * l_i) / N`` -- the weights are *not* normalised,
  so class weights scale the loss (and the gradient), as in Keras.
* ``epsilon=None`` computes the loss from the logits, which is what Keras's TensorFlow
  backend does behind a final softmax/sigmoid (it recovers their logits) and what the
  seeds ran. ``epsilon=1e-7`` reproduces Keras's torch backend instead, which clips the
  probabilities to ``[epsilon, 1 - epsilon]`` before the log: a sample whose probability
  leaves that range then contributes a constant loss and no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bnlab.errors import DataError


def is_binary(logits: torch.Tensor) -> bool:
    """True for ``(N, 1)`` logits (a sigmoid output), False for ``(N, C)``, C >= 2."""
    if logits.dim() != 2:
        raise DataError(
            f"logits: shape {tuple(logits.shape)} is not (N, num_classes) or (N, 1); "
            "bnlab models return 2-D logits"
        )
    return logits.shape[1] == 1


def per_sample_loss(
    logits: torch.Tensor, y: torch.Tensor, epsilon: float | None = None
) -> torch.Tensor:
    """The unreduced cross-entropy of each sample, shape ``(N,)`` (natural log, nats)."""
    if is_binary(logits):
        z = logits[:, 0]
        t = y.to(z.dtype)
        if epsilon is None:
            return F.binary_cross_entropy_with_logits(z, t, reduction="none")
        lo, hi = math.log(epsilon), math.log1p(-epsilon)
        log_p = F.logsigmoid(z).clamp(lo, hi)
        log_q = F.logsigmoid(-z).clamp(lo, hi)
        return -(t * log_p + (1 - t) * log_q)
    if epsilon is None:
        return F.cross_entropy(logits, y, reduction="none")
    log_p = F.log_softmax(logits, dim=1).clamp(math.log(epsilon), math.log1p(-epsilon))
    return -log_p.gather(1, y.view(-1, 1))[:, 0]


def reduce_loss(values: torch.Tensor, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Keras's ``sum_over_batch_size``: ``sum(w * values) / len(values)``."""
    if sample_weight is not None:
        values = values * sample_weight
    return values.sum() / values.shape[0]


def data_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    epsilon: float | None = None,
) -> torch.Tensor:
    """Mean (Keras ``sum_over_batch_size``) weighted cross-entropy of a batch, a scalar."""
    return reduce_loss(per_sample_loss(logits, y, epsilon), sample_weight)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted class per sample: ``argmax`` (first maximum on ties), or ``logit > 0``."""
    if is_binary(logits):
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def num_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of correctly classified samples, an integer tensor on the logits' device."""
    return (predictions(logits) == y).sum()
