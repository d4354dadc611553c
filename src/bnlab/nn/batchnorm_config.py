"""``BatchNorm``'s configuration: argument checks, ``get_config`` and ``from_config``.

The config dict lists Keras 3's ``BatchNormalization`` keys first, in Keras's order
(``trainable`` from Keras's base layer, then ``axis`` ... ``renorm_momentum``), then
bnlab's extras (``virtual_batch_size``, ``variance``, ``num_features``). ``momentum`` is
Keras's (fraction kept), or ``None`` for torch's cumulative average.
"""

from __future__ import annotations

import inspect

from bnlab._validation import check_number, check_options
from bnlab.errors import ConfigError
from bnlab.nn import constraints, initializers, regularizers
from bnlab.nn import functional as BF


def check_bool(name: str, value) -> bool:
    """``value`` as a bool; numpy's ``bool_`` is accepted too (configs read from arrays)."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ConfigError(f"{name}: {value!r} is not True or False")
    return bool(value)


def check_momentum(momentum) -> float | None:
    """Keras momentum in [0, 1], or ``None`` (cumulative average of every batch, torch)."""
    if momentum is None:
        return None
    return float(check_number("momentum", momentum, low=0.0, high=1.0))


def init_parameters(cls) -> set[str]:
    """The keyword arguments ``cls.__init__`` accepts."""
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def config_of(layer) -> dict:
    """The constructor arguments of ``layer`` as a JSON-able dict (see the module docstring)."""
    return {
        "trainable": layer._trainable,
        "axis": layer.axis,
        "momentum": layer.momentum,
        "epsilon": layer.epsilon,
        "center": layer.center,
        "scale": layer.scale,
        "beta_initializer": initializers.serialize(layer.beta_initializer, "beta_initializer"),
        "gamma_initializer": initializers.serialize(layer.gamma_initializer, "gamma_initializer"),
        "moving_mean_initializer": initializers.serialize(
            layer.moving_mean_initializer, "moving_mean_initializer"
        ),
        "moving_variance_initializer": initializers.serialize(
            layer.moving_variance_initializer, "moving_variance_initializer"
        ),
        "beta_regularizer": regularizers.serialize(layer.beta_regularizer, "beta_regularizer"),
        "gamma_regularizer": regularizers.serialize(layer.gamma_regularizer, "gamma_regularizer"),
        "beta_constraint": constraints.serialize(layer.beta_constraint, "beta_constraint"),
        "gamma_constraint": constraints.serialize(layer.gamma_constraint, "gamma_constraint"),
        "synchronized": layer.synchronized,
        "renorm": layer.renorm,
        "renorm_clipping": BF.serialize_clipping(layer.renorm_clipping),
        "renorm_momentum": layer.renorm_momentum,
        "virtual_batch_size": layer.virtual_batch_size,
        "variance": layer.variance,
        "num_features": layer.num_features,
    }


def from_config(cls, config: dict):
    """Build ``cls`` from :func:`config_of`'s dict or from a Keras ``BatchNormalization`` config.

    Keras's ``name`` and ``dtype`` are ignored, ``trainable`` is applied, a one-element
    ``axis`` list (tf-keras) is read as that axis; unknown keys raise :class:`ConfigError`.
    """
    config = dict(config)
    config.pop("name", None)
    config.pop("dtype", None)
    trainable = config.pop("trainable", True)
    axis = config.get("axis")
    if isinstance(axis, (list, tuple)) and len(axis) == 1:  # tf-keras writes [3]
        config["axis"] = axis[0]
    check_options(f"{cls.__name__}.from_config", config, init_parameters(cls))
    layer = cls(**config)
    layer.trainable = trainable
    return layer


def describe(layer) -> str:
    """``extra_repr`` text: what differs from the Keras defaults, momentum convention named."""
    momentum = (
        "momentum=None (cumulative average)"
        if layer.momentum is None
        else f"momentum={layer.momentum} (Keras: fraction kept)"
    )
    return (
        f"{layer.num_features}, {momentum}, "
        f"epsilon={layer.epsilon}, axis={layer.axis}, center={layer.center}, scale={layer.scale}"
        + ("" if layer.variance == "biased" else ", variance='unbiased'")
        + (", renorm=True" if layer.renorm else "")
        + (f", virtual_batch_size={layer.virtual_batch_size}" if layer.virtual_batch_size else "")
        + (", synchronized=True" if layer.synchronized else "")
        + ("" if layer._trainable else ", trainable=False")
    )
