"""Keras's Adam / SGD / RMSprop on one flat buffer holding every stacked parameter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bnlab._validation import check_choice
from bnlab.errors import ConfigError
from bnlab.train.options import optimizer_settings
from bnlab.train.stacked.model import StackedModel
from bnlab.train.update_rules import adam_update, rmsprop_update, sgd_update


def _flat_view(buffer: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``buffer`` (1-D) viewed with ``like``'s shape and memory layout.

    Channels-last is recognised by the exact strides: a weight with one input channel is
    contiguous in both layouts, but oneDNN picks its kernel from the strides it sees.
    """
    if like.dim() == 4:
        n, c, h, w = like.shape
        if like.stride() == (h * w * c, 1, w * c, c):
            return buffer.view(n, h, w, c).permute(0, 3, 1, 2)
    if like.is_contiguous():
        return buffer.view(like.shape)
    raise ConfigError(f"parameter: layout with strides {like.stride()} cannot be flattened")


class StackedOptimizer:
    """Keras's Adam / SGD / RMSprop on every trainable parameter of a :class:`StackedModel`.

    The parameters become views into one flat buffer (run-major within each parameter, since
    every stacked parameter has the runs along dimension 0) and their gradients views into a
    flat gradient buffer, so each update is a few element-wise operations on the whole stack.
    The update is :mod:`bnlab.train.update_rules`, the functions
    :class:`bnlab.train.optimizers.KerasAdam`, ``KerasSGD`` and ``KerasRMSprop`` call;
    ``lr`` is a per-run vector.
    """

    def __init__(self, name: str, model: StackedModel, lr: Sequence[float], **options: Any):
        self.name = check_choice("optimizer", name, ("adam", "sgd", "rmsprop"))
        self.options = optimizer_settings(name, options)
        self.k = model.k
        self.params = [p for p in model.parameters() if p.requires_grad]
        first = self.params[0]
        total = sum(p.numel() for p in self.params)
        device, dtype = first.device, first.dtype
        self.flat = torch.empty(total, device=device, dtype=dtype)
        self.grad = torch.zeros(total, device=device, dtype=dtype)
        run_of = torch.empty(total, dtype=torch.long)
        offset = 0
        for p in self.params:
            n = p.numel()
            view = _flat_view(self.flat[offset : offset + n], p)
            view.copy_(p.detach())
            p.data = view
            p.grad = _flat_view(self.grad[offset : offset + n], p)
            run_of[offset : offset + n] = torch.arange(self.k).repeat_interleave(n // self.k)
            offset += n
        lr_runs = torch.tensor([float(v) for v in lr], dtype=dtype)
        if lr_runs.numel() != self.k:
            raise ConfigError(f"lr: {len(lr)} learning rates for {self.k} runs")
        self.lr_runs = lr_runs.to(device)
        self.lr = self.lr_runs[run_of.to(device)]
        self.neg_lr = -self.lr
        self.t = torch.zeros((), device=device, dtype=dtype)
        # Device scalars made once: a torch.tensor(...) per step would be a blocking
        # host-to-device copy on CUDA, and is illegal inside a CUDA-graph capture.
        self.beta_1 = self.beta_2 = None
        if name == "adam":
            self.beta_1 = torch.tensor(self.options["beta_1"], dtype=dtype, device=device)
            self.beta_2 = torch.tensor(self.options["beta_2"], dtype=dtype, device=device)
        self.state: dict[str, torch.Tensor] = {}
        zeros = lambda: torch.zeros_like(self.flat)  # noqa: E731
        o = self.options
        if name == "adam":
            self.state.update(m=zeros(), v=zeros())
            if o["amsgrad"]:
                self.state["v_hat"] = zeros()
        elif name == "sgd" and o["momentum"] > 0:
            self.state["m"] = zeros()
        elif name == "rmsprop":
            self.state["v"] = zeros()
            if o["centered"]:
                self.state["mg"] = zeros()
            if o["momentum"] > 0:
                self.state["m"] = zeros()

    def zero_grad(self) -> None:
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        getattr(self, f"_{self.name}")()

    def _adam(self) -> None:
        o, s = self.options, self.state
        b1, b2, w = o["beta_1"], o["beta_2"], self.flat
        self.t.add_(1)
        b1_pow = torch.pow(self.beta_1, self.t)
        b2_pow = torch.pow(self.beta_2, self.t)
        alpha = self.lr * torch.sqrt(1 - b2_pow) / (1 - b1_pow)
        vhats = [s["v_hat"]] if o["amsgrad"] else None
        adam_update(
            [w],
            [self.grad],
            [s["m"]],
            [s["v"]],
            vhats,
            alpha=[alpha],
            beta_1=b1,
            beta_2=b2,
            epsilon=o["epsilon"],
        )

    def _sgd(self) -> None:
        o = self.options
        self.t.add_(1)
        bufs = [self.state["m"]] if o["momentum"] > 0 else None
        sgd_update(
            [self.flat],
            [self.grad],
            bufs,
            lr=[self.lr],
            momentum=o["momentum"],
            nesterov=o["nesterov"],
            neg_lr=[self.neg_lr],
        )

    def _rmsprop(self) -> None:
        o, s = self.options, self.state
        self.t.add_(1)
        mgs = [s["mg"]] if o["centered"] else None
        bufs = [s["m"]] if o["momentum"] > 0 else None
        rmsprop_update(
            [self.flat],
            [self.grad],
            [s["v"]],
            mgs,
            bufs,
            lr=[self.lr],
            rho=o["rho"],
            momentum=o["momentum"],
            epsilon=o["epsilon"],
        )

    def mutable_state(self) -> list[torch.Tensor]:
        """Every tensor a step changes (for snapshots around CUDA-graph warm-up)."""
        return [self.flat, self.grad, self.t, *self.state.values()]

    def per_run_state(self) -> list[dict[str, torch.Tensor]]:
        """Each run's slice of the optimizer state (flat, run-major per parameter)."""
        out: list[dict[str, torch.Tensor]] = [{} for _ in range(self.k)]
        for key, buf in self.state.items():
            pieces = self._split(buf)
            for k in range(self.k):
                out[k][key] = torch.cat([piece[k] for piece in pieces])
        return out

    def load_per_run_state(self, states: Sequence[dict[str, torch.Tensor]], t: torch.Tensor):
        """Inverse of :meth:`per_run_state` (for a re-stacked subset of runs)."""
        self.t.copy_(t)
        sizes = [p.numel() // self.k for p in self.params]
        for key, buf in self.state.items():
            per_run = [torch.split(s[key], sizes) for s in states]
            pieces = [torch.stack([r[i] for r in per_run]).flatten() for i in range(len(sizes))]
            buf.copy_(torch.cat(pieces))

    def _split(self, buf: torch.Tensor) -> list[torch.Tensor]:
        pieces, offset = [], 0
        for p in self.params:
            n = p.numel()
            pieces.append(buf[offset : offset + n].view(self.k, -1))
            offset += n
        return pieces
