"""BN folding for Keras 3 models: a new model with each foldable ``BatchNormalization`` merged.

The same rule as :mod:`bnlab.nn.fold` (inference-mode BN is ``x * s + t`` per channel;
``kernel' = kernel * s`` along the output axis, ``bias' = bias * s + t``), for a BN layer
that reads the output of a ``Conv1D/2D/3D`` or ``Dense`` layer without activation, on that
layer's channel axis, when nothing else reads it. Folded BN layers become
``keras.layers.Identity`` layers of the same name; the folded layers gain a bias. Keras is
imported only when a Keras model is folded.
"""

from __future__ import annotations

import numpy as np

from bnlab.errors import ConfigError
from bnlab.nn.fold_report import FoldReport


def _numpy(variable) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)


def _problem(keras, bn, targets) -> tuple[str | None, object]:
    """Why ``bn`` cannot be folded (or ``None``) and the layer it would fold into."""
    if len(bn._inbound_nodes) != 1:
        return "it is called more than once (a shared layer)", None
    parents = bn._inbound_nodes[0].parent_nodes
    if len(parents) != 1:
        return "it does not read exactly one layer's output", None
    prev = parents[0].operation
    if not isinstance(prev, targets):
        return f"it follows {prev.name} ({type(prev).__name__}), not Conv1D/2D/3D or Dense", None
    if len(prev._inbound_nodes) != 1 or len(prev._outbound_nodes) != 1:
        return f"the output of {prev.name} is also used elsewhere", None
    if prev.activation is not keras.activations.linear:
        return f"{prev.name} applies its activation before the BN", None
    rank = len(prev.output.shape)
    channels_first = getattr(prev, "data_format", "channels_last") == "channels_first"
    channel_axis = 1 if channels_first else rank - 1
    if bn.axis % rank != channel_axis:
        return f"it normalises axis {bn.axis}, not {prev.name}'s channel axis", None
    return None, prev


def _folded_weights(layer, bn) -> list[np.ndarray]:
    kernel = _numpy(layer.kernel)
    bias = _numpy(layer.bias) if layer.use_bias else np.zeros(kernel.shape[-1])
    scale = 1.0 / np.sqrt(_numpy(bn.moving_variance) + bn.epsilon)
    if bn.scale:
        scale = scale * _numpy(bn.gamma)
    shift = -_numpy(bn.moving_mean) * scale
    if bn.center:
        shift = shift + _numpy(bn.beta)
    dtype = np.dtype(layer.kernel.dtype)
    return [(kernel * scale).astype(dtype), (bias * scale + shift).astype(dtype)]


def fold_keras_bn(model):
    """A new Keras model equal in inference to ``model``, its foldable BN layers folded.

    Works on Sequential and functional models (cloned with ``keras.models.clone_model``);
    the original keeps its weights. ``result.bn_folding`` is the
    :class:`~bnlab.nn.fold.FoldReport` (layer names). Subclassed models raise
    :class:`ConfigError` (their graph cannot be rebuilt).
    """
    import keras

    targets = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)
    if not isinstance(model, (keras.Sequential, keras.Model)) or not hasattr(model, "inputs"):
        raise ConfigError(
            f"model: {type(model).__name__} is not a Keras Sequential/functional model"
        )
    report = FoldReport()
    into: dict[str, object] = {}  # conv/dense name -> its BN
    folded_bn: set[str] = set()
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization):
            continue
        why, layer = _problem(keras, bn, targets)
        if why is not None:
            report.left.append((bn.name, why))
            continue
        into[layer.name] = bn
        folded_bn.add(bn.name)
        report.folded.append((bn.name, layer.name))

    def clone(layer):
        if layer.name in folded_bn:
            return keras.layers.Identity(name=layer.name)
        config = layer.get_config()
        if layer.name in into:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):  # functional models: a folded BN passes its input on
        return args[0] if layer.name in folded_bn else layer(*args, **kwargs)

    extra = {} if isinstance(model, keras.Sequential) else {"call_function": call}
    try:
        new = keras.models.clone_model(model, clone_function=clone, **extra)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(
            f"model: {model.name} cannot be cloned by keras.models.clone_model ({exc})"
        ) from None
    present = {layer.name for layer in new.layers}
    for old in model.layers:
        if old.name in folded_bn or old.name not in present:
            continue
        target = new.get_layer(old.name)
        if old.name in into:
            target.set_weights(_folded_weights(old, into[old.name]))
        else:
            target.set_weights(old.get_weights())
    new.bn_folding = report
    return new
