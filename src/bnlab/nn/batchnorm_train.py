"""``BatchNorm``'s training step: batch statistics, ghost batches, renorm, moving averages.

A mixin of :class:`bnlab.BatchNorm` (it reads the layer's settings and buffers), kept apart
from the module's construction and state. ``momentum`` is Keras's (fraction kept) or
``None`` (torch's cumulative average).
"""

from __future__ import annotations

import torch

from bnlab.errors import ConfigError
from bnlab.nn import bn_math
from bnlab.nn import distributed as _dist
from bnlab.nn import functional as BF


class TrainingStep:
    """Training-mode forward and statistics updates of :class:`bnlab.BatchNorm`."""

    def _synchronizing(self) -> bool:
        if _dist.process_group_active():
            return True
        _dist.warn_inactive_once()
        return False

    def _forward_train_pooled(self, xc, axis, gamma, beta, mask_c, synced) -> torch.Tensor:
        """Training step with statistics from a mask and/or from every process.

        The statistics are differentiable tensors (Keras's masked moments, or the pooled
        moments of :func:`bnlab.nn.distributed.synchronized_moments`) and the output is
        composed from them; the batch-size check is skipped because the count is data.
        """
        if self.virtual_batch_size is not None:
            raise ConfigError(
                f"mask: a mask with virtual_batch_size={self.virtual_batch_size} is not "
                "supported (Keras 3 has no ghost batches); drop one of the two"
            )
        if synced:
            mean, var_b, count = _dist.synchronized_moments(xc, mask_c)
        else:
            mean, var_b, count = bn_math.masked_moments(xc, mask_c)
        weight, bias = gamma, beta
        if self.renorm:
            step = self.num_batches_tracked
            clip = {k: BF.clip_value(v, step) for k, v in self.renorm_clipping.items()}
            r, d = BF.renorm_correction(
                mean.detach(), var_b.detach(), self.renorm_mean, self.renorm_stddev,
                self.epsilon, **clip,
            )  # fmt: skip
            weight, bias = BF.compose_renorm(r, d, gamma, beta)
        out = bn_math.normalize(xc, mean, var_b, weight, bias, self.epsilon)
        var_u = bn_math.bessel_counted(var_b, count) if self.variance == "unbiased" else None
        self._update_moving(mean, var_b, var_u)
        return out

    def _groups(self, xc: torch.Tensor, axis: int) -> int:
        """Number of virtual batches in this training batch (1 without ghost BN)."""
        vbs = self.virtual_batch_size
        if vbs is None:
            return 1
        if axis == 0:
            raise ConfigError(
                f"axis: {self.axis!r} is the batch axis; virtual_batch_size={vbs} splits the "
                "batch axis, so the channel axis must be another one"
            )
        n = xc.shape[0]
        if n % vbs:
            raise ConfigError(
                f"virtual_batch_size: {vbs} does not divide the batch size {n}; every "
                f"training batch must hold a multiple of {vbs} samples"
            )
        return n // vbs

    def _check_count(self, xc: torch.Tensor, axis: int, groups: int | None) -> int:
        """Values per channel (per virtual batch) in training; at least 2 are needed."""
        if groups is None:
            groups = self._groups(xc, axis)
        count = xc.numel() // self.num_features // groups
        if count <= 1:
            where = f" per virtual batch of {self.virtual_batch_size}" if groups > 1 else ""
            raise ConfigError(
                f"batch: {xc.shape[0]} sample(s) of shape {tuple(xc.shape[1:])} give "
                f"{count} value per channel{where} in training mode; batch statistics need at "
                "least 2 (use a larger batch, or call .eval())"
            )
        return count

    def _forward_train(self, xc, axis, gamma, beta) -> torch.Tensor:
        # Batch statistics come from PyTorch's batch-norm kernel (or torch.var_mean for
        # renorm), both two-pass/Welford reductions; Keras's torch backend uses
        # E[x^2] - E[x]^2. Same quantity, float rounding apart: the conformance suite holds
        # 1e-5 against Keras, and on strongly offset data bnlab is the closer to float64.
        groups = self._groups(xc, axis)
        count = self._check_count(xc, axis, groups)
        channels = self.num_features
        xg = BF.ghost_view(xc, self.virtual_batch_size) if groups > 1 else xc

        def tile(t):  # one copy per virtual batch; gradients sum back onto t
            return t if t is None or groups == 1 else t.repeat(groups)

        def per_channel(t):  # average the virtual batches' statistics (tf-keras)
            return t if groups == 1 else t.view(groups, channels).mean(dim=0)

        if self.renorm:
            # r and d carry no gradient, so the statistics they need are computed aside.
            with torch.no_grad():
                mean_g, var_g = BF.moments(xg, 1)
            mean, var_b = per_channel(mean_g), per_channel(var_g)
            step = self.num_batches_tracked
            clip = {k: BF.clip_value(v, step) for k, v in self.renorm_clipping.items()}
            r, d = BF.renorm_correction(
                mean, var_b, self.renorm_mean, self.renorm_stddev, self.epsilon, **clip
            )
            weight, bias = BF.compose_renorm(r, d, gamma, beta)
            out = BF.batch_norm_with_stats(xg, tile(weight), tile(bias), self.epsilon)
            var_u = BF.bessel(var_b, count) if self.variance == "unbiased" else None
        else:
            out, mean_g, var_ug = BF.batch_norm_train(xg, tile(gamma), tile(beta), self.epsilon)
            mean, var_u = per_channel(mean_g), per_channel(var_ug)
            var_b = var_u * ((count - 1) / count)
        self._update_moving(mean, var_b, var_u)
        return out.reshape(xc.shape) if groups > 1 else out

    @torch.no_grad()
    def _update_moving(self, mean, var_biased, var_unbiased) -> None:
        """Keras update rule (``momentum`` = fraction kept) for the inference statistics."""
        var = var_unbiased if self.variance == "unbiased" else var_biased
        kept = self.momentum
        if kept is None:  # torch's cumulative average (momentum=None)
            kept = bn_math.cumulative_kept(self.num_batches_tracked, self.moving_mean.dtype)
        bn_math.ema_kept_(self.moving_mean, mean, kept)
        if self.renorm:
            BF.ema_(self.renorm_mean, mean, self.renorm_momentum)
            BF.ema_(self.renorm_stddev, torch.sqrt(var_biased + self.epsilon), self.renorm_momentum)
            bn_math.ema_kept_(self.moving_stddev, torch.sqrt(var + self.epsilon), kept)
            # relu: rounding may make stddev**2 fall below epsilon (Keras does the same).
            self.moving_variance.copy_(torch.relu(self.moving_stddev.square() - self.epsilon))
        else:
            bn_math.ema_kept_(self.moving_variance, var, kept)
        self.num_batches_tracked.add_(1)
