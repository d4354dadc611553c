"""Every invalid BatchNorm argument raises ConfigError naming the parameter and the value."""

from __future__ import annotations

import pytest
import torch

from bnlab.errors import ConfigError
from bnlab.nn import BatchNorm


def _call(x, **kw):
    def run():
        BatchNorm(**kw).train()(x)

    return run


def _set_trainable(value):
    def run():
        BatchNorm(num_features=2).trainable = value

    return run


CASES = [
    # (id, callable, substrings the message must contain: parameter name and bad value)
    ("momentum_above_1", lambda: BatchNorm(momentum=1.5), ["momentum", "1.5", "[0, 1]"]),
    ("momentum_below_0", lambda: BatchNorm(momentum=-0.1), ["momentum", "-0.1"]),
    ("momentum_not_number", lambda: BatchNorm(momentum="0.9"), ["momentum", "'0.9'"]),
    ("epsilon_zero", lambda: BatchNorm(epsilon=0), ["epsilon", "0", "(0, inf)"]),
    ("epsilon_negative", lambda: BatchNorm(epsilon=-1e-3), ["epsilon", "-0.001"]),
    ("renorm_momentum", lambda: BatchNorm(renorm_momentum=2), ["renorm_momentum", "2"]),
    (
        "unknown_initializer",
        lambda: BatchNorm(gamma_initializer="zeroes"),
        ["gamma_initializer", "'zeroes'", "did you mean 'zeros'"],
    ),
    (
        "unknown_keras_initializer",
        lambda: BatchNorm(beta_initializer={"class_name": "Orthogonal"}),
        ["beta_initializer", "'Orthogonal'"],
    ),
    (
        "unknown_regularizer",
        lambda: BatchNorm(gamma_regularizer="l3"),
        ["gamma_regularizer", "'l3'"],
    ),
    (
        "unknown_constraint",
        lambda: BatchNorm(beta_constraint="positive"),
        ["beta_constraint", "'positive'"],
    ),
    (
        "variance",
        lambda: BatchNorm(variance="unbaised"),
        ["variance", "'unbaised'", "did you mean"],
    ),
    ("axis_not_int", lambda: BatchNorm(axis=1.0), ["axis", "1.0"]),
    ("center_not_bool", lambda: BatchNorm(center="yes"), ["center", "'yes'"]),
    ("num_features_zero", lambda: BatchNorm(num_features=0), ["num_features", "0"]),
    (
        "virtual_batch_size_zero",
        lambda: BatchNorm(virtual_batch_size=0),
        ["virtual_batch_size", "0"],
    ),
    (
        "renorm_clipping_key",
        lambda: BatchNorm(renorm=True, renorm_clipping={"rmaxx": 2.0}),
        ["renorm_clipping", "rmaxx", "rmax, rmin, dmax"],
    ),
    (
        "renorm_clipping_rmax_below_rmin",
        lambda: BatchNorm(renorm=True, renorm_clipping={"rmax": 0.5, "rmin": 0.8}),
        ["renorm_clipping", "rmax=0.5", "rmin=0.8"],
    ),
    (
        "renorm_clipping_negative_dmax",
        lambda: BatchNorm(renorm=True, renorm_clipping={"dmax": -1.0}),
        ["renorm_clipping['dmax']", "-1.0"],
    ),
    (
        "renorm_clipping_without_renorm",
        lambda: BatchNorm(renorm_clipping={"rmax": 2.0}),
        ["renorm_clipping", "{'rmax': 2.0}", "renorm=False"],
    ),
    ("trainable_not_bool", _set_trainable(None), ["trainable", "None"]),
    (
        "axis_out_of_range_at_first_call",
        _call(torch.randn(4, 3), axis=3),
        ["axis", "3", "2 dimensions"],
    ),
    (
        "axis_out_of_range_negative",
        _call(torch.randn(4, 3, 2, 2), axis=-5),
        ["axis", "-5", "-4..3"],
    ),
    (
        "one_sample_per_channel",
        _call(torch.randn(1, 3)),
        ["batch", "1 sample(s)", "1 value per channel"],
    ),
    (
        "virtual_batch_not_a_multiple",
        _call(torch.randn(10, 3), virtual_batch_size=4),
        ["virtual_batch_size", "4", "batch size 10"],
    ),
    (
        "virtual_batch_on_batch_axis",
        _call(torch.randn(8, 3), virtual_batch_size=4, axis=0),
        ["axis", "0", "batch axis"],
    ),
    (
        "channel_count_mismatch",
        _call(torch.randn(4, 5), num_features=3),
        ["num_features", "3 channels", "has 5"],
    ),
    (
        "from_config_unknown_key",
        lambda: BatchNorm.from_config({"momentum": 0.9, "fused": True}),
        ["from_config", "'fused'"],
    ),
    (
        "synchronized_not_bool",
        lambda: BatchNorm.from_config({"synchronized": "yes"}),
        ["synchronized", "'yes'"],
    ),
    (
        "synchronized_with_ghost_batches",
        lambda: BatchNorm(synchronized=True, virtual_batch_size=4),
        ["synchronized", "True", "virtual_batch_size=4"],
    ),
]


@pytest.mark.parametrize("make, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_error_names_parameter_and_value(make, expected):
    with pytest.raises(ConfigError) as info:
        make()
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert isinstance(info.value, ValueError)


def test_one_sample_is_fine_in_inference_and_with_spatial_positions():
    bn = BatchNorm(num_features=3)
    assert bn.eval()(torch.randn(1, 3)).shape == (1, 3)
    assert bn.train()(torch.randn(1, 3, 2, 2)).shape == (1, 3, 2, 2)
