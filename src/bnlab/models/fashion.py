"""``fashion_cnn``: seed 002's ``create_model(batch_norm)`` for Fashion-MNIST.

The seed (Keras, input 28x28x1 channels last, 10 classes)::

    Conv2D(32, 5, relu) MaxPool(2) [BN] Conv2D(32, 4, relu, padding="same") MaxPool(2) [BN]
    Conv2D(32, 3, relu) Flatten [BN] Dropout(0.2) Dense(10) Activation(softmax)

bnlab input shape ``(1, 28, 28)``. Parameters: 31,626 with ``norm="none"``; 33,930 with
BN (32,778 trainable, 1,152 non-trainable: the moving mean and variance), as the seed's
``summary()`` prints. ``bn_position="before_activation"`` moves each ReLU behind its norm
(conv -> pool -> BN -> ReLU; pooling and flatten commute with ReLU).
"""

from __future__ import annotations

from typing import Any

from bnlab.models import options as opt
from bnlab.models import spec
from bnlab.models.registry import Preset, register


def architecture(name: str, o: dict[str, Any]) -> spec.Architecture:
    (rate,) = opt.dropout_rates(o["dropout"], [0.2])
    kw = {"norm_kind": o["norm"], "position": o["bn_position"]}
    layers = [
        *spec.place_norm(spec.Conv("conv1", 32, 5), [spec.Pool("pool1", 2)], "bn1", "relu1", **kw),
        *spec.place_norm(
            spec.Conv("conv2", 32, 4, padding="same"), [spec.Pool("pool2", 2)], "bn2", "relu2", **kw
        ),
        *spec.place_norm(
            spec.Conv("conv3", 32, 3), [spec.Flatten("flatten")], "bn3", "relu3", **kw
        ),
        spec.Dropout("dropout", rate),
        spec.Dense("dense", o["num_classes"]),
    ]
    return spec.Architecture(
        preset=name,
        layers=tuple(layers),
        input_shape=o["input_shape"],
        num_classes=o["num_classes"],
        task="multiclass",
        norm=opt.norm_settings(o),
        l2=o["l2"],
        keras_output_layer=True,
    )


register(
    Preset(
        name="fashion_cnn",
        description=(
            "seed 002: Fashion-MNIST CNN, 3 conv(32) + BN after pool/flatten, 28x28x1 -> 10; "
            "31,626 params without BN, 33,930 with"
        ),
        options=opt.standard(dropout=0.2, num_classes=10, input_shape=(1, 28, 28)),
        architecture=architecture,
    )
)
