"""BN options of a study variant on an existing model: every untouched tensor is kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bnlab.errors import ConfigError
from bnlab.nn.surgery import apply_bn_options, find_bn_layers


def _net(bn=True):
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4) if bn else nn.Identity(), nn.ReLU()]
    layers += [nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4) if bn else nn.Identity(), nn.ReLU()]
    layers += [nn.Flatten(), nn.Linear(4 * 4 * 4, 3)]
    return nn.Sequential(*layers)


def _untouched(before: dict, after: dict, changed_prefixes: tuple[str, ...]) -> None:
    """Every tensor outside the changed layers is there, under its name, bit for bit."""
    kept = {k: v for k, v in before.items() if not k.startswith(changed_prefixes)}
    assert kept, "nothing to compare"
    for key, value in kept.items():
        assert key in after, key
        assert torch.equal(after[key], value), key


def test_momentum_epsilon_and_tables_keep_every_tensor():
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_bn_options(model, bn_momentum={"1": 0.8}, bn_epsilon=1e-2)
    _untouched(before, model.state_dict(), ())  # nothing is rebuilt: every tensor kept
    assert model[1].momentum == pytest.approx(0.2)  # torch's momentum = 1 - Keras's
    assert model[4].momentum == 0.1 and model[1].eps == model[4].eps == 1e-2
    assert type(model[1]) is nn.BatchNorm2d


def test_norm_swap_renorm_and_removal_keep_the_other_layers():
    for options, kind in [
        ({"norm": "group"}, "GroupNorm"),
        ({"norm": "none"}, "Identity"),
        ({"bn_renorm": True, "bn_momentum": 0.9}, "BatchNorm"),
        ({"bn_virtual_batch_size": 4}, "BatchNorm"),
    ]:
        model = _net()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        apply_bn_options(model, **options)
        _untouched(before, model.state_dict(), ("1.", "4."))
        assert type(model[1]).__name__ == kind and type(model[4]).__name__ == kind
        model(torch.randn(8, 1, 8, 8))
    model = _net()
    apply_bn_options(model, bn_renorm=True)
    assert model[1].renorm and torch.equal(model[1].moving_mean, _net()[1].running_mean)


@pytest.mark.parametrize("position", ["after_conv", "after_activation", "before_activation"])
def test_insert_bn_keeps_every_name_and_weight(position):
    model = _net(bn=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_bn_options(model, insert_bn=position, bn_momentum=0.8)
    after = model.state_dict()
    _untouched(before, after, ())
    new = sorted({k.rsplit(".", 1)[0] for k in set(after) - set(before)})
    sites = {"after_conv": ["0", "3"], "after_activation": ["2", "5"],
             "before_activation": ["2", "5"]}[position]  # fmt: skip
    assert new == [f"{s}.bnlab_norm" for s in sites]
    assert all(m.momentum == 0.8 for _, m in find_bn_layers(model))
    x = torch.randn(8, 1, 8, 8)
    model.train()
    h = model[0](x)  # for after_conv the hook already applies the BN here
    bn = model[2].bnlab_norm if position != "after_conv" else None
    if position == "before_activation":
        torch.testing.assert_close(model[2](h), torch.relu(bn(h)))
    elif position == "after_activation":
        torch.testing.assert_close(model[2](h), bn(torch.relu(h)))
    else:
        assert abs(float(h.mean())) < 1e-5  # normalised output of the conv (gamma 1, beta 0)


def test_options_that_cannot_apply_are_refused_naming_the_layer():
    with pytest.raises(ConfigError, match="bn_momentum: the model has no BN layer"):
        apply_bn_options(_net(bn=False), bn_momentum=0.9)
    with pytest.raises(ConfigError, match="insert_bn: the model has BN already \\(layer '1'\\)"):
        apply_bn_options(_net(), insert_bn="after_conv")
    with pytest.raises(ConfigError, match="bn_momentum: the model has no BN layer 'x'"):
        apply_bn_options(_net(), bn_momentum={"x": 0.9})

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    with pytest.raises(ConfigError, match="no activation module"):
        apply_bn_options(Functional(), insert_bn="after_activation")
    apply_bn_options(Functional(), insert_bn="after_conv")  # after a.; never after the output


def test_keras_surgery_keeps_every_other_weight():
    keras = pytest.importorskip("keras")
    from bnlab.models.keras_surgery import apply_keras_bn_options

    L = keras.layers

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                L.Conv2D(4, 3, activation="relu", name="c1"),
                L.BatchNormalization(name="bn1"),
                L.Flatten(name="f"),
                L.Dense(8, name="d1"),
                L.Activation("relu", name="a1"),
                L.Dense(3, activation="softmax", name="out"),
            ]  # fmt: skip
        )

    def weights(m):
        return {f"{layer.name}/{i}": w for layer in m.layers
                for i, w in enumerate(layer.get_weights())}  # fmt: skip

    original = model()
    ref = weights(original)
    for options, gone in [({"norm": "none"}, "bn1"), ({"bn_renorm": True}, "bn1"),
                          ({"bn_momentum": 0.8}, None)]:  # fmt: skip
        new, deferred = apply_keras_bn_options(model(), **options)
        assert deferred == {}
        got = weights(new)
        for key, value in ref.items():
            if key.startswith(f"{gone}/") and gone is not None and "norm" in options:
                assert key not in got
                continue
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    new, _ = apply_keras_bn_options(model(), bn_momentum={"bn1": 0.8}, bn_virtual_batch_size=4)
    assert new.get_layer("bn1").momentum == 0.8
    no_bn, _ = apply_keras_bn_options(model(), norm="none")
    inserted, _ = apply_keras_bn_options(no_bn, insert_bn="after_conv")
    names = [layer.name for layer in inserted.layers]
    assert names == ["c1", "bnlab_bn_1", "f", "d1", "bnlab_bn_2", "a1", "out"]
    got = weights(inserted)
    for key, value in ref.items():
        if not key.startswith("bn1/"):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    with pytest.raises(ConfigError, match="'before_activation' cannot apply to layer 'c1'"):
        apply_keras_bn_options(
            keras.Sequential(
                [
                    keras.Input((8, 8, 1)),
                    L.Conv2D(4, 3, activation="relu", name="c1"),
                    L.Flatten(),
                    L.Dense(3),
                ]
            ),  # fmt: skip
            insert_bn="before_activation",
        )
