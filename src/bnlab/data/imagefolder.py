"""A folder of class sub-folders of images (``imagefolder:PATH``), read with Pillow.

Layouts:

* ``PATH/<class>/<image>``: every image of every class; the test set is split off with
  ``test_split`` (default 0.2) using ``split_seed`` and ``stratify`` (scikit-learn's
  ``train_test_split``, as seed 000's 70/30 split: ``test_split=0.3``);
* ``PATH/train/<class>/<image>`` and ``PATH/test/<class>/<image>``: the given split.

Classes are the sub-folder names in sorted order (as Keras's ``flow_from_directory``).
Images are resized to ``image_size=[H, W]`` (bilinear by default; needed when sizes differ)
and read as RGB, or grayscale when every image is grayscale (``color`` forces either).
Pixels stay 0-255 (``full_scale=255``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bnlab._validation import check_choice, check_number
from bnlab.data.arrays import RawData
from bnlab.data.options import CommonOptions, check_fraction, split_indices
from bnlab.errors import ConfigError, DataError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
COLORS = ("auto", "rgb", "grayscale")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "lanczos")
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def _image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"image_size: {value!r} is not [height, width] or one int")
    return (
        check_number("image_size[0]", value[0], low=1, integer=True),
        check_number("image_size[1]", value[1], low=1, integer=True),
    )


def _class_folders(root: Path, where: str) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_of(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _scan(
    root: Path, where: str, classes: list[str] | None = None
) -> tuple[list[str], list[Path], np.ndarray]:
    """Class names, image paths and labels under ``root/<class>/``."""
    folders = _class_folders(root, where)
    if classes is None:
        if len(folders) < 2:
            found = ", ".join(repr(f.name) for f in folders) or "none"
            raise DataError(
                f"{where}: found {len(folders)} class folder(s) ({found}) in {root}; a classifier "
                "needs at least two: put each class's images in its own sub-folder, "
                f"{root}/<class>/<image>.png"
            )
        classes = [f.name for f in folders]
    index = {name: i for i, name in enumerate(classes)}
    paths, labels = [], []
    for folder in folders:
        if folder.name not in index:
            raise DataError(
                f"{where}: class folder {folder.name!r} in {root} is not one of the training "
                f"classes {classes}"
            )
        images = _images_of(folder)
        if not images:
            raise DataError(
                f"{where}: class folder {folder} holds no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        paths += images
        labels += [index[folder.name]] * len(images)
    return classes, paths, np.asarray(labels, dtype=np.int64)


def _read_images(paths: list[Path], size, color: str, interpolation: str, where: str) -> np.ndarray:
    """``(N, H, W, C)`` uint8 pixels of every image, resized to ``size`` when given.

    Two passes, each opening one file at a time: headers first (sizes and colour modes,
    cheap), then the pixels.
    """
    from PIL import Image, UnidentifiedImageError

    def opened(path):
        try:
            return Image.open(path)
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"{where}: cannot read image {path} ({err})") from None

    headers = []
    for path in paths:
        with opened(path) as im:
            headers.append((im.size, im.mode))
    if color == "auto":
        color = "grayscale" if all(mode in _GRAY_MODES for _, mode in headers) else "rgb"
    if size is None:
        sizes = sorted({s for s, _ in headers})
        if len(sizes) > 1:
            (w1, h1), (w2, h2) = sizes[:2]
            raise DataError(
                f"{where}: images have {len(sizes)} different sizes (e.g. {h1}x{w1} and "
                f"{h2}x{w2}, height x width); pass image_size=[height, width] to resize them"
            )
        size = (sizes[0][1], sizes[0][0])
    channels = 1 if color == "grayscale" else 3
    resample = getattr(Image.Resampling, interpolation.upper())
    out = np.empty((len(paths), size[0], size[1], channels), dtype=np.uint8)
    for i, path in enumerate(paths):
        with opened(path) as im:
            try:
                im = im.convert("L" if channels == 1 else "RGB")
                if im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), resample=resample)
                out[i] = np.asarray(im).reshape(size[0], size[1], channels)
            except OSError as err:
                raise DataError(f"{where}: cannot decode image {path} ({err})") from None
    return out


def read_imagefolder(path: str | None, options: dict[str, Any], common: CommonOptions) -> RawData:
    """Read ``imagefolder:PATH``; options ``image_size``, ``color``, ``interpolation``,
    ``test_split`` (see the module docstring)."""
    root = Path(path or "").expanduser()
    where = f"imagefolder:{path}"
    if not root.is_dir():
        raise DataError(f"{where}: folder not found: {root}")
    size = _image_size(options.get("image_size"))
    color = check_choice("color", options.get("color", "auto"), COLORS)
    interpolation = check_choice(
        "interpolation", options.get("interpolation", "bilinear"), INTERPOLATIONS
    )
    given_split = (root / "train").is_dir() and (root / "test").is_dir()
    if given_split:
        if "test_split" in options:
            raise ConfigError(
                f"test_split: {options['test_split']!r} cannot apply, {root} already has train/ "
                "and test/ folders"
            )
        classes, train_paths, y_train = _scan(root / "train", where)
        _, test_paths, y_test = _scan(root / "test", where, classes)
        x_all = _read_images(train_paths + test_paths, size, color, interpolation, where)
        x_train, x_test = x_all[: len(train_paths)], x_all[len(train_paths) :]
    else:
        test_split = check_fraction("test_split", options.get("test_split", 0.2))
        classes, paths, labels = _scan(root, where)
        kept, held = split_indices(
            labels,
            test_split,
            seed=common.split_seed,
            stratify=common.stratify,
            option="test_split",
        )
        x_all = _read_images(paths, size, color, interpolation, where)
        x_train, y_train, x_test, y_test = x_all[kept], labels[kept], x_all[held], labels[held]
    return RawData(
        x_train,
        y_train,
        x_test,
        y_test,
        classes=classes,
        full_scale=255.0,
        layout="nhwc",
        source=str(root),
        meta={"image_size": list(x_train.shape[1:3])},
    )
