"""Keras's Adam, SGD and RMSprop updates as functions of lists of tensors, written once.

:class:`~bnlab.train.optimizers.KerasAdam` & co. call them with every parameter of a group
and a Python-float learning rate; the stacked engine's optimizer
(:class:`~bnlab.train.stacked.StackedOptimizer`) calls them with one flat buffer holding every
run's parameters and a per-element learning-rate tensor (each run its own rate). The
operations and their order are Keras 3's torch backend (``keras/src/backend/torch/
optimizers``), so both callers step through the same floating-point arithmetic.

A learning rate ``lr`` is a float or a list of tensors (one per parameter, broadcastable).
``x + lr * g`` with a float is one fused ``add(alpha=...)`` as Keras writes it; with tensors
it is ``x + (g * lr)``, which rounds the same on CPU (the stacked parity tests check it).
"""

from __future__ import annotations

import torch

Tensors = list[torch.Tensor]
Rate = float | Tensors


def _add_scaled_(xs: Tensors, ys: Tensors, scale: Rate) -> None:
    """``xs += scale * ys`` in place."""
    if isinstance(scale, (int, float)):
        torch._foreach_add_(xs, ys, alpha=scale)
    else:
        torch._foreach_add_(xs, torch._foreach_mul(ys, scale))


def _negative(lr: Rate) -> Rate:
    return -lr if isinstance(lr, (int, float)) else torch._foreach_neg(lr)


def adam_update(
    params: Tensors,
    grads: Tensors,
    ms: Tensors,
    vs: Tensors,
    vhats: Tensors | None,
    *,
    alpha: Rate,
    beta_1: float,
    beta_2: float,
    epsilon: float,
) -> None:
    """One Adam step: ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)`` (the caller's,
    rounded as Keras rounds it); ``vhats`` for amsgrad, else ``None``."""
    torch._foreach_mul_(ms, beta_1)
    torch._foreach_add_(ms, grads, alpha=1 - beta_1)
    torch._foreach_mul_(vs, beta_2)
    torch._foreach_add_(vs, torch._foreach_mul(grads, grads), alpha=1 - beta_2)
    if vhats is not None:
        torch._foreach_maximum_(vhats, vs)
        vs = vhats
    torch._foreach_add_(
        params,
        torch._foreach_div(
            torch._foreach_mul(ms, alpha),
            torch._foreach_add(torch._foreach_sqrt(vs), epsilon),
        ),
        alpha=-1,
    )


def sgd_update(
    params: Tensors,
    grads: Tensors,
    bufs: Tensors | None,
    *,
    lr: Rate,
    momentum: float,
    nesterov: bool,
    neg_lr: Rate | None = None,
) -> None:
    """One SGD step: ``m = momentum * m - lr * g; w += m`` (nesterov: ``w += momentum * m -
    lr * g``), or ``w -= lr * g`` without momentum (``bufs`` then ``None``). ``neg_lr``:
    ``-lr`` precomputed by a caller that steps often with tensor rates."""
    neg = _negative(lr) if neg_lr is None else neg_lr
    if momentum == 0:
        _add_scaled_(params, grads, neg)
        return
    torch._foreach_mul_(bufs, momentum)
    _add_scaled_(bufs, grads, neg)
    if nesterov:
        _add_scaled_(params, grads, neg)
        torch._foreach_add_(params, bufs, alpha=momentum)
    else:
        torch._foreach_add_(params, bufs)


def rmsprop_update(
    params: Tensors,
    grads: Tensors,
    vs: Tensors,
    mgs: Tensors | None,
    bufs: Tensors | None,
    *,
    lr: Rate,
    rho: float,
    momentum: float,
    epsilon: float,
) -> None:
    """One RMSprop step, ``epsilon`` inside the square root; ``mgs`` when centered, ``bufs``
    with momentum (else ``None``)."""
    torch._foreach_mul_(vs, rho)
    torch._foreach_add_(vs, torch._foreach_mul(grads, grads), alpha=1 - rho)
    denominators = torch._foreach_add(vs, epsilon)
    if mgs is not None:
        torch._foreach_mul_(mgs, rho)
        torch._foreach_add_(mgs, grads, alpha=1 - rho)
        torch._foreach_add_(denominators, torch._foreach_mul(mgs, mgs), alpha=-1)
    torch._foreach_sqrt_(denominators)
    increments = torch._foreach_div(torch._foreach_mul(grads, lr), denominators)
    if momentum > 0:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, increments)
        torch._foreach_add_(params, bufs, alpha=-1)
    else:
        torch._foreach_add_(params, increments, alpha=-1)


__all__ = ["adam_update", "rmsprop_update", "sgd_update"]
