"""BN options of a study variant applied to a Keras 3 model (the counterpart of
:func:`bnlab.nn.surgery.apply_bn_options` for PyTorch modules).

:func:`apply_keras_bn_options` returns ``(model, deferred)``:

* ``bn_momentum``, ``bn_epsilon`` (a number or ``{layer_name: value}``; Keras convention)
  set the attributes of the BN layers in place;
* ``norm = "none" | "batch" | "renorm" | "layer"``, ``bn_renorm`` and ``insert_bn`` rebuild a
  ``keras.Sequential`` from its config with every other layer's config and weights kept
  (same names); on a functional model they are refused naming the first BN layer;
* what Keras 3 has no layer for (``bn_virtual_batch_size``, the norm kinds ``ghost``,
  ``group``, ``instance``) is returned in ``deferred``: the study applies it to the torch
  translation of the model (and refuses it when the model must train with Keras).
"""

from __future__ import annotations

from typing import Any

from bnlab._validation import check_choice, did_you_mean
from bnlab.errors import ConfigError
from bnlab.nn.surgery import BN_OPTION_KEYS, INSERT_POSITIONS

KERAS_NORMS = ("none", "batch", "renorm", "layer")
_BLOCKS = ("Conv1D", "Conv2D", "Dense")
_ACTIVATION_LAYERS = ("Activation", "ReLU", "LeakyReLU", "ELU")


def _bn_layers(model) -> list:
    return [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]


