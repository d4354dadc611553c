"""Stacked batch normalization: ``K`` :class:`bnlab.nn.BatchNorm` layers over ``K*C`` channels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm
from bnlab.nn import functional as BF
from bnlab.train.stacked.layers import _Penalty, _StackedLayer


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
                out, mean, var_u = BF.batch_norm_train(xc, gamma, beta, self.epsilon)
                var_b = var_u * ((count - 1) / count)
            else:  # per-run epsilons: the composed formula with a per-channel epsilon
                mean, var_b = BF.moments(xc, 1)
                out = self._normalize(xc, mean, var_b, gamma, beta)
                var_u = BF.bessel(var_b, count)
            self._update_moving(mean, var_u if self.variance == "unbiased" else var_b)
        elif self.epsilon is not None:
            moving = (self.moving_mean.to(xc.dtype), self.moving_variance.to(xc.dtype))
            out = BF.batch_norm_eval(xc, *moving, gamma, beta, self.epsilon)
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
            if self.momentum is not None:
                BF.ema_(moving, value, self.momentum)
            else:  # per-run momenta: per-channel vectors of m and 1 - m
                moving.mul_(self.keep).add_(value.detach().to(moving.dtype) * self.take)
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
