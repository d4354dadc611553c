"""``scenes_cnn``: seed 001's scene classifier (224x224x3, 6 classes, "week 9" notebook).

The seed's Keras models (BN after each conv's ReLU, before the pooling)::

    ZeroPadding2D(1) Conv2D(16, 3, relu) [BN] MaxPool(2)
    Conv2D(32, 3, relu) [BN] MaxPool(2, strides=1)
    (convs=3 only:) Conv2D(16, 3, relu) [BN] MaxPool(2)
    Flatten Dropout Dense(6, softmax)

bnlab input shape ``(3, 224, 224)``. Parameters: ``convs=2, norm="none"`` 2,286,246;
``convs=3, norm="none"`` 279,382; ``convs=3`` with BN 279,638 (279,510 trainable, 128
non-trainable), as the seed prints.

Dropout rate: the seed's summaries show a Dropout layer but not its rate; its final model
has the line ``#layers.Dropout(0.5)`` commented out, so 0.5 is the default here. The seed's
final model (BN momentum 0.8, no dropout; validation 0.99 instead of 0.44) is
``build("scenes_cnn", bn_momentum=0.8, dropout=0.0)`` (a Dropout layer with rate 0 is the
identity).
"""

from __future__ import annotations

from typing import Any

from bnlab.models import options as opt
from bnlab.models import spec
from bnlab.models.registry import Preset, register


def architecture(name: str, o: dict[str, Any]) -> spec.Architecture:
    (rate,) = opt.dropout_rates(o["dropout"], [0.5])
    kw = {"norm_kind": o["norm"], "position": o["bn_position"]}
    layers = [
        spec.Pad("pad", 1),
        *spec.place_norm(spec.Conv("conv1", 16, 3), [], "bn1", "relu1", **kw),
        spec.Pool("pool1", 2),
        *spec.place_norm(spec.Conv("conv2", 32, 3), [], "bn2", "relu2", **kw),
        spec.Pool("pool2", 2, stride=1),
    ]
    if o["convs"] == 3:
        layers += [
            *spec.place_norm(spec.Conv("conv3", 16, 3), [], "bn3", "relu3", **kw),
            spec.Pool("pool3", 2),
        ]
    layers += [
        spec.Flatten("flatten"),
        spec.Dropout("dropout", rate),
        spec.Dense("dense", o["num_classes"]),
    ]
    return opt.classifier(name, o, layers)


register(
    Preset(
        name="scenes_cnn",
        description=(
            "seed 001: scene CNN with ZeroPadding, 224x224x3 -> 6; convs=2 (2,286,246 params) "
            "or 3 (279,382; 279,638 with BN)"
        ),
        options={
            **opt.standard(dropout=0.5, num_classes=6, input_shape=(3, 224, 224)),
            "convs": opt.Option(3, opt.choice(2, 3), "2 or 3 conv blocks (the seed's versions)"),
        },
        architecture=architecture,
    )
)
