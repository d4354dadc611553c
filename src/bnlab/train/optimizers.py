"""Keras's optimizers as ``torch.optim.Optimizer`` subclasses, update for update.

PyTorch's built-in optimizers do not compute what Keras computes:

* ``torch.optim.Adam`` adds ``eps`` to ``sqrt(v_hat)`` (bias-corrected second moment);
  Keras adds ``epsilon`` to ``sqrt(v)`` *after* folding both bias corrections into the
  step size ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``. With Keras's
  ``epsilon=1e-7`` the two differ most in the first steps and for tiny gradients.
* ``torch.optim.SGD`` keeps ``b = mom * b + g`` and steps ``w -= lr * b``; Keras keeps
  ``m = mom * m - lr * g`` and steps ``w += m``. They coincide only while ``lr`` is constant.
* ``torch.optim.RMSprop`` adds ``eps`` outside the square root; Keras inside it.

The classes below follow Keras 3's torch backend (``keras/src/backend/torch/optimizers``)
operation by operation, with ``torch._foreach_*`` like Keras (the arithmetic is
:mod:`bnlab.train.update_rules`, shared with the stacked engine), so a bnlab run and a Keras
run step through the same floating-point arithmetic. Learning rates are plain floats
(constant schedules). Every argument name and default is Keras's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from bnlab.errors import ConfigError
from bnlab.train.options import check_option, optimizer_settings, resolve_lr
from bnlab.train.update_rules import adam_update, rmsprop_update, sgd_update


def _adam_alpha(lr: float, beta_1: float, beta_2: float, step: int, dtype: torch.dtype) -> float:
    """Keras's ``lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``, rounded as Keras rounds it.

    Keras's torch backend casts lr, the betas and the step count to the variables' dtype and
    computes with torch operations. The same operations on CPU scalars give the same bits
    without touching the training device (a device tensor would synchronise a GPU every
    step). NumPy would not do: ``np.power`` and ``torch.pow`` differ in the last bit of
    ``0.9**4`` in float32.
    """
    t = torch.tensor(step, dtype=dtype)
    b1_pow = torch.pow(torch.tensor(beta_1, dtype=dtype), t)
    b2_pow = torch.pow(torch.tensor(beta_2, dtype=dtype), t)
    return float(torch.tensor(lr, dtype=dtype) * torch.sqrt(1 - b2_pow) / (1 - b1_pow))


def _defaults(name: str, lr: float, options: dict[str, Any]) -> dict[str, Any]:
    """The param-group defaults of a Keras optimizer: ``lr`` and its options, checked against
    the one declaration of their ranges (:data:`bnlab.train.options.OPTIMIZER_PARAMS`)."""
    settings = optimizer_settings(name, options)
    out = {"lr": float(check_option("lr", lr))}
    for key, value in settings.items():
        out[key] = value if isinstance(value, bool) else float(value)
    return out


def _grads_and_params(group: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    params = [p for p in group["params"] if p.grad is not None]
    return params, [p.grad for p in params]


class _KerasOptimizer(torch.optim.Optimizer):
    """Keeps Keras's optimizer-wide step count ``iterations`` and saves it with the state."""

    iterations: int = 0

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["iterations"] = self.iterations
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.iterations = int(state_dict.pop("iterations", 0))
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.iterations += 1
        for group in self.param_groups:
            params, grads = _grads_and_params(group)
            if params:
                self._update(group, params, grads)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Apply one step to the parameters of ``group`` that have gradients."""
        raise NotImplementedError

    def _slots(self, params: list[torch.Tensor], *names: str) -> list[list[torch.Tensor]]:
        """Per slot name, every parameter's state tensor of that name (zeros at first use)."""
        for p in params:
            state = self.state[p]
            for name in names:
                if name not in state:
                    state[name] = torch.zeros_like(p)
        return [[self.state[p][name] for p in params] for name in names]


