"""``malimg_cnn``: seed 000's malware-image CNN (Malimg, 64x64x3, 25 classes).

The seed's two Keras versions (``bn_placement``)::

    "after_pool" (the first; validation accuracy erratic):
        Conv2D(32, 3, relu) MaxPool(2) BN Conv2D(16, 3, relu) MaxPool(2) Dropout(0.25)
        Flatten Dense(128, relu) Dropout(0.5) Dense(50, relu) Dense(25, softmax)
    "after_conv" (the second, after advice):
        Conv2D(32, 3, relu) BN MaxPool(2) Conv2D(16, 3, relu) BN MaxPool(2) Dropout(0.25)
        Flatten Dense(128, relu) Dropout(0.5) Dense(50, relu) Dense(25, softmax)

bnlab input shape ``(3, 64, 64)``. ``dropout`` defaults to the seed's ``(0.25, 0.5)``; one
number sets both. With ``bn_position="before_activation"`` the first version becomes
conv -> pool -> BN -> ReLU (max pooling commutes with ReLU). The seed trains with
``class_weight="balanced"`` (a trainer option, not a model one).
"""

from __future__ import annotations

from typing import Any

from bnlab.models import options as opt
from bnlab.models import spec
from bnlab.models.registry import Preset, register


def architecture(name: str, o: dict[str, Any]) -> spec.Architecture:
    rate1, rate2 = opt.dropout_rates(o["dropout"], [0.25, 0.5])
    kw = {"norm_kind": o["norm"], "position": o["bn_position"]}
    conv1, conv2 = spec.Conv("conv1", 32, 3), spec.Conv("conv2", 16, 3)
    pool1, pool2 = spec.Pool("pool1", 2), spec.Pool("pool2", 2)
    if o["bn_placement"] == "after_pool":
        features = [
            *spec.place_norm(conv1, [pool1], "bn1", "relu1", **kw),
            conv2,
            spec.ReLU("relu2"),
            pool2,
        ]
    else:
        features = [
            *spec.place_norm(conv1, [], "bn1", "relu1", **kw),
            pool1,
            *spec.place_norm(conv2, [], "bn2", "relu2", **kw),
            pool2,
        ]
    layers = [
        *features,
        spec.Dropout("dropout1", rate1),
        spec.Flatten("flatten"),
        spec.Dense("dense1", 128),
        spec.ReLU("relu3"),
        spec.Dropout("dropout2", rate2),
        spec.Dense("dense2", 50),
        spec.ReLU("relu4"),
        spec.Dense("dense3", o["num_classes"]),
    ]
    return opt.classifier(name, o, layers)


register(
    Preset(
        name="malimg_cnn",
        description=(
            "seed 000: Malimg malware-image CNN, 64x64x3 -> 25; BN after pooling "
            "(bn_placement='after_pool', the erratic one) or after each conv ('after_conv')"
        ),
        options={
            **opt.standard(dropout=(0.25, 0.5), num_classes=25, input_shape=(3, 64, 64)),
            "bn_placement": opt.Option(
                "after_pool",
                opt.choice("after_pool", "after_conv"),
                "BN after the first max pooling (seed's first version) or after each conv",
            ),
        },
        architecture=architecture,
    )
)
