"""Random image augmentation with Keras ``ImageDataGenerator`` meanings, batched on the device.

Seed 003 trains with ``ImageDataGenerator(rotation_range=15, horizontal_flip=True,
width_shift_range=0.1, height_shift_range=0.1)``. :class:`Augmenter` draws the same random
transforms for a whole ``(N, C, H, W)`` batch at once (one ``torch.rand`` call per batch) and
resamples every image with one gather-based bilinear interpolation on the batch's device: no
per-image Python loop, deterministic from a :class:`torch.Generator`.

Conventions (those of ``keras.preprocessing.image.apply_affine_transform`` and
``ImageDataGenerator.get_random_transform`` in Keras 3, checked against Keras in the tests):

* Coordinates are pixel centres, ``x`` = column (0 = left), ``y`` = row (0 = top), centre
  ``c = ((W - 1) / 2, (H - 1) / 2)``. Every output pixel ``p`` samples the input at
  ``c + R(theta) @ (Z @ (p - c) + t)`` with ``Z = diag(zx, zy)`` and ``t = (dx, dy)``: the
  output-to-input mapping that Keras passes to ``scipy.ndimage.affine_transform``.
* **rotation** is in degrees, ``theta ~ U[-rotation, rotation]``. A positive angle turns the
  content counter-clockwise as displayed (row 0 on top): ``theta = 90`` gives
  ``torch.rot90(x, 1, dims=(-2, -1))``.
* **width_shift** / **height_shift** are fractions of the width / height:
  ``dx ~ U[-width_shift, width_shift] * W`` pixels, likewise ``dy``. A positive ``dx`` samples
  to the right, so the content moves *left* by ``dx`` pixels (Keras's sign).
* **zoom** ``z`` draws ``zx`` and ``zy`` independently from ``U[1 - z, 1 + z]`` (or from
  ``[lo, hi]`` when given a pair), as Keras does; ``zx > 1`` samples a larger area, so the
  content shrinks (zooms out).
* **hflip** / **vflip** each mirror an image with probability 0.5, after the affine
  transform (Keras's order).
* Interpolation is bilinear (Keras's ``interpolation_order=1``); points outside the image are
  filled like ``scipy.ndimage`` does with ``fill_mode``: ``"nearest"`` (default, edge pixel
  repeated), ``"constant"`` (``cval``), ``"reflect"`` (``d c b a | a b c d | d c b a``),
  ``"wrap"`` (scipy's ``wrap``: period ``n - 1``, first and last pixel overlap).

Two Keras quirks bnlab does not copy, both invisible for square images: Keras scales the
horizontal displacement by ``height_shift_range * H`` and the vertical one by
``width_shift_range * W`` (the axes were swapped inside ``apply_affine_transform``), and it
rotates non-square images about a centre with ``H`` and ``W`` swapped. bnlab uses the
documented meaning (``width_shift`` moves along the width) and the true centre. Seed 003's
images are 32 x 32 with equal shift ranges, so its augmentation has the same distribution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from bnlab._validation import check_choice, check_number, check_options
from bnlab.errors import ConfigError, DataError

FILL_MODES = ("nearest", "constant", "reflect", "wrap")

#: Keras ``ImageDataGenerator`` argument names accepted by :meth:`Augmenter.from_options`.
KERAS_ALIASES = {
    "rotation_range": "rotation",
    "width_shift_range": "width_shift",
    "height_shift_range": "height_shift",
    "zoom_range": "zoom",
    "horizontal_flip": "hflip",
    "vertical_flip": "vflip",
}

# Sampling coordinates closer than this (in pixels) to a pixel centre are put on it.
_SNAP = 1e-5


@dataclass(frozen=True)
class Transform:
    """Per-image transform parameters of a batch, each a tensor of shape ``(N,)``.

    ``theta`` in degrees (counter-clockwise), ``dx`` / ``dy`` in pixels (positive = the content
    moves left / up), ``zx`` / ``zy`` zoom factors (> 1 = zoom out), ``hflip`` / ``vflip``
    booleans. See the module docstring for the exact mapping.
    """

    theta: torch.Tensor
    dx: torch.Tensor
    dy: torch.Tensor
    zx: torch.Tensor
    zy: torch.Tensor
    hflip: torch.Tensor
    vflip: torch.Tensor

    @classmethod
    def identity(cls, n: int, device=None) -> Transform:
        """``n`` transforms that change nothing."""
        zeros = torch.zeros(n, device=device)
        ones = torch.ones(n, device=device)
        no = torch.zeros(n, dtype=torch.bool, device=device)
        return cls(zeros, zeros, zeros, ones, ones, no, no)

    @classmethod
    def fixed(
        cls,
        n: int,
        *,
        theta: float = 0.0,
        dx: float = 0.0,
        dy: float = 0.0,
        zx: float = 1.0,
        zy: float = 1.0,
        hflip: bool = False,
        vflip: bool = False,
        device=None,
    ) -> Transform:
        """The same transform for all ``n`` images (units as in the class docstring)."""

        def full(value, dtype=torch.float32):
            return torch.full((n,), value, dtype=dtype, device=device)

        return cls(
            full(theta),
            full(dx),
            full(dy),
            full(zx),
            full(zy),
            full(bool(hflip), torch.bool),
            full(bool(vflip), torch.bool),
        )

    def to(self, device) -> Transform:
        return Transform(
            *(
                t.to(device)
                for t in (self.theta, self.dx, self.dy, self.zx, self.zy, self.hflip, self.vflip)
            )
        )

    @property
    def is_affine(self) -> bool:
        """Whether any image needs resampling (anything besides flips)."""
        return bool(
            (self.theta != 0).any()
            or (self.dx != 0).any()
            or (self.dy != 0).any()
            or (self.zx != 1).any()
            or (self.zy != 1).any()
        )


def affine_transform(
    x: torch.Tensor, transform: Transform, *, fill_mode: str = "nearest", cval: float = 0.0
) -> torch.Tensor:
    """Apply one :class:`Transform` per image to a batch ``x`` of shape ``(N, C, H, W)``.

    Returns a new tensor of the same shape, dtype and device (``x`` is not modified).
    Transforms that put every output pixel on an input pixel centre (flips, quarter turns,
    whole-pixel shifts) copy pixels exactly; the others interpolate bilinearly, with
    ``fill_mode`` outside the image.
    """
    _check_images(x)
    check_choice("fill_mode", fill_mode, FILL_MODES)
    n = x.shape[0]
    if transform.theta.shape != (n,):
        raise ConfigError(
            f"transform: has {tuple(transform.theta.shape)} parameters, the batch has {n} images"
        )
    if not transform.is_affine:
        return _flip(x, transform)
    return _resample(x, transform, fill_mode, cval, exact=True)


def _flip(x: torch.Tensor, transform: Transform) -> torch.Tensor:
    t = transform.to(x.device)
    out = torch.where(t.hflip.view(-1, 1, 1, 1), x.flip(-1), x)
    return torch.where(t.vflip.view(-1, 1, 1, 1), out.flip(-2), out)


def _pixel_maps(transform: Transform, height: int, width: int) -> torch.Tensor:
    """Per-image affine maps, ``(N, 2, 3)`` float64, from an output pixel ``(x, y, 1)`` to the
    input point it samples: ``c + R(theta) @ (Z @ (flip(p) - c) + t)``.

    Flipping after the transform (Keras's order) equals flipping the output grid before it.
    Trigonometry is float64: float32 ``cos(pi / 2)`` is -4e-8, enough to push the border
    pixels of an exact quarter turn off the grid.
    """
    t = transform
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    rad = t.theta.double() * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    fx = torch.where(t.hflip, -1.0, 1.0).double()
    fy = torch.where(t.vflip, -1.0, 1.0).double()
    # Z @ (flip(p) - c) + t, per axis: a * coordinate + b.
    ax, ay = t.zx.double() * fx, t.zy.double() * fy
    bx = t.zx.double() * (torch.where(t.hflip, width - 1.0, 0.0).double() - cx) + t.dx.double()
    by = t.zy.double() * (torch.where(t.vflip, height - 1.0, 0.0).double() - cy) + t.dy.double()
    rows = (
        torch.stack((cos * ax, -sin * ay, cx + cos * bx - sin * by), dim=-1),
        torch.stack((sin * ax, cos * ay, cy + sin * bx + cos * by), dim=-1),
    )
    return torch.stack(rows, dim=1)


def _apply_maps(maps: torch.Tensor, height: int, width: int, dtype) -> torch.Tensor:
    """Apply ``(N, 2, 3)`` affine maps to every pixel centre: ``(N, H, W, 2)``, last axis x, y.

    Two broadcast multiply-adds; ``affine_grid``'s batched matmul with an inner size of 3 is
    several times slower on CPU.
    """
    maps = maps.to(dtype)
    xs = torch.arange(width, dtype=dtype, device=maps.device).view(1, 1, width, 1)
    ys = torch.arange(height, dtype=dtype, device=maps.device).view(1, height, 1, 1)
    m = maps.transpose(1, 2).unsqueeze(1).unsqueeze(1)  # (N, 1, 1, 3, 2)
    return torch.addcmul(torch.addcmul(m[..., 2, :], m[..., 0, :], xs), m[..., 1, :], ys)


def _normalizer(height: int, width: int, dtype, device) -> torch.Tensor:
    """Scales ``(sx, sy)`` such that ``pixel * scale - 1`` is ``grid_sample``'s coordinate with
    ``align_corners=True`` (-1 / +1 = first / last pixel centre)."""
    return torch.tensor(
        [2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=dtype, device=device
    )


def _remainder(a: torch.Tensor, b) -> torch.Tensor:
    """Floor-mod with a non-negative result (``torch.remainder`` is several times slower)."""
    return a - torch.floor(a / b) * b


def _snap(coord: torch.Tensor) -> torch.Tensor:
    """Put coordinates within 1e-5 px of a pixel centre onto it.

    Rounding noise of 1e-16 is harmless for interpolation but decides which edge "wrap"
    picks and whether "constant" fills; snapping makes exact transforms (quarter turns,
    whole-pixel shifts, flips) exact in every fill mode.
    """
    nearest = torch.round(coord)
    return torch.where((coord - nearest).abs() < _SNAP, nearest, coord)


def _fold(coords: torch.Tensor, height: int, width: int, fill_mode: str) -> torch.Tensor:
    """Map coordinates ``(..., 2)`` (``x, y``) into ``[0, n - 1]`` along each axis.

    Bilinear interpolation at the folded coordinate equals scipy.ndimage's order-1
    interpolation with the same mode, so one sampler (``grid_sample``, border padding) serves
    every fill mode. "constant" is clamped here and masked by the caller.
    """
    n = coords.new_tensor([width, height])
    if fill_mode == "reflect":
        # Half-sample symmetric (d c b a | a b c d | d c b a): mirror about -0.5 and n - 0.5.
        q = _remainder(coords + 0.5, 2 * n)
        coords = torch.where(q >= n, 2 * n - q, q) - 0.5
    elif fill_mode == "wrap":
        # scipy's "wrap" folds only coordinates outside [0, n - 1], with period n - 1 (first
        # and last pixel overlap): from below into (0, n - 1], from above into [0, n - 1).
        period = (n - 1).clamp(min=1)
        coords = torch.where(
            coords < 0,
            period - _remainder(-coords, period),
            torch.where(coords > n - 1, _remainder(coords, period), coords),
        )
    return torch.clamp(coords, min=torch.zeros_like(n), max=n - 1)


def _resample(
    x: torch.Tensor, transform: Transform, fill_mode: str, cval: float, exact: bool
) -> torch.Tensor:
    """Resample every image of ``x`` through its transform (bilinear, ``fill_mode`` outside).

    With ``exact``, coordinates are computed in float64 and snapped, and transforms that land
    every output pixel on an input pixel centre copy pixels. Random augmentation passes
    ``exact=False``: its continuous draws are never whole pixels, and the check would read
    the coordinates back from the device.
    """
    n, c, h, w = x.shape
    maps = _pixel_maps(transform.to(x.device), h, w)
    if fill_mode == "nearest" and not exact:
        # Border padding of grid_sample is scipy's "nearest": map straight to grid coordinates.
        scale = _normalizer(h, w, maps.dtype, maps.device).view(1, 2, 1)
        grid_maps = maps * scale - torch.tensor(
            [0.0, 0.0, 1.0], dtype=maps.dtype, device=maps.device
        )
        grid = _apply_maps(grid_maps, h, w, x.dtype)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)

    coord_dtype = torch.float64 if exact or x.dtype == torch.float64 else torch.float32
    coords = _apply_maps(maps, h, w, coord_dtype)
    if exact:
        coords = _snap(coords)
    if fill_mode == "constant":
        # scipy's "constant" fills every point outside [0, n - 1], even a fraction outside.
        limit = coords.new_tensor([w - 1, h - 1])
        inside = ((coords >= 0) & (coords <= limit)).all(dim=-1).unsqueeze(1)
    coords = _fold(coords, h, w, fill_mode)
    if exact and torch.equal(coords, coords.round()):
        index = (coords[..., 1].long() * w + coords[..., 0].long()).view(n, 1, h * w)
        out = torch.gather(x.reshape(n, c, h * w), 2, index.expand(n, c, h * w))
        out = out.view(n, c, h, w)
    else:
        grid = coords * _normalizer(h, w, coords.dtype, coords.device) - 1.0
        out = F.grid_sample(
            x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True
        )
    if fill_mode == "constant":
        out = torch.where(inside, out, torch.as_tensor(cval, dtype=x.dtype, device=x.device))
    return out


def _check_images(x) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise DataError(
            f"augment: needs a batch of images (N, C, H, W), got {shape}; "
            "augmentation only applies to image datasets"
        )
    if not x.is_floating_point():
        raise DataError(f"augment: images must be floating point, got {x.dtype}")


def _check_zoom(zoom) -> tuple[float, float]:
    """Keras's ``zoom_range``: a float ``z`` means ``[1 - z, 1 + z]``; a pair is ``[lo, hi]``."""
    if isinstance(zoom, (list, tuple)):
        if len(zoom) != 2:
            raise ConfigError(f"zoom: {zoom!r} is not a float or a [low, high] pair")
        lo = check_number("zoom[0]", zoom[0], low=0, low_inclusive=False)
        hi = check_number("zoom[1]", zoom[1], low=lo)
        return float(lo), float(hi)
    z = check_number("zoom", zoom, low=0, high=1, high_inclusive=False)
    return 1.0 - z, 1.0 + z


@dataclass(frozen=True)
class Augmenter:
    """Random per-image augmentation with Keras ``ImageDataGenerator`` meanings.

    Args:
        rotation: maximum rotation in degrees (Keras ``rotation_range``), >= 0.
        width_shift: maximum horizontal shift as a fraction of the width, in [0, 1)
            (Keras ``width_shift_range`` given as a float).
        height_shift: maximum vertical shift as a fraction of the height, in [0, 1).
        zoom: Keras ``zoom_range``: ``z`` in [0, 1) draws zoom factors from ``[1 - z, 1 + z]``;
            a pair ``[lo, hi]`` draws from it.
        hflip / vflip: mirror left-right / top-bottom with probability 0.5.
        fill_mode: ``"nearest"`` (Keras's default), ``"constant"``, ``"reflect"`` or ``"wrap"``.
        cval: fill value for ``fill_mode="constant"``, in the data's units.

    See the module docstring for the exact geometric conventions.
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    zoom: float | tuple[float, float] = 0.0
    hflip: bool = False
    vflip: bool = False
    fill_mode: str = "nearest"
    cval: float = 0.0
    _zoom_range: tuple[float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        check_number("rotation", self.rotation, low=0)
        check_number("width_shift", self.width_shift, low=0, high=1, high_inclusive=False)
        check_number("height_shift", self.height_shift, low=0, high=1, high_inclusive=False)
        for name in ("hflip", "vflip"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not true or false")
        check_choice("fill_mode", self.fill_mode, FILL_MODES)
        check_number("cval", self.cval)
        object.__setattr__(self, "_zoom_range", _check_zoom(self.zoom))
        if isinstance(self.zoom, list):
            object.__setattr__(self, "zoom", tuple(self.zoom))

    @classmethod
    def from_options(cls, options: dict[str, Any] | Augmenter | None) -> Augmenter | None:
        """An Augmenter from a study spec / ``fit(augment=...)`` value; ``None`` or ``{}`` -> None.

        Keys are the constructor's argument names; Keras's names (``rotation_range``,
        ``width_shift_range``, ``height_shift_range``, ``zoom_range``, ``horizontal_flip``,
        ``vertical_flip``) are accepted too, so a seed's ``ImageDataGenerator`` arguments can
        be pasted as they are.
        """
        if options is None or isinstance(options, Augmenter):
            return options
        if not isinstance(options, dict):
            raise ConfigError(
                f"augment: {options!r} is not a table of options such as "
                "{rotation = 15, hflip = true, width_shift = 0.1}"
            )
        if not options:
            return None
        own = [f for f in cls.__dataclass_fields__ if not f.startswith("_")]
        check_options("augment", options, own + list(KERAS_ALIASES))
        kwargs: dict[str, Any] = {}
        for key, value in options.items():
            name = KERAS_ALIASES.get(key, key)
            if name in kwargs:
                raise ConfigError(f"augment: {key!r} repeats {name!r}; give it once")
            kwargs[name] = value
        return cls(**kwargs)

    def to_options(self) -> dict[str, Any]:
        """The settings that differ from the defaults, TOML-ready (inverse of from_options)."""
        defaults = Augmenter()
        out = {}
        for key, value in asdict(self).items():
            if key.startswith("_") or value == getattr(defaults, key):
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def is_identity(self) -> bool:
        """True when no setting changes an image (``apply`` then returns its input)."""
        return not self._resamples and not self.hflip and not self.vflip

    @property
    def _resamples(self) -> bool:
        """Whether images need interpolation (anything besides flips)."""
        return bool(
            self.rotation or self.width_shift or self.height_shift or self._zoom_range != (1.0, 1.0)
        )

    def sample(
        self, n: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> Transform:
        """Draw ``n`` transforms for ``height`` x ``width`` images (one ``torch.rand`` call).

        Seven uniforms are drawn per image whatever the settings, so the generator advances
        by the same amount for every configuration. The parameters live on the generator's
        device; :func:`affine_transform` moves them to the data.
        """
        device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((n, 7), generator=generator, device=device, dtype=torch.float64)
        lo, hi = self._zoom_range

        def symmetric(column, limit):
            return ((2 * u[:, column] - 1) * limit).float()

        return Transform(
            theta=symmetric(0, self.rotation),
            dx=symmetric(1, self.width_shift * width),
            dy=symmetric(2, self.height_shift * height),
            zx=(lo + (hi - lo) * u[:, 3]).float(),
            zy=(lo + (hi - lo) * u[:, 4]).float(),
            hflip=(u[:, 5] < 0.5) & self.hflip,
            vflip=(u[:, 6] < 0.5) & self.vflip,
        )

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch ``x`` ``(N, C, H, W)``: a new tensor on ``x``'s device and dtype.

        ``generator`` (on any device) makes the draw reproducible: the same generator state
        gives the same augmented batch. ``x`` is never modified.
        """
        _check_images(x)
        if self.is_identity:
            return x
        n, _, h, w = x.shape
        transform = self.sample(n, h, w, generator)
        if not self._resamples:
            return _flip(x, transform)
        return _resample(x, transform, self.fill_mode, self.cval, exact=False)
