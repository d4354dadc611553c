"""The stacked engine: K runs of one architecture trained at once, as one model.

A study trains many copies of one small network (seeds x variants). Trained one by one, each
step of each run is a handful of tiny kernels and a lot of Python; on a GPU the work is
launch-bound, not compute-bound. :func:`fit_stacked` trains ``K`` runs as *one* model whose
every layer holds the ``K`` runs' tensors side by side, so one kernel does the work of ``K``.

Each run stays the run it would be alone (the parity tests check it): its own initial
weights (the caller builds each model from its seed, exactly as the sequential runner does,
and the engine stacks them), its own data order (:func:`bnlab.train.batching.permutation` with
its seed, gathered on the device by index), its own BN statistics, its own dropout masks
(optionally from its own generator, the stream ``fit`` uses), its own optimizer state, learning
rate, momentum, L2 strength, and its own :class:`~bnlab.train.History` with every metric
``fit`` records, defined identically.

How the runs are stacked
------------------------
Activations of a stack are carried *channel-stacked*: ``(B, K*C, H, W)`` for images and
``(B, K*F)`` for features, run ``k`` owning channels ``[k*C, (k+1)*C)``; row ``b`` of run ``k``
is sample ``b`` of *that run's* batch. Then

* a convolution is one grouped convolution (``groups = K * groups``), weights ``(K*O, C, kh, kw)``;
* a dense layer is one batched matmul over ``(K, B, F) @ (K, F, O)``;
* batch normalization is per-channel statistics over ``K*C`` channels: each run's statistics
  come from its own batch only; momentum and epsilon are per-run vectors;
* ReLU, max/average pooling and zero padding act per channel, so the unmodified PyTorch module
  runs on the stacked tensor;
* Flatten reorders per run (Keras's ``(H, W, C)`` order of :class:`bnlab.models.layers.Flatten`,
  or PyTorch's ``(C, H, W)``);
* dropout draws a mask per run.

Evaluation feeds the *same* samples to every run: the input is shared (``C`` channels, not
``K*C``) until the first stacked layer, which expands it; a first convolution or dense layer
reads the shared input directly with its ``K*O`` output channels (no ``K``-fold copy).

Why not ``torch.func.vmap``? ``vmap`` over ``functional_call`` with
``torch.func.stack_module_state`` does train a stack, and it does update BN buffers in place
when they are stacked (batched) tensors. But bnlab's :class:`~bnlab.nn.BatchNorm` keeps
``momentum``/``epsilon`` as Python floats of one module, so a stack of runs that differ in
momentum (the question of seeds 000/001) cannot share it; per-run dropout generators cannot
be expressed (``randomness="different"`` draws one stream); and the layout (channels-last,
shared evaluation input) is not ours to choose. The hand-written stacked layers above are few,
since the presets use few layer types; anything else makes :func:`stack_signature` raise
:class:`StackingError` and the study runs it with the sequential engine.

Optimizers
----------
Keras's Adam, SGD and RMSprop (:mod:`bnlab.train.optimizers`) are element-wise, so they run on
one flat buffer holding every stacked parameter (each parameter is a view into it, its
gradient a view into a flat gradient buffer) with the same operations in the same order as the
per-run optimizer: identical arithmetic per run, per-run learning rates as a vector. The step
count is a device tensor (no host sync, capturable in a CUDA graph).

Divergence
----------
A run whose epoch loss (or validation loss) is NaN/inf is recorded exactly as ``fit`` records
it (that epoch, then ``diverged_at_epoch``) and is then dropped from the stack: its final
weights go back to its model, the remaining runs are re-stacked and go on.

Devices and precision
---------------------
Everything stays on the device: the data are moved once; per epoch one ``(K, n)`` index tensor
goes to the device; metrics are reduced there and read once per epoch (the NaN check too).
On CUDA: channels-last activations and weights, ``precision="tf32"`` (TF32 matmuls and
convolutions) or ``"bf16"`` (autocast; BN statistics and normalisation stay float32, and so do
the parameters, the optimizer and the loss), and the fixed-shape training step captured in a
CUDA graph per batch size (``cuda_graphs``). On CPU, ``precision="bf16"`` autocasts as well.

Random streams
--------------
``dropout_rng="per_run"`` (the CPU default) gives run ``k`` a ``torch.Generator`` seeded like
``fit`` seeds its dropout stream, drawing the same masks in the same order as ``fit`` does on
CPU: a run trained stacked then equals the same run trained alone, dropout included.
``"shared"`` (the CUDA default; required for CUDA graphs) draws one mask tensor for the whole
stack from the device's default generator: masks are independent across runs, but a run's
masks depend on the stack it is in. Augmentation uses one generator per run, seeded like
``fit``'s.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bnlab._validation import check_choice, check_options, check_positive_int
from bnlab.errors import ConfigError, DataError
from bnlab.nn import BatchNorm
from bnlab.nn.layers import uneven_same_padding
from bnlab.nn.regularizers import L1L2
from bnlab.train.batching import batch_sizes, permutation
from bnlab.train.class_weight import describe, resolve_class_weight
from bnlab.train.evaluation import epoch_metrics, eval_batch_size
from bnlab.train.fit import resolve_device
from bnlab.train.history import History
from bnlab.train.layout import model_layout, to_layout, wants_channels_last
from bnlab.train.losses import per_sample_loss, predictions
from bnlab.train.optimizers import _OPTIONS, DEFAULT_LR, optimizer_name, resolve_lr
from bnlab.train.progress import EpochProgress, progress_enabled
from bnlab.train.seeding import check_seed, derive_seed
from bnlab.train.threads import training_threads

PRECISIONS = ("float32", "tf32", "bf16")
DROPOUT_RNG = ("per_run", "shared")

#: Parameter-free modules that act per channel (or element-wise): they run unchanged on a
#: channel-stacked tensor.
CHANNELWISE = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
)

RunCallback = Callable[[int, int, dict], Any]


class StackingError(ConfigError):
    """The models cannot be trained as one stack (an unsupported layer, or runs that differ
    in more than values); the message names the layer and what differs."""


# =============================================================================== signature
def _flatten_kind(module: nn.Module) -> str | None:
    """``"hwc"`` for bnlab's Keras-order Flatten, ``"chw"`` for ``torch.nn.Flatten``."""
    from bnlab.models.layers import Flatten as KerasFlatten

    if isinstance(module, KerasFlatten):
        return "hwc"
    if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
        return "chw"
    return None


def _regularizer_kind(reg, where: str) -> str:
    if reg is None or isinstance(reg, L1L2):
        return "l1l2"
    raise StackingError(
        f"engine: {where} has a custom regularizer {reg!r}; the stacked engine stacks "
        "bnlab.nn.regularizers.L1L2 (Keras L1/L2) only"
    )


