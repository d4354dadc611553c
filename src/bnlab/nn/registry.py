"""``make_norm``: one place that builds any normalization layer by name (timm's ``create_norm`` idea).

Kinds and the keyword options each accepts (besides ``num_features``, the channel count):

=========  ==========================================================================
``none``   ``nn.Identity`` (the no-normalization baseline).
``batch``  :class:`bnlab.BatchNorm`: every constructor argument of it.
``renorm`` ``BatchNorm(renorm=True)``: every argument but ``renorm``.
``ghost``  ``BatchNorm(virtual_batch_size=...)``: every argument but ``renorm``;
           ``virtual_batch_size`` is required.
``group``  :class:`bnlab.nn.norms.GroupNorm`: ``num_groups``, ``epsilon``, ``axis``,
           ``center``, ``scale``.
``layer``  :class:`bnlab.nn.norms.LayerNorm` (all non-batch dims): ``epsilon``, ``axis``,
           ``center``, ``scale``.
``instance`` :class:`bnlab.nn.norms.InstanceNorm`: as ``layer``; refuses ``(N, C)`` input.
=========  ==========================================================================

Model builders pass the same ``momentum``, ``epsilon`` and ``axis`` to every kind, so the
kinds without running statistics (``none``, ``group``, ``layer``, ``instance``) accept and
ignore the BN-only keys ``momentum`` and ``variance`` (``none`` also ignores ``epsilon``,
``axis``, ``center``, ``scale``). Any other key a kind does not take raises
:class:`ConfigError` naming it; an unknown kind suggests the closest name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from bnlab._validation import check_options
from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.norms import GroupNorm, InstanceNorm, LayerNorm
from bnlab.registry import Registry

#: Every normalization kind by name (a :class:`bnlab.registry.Registry`).
NORM_KINDS = Registry("norm")

#: Keys of batch norm that batch-independent kinds accept and ignore.
BN_ONLY_KEYS = frozenset({"momentum", "variance"})
_BN_KEYS = frozenset(inspect.signature(BatchNorm.__init__).parameters) - {"self", "num_features"}
_CHANNEL_KEYS = frozenset({"epsilon", "axis", "center", "scale"})


def register_norm(name: str):
    """Decorator registering a factory ``f(num_features, **kw) -> nn.Module`` under ``name``.

    The factory validates its own keyword options (raising :class:`ConfigError`).
    """

    return NORM_KINDS.register(name)


def _accept(kind: str, kw: dict, valid, ignored=frozenset()) -> dict:
    """Check ``kw`` against ``valid | ignored``; return it without the ignored keys."""
    check_options(f"make_norm({kind!r})", kw, set(valid) | set(ignored))
    return {k: v for k, v in kw.items() if k not in ignored}


@register_norm("none")
def _none(num_features: int, **kw) -> nn.Module:
    _accept("none", kw, (), BN_ONLY_KEYS | _CHANNEL_KEYS)
    return nn.Identity()


@register_norm("batch")
def _batch(num_features: int, **kw) -> nn.Module:
    return BatchNorm(num_features=num_features, **_accept("batch", kw, _BN_KEYS))


@register_norm("renorm")
def _renorm(num_features: int, **kw) -> nn.Module:
    kw = _accept("renorm", kw, _BN_KEYS - {"renorm"})
    return BatchNorm(num_features=num_features, renorm=True, **kw)


@register_norm("ghost")
def _ghost(num_features: int, **kw) -> nn.Module:
    kw = _accept("ghost", kw, _BN_KEYS - {"renorm"})
    if kw.get("virtual_batch_size") is None:
        raise ConfigError(
            "virtual_batch_size: None; make_norm('ghost') needs the virtual batch size "
            "(samples per virtual batch), e.g. virtual_batch_size=8"
        )
    return BatchNorm(num_features=num_features, **kw)


@register_norm("group")
def _group(num_features: int, **kw) -> nn.Module:
    kw = _accept("group", kw, _CHANNEL_KEYS | {"num_groups"}, BN_ONLY_KEYS)
    return GroupNorm(num_features, **kw)


@register_norm("layer")
def _layer(num_features: int, **kw) -> nn.Module:
    return LayerNorm(num_features, **_accept("layer", kw, _CHANNEL_KEYS, BN_ONLY_KEYS))


@register_norm("instance")
def _instance(num_features: int, **kw) -> nn.Module:
    return InstanceNorm(num_features, **_accept("instance", kw, _CHANNEL_KEYS, BN_ONLY_KEYS))


def make_norm(kind: str | Callable[..., nn.Module], num_features: int, **kw) -> nn.Module:
    """Build the normalization layer ``kind`` for ``num_features`` channels.

    ``kind`` is a registered name (see the module docstring for the kinds and the options
    each takes; ``momentum`` is Keras's, the fraction kept, wherever it applies), or, as
    timm's ``create_norm_layer`` takes it, a class or ``functools.partial`` called with
    ``num_features`` and ``**kw`` (e.g. ``torch.nn.BatchNorm2d`` or
    ``partial(bnlab.BatchNorm, momentum=0.9)``).
    """
    if not isinstance(kind, str) and callable(kind):
        try:
            # By keyword where the factory names it (bnlab.BatchNorm's first positional
            # argument is Keras's momentum); positionally otherwise, as timm calls it.
            if "num_features" in inspect.signature(kind).parameters:
                return kind(num_features=num_features, **kw)
            return kind(num_features, **kw)
        except TypeError as error:
            raise ConfigError(
                f"norm: {kind!r} cannot be built as {getattr(kind, '__name__', 'it')}"
                f"(num_features, **{sorted(kw)}) ({error})",
                param="norm",
                value=kind,
                allowed="a name, or a class/partial taking (num_features, **options)",
            ) from None
    return NORM_KINDS.lookup(kind)(num_features, **kw)


def norm_kinds() -> list[str]:
    """The registered kinds, in registration order."""
    return list(NORM_KINDS)
