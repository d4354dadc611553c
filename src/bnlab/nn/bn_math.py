"""Pure batch-norm math for masks, cumulative averages and Keras's dtype policy.

Companions of :mod:`bnlab.nn.functional` (same conventions: channels-first tensors
``(N, C, *S)``, biased variances, Keras momentum = fraction *kept*). Everything here is a
tensor expression without data-dependent Python control flow or host synchronisation, so
it runs under ``torch.func.vmap`` and in CUDA graphs.
"""

from __future__ import annotations

import torch

from bnlab.errors import ConfigError

#: Keras's ``backend.epsilon()``: added to the number of unmasked values when averaging.
KERAS_FUZZ = 1e-7
_HALF = (torch.float16, torch.bfloat16)


def stat_dims(xc: torch.Tensor) -> list[int]:
    """Every dimension of channels-first ``xc`` except the channel dimension 1."""
    return [0, *range(2, xc.dim())]


def channels_first_mask(mask: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """``mask`` (``x``'s shape without the channel axis) as a bool ``(N, 1, *S)`` tensor.

    Raises :class:`ConfigError` when the shape does not fit. For ``axis = -1`` this is
    Keras's rule (the mask has one dimension less than the input and broadcasts over the
    channels); for other axes the channel axis is the one left out.
    """
    expected = tuple(s for d, s in enumerate(x.shape) if d != axis)
    if tuple(mask.shape) != expected:
        raise ConfigError(
            f"mask: shape {tuple(mask.shape)} does not fit an input of shape {tuple(x.shape)} "
            f"with channels on axis {axis}; expected {expected} (the input's shape without "
            "the channel axis)"
        )
    return mask.to(device=x.device).bool().unsqueeze(1)


def masked_moments(
    xc: torch.Tensor, mask_c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, biased variance, count)`` over the positions where ``mask_c`` holds.

    Keras 3's formula: ``mean = sum(x * m) / (count + 1e-7)`` and
    ``var = sum(((x - mean) * m)**2) / (count + 1e-7)``, so a batch without any unmasked
    value gives mean 0 and variance 0 instead of NaN. Gradients flow through both
    statistics (as in Keras). ``count`` is a 0-d tensor of ``xc``'s dtype.
    """
    dims = stat_dims(xc)
    weights = mask_c.to(xc.dtype)
    count = weights.sum(dims).reshape(())
    total = torch.where(mask_c, xc, 0).sum(dims)
    mean = total / (count + KERAS_FUZZ)
    diff = torch.where(mask_c, xc - _per_channel(mean, xc), 0)
    var = diff.square().sum(dims) / (count + KERAS_FUZZ)
    return mean, var, count


def normalize(
    xc: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    epsilon: float,
) -> torch.Tensor:
    """``(xc - mean) * rsqrt(var + epsilon) * weight + bias``, differentiable in every argument.

    Unlike :func:`bnlab.nn.functional.batch_norm_eval`, gradients reach ``mean`` and ``var``
    (batch statistics computed with a mask or across processes).
    """
    inv = torch.rsqrt(var + epsilon)
    if weight is not None:
        inv = inv * weight
    out = (xc - _per_channel(mean, xc)) * _per_channel(inv, xc)
    if bias is not None:
        out = out + _per_channel(bias, xc)
    return out


def bessel_counted(var: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Biased variance of ``count`` values (a tensor) -> unbiased ``var * count / (count - 1)``.

    With ``count <= 1`` there is no unbiased estimate; the biased one is returned (one
    value: 0) rather than inf, keeping the moving variance finite.
    """
    return var * (count / (count - 1).clamp(min=1.0)).clamp(min=1.0)


def cumulative_kept(num_batches_tracked: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Keras-convention momentum of torch's cumulative average (``momentum=None``).

    Before the ``n``-th update (``num_batches_tracked = n - 1`` steps taken) torch replaces
    ``1 / n`` of the running value: the fraction kept is ``1 - 1 / n``. The first batch
    replaces the initial value entirely.
    """
    return 1.0 - 1.0 / (num_batches_tracked.to(dtype) + 1.0)


def ema_kept_(moving: torch.Tensor, value: torch.Tensor, kept) -> torch.Tensor:
    """In place: ``moving = kept * moving + (1 - kept) * value``; ``kept`` a number or tensor."""
    with torch.no_grad():
        value = value.detach().to(moving.dtype)
        if isinstance(kept, torch.Tensor):
            kept = kept.to(moving.dtype)
            moving.mul_(kept).add_(value * (1.0 - kept))
        else:
            moving.mul_(kept).add_(value, alpha=1.0 - kept)
    return moving


def keras_dtypes(
    input_dtype: torch.dtype, variable_dtype: torch.dtype
) -> tuple[torch.dtype, torch.dtype]:
    """``(output dtype, computation dtype)`` by Keras 3's dtype-policy rule.

    Keras casts a layer's input to its policy's compute dtype, normalises in
    ``result_type(compute, float32)`` ("BN is prone to overflow with float16/bfloat16") and
    casts the output to the compute dtype. bnlab has no policy object and reads it off the
    tensors: 16-bit variables (a ``.half()``/``.bfloat16()`` layer) are Keras's
    ``"float16"``/``"bfloat16"`` policy (compute dtype = the variables'); otherwise the
    input's dtype is the compute dtype, which for 16-bit inputs to float32 variables is
    Keras's ``"mixed_float16"``/``"mixed_bfloat16"`` policy.
    """
    out = variable_dtype if variable_dtype in _HALF else input_dtype
    if not out.is_floating_point:
        out = torch.float32
    return out, torch.promote_types(out, torch.float32)


def _per_channel(t: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1, *([1] * (xc.dim() - 2)))