def _leaf_signature(name: str, m: nn.Module) -> tuple:
    """What must be equal across the runs of a stack for leaf ``m`` (values may differ)."""
    where = f"layer {name!r} ({type(m).__name__})"
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise StackingError(f"engine: {where} uses padding_mode {m.padding_mode!r}")
        _regularizer_kind(getattr(m, "kernel_regularizer", None), where)
        return (
            "conv",
            tuple(m.weight.shape),
            m.bias is not None,
            m.stride,
            m.padding,
            m.dilation,
            m.groups,
        )
    if isinstance(m, nn.Linear):
        _regularizer_kind(getattr(m, "kernel_regularizer", None), where)
        return ("dense", tuple(m.weight.shape), m.bias is not None)
    if isinstance(m, BatchNorm):
        if m.num_features is None:
            raise StackingError(f"engine: {where} is not built yet (num_features unknown)")
        if m.renorm or m.virtual_batch_size is not None:
            raise StackingError(
                f"engine: {where} uses renorm/virtual batches; the stacked engine stacks "
                "plain batch normalization"
            )
        if m.gamma_constraint is not None or m.beta_constraint is not None:
            raise StackingError(f"engine: {where} has gamma/beta constraints")
        _regularizer_kind(m.gamma_regularizer, where)
        _regularizer_kind(m.beta_regularizer, where)
        return ("bn", m.num_features, m.center, m.scale, m.variance, m.trainable, m.axis)
    if isinstance(m, nn.Dropout):
        return ("dropout",)
    kind = _flatten_kind(m)
    if kind is not None:
        return ("flatten", kind)
    if isinstance(m, CHANNELWISE):
        if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
            raise StackingError(f"engine: {where} has parameters or buffers")
        return ("channelwise", type(m).__name__, repr(m))
    raise StackingError(
        f"engine: {where} is not a layer the stacked engine can stack (Conv2d, Linear/Dense, "
        "bnlab BatchNorm, Dropout, Flatten, ReLU-like activations, pooling, padding)"
    )


def stack_signature(model: nn.Module) -> tuple:
    """A hashable description of ``model``'s architecture, blind to values.

    Two models with equal signatures can be trained in one stack: they differ at most in
    weights, BN momentum/epsilon, dropout rates and regularizer strengths. Raises
    :class:`StackingError` for a model the stacked engine cannot train (containers other than
    ``nn.Sequential``, unsupported layers).
    """
    if not isinstance(model, nn.Sequential):
        raise StackingError(
            f"engine: model is a {type(model).__name__}; the stacked engine stacks "
            "nn.Sequential models (every bnlab preset is one)"
        )
    out = []
    for name, m in model.named_modules():
        if name == "":
            continue
        if isinstance(m, nn.Sequential):
            out.append((name, "seq"))
            continue
        if any(True for _ in m.children()):
            raise StackingError(
                f"engine: layer {name!r} ({type(m).__name__}) is a container with its own "
                "forward; the stacked engine stacks nn.Sequential trees of known layers"
            )
        out.append((name, *_leaf_signature(name, m)))
    return tuple(out)


# ================================================================================== layers
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


KERNELS = ("stacked", "per_run")


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


class StackedBatchNorm(_StackedLayer):
    """``K`` :class:`bnlab.nn.BatchNorm` layers (Keras semantics) over ``K*C`` channels.

    Each run normalises with the statistics of its own batch (its ``C`` channels) and keeps
    its own moving statistics with its own ``momentum`` (Keras convention: fraction *kept*)
    and ``epsilon``. The arithmetic is :class:`bnlab.nn.BatchNorm`'s: PyTorch's fused
    batch-norm kernel (statistics, output and backward in one pass; it yields the unbiased
    variance, the biased one is ``var * (n - 1) / n``) when every run has the same epsilon,
    the composed formula otherwise; Keras's moving-average update. Statistics and
    normalisation run in float32 even under bf16 autocast; the output has the input's dtype.
    """

    def __init__(self, bns: Sequence[BatchNorm], in_shape):
        super().__init__(len(bns), in_shape)
        b = bns[0]
        self.num_features = b.num_features
        self.trainable = b.trainable
        self.variance = b.variance
        c = self.num_features

        def cat(name):
            tensors = [getattr(m, name) for m in bns]
            return None if tensors[0] is None else torch.cat([t.detach() for t in tensors])

        gamma, beta = cat("gamma"), cat("beta")
        self.gamma = None if gamma is None else nn.Parameter(gamma.clone(), b.trainable)
        self.beta = None if beta is None else nn.Parameter(beta.clone(), b.trainable)
        self.register_buffer("moving_mean", cat("moving_mean").clone())
        self.register_buffer("moving_variance", cat("moving_variance").clone())
        self.register_buffer(
            "num_batches_tracked", torch.stack([m.num_batches_tracked.detach() for m in bns])
        )
        momenta = [float(m.momentum) for m in bns]
        epsilons = [float(m.epsilon) for m in bns]
        # Python floats when every run agrees: then the very operations of BatchNorm run.
        self.momentum = momenta[0] if len(set(momenta)) == 1 else None
        self.epsilon = epsilons[0] if len(set(epsilons)) == 1 else None

        def per_channel(values):
            return torch.tensor(values, dtype=torch.float64).repeat_interleave(c).float()

        # Otherwise per-channel float32 vectors of m, 1 - m (computed in double) and eps.
        self.register_buffer("keep", per_channel(momenta))
        self.register_buffer("take", per_channel([1.0 - m for m in momenta]))
        self.register_buffer("eps", per_channel(epsilons))
        device = b.moving_mean.device
        self.gamma_penalty = _Penalty.build([m.gamma_regularizer for m in bns], device)
        self.beta_penalty = _Penalty.build([m.beta_regularizer for m in bns], device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x)
        in_dtype = x.dtype
        xc = x.to(torch.promote_types(in_dtype, torch.float32))
        kc = self.k * self.num_features
        if xc.shape[1] != kc:
            raise ConfigError(
                f"num_features: the stacked layer has {kc} channels but the input has "
                f"{xc.shape[1]} (shape {tuple(xc.shape)})"
            )
        gamma = None if self.gamma is None else self.gamma.to(xc.dtype)
        beta = None if self.beta is None else self.beta.to(xc.dtype)
        if self.training and self.trainable:
            count = xc.numel() // kc
            if count <= 1:
                raise ConfigError(
                    f"batch: {xc.shape[0]} sample(s) give {count} value per channel in "
                    "training mode; batch statistics need at least 2"
                )
            if self.epsilon is not None:
                mean = torch.zeros(kc, dtype=xc.dtype, device=xc.device)
                var_u = torch.zeros(kc, dtype=xc.dtype, device=xc.device)
                out = F.batch_norm(xc, mean, var_u, gamma, beta, True, 1.0, self.epsilon)
                var_b = var_u * ((count - 1) / count)
            else:
                var_b, mean = torch.var_mean(xc, dim=[0, *range(2, xc.dim())], correction=0)
                out = self._normalize(xc, mean, var_b, gamma, beta)
                var_u = var_b * (count / (count - 1))
            self._update_moving(mean, var_u if self.variance == "unbiased" else var_b)
        elif self.epsilon is not None:
            out = F.batch_norm(
                xc,
                self.moving_mean.to(xc.dtype),
                self.moving_variance.to(xc.dtype),
                gamma,
                beta,
                False,
                0.0,
                self.epsilon,
            )
        else:
            out = self._normalize(xc, self.moving_mean, self.moving_variance, gamma, beta)
        return out.to(in_dtype)

    def _normalize(self, xc, mean, var, gamma, beta) -> torch.Tensor:
        shape = [1, xc.shape[1]] + [1] * (xc.dim() - 2)
        inv = torch.rsqrt(var + self.eps)
        if gamma is not None:
            inv = inv * gamma
        out = (xc - mean.reshape(shape)) * inv.reshape(shape)
        return out if beta is None else out + beta.reshape(shape)

    @torch.no_grad()
    def _update_moving(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Keras's rule, ``moving = m * moving + (1 - m) * batch`` (``m`` = fraction kept)."""
        for moving, value in ((self.moving_mean, mean), (self.moving_variance, var)):
            value = value.detach().to(moving.dtype)
            if self.momentum is not None:
                moving.mul_(self.momentum).add_(value, alpha=1.0 - self.momentum)
            else:
                moving.mul_(self.keep).add_(value * self.take)
        self.num_batches_tracked.add_(1)

    def regularization(self):
        losses = []
        if self.gamma_penalty is not None and self.gamma is not None:
            losses.append(self.gamma_penalty(self.gamma))
        if self.beta_penalty is not None and self.beta is not None:
            losses.append(self.beta_penalty(self.beta))
        return sum(losses) if losses else None

    @torch.no_grad()
    def unstack_into(self, modules):
        for name in ("gamma", "beta", "moving_mean", "moving_variance"):
            stacked = getattr(self, name)
            if stacked is None:
                continue
            for m, t in zip(modules, stacked.unflatten(0, (self.k, -1)), strict=True):
                getattr(m, name).copy_(t)
        for m, n in zip(modules, self.num_batches_tracked, strict=True):
            m.num_batches_tracked.copy_(n)


class StackedDropout(_StackedLayer):
    """Dropout with a rate and a mask per run.

    With ``generators`` (one per run) run ``k``'s mask is drawn exactly as ``torch``'s CPU
    dropout draws it for that run alone: ``bernoulli_(1 - p)`` on a ``(B, *shape)`` tensor
    from its generator, divided by ``1 - p``; a rate of 0 draws nothing. Without, one mask
    for the stack is drawn from the default generator of the device.
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
        keep = self.keep_prob.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)
        noise = torch.empty_like(x).bernoulli_(keep.expand_as(x))
        return x * noise.div_(keep)


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


# ================================================================================= model
def _leaf_shapes(model: nn.Module, sample: torch.Tensor) -> dict[str, tuple]:
    """Per-sample input shape of every leaf module, from a 2-sample inference pass."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, m in model.named_modules():
        if not any(True for _ in m.children()):
            hooks.append(
                m.register_forward_hook(
                    lambda mod, inp, out, name=name: shapes.__setitem__(
                        name, (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))
                    )
                )
            )
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
        for m, flag in flags:
            m.training = flag
    return shapes


