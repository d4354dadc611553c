"""``circles_mlp``: seed 004's MLP for the two-circles problem (2 inputs, binary).

The seed's Keras models::

    no BN:         Dense(50, relu, he_uniform) Dense(1, sigmoid)
    BN after ReLU: Dense(50, relu, he_uniform) BN Dense(1, sigmoid)
    BN before:     Dense(50, he_uniform) BN Activation(relu) Dense(1, sigmoid)

i.e. ``norm="none"``, ``bn_position="after_activation"`` (default) and
``"before_activation"``. The task is binary: the module outputs one logit per sample
(the sigmoid lives in the loss). ``num_classes > 2`` gives a softmax head instead.
Parameters: 201 without BN; 401 with BN (301 trainable: the Dense layers and BN's gamma
and beta; 100 non-trainable: BN's moving mean and variance).
"""

from __future__ import annotations

from typing import Any

from bnlab.models import options as opt
from bnlab.models import spec
from bnlab.models.registry import Preset, register


def architecture(name: str, o: dict[str, Any]) -> spec.Architecture:
    kw = {"norm_kind": o["norm"], "position": o["bn_position"]}
    binary = o["num_classes"] == 2
    layers = [
        *spec.place_norm(
            spec.Dense("dense1", o["units"], kernel_initializer="he_uniform"),
            [],
            "bn1",
            "relu1",
            **kw,
        ),
        spec.Dense("dense2", 1 if binary else o["num_classes"]),
    ]
    return spec.Architecture(
        preset=name,
        layers=tuple(layers),
        input_shape=o["input_shape"],
        num_classes=o["num_classes"],
        task="binary" if binary else "multiclass",
        norm=opt.norm_settings(o),
        l2=o["l2"],
    )


register(
    Preset(
        name="circles_mlp",
        description=(
            "seed 004: MLP 2 -> 50 (he_uniform, ReLU) -> 1 logit for make_circles; BN after "
            "or before the ReLU (bn_position)"
        ),
        options={
            **opt.pick(
                *(n for n in opt.COMMON if n not in ("dropout", "num_classes", "input_shape"))
            ),
            "num_classes": opt.Option(
                2, opt.classes, "2: binary, one logit (the seed); more: a softmax head"
            ),
            "input_shape": opt.Option((2,), opt.shape(1), "number of input features (F,)"),
            "units": opt.Option(50, opt.positive_int, "hidden layer width"),
        },
        architecture=architecture,
    )
)