def apply_keras_bn_options(model, **options) -> tuple[Any, dict[str, Any]]:
    """Apply the BN options to Keras ``model``; see the module docstring."""
    import keras

    unknown = sorted(set(options) - set(BN_OPTION_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a BN option; options: {', '.join(BN_OPTION_KEYS)}")
    opts = {k: v for k, v in options.items() if v is not None}
    deferred = {}
    if "bn_virtual_batch_size" in opts:
        deferred["bn_virtual_batch_size"] = opts.pop("bn_virtual_batch_size")
    if opts.get("norm") is not None and opts["norm"] not in KERAS_NORMS:
        deferred["norm"] = opts.pop("norm")
    structural = {k: opts.pop(k) for k in ("norm", "bn_renorm", "insert_bn") if k in opts}
    if structural:
        model = _rebuild(keras, model, structural, opts)
    bns = _bn_layers(model)
    if opts and not bns and not deferred:
        key = next(iter(opts))
        raise ConfigError(
            f"{key}: the Keras model has no BatchNormalization layer to change; insert_bn adds "
            "BN to a model without it"
        )
    names = [layer.name for layer in bns]
    for key, attr in (("bn_momentum", "momentum"), ("bn_epsilon", "epsilon")):
        if key not in opts:
            continue
        value = opts[key]
        if isinstance(value, dict):
            for given in value:
                if given not in names:
                    raise ConfigError(
                        f"{key}: the model has no BN layer {given!r}{did_you_mean(given, names)}"
                        f"; BN layers: {', '.join(names)}"
                    )
        for layer in bns:
            v = value.get(layer.name) if isinstance(value, dict) else value
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{key}: {v!r} (layer {layer.name!r}) is not a number")
            if key == "bn_momentum" and not 0 <= v <= 1:
                raise ConfigError(f"{key}: {v!r} (layer {layer.name!r}) is not in [0, 1]")
            if key == "bn_epsilon" and not v > 0:
                raise ConfigError(f"{key}: {v!r} (layer {layer.name!r}) is not > 0")
            setattr(layer, attr, float(v))
    return model, deferred


def _rebuild(keras, model, structural: dict[str, Any], opts: dict[str, Any]):
    """A Sequential rebuilt with BN layers removed, changed or inserted; weights copied."""
    if type(model).__name__ != "Sequential":
        first = next(iter(_bn_layers(model)), None) or model.layers[-1]
        key = next(iter(structural))
        raise ConfigError(
            f"{key}: changing the layers of a functional Keras model is not supported (layer "
            f"{first.name!r}); write the model as a keras.Sequential or a keras_factory option"
        )
    config = model.get_config()
    layers = [dict(entry) for entry in config["layers"]]
    norm = structural.get("norm")
    if norm is not None:
        check_choice("norm", norm, KERAS_NORMS)
    renorm = structural.get("bn_renorm")
    if renorm is not None and not isinstance(renorm, bool):
        raise ConfigError(f"bn_renorm: {renorm!r} is not true or false")
    out = []
    has_bn = any(e["class_name"] == "BatchNormalization" for e in layers)
    if (norm is not None or renorm is not None) and not has_bn:
        key = "norm" if norm is not None else "bn_renorm"
        raise ConfigError(f"{key}: the Keras model has no BatchNormalization layer to change")
    for entry in layers:
        if entry["class_name"] != "BatchNormalization":
            out.append(entry)
            continue
        if norm == "none":
            continue
        entry = {**entry, "config": dict(entry["config"])}
        if norm == "renorm" or renorm:
            entry["config"]["renorm"] = True
        elif renorm is False:
            entry["config"]["renorm"] = False
        if norm == "layer":
            cfg = entry["config"]
            entry = {
                "module": "keras.layers",
                "class_name": "LayerNormalization",
                "config": {"name": cfg["name"], "epsilon": cfg.get("epsilon", 1e-3)},
            }
        out.append(entry)
    if structural.get("insert_bn") is not None:
        out = _insert(out, structural["insert_bn"], opts)
    config = {**config, "layers": out}
    new = keras.Sequential.from_config(config)
    old = {layer.name: layer for layer in model.layers}
    for layer in new.layers:
        source = old.get(layer.name)
        if source is None or type(source) is not type(layer):
            continue
        weights = source.get_weights()
        if [w.shape for w in weights] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(weights)
        elif type(layer).__name__ == "BatchNormalization":  # renorm added: keep the statistics
            for mine, theirs in zip(layer.weights, source.weights, strict=False):
                if mine.path.rsplit("/", 1)[-1] == theirs.path.rsplit("/", 1)[-1]:
                    mine.assign(theirs.numpy())
    return new


def _insert(layers: list[dict], position: str, opts: dict[str, Any]) -> list[dict]:
    check_choice("insert_bn", position, INSERT_POSITIONS)
    existing = [e for e in layers if e["class_name"] == "BatchNormalization"]
    if existing:
        raise ConfigError(
            f"insert_bn: the model has BN already (layer {existing[0]['config']['name']!r}); "
            "change it with bn_momentum / norm, or remove it with norm = 'none'"
        )
    blocks = [i for i, e in enumerate(layers) if e["class_name"] in _BLOCKS]
    if len(blocks) < 2:
        raise ConfigError(
            f"insert_bn: {position!r} needs at least two Conv/Dense layers (the last one is the "
            f"output); the model has {len(blocks)}"
        )
    bn_cfg: dict[str, Any] = {}
    for key, attr in (("bn_momentum", "momentum"), ("bn_epsilon", "epsilon")):
        if isinstance(opts.get(key), (int, float)) and not isinstance(opts.get(key), bool):
            bn_cfg[attr] = float(opts.pop(key))
    out, count = [], 0
    for i, entry in enumerate(layers):
        activation = entry["config"].get("activation", "linear")
        fused = entry["class_name"] in _BLOCKS and activation not in ("linear", None)
        hidden = i < blocks[-1]
        name = entry["config"]["name"]

        def bn():
            nonlocal count
            count += 1
            return {"module": "keras.layers", "class_name": "BatchNormalization",
                    "config": {"name": f"bnlab_bn_{count}", **bn_cfg}}  # fmt: skip

        if position == "before_activation":
            if hidden and fused:
                raise ConfigError(
                    f"insert_bn: 'before_activation' cannot apply to layer {name!r}: its "
                    f"activation {activation!r} is fused into the layer"
                )
            if hidden and entry["class_name"] in _ACTIVATION_LAYERS:
                out.append(bn())
            out.append(entry)
            continue
        out.append(entry)
        if not hidden:
            continue
        if position == "after_conv" and entry["class_name"] in _BLOCKS:
            out.append(bn())
        elif position == "after_activation" and (
            fused or entry["class_name"] in _ACTIVATION_LAYERS
        ):
            out.append(bn())
    if count == 0:
        raise ConfigError(f"insert_bn: {position!r} finds no place for a BN layer in the model")
    return out