class StackedModel(nn.Module):
    """``K`` models of one architecture as one module (see the module docstring for layout).

    ``forward(x)`` takes a channel-stacked batch ``(B, K*C, ...)`` (one batch per run) or a
    shared batch ``(N, C, ...)`` (the same samples for every run) and returns logits
    ``(B, K*O)``; :meth:`split` views them as ``(B, K, O)``.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        input_shape: tuple[int, ...],
        dropout_generators: Sequence[torch.Generator] | None = None,
        kernels: str = "stacked",
    ):
        super().__init__()
        if not models:
            raise ConfigError("models: an empty list; the stack needs at least one model")
        signatures = [stack_signature(m) for m in models]
        for i, sig in enumerate(signatures[1:], start=1):
            if sig != signatures[0]:
                diff = (
                    next((a, b) for a, b in zip(signatures[0], sig, strict=False) if a != b)
                    if len(sig) == len(signatures[0])
                    else ("layer count", len(sig))
                )
                raise StackingError(
                    f"engine: model {i} differs from model 0 in more than values: {diff}"
                )
        self.k = len(models)
        device = next(models[0].parameters()).device
        sample = torch.zeros((2, *input_shape), device=device)
        shapes = _leaf_shapes(models[0], sample)
        self.input_shape = tuple(input_shape)
        # Hooks fire in execution order: the last leaf's output is the logits.
        self.num_outputs = int(list(shapes.values())[-1][1][0])
        self.kernels = check_choice("kernels", kernels, KERNELS)
        self.body = self._stack(models, "", shapes, dropout_generators)

    def _stack(self, models, prefix, shapes, generators) -> nn.Sequential:
        out = nn.Sequential()
        for name, child in models[0].named_children():
            full = f"{prefix}{name}"
            children = [getattr(m, name) if not name.isdigit() else m[int(name)] for m in models]
            if isinstance(child, nn.Sequential):
                out.add_module(name, self._stack(children, f"{full}.", shapes, generators))
                continue
            in_shape = shapes[full][0]
            if isinstance(child, nn.Conv2d):
                layer = StackedConv2d(children, in_shape, self.kernels)
            elif isinstance(child, nn.Linear):
                layer = StackedLinear(children, in_shape, self.kernels)
            elif isinstance(child, BatchNorm):
                layer = StackedBatchNorm(children, in_shape)
            elif isinstance(child, nn.Dropout):
                layer = StackedDropout(children, in_shape, generators)
            elif _flatten_kind(child) is not None:
                layer = StackedFlatten(self.k, in_shape, _flatten_kind(child))
            else:
                layer = child  # channel-wise and parameter-free: shared as is
            out.add_module(name, layer)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def split(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K*O)`` -> ``(B, K, O)`` (a view)."""
        return logits.view(logits.shape[0], self.k, self.num_outputs)

    def stacked_layers(self) -> list[tuple[str, _StackedLayer]]:
        return [(n, m) for n, m in self.body.named_modules() if isinstance(m, _StackedLayer)]

    def regularization(self) -> torch.Tensor:
        """Per-run regularization loss ``(K,)``, summed over layers in module order like
        :func:`bnlab.nn.regularization_loss`."""
        total = None
        for _, m in self.stacked_layers():
            loss = m.regularization()
            if loss is not None:
                total = loss if total is None else total + loss
        if total is None:
            p = next(self.parameters(), None)
            return torch.zeros(self.k, device=p.device if p is not None else "cpu")
        return total

    @torch.no_grad()
    def unstack_into(self, models: Sequence[nn.Module]) -> None:
        """Write every run's weights and BN statistics back into its own model."""
        if len(models) != self.k:
            raise ConfigError(f"models: {len(models)} models for a stack of {self.k}")
        for name, layer in self.stacked_layers():
            layer.unstack_into([m.get_submodule(name) for m in models])


