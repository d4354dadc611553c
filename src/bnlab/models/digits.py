"""``digits_cnn``: a small CNN for scikit-learn's 8x8 digits (the ``demo`` study's model).

Not a seed network: it is seed 001's block structure (conv -> ReLU -> BN -> max pooling)
shrunk to 8x8x1 inputs so that a whole study trains in minutes on a CPU::

    Conv2D(16, 3, relu, padding="same") [BN] MaxPool(2)      8x8 -> 4x4
    Conv2D(32, 3, relu, padding="same") [BN] MaxPool(2)      4x4 -> 2x2
    Flatten Dropout(0.0) Dense(10)

6,090 parameters without BN; 6,282 with (6,186 trainable, 96 non-trainable). The dropout
layer has rate 0 by default (the identity), a slot for studies that sweep ``dropout``.
"""

from __future__ import annotations

from typing import Any

from bnlab.models import options as opt
from bnlab.models import spec
from bnlab.models.registry import Preset, register


def architecture(name: str, o: dict[str, Any]) -> spec.Architecture:
    (rate,) = opt.dropout_rates(o["dropout"], [0.0])
    kw = {"norm_kind": o["norm"], "position": o["bn_position"]}
    layers = [
        *spec.place_norm(spec.Conv("conv1", 16, 3, padding="same"), [], "bn1", "relu1", **kw),
        spec.Pool("pool1", 2),
        *spec.place_norm(spec.Conv("conv2", 32, 3, padding="same"), [], "bn2", "relu2", **kw),
        spec.Pool("pool2", 2),
        spec.Flatten("flatten"),
        spec.Dropout("dropout", rate),
        spec.Dense("dense", o["num_classes"]),
    ]
    return opt.classifier(name, o, layers)


register(
    Preset(
        name="digits_cnn",
        description=(
            "demo model (not a seed): 2 conv(16, 32) + BN before pooling for 8x8x1 digits -> 10; "
            "6,090 params without BN, 6,282 with"
        ),
        options=opt.standard(dropout=0.0, num_classes=10, input_shape=(1, 8, 8)),
        architecture=architecture,
    )
)
