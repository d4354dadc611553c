"""One training step, as Keras's ``train_on_batch`` performs it.

``total = data_loss + regularization_loss`` where the data loss is the batch mean
(``sum_over_batch_size``) of the weighted cross-entropy and the regularization loss is
:func:`bnlab.nn.regularization_loss` (Keras's ``model.losses``: ``l2 * sum(w**2)`` per
regularized kernel, plus BN gamma/beta penalties), evaluated on the weights *before* the
update. Gradients of ``total`` go to the optimizer, then every constraint is applied
(:func:`bnlab.nn.apply_constraints`), as Keras does after ``optimizer.apply``.

Nothing here synchronises with the host: the returned values are device tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from bnlab.nn import apply_constraints, regularization_loss
from bnlab.train.losses import data_loss as _data_loss
from bnlab.train.losses import num_correct


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    *,
    loss_epsilon: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward in training mode, backward, optimizer step, constraints.

    The model must already be in training mode (``model.train()``); ``fit`` sets it once
    per epoch rather than per step.

    Returns ``(loss, data_loss, reg_loss, correct)``, detached device tensors: the total
    loss, its two parts (nats per sample, batch mean) and the number of correctly
    classified samples of the batch (in training mode, i.e. with batch statistics).
    """
    logits = model(xb)
    data = _data_loss(logits, yb, sample_weight, loss_epsilon)
    reg = regularization_loss(model)
    total = data + reg
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    apply_constraints(model)
    with torch.no_grad():
        correct = num_correct(logits.detach(), yb)
    return total.detach(), data.detach(), reg.detach(), correct