# ============================================================================= optimizer
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
    The operations and their order are those of :class:`bnlab.train.optimizers.KerasAdam`,
    ``KerasSGD`` and ``KerasRMSprop``; ``lr`` is a per-run vector.
    """

    def __init__(self, name: str, model: StackedModel, lr: Sequence[float], **options: Any):
        self.name = check_choice("optimizer", name, ("adam", "sgd", "rmsprop"))
        check_options(f"optimizer_options ({name})", options, _OPTIONS[name])
        defaults = {
            "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False},
            "sgd": {"momentum": 0.0, "nesterov": False},
            "rmsprop": {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
        }[name]
        self.options = {**defaults, **options}
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
        o, s, g, w = self.options, self.state, self.grad, self.flat
        b1, b2 = o["beta_1"], o["beta_2"]
        self.t.add_(1)
        b1_pow = torch.pow(torch.tensor(b1, dtype=w.dtype, device=w.device), self.t)
        b2_pow = torch.pow(torch.tensor(b2, dtype=w.dtype, device=w.device), self.t)
        alpha = self.lr * torch.sqrt(1 - b2_pow) / (1 - b1_pow)
        s["m"].mul_(b1).add_(g, alpha=1 - b1)
        s["v"].mul_(b2).add_(g * g, alpha=1 - b2)
        v = s["v"]
        if o["amsgrad"]:
            torch.maximum(s["v_hat"], v, out=s["v_hat"])
            v = s["v_hat"]
        w.add_((s["m"] * alpha) / (torch.sqrt(v) + o["epsilon"]), alpha=-1)

    def _sgd(self) -> None:
        o, g, w = self.options, self.grad, self.flat
        self.t.add_(1)
        mom = o["momentum"]
        if mom == 0:
            w.add_(g * self.neg_lr)
            return
        m = self.state["m"]
        m.mul_(mom).add_(g * self.neg_lr)
        if o["nesterov"]:
            w.add_(g * self.neg_lr)
            w.add_(m, alpha=mom)
        else:
            w.add_(m)

    def _rmsprop(self) -> None:
        o, s, g, w = self.options, self.state, self.grad, self.flat
        self.t.add_(1)
        rho, mom = o["rho"], o["momentum"]
        s["v"].mul_(rho).add_(g * g, alpha=1 - rho)
        denominator = s["v"] + o["epsilon"]
        if o["centered"]:
            s["mg"].mul_(rho).add_(g, alpha=1 - rho)
            denominator.add_(s["mg"] * s["mg"], alpha=-1)
        denominator.sqrt_()
        increment = (g * self.lr) / denominator
        if mom > 0:
            s["m"].mul_(mom).add_(increment)
            w.add_(s["m"], alpha=-1)
        else:
            w.add_(increment, alpha=-1)

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


# ============================================================================ evaluation
@torch.no_grad()
def evaluate_stacked(
    model: StackedModel,
    x: torch.Tensor,
    y: torch.Tensor,
    rows: int,
    *,
    loss_epsilon: float | None = None,
    channels_last: bool = False,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run ``(sum of per-sample losses (K,) float64, number correct (K,) int64)`` of the
    shared samples ``x`` in inference mode, in chunks of ``rows`` samples; no host sync."""
    k, device = model.k, x.device
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        for start in range(0, x.shape[0], rows):
            xb, yb = x[start : start + rows], y[start : start + rows]
            if channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast or contextlib.nullcontext():
                logits = model(xb)
            n = xb.shape[0]
            flat = logits.float().reshape(n * k, model.num_outputs)
            yy = yb.repeat_interleave(k)
            # Per run, a sum over one contiguous row, as ``evaluate_sums`` does per chunk.
            per = per_sample_loss(flat, yy, loss_epsilon).view(n, k).t().contiguous()
            loss_sum += per.sum(1, dtype=torch.float64)
            correct += (predictions(flat) == yy).view(n, k).sum(0)
    finally:
        for m, flag in flags:
            m.training = flag
    return loss_sum, correct


@torch.no_grad()
def precise_stats_stacked(
    model: StackedModel, x: torch.Tensor, rows: int, *, channels_last: bool = False
) -> list[tuple[StackedBatchNorm, torch.Tensor, torch.Tensor]]:
    """Exact population BN statistics of every run over the shared samples ``x``.

    Mirrors :func:`bnlab.nn.precise.precise_bn_stats`: the model runs in training mode with
    dropout off, each BN layer normalising with the statistics of the current chunk; per
    layer the chunk means and (biased) variances are pooled, weighted by sample count, into
    the population mean and biased variance (unbiased ``n/(n-1)`` for an ``"unbiased"``
    layer). Returns ``[(layer, mean, var)]`` without changing the model's buffers.
    """
    bns = [m for _, m in model.stacked_layers() if isinstance(m, StackedBatchNorm)]
    if not bns:
        return []
    sums = {id(b): [0, 0.0, 0.0] for b in bns}  # count, sum of n*mean, sum of n*(var+mean^2)
    originals = {}

    def capture(layer):
        def hook(mod, inp, out):
            z = mod.expand(inp[0]).float()
            dims = [0, *range(2, z.dim())]
            var, mean = torch.var_mean(z, dim=dims, correction=0)
            n = z.numel() // z.shape[1]
            acc = sums[id(mod)]
            acc[0] += n
            acc[1] = acc[1] + mean.double() * n
            acc[2] = acc[2] + (var.double() + mean.double() ** 2) * n

        return layer.register_forward_hook(hook)

    flags = [(m, m.training) for m in model.modules()]
    hooks = [capture(b) for b in bns]
    for b in bns:  # batch statistics without touching the moving averages
        originals[id(b)] = (
            b.moving_mean.clone(),
            b.moving_variance.clone(),
            b.num_batches_tracked.clone(),
        )
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, StackedDropout):
                m.training = False
        for start in range(0, x.shape[0], rows):
            xb = x[start : start + rows]
            if channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            model(xb)
    finally:
        for h in hooks:
            h.remove()
        for m, flag in flags:
            m.training = flag
        for b in bns:
            mean, var, nbt = originals[id(b)]
            b.moving_mean.copy_(mean)
            b.moving_variance.copy_(var)
            b.num_batches_tracked.copy_(nbt)
    out = []
    for b in bns:
        n, s1, s2 = sums[id(b)]
        mean = s1 / n
        var = (s2 / n - mean**2).clamp_min(0)
        if b.variance == "unbiased" and n > 1:
            var = var * (n / (n - 1))
        out.append((b, mean.float(), var.float()))
    return out


