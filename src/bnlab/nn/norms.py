"""Batch-independent normalizations over the channel axis: group, layer and instance norm.

All three are one computation (Wu & He, "Group Normalization", 2018): split the ``C``
channels into ``G`` groups and normalise each sample's group over its channels and spatial
positions, then apply a per-channel ``gamma``/``beta``:

* ``GroupNorm(num_groups=G)``.
* ``LayerNorm`` = one group: each sample normalised over **all** its non-batch dimensions
  (channels and spatial positions), as in the GroupNorm paper's comparison. This differs on
  images from Keras's ``LayerNormalization()`` (axis=-1 on NHWC: channels only); on
  ``(N, C)`` inputs the two coincide.
* ``InstanceNorm`` = one group per channel: each sample's channel over its spatial
  positions. It needs spatial dimensions: on ``(N, C)`` input every "instance" is a single
  value, which it refuses with a :class:`ConfigError` at call time.

Statistics never depend on the batch, so training and inference compute the same thing and
there are no running statistics (hence no ``momentum``). ``epsilon`` defaults to Keras's 1e-3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bnlab._validation import check_number
from bnlab.errors import ConfigError
from bnlab.nn import functional as BF

DEFAULT_MAX_GROUPS = 32


def default_groups(num_features: int, max_groups: int = DEFAULT_MAX_GROUPS) -> int:
    """Default group count: the largest divisor of ``num_features`` that is at most
    ``max_groups`` (32, Wu & He's default) and leaves at least 2 channels per group (so
    group norm never silently becomes instance norm): 64 -> 32, 32 -> 16, 50 -> 25, 3 -> 1.
    """
    limit = max(1, min(max_groups, num_features // 2))
    return max(g for g in range(1, limit + 1) if num_features % g == 0)


class GroupNorm(nn.Module):
    """Group normalization over the channel axis ``axis`` (1 for NCHW / (N, C), -1 for NHWC).

    ``num_groups=None`` picks :func:`default_groups`; an explicit value must divide
    ``num_features``. ``center``/``scale`` learn ``beta``/``gamma`` (per channel).
    """

    kind = "group"

    def __init__(
        self,
        num_features: int,
        num_groups: int | None = None,
        *,
        epsilon: float = 1e-3,
        axis: int = 1,
        center: bool = True,
        scale: bool = True,
    ):
        super().__init__()
        self.num_features = check_number("num_features", num_features, low=1, integer=True)
        if num_groups is None:
            num_groups = default_groups(self.num_features)
        self.num_groups = check_number("num_groups", num_groups, low=1, integer=True)
        if self.num_features % self.num_groups:
            raise ConfigError(
                f"num_groups: {num_groups!r} does not divide num_features={num_features}"
            )
        self.epsilon = float(check_number("epsilon", epsilon, low=0.0, low_inclusive=False))
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ConfigError(f"axis: {axis!r} is not an integer")
        self.axis = axis
        self.gamma = nn.Parameter(torch.ones(self.num_features)) if scale else None
        self.beta = nn.Parameter(torch.zeros(self.num_features)) if center else None

    def _channel_axis(self, x: torch.Tensor) -> int:
        if not -x.dim() <= self.axis < x.dim() or self.axis % x.dim() == 0:
            raise ConfigError(
                f"axis: {self.axis!r} is not a channel axis of an input of shape "
                f"{tuple(x.shape)} (allowed: 1..{x.dim() - 1} or -{x.dim() - 1}..-1)"
            )
        axis = self.axis % x.dim()
        if x.shape[axis] != self.num_features:
            raise ConfigError(
                f"num_features: the layer has {self.num_features} channels but the input has "
                f"{x.shape[axis]} along axis {self.axis} (shape {tuple(x.shape)})"
            )
        return axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self._channel_axis(x)
        in_dtype = x.dtype
        xc = BF.channels_first(x.to(torch.promote_types(in_dtype, torch.float32)), axis)
        out = F.group_norm(xc, self.num_groups, self.gamma, self.beta, self.epsilon)
        return BF.channels_back(out, axis).to(in_dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, num_groups={self.num_groups}, epsilon={self.epsilon}, "
            f"axis={self.axis}"
        )


class LayerNorm(GroupNorm):
    """Layer normalization: each sample over all its non-batch dimensions (one group)."""

    kind = "layer"

    def __init__(self, num_features: int, **kw):
        super().__init__(num_features, 1, **kw)


class InstanceNorm(GroupNorm):
    """Instance normalization: each sample's channel over its spatial positions."""

    kind = "instance"

    def __init__(self, num_features: int, **kw):
        super().__init__(num_features, num_features, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ConfigError(
                f"input: shape {tuple(x.shape)} has no spatial dimensions; instance norm "
                "normalises each channel over its positions, so every instance would be a "
                "single value (use 'layer' or 'group' for (N, C) inputs)"
            )
        return super().forward(x)
