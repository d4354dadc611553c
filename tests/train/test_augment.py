"""Augmenter: Keras ImageDataGenerator geometry, exactness of exact transforms, determinism."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from bnlab.errors import ConfigError, DataError
from bnlab.train.augment import Augmenter, Transform, affine_transform

SEED003 = {"rotation": 15, "hflip": True, "width_shift": 0.1, "height_shift": 0.1}


def known_images(n=2, c=3, h=7, w=7) -> torch.Tensor:
    """Distinct values everywhere, so any misplaced pixel shows."""
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w)


@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect", "wrap"])
@pytest.mark.parametrize(("theta", "k"), [(90, 1), (-90, -1), (180, 2), (270, 3)])
def test_quarter_turns_equal_rot90_exactly(theta, k, fill_mode):
    # Positive angles turn the content counter-clockwise, as Keras (checked against Keras below).
    x = known_images()
    out = affine_transform(x, Transform.fixed(2, theta=theta), fill_mode=fill_mode, cval=-1.0)
    assert torch.equal(out, torch.rot90(x, k, dims=(-2, -1)))


def test_half_turn_of_a_non_square_image():
    x = known_images(h=4, w=6)
    assert torch.equal(affine_transform(x, Transform.fixed(2, theta=180)), x.flip(-1).flip(-2))


def test_a_tenth_of_a_ten_pixel_image_is_one_pixel():
    x = known_images(h=10, w=10)
    # width_shift=0.1 on a 10-pixel-wide image draws dx from U[-1, 1] pixels ...
    t = Augmenter(width_shift=0.1).sample(5000, 10, 10, torch.Generator().manual_seed(0))
    assert t.dx.abs().max() <= 1.0 and t.dx.abs().max() > 0.999
    assert torch.all(t.dy == 0) and torch.all(t.theta == 0)
    # ... and its extreme, dx = +1 pixel, moves the content left by exactly one pixel (Keras's
    # sign: the output samples the input one pixel to the right); the edge column repeats.
    out = affine_transform(x, Transform.fixed(2, dx=0.1 * 10))
    assert torch.equal(out[..., :-1], x[..., 1:])
    assert torch.equal(out[..., -1], x[..., -1])
    down = affine_transform(x, Transform.fixed(2, dy=-0.1 * 10))
    assert torch.equal(down[..., 1:, :], x[..., :-1, :])
    assert torch.equal(down[..., 0, :], x[..., 0, :])


def test_half_pixel_shift_interpolates_linearly():
    x = known_images(h=5, w=5)
    out = affine_transform(x, Transform.fixed(2, dx=0.5))
    torch.testing.assert_close(out[..., :-1], (x[..., :-1] + x[..., 1:]) / 2, rtol=0, atol=1e-4)


def test_hflip_flips_about_half_the_images():
    x = torch.randn(400, 3, 6, 6)
    out = Augmenter(hflip=True).apply(x, torch.Generator().manual_seed(3))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ flipped)  # every image is exactly itself or its mirror image
    assert 150 < int(flipped.sum()) < 250  # p = 0.5


def test_vflip_flips_rows():
    x = torch.randn(400, 1, 5, 4)
    out = Augmenter(vflip=True).apply(x, torch.Generator().manual_seed(4))
    flipped = (out == x.flip(-2)).flatten(1).all(1)
    assert torch.all((out == x).flatten(1).all(1) ^ flipped)
    assert 150 < int(flipped.sum()) < 250


def test_same_seed_same_batch_different_seed_different_batch():
    x = torch.rand(16, 3, 32, 32)
    aug = Augmenter(**SEED003)
    a = aug.apply(x, torch.Generator().manual_seed(7))
    b = aug.apply(x, torch.Generator().manual_seed(7))
    c = aug.apply(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, x)


def test_apply_leaves_the_input_alone_and_keeps_shape_dtype():
    x = torch.rand(4, 3, 9, 9, dtype=torch.float64)
    before = x.clone()
    out = Augmenter(rotation=30, zoom=0.2).apply(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    assert out.shape == x.shape and out.dtype == torch.float64


def test_identity_augmenter_returns_input():
    x = torch.rand(2, 1, 4, 4)
    assert Augmenter().is_identity
    assert Augmenter().apply(x) is x


def test_zoom_range_draws_independent_factors():
    t = Augmenter(zoom=0.2).sample(4000, 8, 8, torch.Generator().manual_seed(1))
    for z in (t.zx, t.zy):
        assert 0.8 <= float(z.min()) < 0.81 and 1.19 < float(z.max()) <= 1.2
    assert abs(float(torch.corrcoef(torch.stack((t.zx, t.zy)))[0, 1])) < 0.05
    t = Augmenter(zoom=[0.5, 0.6]).sample(100, 8, 8, torch.Generator().manual_seed(1))
    assert 0.5 <= float(t.zx.min()) and float(t.zx.max()) <= 0.6


def test_zoom_out_shrinks_the_content():
    # zx = zy = 2 samples twice the area: the centre pixel stays, its neighbour comes from
    # two pixels away.
    x = known_images(n=1, c=1, h=9, w=9)
    out = affine_transform(x, Transform.fixed(1, zx=2.0, zy=2.0))
    assert out[0, 0, 4, 4] == x[0, 0, 4, 4]
    assert out[0, 0, 4, 5] == x[0, 0, 4, 6]


def test_constant_fill_uses_cval_outside():
    x = torch.ones(1, 1, 6, 6)
    out = affine_transform(x, Transform.fixed(1, dx=2.0), fill_mode="constant", cval=-3.0)
    assert torch.all(out[..., :4] == 1.0) and torch.all(out[..., 4:] == -3.0)


def _keras_generator():
    pytest.importorskip("keras")
    try:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
    except ImportError:
        pytest.skip("this Keras has no legacy ImageDataGenerator")
    return ImageDataGenerator


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect", "wrap"])
def test_random_augmentation_equals_keras_with_the_same_parameters(keras, fill_mode):
    """Each image of a random batch equals Keras's ``apply_transform`` with the parameters
    that image drew: same rotation sign, shift sign and axes, zoom, flip order, fill mode."""
    image_data_generator = _keras_generator()
    aug = Augmenter(**SEED003, zoom=0.2, vflip=True, fill_mode=fill_mode, cval=0.25)
    x = torch.rand(12, 3, 16, 16)
    out = aug.apply(x, torch.Generator().manual_seed(11))
    t = aug.sample(12, 16, 16, torch.Generator().manual_seed(11))
    gen = image_data_generator(fill_mode=fill_mode, cval=0.25)
    for i in range(12):
        params = {
            "theta": float(t.theta[i]),
            "tx": float(t.dx[i]),
            "ty": float(t.dy[i]),
            "zx": float(t.zx[i]),
            "zy": float(t.zy[i]),
            "flip_horizontal": bool(t.hflip[i]),
            "flip_vertical": bool(t.vflip[i]),
        }
        expected = gen.apply_transform(x[i].permute(1, 2, 0).double().numpy(), params)
        np.testing.assert_allclose(out[i].permute(1, 2, 0).numpy(), expected, rtol=0, atol=2e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_the_data_device_and_matches_cpu():
    x = torch.rand(8, 3, 32, 32)
    aug = Augmenter(**SEED003)
    cpu = aug.apply(x, torch.Generator().manual_seed(5))
    gpu = aug.apply(x.cuda(), torch.Generator().manual_seed(5))  # CPU generator, CUDA data
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
    on_device = aug.apply(x.cuda(), torch.Generator(device="cuda").manual_seed(5))
    assert on_device.device.type == "cuda"


def test_options_keras_names_and_round_trip():
    keras_style = {
        "rotation_range": 15,
        "horizontal_flip": True,
        "width_shift_range": 0.1,
        "height_shift_range": 0.1,
    }
    aug = Augmenter.from_options(keras_style)
    assert aug == Augmenter(**SEED003)
    assert Augmenter.from_options(aug.to_options()) == aug
    assert aug.to_options() == SEED003
    assert Augmenter.from_options(None) is None and Augmenter.from_options({}) is None
    assert Augmenter.from_options(aug) is aug


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rotation": -5}, "rotation"),
        ({"width_shift": 1.5}, "width_shift"),
        ({"height_shift": "0.1"}, "height_shift"),
        ({"zoom": 1.0}, "zoom"),
        ({"zoom": [1.2, 0.9]}, "zoom[1]"),
        ({"hflip": 1}, "hflip"),
        ({"fill_mode": "nearst"}, "fill_mode"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match="^" + re.escape(f"{name}: ")):
        Augmenter(**kwargs)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown option 'rotate'.*valid options are"):
        Augmenter.from_options({"rotate": 10})
    with pytest.raises(ConfigError, match="repeats 'rotation'"):
        Augmenter.from_options({"rotation": 10, "rotation_range": 10})


def test_non_image_batches_are_refused():
    with pytest.raises(DataError, match=r"needs a batch of images \(N, C, H, W\), got \(8, 2\)"):
        Augmenter(hflip=True).apply(torch.rand(8, 2))
    with pytest.raises(DataError, match="floating point"):
        Augmenter(hflip=True).apply(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
