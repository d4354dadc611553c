"""The seeds' networks as presets: ``build(name, **options) -> torch.nn.Module``.

Every preset is a seed's Keras network rebuilt in PyTorch, channels first (NCHW), with
Keras's defaults (glorot-uniform kernels, zero biases, BatchNorm momentum 0.99 *kept*,
epsilon 1e-3). Its forward returns logits: ``(N, num_classes)`` for multiclass tasks,
``(N, 1)`` for binary ones; softmax/sigmoid belong to the loss. The module carries
``model.bnlab_meta = {"preset", "options", "task", "input_shape", "num_classes"}`` where
``options`` holds every option resolved, so ``build(meta["preset"], **meta["options"])``
rebuilds the same architecture.

=============  ====  ==========================================================
preset         seed  network
=============  ====  ==========================================================
malimg_cnn     000   Malimg CNN, BN after pooling or after each conv
scenes_cnn     001   scene CNN with ZeroPadding, 2 or 3 conv blocks
fashion_cnn    002   Fashion-MNIST CNN, BN after pooling/flatten
cifar_small    003   conv + dense with BN (the L2 question)
cifar_deep     003   6 conv + dense, layers named as in the seed (bn01 ... bn03_2)
circles_mlp    004   2 -> 50 -> 1 MLP, BN before or after the ReLU
digits_cnn     --    small CNN for 8x8 digits (the demo study)
=============  ====  ==========================================================

Options (where they make sense for a preset; :func:`preset_options` lists each preset's):
``norm`` (any kind of ``bnlab.nn.make_norm``; default ``"batch"``, ``"none"`` is the
seed's no-BN baseline), ``bn_momentum`` (Keras convention, fraction kept, 0.99),
``bn_epsilon`` (1e-3), ``norm_options`` (dict for ``make_norm``), ``bn_position``
(``"after_activation"`` as the seeds, or ``"before_activation"``), ``l2`` (Keras L2 kernel
regularizer strength, 0), ``dropout`` (one rate for every dropout layer or one rate per
layer; default the seed's), ``num_classes`` and ``input_shape`` (channels first).
Norm slots keep the seeds' BN names (``bn1``, ``bn01`` ...) whatever the kind. Some slots
sit on flat ``(N, F)`` features (``fashion_cnn``'s ``bn3``, the dense layers' slots): a kind
that needs spatial positions there (instance norm) is refused by the layer when called.

The Keras versions of the same networks are in :mod:`bnlab.models.keras_twins` (imports
Keras lazily).
"""

from __future__ import annotations

from typing import Any

from torch import nn

# Importing the preset modules registers them.
from bnlab.models import cifar, circles, digits, fashion, malimg, scenes  # noqa: F401
from bnlab.models.layers import Flatten
from bnlab.models.registry import PRESETS, get
from bnlab.models.spec import Architecture
from bnlab.models.summarize import format_summary, summary
from bnlab.models.torch_build import to_torch


def presets() -> list[str]:
    """Names of every preset, sorted."""
    return sorted(PRESETS)


def preset_options(name: str) -> dict[str, Any]:
    """Every option ``name`` accepts, with its default (a fresh copy: safe to modify).

    For a user model's descriptor (:mod:`bnlab.models.user`): the options a study fills from
    the data (``num_classes``, ``input_shape``) that its factory accepts.
    """
    if name.startswith("user:"):
        from bnlab.models.user import data_options

        return data_options(name)
    return get(name).defaults()


def resolve_options(name: str, **options: Any) -> dict[str, Any]:
    """Every option of ``name``: the given ones checked, the others at their defaults.

    Raises the ConfigError :func:`build` would raise (unknown option, bad value, an input
    too small for the network) without allocating any weights: for validating study specs.
    """
    return _architecture_and_options(name, options)[1]


def _architecture_and_options(
    name: str, options: dict[str, Any]
) -> tuple[Architecture, dict[str, Any]]:
    preset = get(name)
    resolved = preset.resolve(options)
    arch = preset.architecture(name, resolved)
    arch.shapes()  # an input too small for the network is a ConfigError here, not later
    return arch, resolved


def describe(name: str, *, options: bool = False) -> str:
    """One line describing preset ``name`` (for ``bnlab list presets``).

    ``options=True`` appends one line per option: ``  name = default  # what it does``.
    """
    preset = get(name)
    lines = [preset.description]
    if options:
        lines += [f"  {key} = {o.default!r}  # {o.doc}" for key, o in preset.options.items()]
    return "\n".join(lines)


def architecture(name: str, **options: Any) -> Architecture:
    """The layer spec of preset ``name`` with ``options`` checked (what :func:`build` builds)."""
    return _architecture_and_options(name, options)[0]


def build(name: str, **options: Any) -> nn.Module:
    """Build preset ``name`` as a fresh ``torch.nn.Module`` (NCHW in, logits out).

    Weights are drawn from torch's global RNG (seed it for reproducible inits). Unknown
    options raise ConfigError listing the valid ones; bad values raise ConfigError naming
    the option and the value.
    """
    arch, resolved = _architecture_and_options(name, options)
    model = to_torch(arch)
    model.bnlab_meta = {
        "preset": name,
        "options": resolved,
        "task": arch.task,
        "input_shape": tuple(arch.input_shape),
        "num_classes": arch.num_classes,
    }
    return model


__all__ = [
    "Architecture",
    "Flatten",
    "architecture",
    "build",
    "describe",
    "format_summary",
    "preset_options",
    "presets",
    "resolve_options",
    "summary",
]