@contextlib.contextmanager
def _swapped_stats(stats) -> Iterator[None]:
    """Temporarily replace BN moving statistics with ``stats`` (from precise_stats_stacked)."""
    saved = [(b, b.moving_mean.clone(), b.moving_variance.clone()) for b, _, _ in stats]
    try:
        for b, mean, var in stats:
            b.moving_mean.copy_(mean)
            b.moving_variance.copy_(var)
        yield
    finally:
        for b, mean, var in saved:
            b.moving_mean.copy_(mean)
            b.moving_variance.copy_(var)


# ================================================================================ the loop
@dataclass
class _Config:
    """Everything one stack needs besides its models, validated once."""

    epochs: int
    batch_size: int
    optimizer: str
    optimizer_options: dict
    device: torch.device
    class_weight: Any
    precise_eval: bool
    train_eval: bool
    augment: Any
    loss_epsilon: float | None
    precision: str
    channels_last: bool
    cuda_graphs: bool
    dropout_rng: str
    kernels: str
    eval_rows: int | None
    progress: bool
    on_epoch_end: RunCallback | None
    params: dict = field(default_factory=dict)


@dataclass
class _Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    val_source: str
    weights: torch.Tensor | None


def fit_stacked(
    models: Sequence[nn.Module],
    dataset,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 32,
    optimizer: str = "adam",
    lr: float | Sequence[float | None] | None = None,
    device: str | torch.device = "cpu",
    class_weight: str | dict | None = None,
    precise_eval: bool = False,
    train_eval: bool = True,
    augment=None,
    progress: bool | None = None,
    on_epoch_end: RunCallback | None = None,
    optimizer_options: dict | None = None,
    loss_epsilon: float | None = None,
    precision: str = "float32",
    channels_last: bool | None = None,
    cuda_graphs: bool | None = None,
    dropout_rng: str | None = None,
    kernels: str | None = None,
    max_memory: int | None = None,
    chunk_size: int | None = None,
) -> list[History]:
    """Train ``models`` (one per run, same architecture) at once; one History per run.

    Every argument shared with :func:`bnlab.train.fit` means the same, per run; run ``i`` is
    ``fit(models[i], dataset, seed=seeds[i], lr=lr[i], ...)`` computed in a stack. The models
    are trained in place (their final weights and BN statistics are written back).

    Parameters beyond ``fit``'s
    ---------------------------
    seeds:
        One seed per run: its data order, dropout stream and augmentation stream (the
        initial weights are the models' own: build each inside ``bnlab.train.seeded(seed)``).
    lr:
        One learning rate for all runs, or one per run (``None`` = Keras's default).
    on_epoch_end:
        ``f(run_index, epoch, logs)`` after each epoch of each run still training.
    precision:
        ``"float32"`` (default), ``"tf32"`` (CUDA TF32 matmuls/convolutions) or ``"bf16"``
        (autocast; BN statistics, parameters, optimizer and loss stay float32).
    channels_last:
        Channels-last activations and conv weights (default: on CUDA, and on CPU where
        ``fit`` uses them: convolutional models on 4-D inputs, :mod:`bnlab.train.layout`).
    cuda_graphs:
        Capture the training step in a CUDA graph per batch size (default: on CUDA when
        ``dropout_rng="shared"`` and no augmentation); falls back to eager on failure.
    dropout_rng:
        ``"per_run"`` (CPU default: each run draws ``fit``'s masks) or ``"shared"``.
    kernels:
        ``"per_run"`` (CPU default): convolutions and dense layers run one call per run, the
        kernels ``fit`` runs, so each run's arithmetic is bit for bit its own (Adam with
        Keras's epsilon of 1e-7 turns a 1e-6 relative rounding difference in a near-zero
        gradient into a learning-rate-sized step, so kernels that sum in another order
        drift apart at the 1e-4 level within a few steps). ``"stacked"`` (CUDA default): one
        grouped convolution / batched matmul for the whole stack (same function, other
        rounding).
    max_memory, chunk_size:
        Bytes the stack may use on the device (default: what is free) and an explicit upper
        bound on runs per stack; larger studies are trained in consecutive chunks
        (:func:`bnlab.train.engines.plan_chunks`).

    ``History.params`` holds ``fit``'s settings plus ``engine="stacked"``, ``stack_size`` and
    ``precision``; ``History.seconds`` is the run's share of its chunk's wall-clock time.
    """
    histories: dict[int, History] = {}
    for index, history in iter_fit_stacked(
        models,
        dataset,
        seeds=seeds,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        device=device,
        class_weight=class_weight,
        precise_eval=precise_eval,
        train_eval=train_eval,
        augment=augment,
        progress=progress,
        on_epoch_end=on_epoch_end,
        optimizer_options=optimizer_options,
        loss_epsilon=loss_epsilon,
        precision=precision,
        channels_last=channels_last,
        cuda_graphs=cuda_graphs,
        dropout_rng=dropout_rng,
        kernels=kernels,
        max_memory=max_memory,
        chunk_size=chunk_size,
    ):
        histories[index] = history
    return [histories[i] for i in range(len(models))]


def iter_fit_stacked(models: Sequence[nn.Module], dataset, *, seeds, **kw):
    """Like :func:`fit_stacked`, yielding ``(run_index, History)`` as each chunk finishes
    (diverged runs as soon as they are dropped)."""
    from bnlab.train.engines import estimate_memory, plan_chunks

    models = list(models)
    seeds = [check_seed(s) for s in seeds]
    if len(seeds) != len(models):
        raise ConfigError(f"seeds: {len(seeds)} seeds for {len(models)} models")
    if not models:
        return
    cfg, data, lrs = _prepare(models, dataset, seeds, **kw)
    input_shape = tuple(data.x_train.shape[1:])
    estimate = estimate_memory(models[0], optimizer=cfg.optimizer, input_shape=input_shape)
    sizes = plan_chunks(
        models[0],
        len(models),
        batch_size=cfg.batch_size,
        device=cfg.device,
        max_memory=kw.get("max_memory"),
        chunk_size=kw.get("chunk_size"),
        optimizer=cfg.optimizer,
        data_bytes=_data_bytes(data),
        eval_rows=cfg.eval_rows or cfg.params["eval_batch_size"],
        estimate=estimate,
    )
    start = 0
    for size in sizes:
        idx = list(range(start, start + size))
        # A stack of K runs costs K runs' multiply-accumulates per step.
        macs = estimate.macs_per_sample * cfg.batch_size * size
        with training_threads(macs, cfg.device):
            yield from _train_stack(
                [models[i] for i in idx],
                [seeds[i] for i in idx],
                [lrs[i] for i in idx],
                idx,
                cfg,
                data,
            )
        start += size


