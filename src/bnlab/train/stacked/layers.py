"""The stacked layers other than batch normalization: convolution, dense, dropout, flatten,
their common base and the per-run L1/L2 penalty (layout in :mod:`bnlab.train.stacked`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnlab.nn.layers import uneven_same_padding


class _StackedLayer(nn.Module):
    """Common part: ``k`` runs, the per-run input shape (without batch) from a dry forward."""

    def __init__(self, k: int, in_shape: tuple[int, ...]):
        super().__init__()
        self.k = k
        self.in_shape = tuple(in_shape)

    def is_shared(self, x: torch.Tensor) -> bool:
        """True when ``x`` is one input for every run (``C`` channels instead of ``K*C``)."""
        return self.k > 1 and x.shape[1] == self.in_shape[0]

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """A shared input repeated for each run: ``(N, C, ...)`` -> ``(N, K*C, ...)``."""
        if not self.is_shared(x):
            return x
        return x.repeat(1, self.k, *([1] * (x.dim() - 2)))

    def regularization(self) -> torch.Tensor | None:
        """Per-run regularization loss, shape ``(K,)``, or ``None``."""
        return None

    def unstack_into(self, modules: Sequence[nn.Module]) -> None:
        """Copy run ``k``'s tensors into ``modules[k]``."""


class _Penalty(nn.Module):
    """Per-run Keras L1/L2 strengths of one stacked weight (a missing regularizer is 0).

    ``forward(w)`` gives ``l1_k * sum|w_k| + l2_k * sum(w_k**2)`` per run, shape ``(K,)``,
    for ``w`` stacked along dimension 0. Which terms exist is fixed at construction, so a
    step never asks the device whether a strength is zero.
    """

    def __init__(self, regs: Sequence, device):
        super().__init__()
        self.k = len(regs)
        l1 = [0.0 if r is None else float(r.l1) for r in regs]
        l2 = [0.0 if r is None else float(r.l2) for r in regs]
        self.use_l1, self.use_l2 = any(l1), any(l2)
        self.register_buffer("l1", torch.tensor(l1, dtype=torch.float32, device=device))
        self.register_buffer("l2", torch.tensor(l2, dtype=torch.float32, device=device))

    @staticmethod
    def build(regs: Sequence, device) -> _Penalty | None:
        return None if all(r is None for r in regs) else _Penalty(regs, device)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        runs = w.unflatten(0, (self.k, -1)).flatten(1)
        loss = torch.zeros(self.k, dtype=w.dtype, device=w.device)
        if self.use_l1:
            loss = loss + self.l1 * runs.abs().sum(1)
        if self.use_l2:
            loss = loss + self.l2 * runs.square().sum(1)
        return loss


class StackedConv2d(_StackedLayer):
    """``K`` convolutions; weights ``(K*O, C/groups, kh, kw)``.

    ``kernels="stacked"``: one grouped convolution (``groups = K * groups``) for the whole
    stack. ``"per_run"``: one ordinary convolution per run on that run's channels, the very
    kernel :func:`bnlab.train.fit` runs, so the run's arithmetic is bit-for-bit its own
    (the weights are split with ``torch.split``, whose backward is one ``cat``).
    """

    def __init__(self, convs: Sequence[nn.Conv2d], in_shape, kernels: str = "stacked"):
        super().__init__(len(convs), in_shape)
        c = convs[0]
        self.stride, self.padding, self.dilation, self.groups = (
            c.stride,
            c.padding,
            c.dilation,
            c.groups,
        )
        # "same" with an even kernel: pad the input once, then convolve unpadded (torch would
        # copy a padded input inside every convolution, warning each time).
        self.pre_pad = uneven_same_padding(c)
        if self.pre_pad is not None:
            self.padding = 0
        self.kernels = kernels
        self.out_channels = c.out_channels
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in convs]).clone())
        self.bias = (
            nn.Parameter(torch.cat([m.bias.detach() for m in convs]).clone())
            if c.bias is not None
            else None
        )
        self.penalty = _Penalty.build(
            [getattr(m, "kernel_regularizer", None) for m in convs], c.weight.device
        )

    def _conv(self, x, weight, bias, groups):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        if self.kernels == "per_run" and self.k > 1:
            weights = self.weight.split(self.out_channels)
            biases = [None] * self.k if self.bias is None else self.bias.split(self.out_channels)
            inputs = [x] * self.k if self.is_shared(x) else x.split(self.in_shape[0], dim=1)
            # Each run's slice in the stack's layout: the input fit's convolution gets.
            layout = (
                torch.channels_last
                if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                else torch.contiguous_format
            )
            outs = [
                self._conv(xi.contiguous(memory_format=layout), w, b, self.groups)
                for xi, w, b in zip(inputs, weights, biases, strict=True)
            ]
            return torch.cat(outs, dim=1)
        if self.is_shared(x) and self.groups == 1:
            # Every run sees the same input: one ordinary convolution with K*O filters.
            return self._conv(x, self.weight, self.bias, 1)
        return self._conv(self.expand(x), self.weight, self.bias, self.k * self.groups)

    def regularization(self):
        return None if self.penalty is None else self.penalty(self.weight)

    @torch.no_grad()
    def unstack_into(self, modules):
        for m, w in zip(modules, self.weight.unflatten(0, (self.k, -1)), strict=True):
            m.weight.copy_(w)
        if self.bias is not None:
            for m, b in zip(modules, self.bias.unflatten(0, (self.k, -1)), strict=True):
                m.bias.copy_(b)


