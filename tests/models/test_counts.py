"""Parameter counts of the presets equal what the seeds' Keras ``summary()`` printed."""

from __future__ import annotations

import pytest

from bnlab.models import build, summary

# (preset, options, total, trainable, non_trainable); numbers printed in the seeds
SEED_COUNTS = [
    # seed 002: baseline_model / bn_model
    ("fashion_cnn", {"norm": "none"}, 31_626, 31_626, 0),
    ("fashion_cnn", {}, 33_930, 32_778, 1_152),
    # seed 001: the 2-conv and 3-conv models, and the 3-conv model with BN
    ("scenes_cnn", {"convs": 2, "norm": "none"}, 2_286_246, 2_286_246, 0),
    ("scenes_cnn", {"convs": 3, "norm": "none"}, 279_382, 279_382, 0),
    ("scenes_cnn", {"convs": 3}, 279_638, 279_510, 128),
    # seed 003: build(reg) and the deep model
    ("cifar_small", {}, 4_203_018, 4_201_930, 1_088),
    ("cifar_small", {"l2": 0.01}, 4_203_018, 4_201_930, 1_088),
    ("cifar_deep", {}, 1_345_066, 1_343_146, 1_920),
]


@pytest.mark.parametrize(("name", "options", "total", "trainable", "non_trainable"), SEED_COUNTS)
def test_counts_equal_the_seeds_summaries(name, options, total, trainable, non_trainable):
    s = summary(build(name, **options), input_shape=None)  # counting needs no forward pass
    assert (s["total"], s["trainable"], s["non_trainable"]) == (total, trainable, non_trainable)


# Seeds 000 and 004 print no summary; these are the Keras formulas, layer by layer:
# conv k*k*in*out + out, dense in*out + out, BN 2 trainable + 2 non-trainable per channel.
MALIMG_NO_BN = (
    (3 * 9 * 32 + 32)
    + (32 * 9 * 16 + 16)
    + (14 * 14 * 16 * 128 + 128)
    + (128 * 50 + 50)
    + (50 * 25 + 25)
)
CIRCLES_NO_BN = (2 * 50 + 50) + (50 + 1)
DIGITS_NO_BN = (9 * 16 + 16) + (16 * 9 * 32 + 32) + (2 * 2 * 32 * 10 + 10)
HAND_COUNTS = [
    ("malimg_cnn", {"norm": "none"}, MALIMG_NO_BN, 0),
    ("malimg_cnn", {"bn_placement": "after_pool"}, MALIMG_NO_BN + 2 * 32, 2 * 32),
    ("malimg_cnn", {"bn_placement": "after_conv"}, MALIMG_NO_BN + 2 * 48, 2 * 48),
    ("circles_mlp", {"norm": "none"}, CIRCLES_NO_BN, 0),
    ("circles_mlp", {}, CIRCLES_NO_BN + 100, 100),
    ("circles_mlp", {"bn_position": "before_activation"}, CIRCLES_NO_BN + 100, 100),
    ("digits_cnn", {"norm": "none"}, DIGITS_NO_BN, 0),
    ("digits_cnn", {}, DIGITS_NO_BN + 2 * 48, 2 * 48),
]


@pytest.mark.parametrize(("name", "options", "trainable", "non_trainable"), HAND_COUNTS)
def test_counts_of_the_other_presets(name, options, trainable, non_trainable):
    s = summary(build(name, **options), input_shape=None)
    assert (s["trainable"], s["non_trainable"]) == (trainable, non_trainable)
    assert s["total"] == trainable + non_trainable


def test_the_seeds_final_scene_model_is_expressible():
    # seed 001's final model: BN momentum 0.8 and the dropout line commented out
    model = build("scenes_cnn", bn_momentum=0.8, dropout=0.0)
    assert [m.momentum for m in model if type(m).__name__ == "BatchNorm"] == [0.8] * 3
    assert model.dropout.p == 0.0
    assert summary(model, input_shape=None)["total"] == 279_638