class KerasAdam(_KerasOptimizer):
    """Adam exactly as Keras 3 computes it.

    Per step ``t`` (1-based, counted per optimizer like Keras's ``iterations``)::

        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        w = w - alpha * m / (sqrt(v) + epsilon)

    ``epsilon`` (default 1e-7, Keras) is added to ``sqrt(v)``, not to the bias-corrected
    ``sqrt(v_hat)`` as in ``torch.optim.Adam``. ``amsgrad`` keeps ``v_hat = max(v_hat, v)``.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
    ):
        options = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad)
        super().__init__(params, _defaults("adam", lr, options))

    def _update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        b1, b2 = group["beta_1"], group["beta_2"]
        ms, vs = self._slots(params, "m", "v")
        vhats = self._slots(params, "v_hat")[0] if group["amsgrad"] else None
        alpha = _adam_alpha(group["lr"], b1, b2, self.iterations, params[0].dtype)
        adam_update(
            params,
            grads,
            ms,
            vs,
            vhats,
            alpha=alpha,
            beta_1=b1,
            beta_2=b2,
            epsilon=group["epsilon"],
        )


class KerasSGD(_KerasOptimizer):
    """SGD exactly as Keras computes it.

    With ``momentum > 0``: ``m = momentum * m - lr * g`` then ``w = w + m`` (or, with
    ``nesterov``, ``w = w + momentum * m - lr * g``). The velocity starts at zero. Without
    momentum: ``w = w - lr * g``. Keras's default ``lr`` is 0.01.
    """

    def __init__(
        self, params: Iterable, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False
    ):
        options = dict(momentum=momentum, nesterov=nesterov)
        super().__init__(params, _defaults("sgd", lr, options))

    def _update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        mom = group["momentum"]
        bufs = self._slots(params, "m")[0] if mom > 0 else None
        sgd_update(params, grads, bufs, lr=group["lr"], momentum=mom, nesterov=group["nesterov"])


class KerasRMSprop(_KerasOptimizer):
    """RMSprop exactly as Keras computes it (``epsilon`` inside the square root).

    ::

        v = rho * v + (1 - rho) * g**2
        denom = sqrt(v + epsilon)                # centered: sqrt(v - mg**2 + epsilon)
        increment = lr * g / denom
        w = w - increment                         # momentum: b = momentum*b + increment; w -= b

    Keras defaults: ``lr=1e-3, rho=0.9, momentum=0, epsilon=1e-7``.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
    ):
        options = dict(rho=rho, momentum=momentum, epsilon=epsilon, centered=centered)
        super().__init__(params, _defaults("rmsprop", lr, options))

    def _update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        mom = group["momentum"]
        (vs,) = self._slots(params, "v")
        mgs = self._slots(params, "mg")[0] if group["centered"] else None
        bufs = self._slots(params, "m")[0] if mom > 0 else None
        rmsprop_update(
            params,
            grads,
            vs,
            mgs,
            bufs,
            lr=group["lr"],
            rho=group["rho"],
            momentum=mom,
            epsilon=group["epsilon"],
        )


_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "adam": KerasAdam,
    "sgd": KerasSGD,
    "rmsprop": KerasRMSprop,
}

OptimizerSpec = str | Callable[..., torch.optim.Optimizer]


def optimizer_name(optimizer: OptimizerSpec) -> str:
    """A printable name: the Keras name, or the factory's ``__name__``."""
    if isinstance(optimizer, str):
        return optimizer.lower()
    return getattr(optimizer, "__name__", type(optimizer).__name__)


def make_optimizer(
    name: OptimizerSpec, params: Iterable, lr: float | None = None, **options: Any
) -> torch.optim.Optimizer:
    """Build an optimizer with Keras's update rule and defaults.

    ``name`` is ``"adam"``, ``"sgd"`` or ``"rmsprop"`` (case-insensitive), built with Keras's
    default learning rate when ``lr`` is ``None`` and Keras's option names (``beta_1``,
    ``momentum``, ``rho``, ...). A callable is taken as a factory ``f(params, **kw)`` (e.g.
    ``torch.optim.AdamW``) and receives ``lr`` only when given; that is how a PyTorch user
    opts out of Keras's arithmetic.
    """
    if not isinstance(name, str):
        if not callable(name):
            raise ConfigError(
                f"optimizer: {name!r} is not one of 'adam', 'sgd', 'rmsprop' or an "
                "optimizer factory (a callable taking the parameters)"
            )
        kwargs = dict(options)
        if lr is not None:
            kwargs["lr"] = float(check_option("lr", lr))
        return name(params, **kwargs)
    key = check_option("optimizer", name)
    optimizer_settings(key, options)
    return _CLASSES[key](params, lr=resolve_lr(key, lr), **options)