class StackedLinear(_StackedLayer):
    """``K`` dense layers; weights stored ``(K*O, F)``.

    ``kernels="stacked"``: one batched matmul ``(K, B, F) @ (K, F, O)``. ``"per_run"``: one
    ``F.linear`` per run, the kernel :func:`bnlab.train.fit` runs.
    """

    def __init__(self, linears: Sequence[nn.Linear], in_shape, kernels: str = "stacked"):
        super().__init__(len(linears), in_shape)
        d = linears[0]
        self.in_features, self.out_features = d.in_features, d.out_features
        self.kernels = kernels
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in linears]).clone())
        self.bias = (
            nn.Parameter(torch.cat([m.bias.detach() for m in linears]).clone())
            if d.bias is not None
            else None
        )
        self.penalty = _Penalty.build(
            [getattr(m, "kernel_regularizer", None) for m in linears], d.weight.device
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k == 1 or (self.is_shared(x) and self.kernels == "stacked"):
            return F.linear(x, self.weight, self.bias)
        if self.kernels == "per_run":
            weights = self.weight.split(self.out_features)
            biases = [None] * self.k if self.bias is None else self.bias.split(self.out_features)
            inputs = [x] * self.k if self.is_shared(x) else x.split(self.in_features, dim=1)
            outs = [
                F.linear(xi.contiguous(), w, b)
                for xi, w, b in zip(inputs, weights, biases, strict=True)
            ]
            return torch.cat(outs, dim=1)
        b = x.shape[0]
        xs = x.view(b, self.k, self.in_features).transpose(0, 1)  # (K, B, F)
        ws = self.weight.view(self.k, self.out_features, self.in_features).transpose(1, 2)
        if self.bias is None:
            out = torch.bmm(xs, ws)
        else:
            out = torch.baddbmm(self.bias.view(self.k, 1, self.out_features), xs, ws)
        return out.transpose(0, 1).reshape(b, self.k * self.out_features)

    regularization = StackedConv2d.regularization
    unstack_into = StackedConv2d.unstack_into


class StackedDropout(_StackedLayer):
    """Dropout with a rate and a mask per run.

    With ``generators`` (one per run) run ``k``'s mask is drawn exactly as ``torch``'s CPU
    dropout draws it for that run alone: ``bernoulli_(1 - p)`` on a ``(B, *shape)`` tensor
    from its generator, divided by ``1 - p``; a rate of 0 draws nothing. Without, one mask
    for the stack is drawn from the default generator of the device, in float32 whatever
    the input's dtype (then the product is cast back to it).
    """

    def __init__(self, drops: Sequence[nn.Dropout], in_shape, generators=None):
        super().__init__(len(drops), in_shape)
        self.rates = [float(d.p) for d in drops]
        self.generators = generators
        c = in_shape[0]
        keep = torch.tensor([1.0 - p for p in self.rates], dtype=torch.float64)
        self.register_buffer("keep_prob", keep.repeat_interleave(c).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not any(self.rates):
            return x
        x = self.expand(x)
        b = x.shape[0]
        if self.generators is not None:
            noise = []
            for p, g in zip(self.rates, self.generators, strict=True):
                shape = (b, *self.in_shape)
                if p == 0:
                    noise.append(torch.ones(shape, dtype=x.dtype, device=x.device))
                else:
                    draw = torch.empty(shape, dtype=x.dtype, device=x.device)
                    noise.append(draw.bernoulli_(1 - p, generator=g).div_(1 - p))
            return x * torch.cat(noise, dim=1)
        # The mask and its scale in float32: in bfloat16 a keep probability of 0.8 would
        # round to 0.80078 (and the scale with it).
        keep = self.keep_prob.view(1, -1, *([1] * (x.dim() - 2)))
        noise = torch.empty_like(x, dtype=keep.dtype)
        noise.bernoulli_(keep.expand_as(noise)).div_(keep)
        return (x * noise).to(x.dtype)


class StackedFlatten(_StackedLayer):
    """Flatten each run's ``(C, H, W)`` block, in Keras's ``(H, W, C)`` order or PyTorch's."""

    def __init__(self, k: int, in_shape, kind: str):
        super().__init__(k, in_shape)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return x
        if self.is_shared(x):
            return x.permute(0, 2, 3, 1).flatten(1) if self.kind == "hwc" else x.flatten(1)
        if self.kind == "chw":
            return x.reshape(x.shape[0], -1)
        return x.unflatten(1, (self.k, -1)).permute(0, 1, 3, 4, 2).reshape(x.shape[0], -1)