def _prepare(models, dataset, seeds, **kw) -> tuple[_Config, _Data, list[float]]:
    """Validate the arguments like ``fit`` does; move the data to the device once."""
    from bnlab.train.evaluation import uses_batch_statistics

    epochs = check_positive_int("epochs", kw["epochs"])
    batch_size = check_positive_int("batch_size", kw.get("batch_size", 32))
    optimizer = kw.get("optimizer", "adam")
    if not isinstance(optimizer, str):
        raise ConfigError(
            f"optimizer: {optimizer!r} is not one of 'adam', 'sgd', 'rmsprop' (the stacked "
            "engine runs Keras's optimizers; use the sequential engine for a factory)"
        )
    optimizer = check_choice("optimizer", optimizer.lower(), tuple(DEFAULT_LR))
    lr = kw.get("lr")
    if lr is None or isinstance(lr, (int, float)):
        lrs = [lr] * len(models)
    else:
        lrs = list(lr)
        if len(lrs) != len(models):
            raise ConfigError(f"lr: {len(lrs)} learning rates for {len(models)} models")
    lrs = [resolve_lr(optimizer, v) for v in lrs]
    precise = kw.get("precise_eval", False)
    if not isinstance(precise, bool):
        raise ConfigError(f"precise_eval: {precise!r} is not True or False")
    train_eval = kw.get("train_eval", True)
    if not isinstance(train_eval, bool):
        raise ConfigError(f"train_eval: {train_eval!r} is not True or False")
    loss_epsilon = kw.get("loss_epsilon")
    if loss_epsilon is not None and not (
        isinstance(loss_epsilon, float) and 0 < loss_epsilon < 0.5
    ):
        raise ConfigError(f"loss_epsilon: {loss_epsilon!r} is not None or a float in (0, 0.5)")
    callback = kw.get("on_epoch_end")
    if callback is not None and not callable(callback):
        raise ConfigError(f"on_epoch_end: {callback!r} is not callable")
    options = kw.get("optimizer_options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"optimizer_options: {options!r} is not a dict")
    precision = check_choice("precision", kw.get("precision", "float32"), PRECISIONS)
    device = resolve_device(kw.get("device", "cpu"))
    if precision == "tf32" and device.type != "cuda":
        raise ConfigError("precision: 'tf32' is a CUDA mode; use 'float32' or 'bf16' on CPU")
    cuda = device.type == "cuda"
    dropout_rng = kw.get("dropout_rng") or ("shared" if cuda else "per_run")
    check_choice("dropout_rng", dropout_rng, DROPOUT_RNG)
    kernels = check_choice(
        "kernels", kw.get("kernels") or ("stacked" if cuda else "per_run"), KERNELS
    )
    channels_last = kw.get("channels_last")
    if channels_last is not None and not isinstance(channels_last, bool):
        raise ConfigError(f"channels_last: {channels_last!r} is not None, True or False")
    augmenter = _augmenter(kw.get("augment"))
    graphs = kw.get("cuda_graphs")
    graphs = (cuda and dropout_rng == "shared" and augmenter is None) if graphs is None else graphs
    if graphs and not cuda:
        raise ConfigError("cuda_graphs: True needs a CUDA device")
    if graphs and (dropout_rng != "shared" or augmenter is not None):
        raise ConfigError(
            "cuda_graphs: True needs dropout_rng='shared' and no augmentation (per-run "
            "generators are not captured)"
        )
    for m in models:
        if not isinstance(m, nn.Module):
            raise ConfigError(f"models: {type(m).__name__} is not a torch.nn.Module")

    x_train, y_train = _split(dataset, "train")
    if getattr(dataset, "x_val", None) is not None:
        val_source = "validation"
        x_val, y_val = _split(dataset, "val")
        x_test, y_test = _split(dataset, "test")
    else:
        val_source = "test"
        x_val, y_val = _split(dataset, "test")
        x_test = y_test = None
    n_train = x_train.shape[0]
    if any(uses_batch_statistics(m) for m in models):
        if batch_size < 2:
            raise ConfigError(
                f"batch_size: {batch_size} is not >= 2; the model has BatchNorm layers in "
                "training mode, whose batch statistics need at least 2 samples"
            )
        if n_train < 2:
            raise DataError(
                f"x_train: {n_train} sample is not enough for a model with BatchNorm layers"
            )
    for m in models:
        m.to(device)
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    x_train, y_train, x_val, y_val = map(move, (x_train, y_train, x_val, y_val))
    x_test, y_test = move(x_test), move(y_test)
    with torch.no_grad():
        flags = [(mod, mod.training) for mod in models[0].modules()]
        models[0].eval()
        num_outputs = int(models[0](x_train[:2]).shape[1])
        for mod, flag in flags:
            mod.training = flag
    num_classes = 2 if num_outputs == 1 else num_outputs
    val_name = "y_val" if val_source == "validation" else "y_test"
    for name, y in (("y_train", y_train), (val_name, y_val), ("y_test", y_test)):
        _labels_in_range(name, y, num_classes)
    weights = resolve_class_weight(kw.get("class_weight"), y_train, num_classes)
    if weights is not None:
        weights = weights.to(device)
    eval_bs = eval_batch_size(batch_size, x_train[0].numel(), device)
    if channels_last is None and cuda:
        channels_last = x_train.dim() == 4
    else:  # fit's rule (bnlab.train.layout), so that a run's kernels are fit's own
        channels_last = wants_channels_last(channels_last, models[0], x_train, device)
    cfg = _Config(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        optimizer_options=options,
        device=device,
        class_weight=kw.get("class_weight"),
        precise_eval=precise,
        train_eval=train_eval,
        augment=augmenter,
        loss_epsilon=loss_epsilon,
        precision=precision,
        channels_last=channels_last,
        cuda_graphs=bool(graphs),
        dropout_rng=dropout_rng,
        kernels=kernels,
        eval_rows=None,
        progress=progress_enabled(kw.get("progress")),
        on_epoch_end=callback,
        params={
            "epochs": epochs,
            "batch_size": batch_size,
            "steps": len(batch_sizes(n_train, batch_size)),
            "optimizer": optimizer_name(optimizer),
            "optimizer_options": dict(options),
            "device": str(device),
            "class_weight": describe(weights),
            "precise_eval": precise,
            "train_eval": train_eval,
            "augment": None if augmenter is None else augmenter.to_options(),
            "val_source": val_source,
            "task": "binary" if num_outputs == 1 else "multiclass",
            "num_train": n_train,
            "num_val": int(x_val.shape[0]),
            "eval_batch_size": eval_bs,
            "loss_epsilon": loss_epsilon,
            "engine": "stacked",
            "precision": precision,
            "dropout_rng": dropout_rng,
            "kernels": kernels,
            "channels_last": channels_last,
        },
    )
    # fit's layout for the inputs too (the step gathers and restrides its batches anyway).
    x_train, x_val, x_test = (to_layout(x, channels_last) for x in (x_train, x_val, x_test))
    data = _Data(x_train, y_train, x_val, y_val, x_test, y_test, val_source, weights)
    return cfg, data, lrs


def _augmenter(augment):
    if augment is None:
        return None
    from bnlab.train.augment import Augmenter

    if not isinstance(augment, (Augmenter, dict)):
        raise ConfigError(f"augment: {augment!r} is not None, an Augmenter or a dict of options")
    return Augmenter.from_options(augment)


def _split(dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of one split, checked as ``fit`` checks it."""
    x, y = getattr(dataset, f"x_{split}", None), getattr(dataset, f"y_{split}", None)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError(
            f"dataset.x_{split}/y_{split}: {type(x).__name__}/{type(y).__name__} are not "
            "torch tensors; pass a bnlab.data.Dataset (see bnlab.data.load)"
        )
    if y.dim() != 1:
        raise DataError(f"y_{split}: shape {tuple(y.shape)} is not (N,) class indices")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DataError(f"y_{split}: {y.shape[0]} labels for {x.shape[0]} samples in x_{split}")
    if not x.is_floating_point():
        raise DataError(f"x_{split}: dtype {x.dtype} is not a floating-point type")
    return x, y.long()


def _labels_in_range(name: str, y: torch.Tensor | None, num_classes: int) -> None:
    if y is None:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{name}: labels span {lo}..{hi}, not in 0..{num_classes - 1}")


def _data_bytes(data: _Data) -> int:
    tensors = [data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class _Stack:
    """One stack in training: the stacked model, its optimizer and the per-run bookkeeping."""

    def __init__(self, models, seeds, lrs, cfg: _Config, data: _Data, opt_state=None, t=None):
        self.models, self.seeds, self.lrs, self.cfg, self.data = models, seeds, lrs, cfg, data
        self.k = len(models)
        device = cfg.device
        generators = None
        if cfg.dropout_rng == "per_run":
            generators = [
                torch.Generator(device=device).manual_seed(derive_seed(s, "dropout")) for s in seeds
            ]
        self.dropout_generators = generators
        self.aug_generators = None
        if cfg.augment is not None:
            self.aug_generators = [
                torch.Generator(device=device).manual_seed(derive_seed(s, "augment")) for s in seeds
            ]
        self.model = StackedModel(
            models,
            input_shape=tuple(data.x_train.shape[1:]),
            dropout_generators=generators,
            kernels=cfg.kernels,
        ).to(device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = StackedOptimizer(cfg.optimizer, self.model, lrs, **cfg.optimizer_options)
        if opt_state is not None:
            self.opt.load_per_run_state(opt_state, t)
        self.sums = torch.zeros(self.k, 3, dtype=torch.float64, device=device)
        self.correct = torch.zeros(self.k, dtype=torch.int64, device=device)
        self._graphs: dict[int, tuple[Any, torch.Tensor]] = {}
        self._graphs_failed = not cfg.cuda_graphs

    # ----------------------------------------------------------------- one step
    def autocast(self):
        if self.cfg.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.cfg.device.type, dtype=torch.bfloat16)

    def step(self, idx: torch.Tensor) -> None:
        """One training step of every run; ``idx`` is ``(b, K)``: run k's samples in column k."""
        d, k = self.data, self.k
        b = idx.shape[0]
        xb, yb = d.x_train[idx], d.y_train[idx]  # (b, K, ...), (b, K)
        if self.aug_generators is not None:
            xb = torch.stack(
                [self.cfg.augment.apply(xb[:, j], g) for j, g in enumerate(self.aug_generators)],
                dim=1,
            )
        xb = xb.flatten(1, 2)  # (b, K*C, ...) channel-stacked
        if self.cfg.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            logits = self.model(xb)
        flat = logits.float().reshape(b * k, self.model.num_outputs)
        per = per_sample_loss(flat, yb.reshape(-1), self.cfg.loss_epsilon).view(b, k)
        if d.weights is not None:
            per = per * d.weights[yb]
        # Per run, a sum over one contiguous row of b values: the reduction ``fit`` runs on
        # its (b,) vector, whatever K is.
        data_loss = per.t().contiguous().sum(1) / b
        reg = self.model.regularization()
        total = data_loss + reg
        self.opt.zero_grad()
        total.sum().backward()
        self.opt.step()
        with torch.no_grad():
            hits = (predictions(flat.detach()) == yb.reshape(-1)).view(b, k).sum(0)
            # Keras's Mean tracker: batch values weighted by batch size.
            self.sums.add_(torch.stack((total, data_loss, reg), 1).detach().double(), alpha=b)
            self.correct.add_(hits)

    def run_step(self, idx: torch.Tensor) -> None:
        if self._graphs_failed:
            self.step(idx)
            return
        size = idx.shape[0]
        if size not in self._graphs:
            try:
                self._graphs[size] = self._capture(size)
            except Exception as error:  # graphs are an optimisation: fall back to eager
                import warnings

                warnings.warn(
                    f"cuda_graphs: capture failed ({type(error).__name__}: {error}); "
                    "training eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._graphs_failed = True
                self.step(idx)
                return
        graph, static = self._graphs[size]
        static.copy_(idx, non_blocking=True)
        graph.replay()

    def _mutable(self) -> list[torch.Tensor]:
        tensors = [*self.opt.mutable_state(), self.sums, self.correct]
        tensors += list(self.model.buffers())
        return tensors

    def _capture(self, size: int):
        """A CUDA graph of one step of ``size`` samples per run (state restored after the
        warm-up steps that capture requires)."""
        static = torch.zeros((size, self.k), dtype=torch.long, device=self.cfg.device)
        saved = [t.clone() for t in self._mutable()]
        stream = torch.cuda.Stream(self.cfg.device)
        stream.wait_stream(torch.cuda.current_stream(self.cfg.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.step(static)
        torch.cuda.current_stream(self.cfg.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step(static)
        for t, copy in zip(self._mutable(), saved, strict=True):
            t.copy_(copy)
        return graph, static

    # --------------------------------------------------------------- one epoch
    def train_epoch(self, epoch: int) -> None:
        cfg, d = self.cfg, self.data
        n = d.x_train.shape[0]
        self.model.train()
        self.sums.zero_()
        self.correct.zero_()
        perms = torch.stack([permutation(n, s, epoch) for s in self.seeds], 1)  # (n, K)
        if cfg.device.type == "cuda":
            perms = perms.pin_memory()
        perms = perms.to(cfg.device, non_blocking=True)
        start = 0
        for size in batch_sizes(n, cfg.batch_size):
            self.run_step(perms[start : start + size])
            start += size

    def epoch_logs(self) -> list[dict[str, float]]:
        """Read the epoch's training sums and run every evaluation: two host syncs."""
        if self.cfg.device.type == "cpu" and self.cfg.kernels == "per_run":
            return self._logs_per_model()
        cfg, d = self.cfg, self.data
        train = self._train_table()
        rows = cfg.eval_rows or cfg.params["eval_batch_size"]
        sets = {"val": (d.x_val, d.y_val)}
        if cfg.train_eval:
            sets["train_eval"] = (d.x_train, d.y_train)
        if d.x_test is not None:
            sets["test"] = (d.x_test, d.y_test)
        names, values = [], []
        kw = {
            "loss_epsilon": cfg.loss_epsilon,
            "channels_last": cfg.channels_last,
            "autocast": self.autocast(),
        }
        for name, (x, y) in sets.items():
            loss_sum, correct = evaluate_stacked(self.model, x, y, rows, **kw)
            names += [f"{name}_loss", f"{name}_accuracy"]
            values += [loss_sum / x.shape[0], correct.double() / x.shape[0]]
        has_bn = any(isinstance(m, StackedBatchNorm) for m in self.model.modules())
        precise_sets = [s for s in ("val", "train_eval") if s in sets]
        if cfg.precise_eval and has_bn:
            stats = precise_stats_stacked(
                self.model, d.x_train, rows, channels_last=cfg.channels_last
            )
            with _swapped_stats(stats):
                for name in precise_sets:
                    x, y = sets[name]
                    _, correct = evaluate_stacked(self.model, x, y, rows, **kw)
                    names.append(f"precise_{name}_accuracy")
                    values.append(correct.double() / x.shape[0])
        with torch.no_grad():
            reg = self.model.regularization().double()
        train = train.tolist()
        table = torch.stack(values, 1).tolist()  # (K, metrics)
        reg = reg.tolist()
        logs = []
        for k in range(self.k):
            entry = _train_entry(train[k])
            if math.isfinite(entry["loss"]):
                numbers = dict(zip(names, table[k], strict=True))
                for key in names:
                    if key.endswith("_loss"):
                        numbers[key] += reg[k]
                if cfg.precise_eval and not has_bn:
                    for name in precise_sets:
                        numbers[f"precise_{name}_accuracy"] = numbers[f"{name}_accuracy"]
                entry.update(numbers)
            logs.append(entry)
        return logs

    def _train_table(self) -> torch.Tensor:
        """``(K, 4)`` on the device: each run's epoch means of loss, data loss, regularization
        loss and training accuracy (train mode)."""
        n = self.data.x_train.shape[0]
        return torch.cat((self.sums, self.correct.double().view(-1, 1)), 1) / n

    def _logs_per_model(self) -> list[dict[str, float]]:
        """CPU: every run evaluated by ``fit``'s own code, on its model (written back first).

        One stacked pass over the shared evaluation sets runs the K per-run convolutions and
        then concatenates their channels-last outputs along the channels (a strided copy)
        over a K-times larger working set: on 2 cores it was 2.9x slower than K separate
        passes (``fashion_cnn``, K = 4). Here each run's metrics are ``fit``'s by
        construction. On a GPU the single stacked pass is the point and stays.
        """
        cfg, d = self.cfg, self.data
        train = self._train_table().tolist()
        self.model.unstack_into(self.models)
        rows = cfg.eval_rows or cfg.params["eval_batch_size"]
        splits = {"train": (d.x_train, d.y_train), "val": (d.x_val, d.y_val)}
        if d.x_test is not None:
            splits["test"] = (d.x_test, d.y_test)
        logs = []
        for model, row in zip(self.models, train, strict=True):
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

    def finish(self) -> None:
        """Write every run's weights and BN statistics back into its model."""
        self.model.unstack_into(self.models)

    def restack(self, keep: list[int]) -> _Stack:
        """A new stack of the runs ``keep`` (positions in this stack), state carried over."""
        self.finish()
        states = self.opt.per_run_state()
        new = _Stack(
            [self.models[i] for i in keep],
            [self.seeds[i] for i in keep],
            [self.lrs[i] for i in keep],
            self.cfg,
            self.data,
            opt_state=[states[i] for i in keep],
            t=self.opt.t,
        )
        if self.dropout_generators is not None:
            for j, i in enumerate(keep):
                new.dropout_generators[j].set_state(self.dropout_generators[i].get_state())
        if self.aug_generators is not None:
            for j, i in enumerate(keep):
                new.aug_generators[j].set_state(self.aug_generators[i].get_state())
        return new


def _train_entry(row: Sequence[float]) -> dict[str, float]:
    """A run's training metrics of the epoch, keyed as ``fit`` keys them."""
    loss, data_loss, reg_loss, hits = row
    return {"loss": loss, "data_loss": data_loss, "reg_loss": reg_loss, "accuracy": hits}


@contextlib.contextmanager
def _precision(cfg: _Config) -> Iterator[None]:
    """TF32 on for ``precision="tf32"`` (CUDA), restored afterwards."""
    if cfg.precision != "tf32":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _train_stack(models, seeds, lrs, indices, cfg: _Config, data: _Data):
    """Train one chunk; yield ``(run_index, History)`` per run as it ends."""
    start = time.perf_counter()
    histories = {
        i: History(params={**cfg.params, "lr": lr, "seed": s, "stack_size": len(models)})
        for i, s, lr in zip(indices, seeds, lrs, strict=True)
    }
    alive = list(indices)  # run index of each position in the stack
    stack = _Stack(models, seeds, lrs, cfg, data)
    label = f"stacked x{len(models)}"
    with _precision(cfg), EpochProgress(cfg.progress, cfg.epochs, label) as bar:
        for epoch in range(1, cfg.epochs + 1):
            stack.train_epoch(epoch)
            logs = stack.epoch_logs()
            dropped = []
            for pos, (run, entry) in enumerate(zip(alive, logs, strict=True)):
                h = histories[run]
                if not all(math.isfinite(entry.get(k, math.nan)) for k in ("loss", "val_loss")):
                    h.diverged_at_epoch = epoch
                    dropped.append(pos)
                h.append(epoch, entry)
                if cfg.on_epoch_end is not None:
                    cfg.on_epoch_end(run, epoch, dict(entry))
            bar.update(epoch, _mean_logs(logs))
            if dropped:
                keep = [p for p in range(len(alive)) if p not in dropped]
                stack.finish()
                elapsed = time.perf_counter() - start
                for pos in dropped:
                    histories[alive[pos]].seconds = elapsed / len(models)
                    yield alive[pos], histories[alive[pos]]
                if not keep:
                    return
                stack = stack.restack(keep)
                alive = [alive[p] for p in keep]
    stack.finish()
    elapsed = time.perf_counter() - start
    for run in alive:
        histories[run].seconds = elapsed / len(models)
        yield run, histories[run]


def _mean_logs(logs: list[dict]) -> dict[str, float]:
    keys = ("loss", "accuracy", "val_accuracy", "train_eval_accuracy")
    out = {}
    for key in keys:
        values = [e[key] for e in logs if key in e]
        if values:
            out[key] = sum(values) / len(values)
    return out


__all__ = [
    "StackedModel",
    "StackedOptimizer",
    "StackingError",
    "evaluate_stacked",
    "fit_stacked",
    "iter_fit_stacked",
    "stack_signature",
]
