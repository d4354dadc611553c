"""What must be equal across the runs of a stack: :func:`stack_signature` and the layers the
stacked engine knows (anything else raises :class:`StackingError`)."""

from __future__ import annotations

from torch import nn

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm
from bnlab.nn.regularizers import L1L2

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


class StackingError(ConfigError):
    """The models cannot be trained as one stack (an unsupported layer, or runs that differ
    in more than values); the message names the layer and what differs."""


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
        if m.momentum is None:
            raise StackingError(
                f"engine: {where} has momentum=None (cumulative average); the stacked engine "
                "stacks a Keras momentum in [0, 1] (use the sequential engine)"
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
