"""Minimal, seeded training loops for the cases (plain PyTorch; Keras's own ``fit``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.nn import regularization_loss


def train_torch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
    regularized: bool = False,
    shift=None,
) -> nn.Module:
    """Adam on shuffled mini-batches (an incomplete last batch is dropped); returns ``model.eval()``.

    ``shift(step, xb)`` may alter each batch (used to build non-i.i.d. batches); the loss
    adds ``bnlab.nn.regularization_loss(model)`` (Keras-style L2) when ``regularized``.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0] - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x[idx], y[idx]
            if shift is not None:
                xb = shift(step, xb)
            out = model(xb)
            if out.shape[-1] == 1:
                loss = F.binary_cross_entropy_with_logits(out.reshape(-1), yb.float())
            else:
                loss = F.cross_entropy(out, yb)
            if regularized:
                loss = loss + regularization_loss(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return model.eval()


def train_keras(
    model, x, y, *, epochs: int, batch_size: int, lr: float = 1e-3, binary: bool = False
):
    """``compile`` with Adam and sparse/binary cross-entropy, then ``fit`` quietly."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return model
