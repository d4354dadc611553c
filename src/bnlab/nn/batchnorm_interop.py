"""``BatchNorm`` <-> ``torch.nn.BatchNorm{1,2,3}d``: exact conversions in both directions.

Momentum is translated between the conventions (torch's fraction of the batch 0.1 <->
Keras's fraction kept 0.9); torch's ``momentum=None`` (the cumulative average of every batch
seen) is bnlab's ``momentum=None`` both ways.
"""

from __future__ import annotations

import torch
from torch import nn

from bnlab._validation import check_options
from bnlab.errors import ConfigError
from bnlab.nn.batchnorm_config import init_parameters
from bnlab.nn.momentum import keras_to_torch_momentum, torch_to_keras_momentum

TORCH_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Input rank -> the torch class that accepts it (channels on dimension 1).
TORCH_BN_BY_NDIM = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_UNSET = object()


def is_torch_bn(module: nn.Module) -> bool:
    """True for ``torch.nn.BatchNorm1d/2d/3d`` (what :meth:`BatchNorm.from_torch` accepts)."""
    return isinstance(module, TORCH_BN)


def from_torch(cls, torch_bn: nn.Module, **overrides):
    """See :meth:`bnlab.BatchNorm.from_torch`."""
    if not isinstance(torch_bn, TORCH_BN):
        raise ConfigError(f"torch_bn: {type(torch_bn).__name__} is not torch.nn.BatchNorm1d/2d/3d")
    if torch_bn.running_mean is None or not torch_bn.track_running_stats:
        raise ConfigError(
            "track_running_stats: False (the torch layer keeps no running statistics and "
            "normalises with batch statistics even in eval mode); bnlab.BatchNorm has "
            "no such mode"
        )
    fixed = {"num_features", "axis", "center", "scale"}
    bad = sorted(fixed & set(overrides))
    if bad:
        raise ConfigError(
            f"{bad[0]}: {overrides[bad[0]]!r} cannot be overridden; it follows the torch layer"
        )
    check_options("BatchNorm.from_torch", overrides, init_parameters(cls) - fixed)
    momentum = overrides.pop("momentum", _UNSET)
    if momentum is _UNSET:
        momentum = None if torch_bn.momentum is None else torch_to_keras_momentum(torch_bn.momentum)
    kwargs = {
        "momentum": momentum,
        "epsilon": torch_bn.eps,
        "center": torch_bn.affine,
        "scale": torch_bn.affine,
        "axis": 1,
        "variance": "unbiased",
        "num_features": torch_bn.num_features,
    }
    kwargs.update(overrides)
    layer = cls(**kwargs)
    ref = torch_bn.weight if torch_bn.affine else torch_bn.running_mean
    layer.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        if torch_bn.affine:
            layer.gamma.copy_(torch_bn.weight)
            layer.beta.copy_(torch_bn.bias)
            layer.gamma.requires_grad_(torch_bn.weight.requires_grad)
            layer.beta.requires_grad_(torch_bn.bias.requires_grad)
        layer.moving_mean.copy_(torch_bn.running_mean)
        layer.moving_variance.copy_(torch_bn.running_var)
        layer.num_batches_tracked.copy_(torch_bn.num_batches_tracked)
        if layer.renorm:
            layer.renorm_mean.copy_(torch_bn.running_mean)
            layer.moving_stddev.copy_((torch_bn.running_var + layer.epsilon).sqrt())
            layer.renorm_stddev.copy_(layer.moving_stddev)
    layer.train(torch_bn.training)
    layer._torch_cls = type(torch_bn)
    return layer


def to_torch(layer, cls: type | None = None) -> nn.Module:
    """See :meth:`bnlab.BatchNorm.to_torch`."""
    if layer.num_features is None:
        raise ConfigError("num_features: None (the layer is not built); call it once first")
    if layer.renorm:
        raise ConfigError("renorm: True has no torch.nn.BatchNorm equivalent")
    if layer.virtual_batch_size is not None:
        raise ConfigError(
            f"virtual_batch_size: {layer.virtual_batch_size} has no torch.nn.BatchNorm equivalent"
        )
    if not layer._trainable:
        raise ConfigError(
            "trainable: False (Keras's inference mode inside training) has no "
            "torch.nn.BatchNorm equivalent; set trainable=True or convert an eval-only copy"
        )
    ndim = layer._input_ndim
    if cls is None:
        cls = layer._torch_cls or TORCH_BN_BY_NDIM.get(ndim)
    if cls is None:
        raise ConfigError(
            "cls: None and the layer has seen no input to tell its rank; pass "
            "cls=torch.nn.BatchNorm1d, BatchNorm2d or BatchNorm3d"
        )
    if cls not in TORCH_BN:
        raise ConfigError(f"cls: {cls!r} is not torch.nn.BatchNorm1d/2d/3d")
    if layer.axis != 1 and not (layer.axis == -1 and ndim == 2):
        raise ConfigError(f"axis: {layer.axis!r} is not the channel axis of torch.nn.BatchNorm (1)")
    ref = layer.moving_mean
    momentum = None if layer.momentum is None else keras_to_torch_momentum(layer.momentum)
    bn = cls(
        layer.num_features,
        eps=layer.epsilon,
        momentum=momentum,
        affine=layer.center or layer.scale,
        device=ref.device,
        dtype=ref.dtype,
    )
    with torch.no_grad():
        if bn.affine:
            if layer.gamma is not None:
                bn.weight.copy_(layer.gamma)
            else:
                bn.weight.fill_(1.0)
            bn.weight.requires_grad_(layer.gamma is not None and layer.gamma.requires_grad)
            if layer.beta is not None:
                bn.bias.copy_(layer.beta)
            else:
                bn.bias.zero_()
            bn.bias.requires_grad_(layer.beta is not None and layer.beta.requires_grad)
        bn.running_mean.copy_(layer.moving_mean)
        bn.running_var.copy_(layer.moving_variance)
        bn.num_batches_tracked.copy_(layer.num_batches_tracked)
    bn.train(layer.training)
    return bn
