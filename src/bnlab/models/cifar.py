"""``cifar_small`` and ``cifar_deep``: seed 003's CIFAR-10 networks (32x32x3, 10 classes).

``cifar_small`` is the seed's ``build(reg)``::

    Conv2D(32, 3, relu, padding="same", kernel_regularizer=reg) BN MaxPool(2) Flatten
    Dense(512, relu, kernel_regularizer=reg) BN Dropout(0.5) Dense(10, softmax)

4,203,018 parameters (4,201,930 trainable, 1,088 non-trainable). The seed regularizes the
conv and the hidden Dense but not the classifier, so ``l2_output`` defaults to False here:
``build("cifar_small", l2=0.01)`` is the seed's ``build(reg=L2(0.01))``.

``cifar_deep`` is the deeper model whose summary the seed prints (its code is not shown);
module names are the seed's layer names::

    conv01 bn01 conv01_2 bn01_2 maxpool01 drop01 conv02 bn02 conv02_2 bn02_2 maxpool02 drop02
    conv03_1 bn03 conv03_2 bn03_2 maxpool03 drop03 flat full01 bn drop classification

1,345,066 parameters (1,343,146 trainable, 1,920 non-trainable). Convolutions are 3x3
"same" (the printed shapes) with ReLU (as in ``build(reg)``; an activation inside Conv2D
does not show in a summary). The summary does not print dropout rates: the default
``(0.2, 0.3, 0.4, 0.5)`` for drop01, drop02, drop03, drop is the common VGG-style CIFAR
schedule. Which layers the seed regularizes is not shown either; ``l2_output`` defaults to
True (every conv/dense kernel).
"""

from __future__ import annotations

from typing import Any

from bnlab.models import options as opt
from bnlab.models import spec
from bnlab.models.registry import Preset, register


def small(name: str, o: dict[str, Any]) -> spec.Architecture:
    (rate,) = opt.dropout_rates(o["dropout"], [0.5])
    kw = {"norm_kind": o["norm"], "position": o["bn_position"]}
    layers = [
        *spec.place_norm(spec.Conv("conv1", 32, 3, padding="same"), [], "bn1", "relu1", **kw),
        spec.Pool("pool1", 2),
        spec.Flatten("flatten"),
        *spec.place_norm(spec.Dense("dense1", 512), [], "bn2", "relu2", **kw),
        spec.Dropout("dropout", rate),
        spec.Dense("dense2", o["num_classes"], regularized=o["l2_output"]),
    ]
    return opt.classifier(name, o, layers)


def deep(name: str, o: dict[str, Any]) -> spec.Architecture:
    rates = opt.dropout_rates(o["dropout"], [0.2, 0.3, 0.4, 0.5])
    kw = {"norm_kind": o["norm"], "position": o["bn_position"]}
    layers: list[spec.Layer] = []
    blocks = [("01", 32, "01", "01_2"), ("02", 64, "02", "02_2"), ("03", 128, "03_1", "03_2")]
    for i, (block, filters, first, second) in enumerate(blocks):
        bn_first = "bn03" if block == "03" else f"bn{first}"
        layers += [
            *spec.place_norm(
                spec.Conv(f"conv{first}", filters, 3, padding="same"),
                [],
                bn_first,
                f"relu{first}",
                **kw,
            ),
            *spec.place_norm(
                spec.Conv(f"conv{second}", filters, 3, padding="same"),
                [],
                f"bn{second}",
                f"relu{second}",
                **kw,
            ),
            spec.Pool(f"maxpool{block}", 2),
            spec.Dropout(f"drop{block}", rates[i]),
        ]
    layers += [
        spec.Flatten("flat"),
        *spec.place_norm(spec.Dense("full01", 512), [], "bn", "relu_full01", **kw),
        spec.Dropout("drop", rates[3]),
        spec.Dense("classification", o["num_classes"], regularized=o["l2_output"]),
    ]
    return opt.classifier(name, o, layers)


def _options(dropout: Any, l2_output: bool) -> dict[str, opt.Option]:
    return {
        **opt.standard(dropout=dropout, num_classes=10, input_shape=(3, 32, 32)),
        "l2_output": opt.Option(
            l2_output, opt.boolean, "whether l2 also regularizes the classifier's kernel"
        ),
    }


register(
    Preset(
        name="cifar_small",
        description=(
            "seed 003: CIFAR-10 conv(32)+BN, dense(512)+BN, 32x32x3 -> 10; 4,203,018 params; "
            "l2=0.01 is the seed's L2 kernel regularizer"
        ),
        options=_options(0.5, False),
        architecture=small,
    )
)

register(
    Preset(
        name="cifar_deep",
        description=(
            "seed 003: deep CIFAR-10 CNN, 6 conv + BN (bn01..bn03_2), dense(512)+BN, "
            "32x32x3 -> 10; 1,345,066 params"
        ),
        options=_options((0.2, 0.3, 0.4, 0.5), True),
        architecture=deep,
    )
)
