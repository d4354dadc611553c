"""The dataset registry: ``load(name, **options)``, ``datasets()``, ``describe()``.

A dataset is a name (``"digits"``, ``"fashion_mnist"``) or a local source written
``"<format>:<path>"`` (``"npz:data.npz"``, ``"imagefolder:~/malimg"``, ``"idx:~/mnist"``,
``"cifar:~/cifar-10-batches-py"``). A bare path to an existing ``.npz`` file or folder is
recognised too (IDX files, CIFAR batches, or class sub-folders of images).

Default pixel scale per dataset (``scale``, see :mod:`bnlab.data.options`):

==================  =======  ==============================================================
dataset             default  why
==================  =======  ==============================================================
digits              raw      bnlab's demo: raw pixels make BN's effect visible
mnist               raw      seed 002's pipeline feeds uint8 pixels as they are
fashion_mnist       raw      seed 002 (tfds images, not divided by 255)
cifar10, cifar:     unit     seed 003 divides by 255
imagefolder:        raw      seed 001 feeds raw pixels
npz:, idx:          raw      the stored values as they are (``unit`` divides by 255)
circles, moons      --       tabular features, never rescaled
==================  =======  ==============================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bnlab._validation import check_choice, check_options, did_you_mean
from bnlab.data.arrays import RawData
from bnlab.data.dataset import Dataset
from bnlab.data.embedded import read_circles, read_digits, read_moons
from bnlab.data.formats import CIFAR_ARCHIVE, find_idx_files, read_cifar, read_idx_folder, read_npz
from bnlab.data.imagefolder import read_imagefolder
from bnlab.data.named import read_named
from bnlab.data.options import COMMON_OPTIONS, CommonOptions, finalize, parse_common
from bnlab.errors import ConfigError, DataError
from bnlab.registry import Registry

Reader = Callable[[str | None, dict[str, Any], CommonOptions], RawData]


@dataclass(frozen=True)
class Entry:
    """One registered dataset: its reader, a one-line description, its own options and its
    default pixel scale (None for tabular data, which takes no ``scale``)."""

    name: str
    read: Reader
    description: str
    options: tuple[str, ...] = ()
    default_scale: str | None = "raw"
    takes_path: bool = False

    @property
    def valid_options(self) -> list[str]:
        scale = ("scale",) if self.default_scale is not None else ()
        return sorted({*COMMON_OPTIONS, *scale, *self.options})


def _named(name: str) -> Reader:
    return lambda _path, options, common: read_named(name, options, common)


def _npz(path, options, common):
    layout = check_choice("layout", options.get("layout", "auto"), ("auto", "nhwc", "nchw"))
    return read_npz(path, layout=layout)


def _idx(path, options, common):
    return read_idx_folder(path)


def _cifar(path, options, common):
    return read_cifar(path)


_NAMED_OPTIONS = ("data_dir", "download")
_SPLIT_OPTIONS = ("test_split", "test_size", "train_size", "n_train")
_GENERATED = ("n_samples", "noise", "random_state", "n_train")

_ENTRIES = [
    Entry(
        "digits",
        read_digits,
        "scikit-learn digits, 1,797 images 8x8x1, 10 classes (embedded)",
        ("test_size", "train_size"),
    ),
    Entry(
        "circles",
        read_circles,
        "make_circles(1000, noise=0.1, random_state=1), 500 train / 500 test, 2 features (seed 004)",
        (*_GENERATED, "factor"),
        default_scale=None,
    ),
    Entry(
        "moons",
        read_moons,
        "make_moons(1000, noise=0.1, random_state=1), 500 / 500, 2 features",
        _GENERATED,
        default_scale=None,
    ),
    Entry(
        "mnist",
        _named("mnist"),
        "MNIST digits, 60,000 + 10,000 images 28x28x1 (local or downloaded)",
        _NAMED_OPTIONS,
    ),
    Entry(
        "fashion_mnist",
        _named("fashion_mnist"),
        "Fashion-MNIST, 60,000 + 10,000 images 28x28x1, 10 classes (local or downloaded; seed 002)",
        _NAMED_OPTIONS,
    ),
    Entry(
        "cifar10",
        _named("cifar10"),
        "CIFAR-10, 50,000 + 10,000 images 32x32x3, 10 classes (local or downloaded; seed 003)",
        _NAMED_OPTIONS,
        default_scale="unit",
    ),
    Entry(
        "npz",
        _npz,
        "an .npz file with x_train, y_train, x_test, y_test [, classes]",
        ("layout",),
        takes_path=True,
    ),
    Entry(
        "imagefolder",
        read_imagefolder,
        "a folder of class sub-folders of images (PATH/<class>/<image>, or PATH/train and PATH/test)",
        ("image_size", "color", "interpolation", "test_split"),
        takes_path=True,
    ),
    Entry(
        "idx",
        _idx,
        "a folder with the four MNIST-style IDX files (train-images-idx3-ubyte[.gz], ...)",
        takes_path=True,
    ),
    Entry(
        "cifar",
        _cifar,
        "CIFAR-10 python batches: a cifar-10-batches-py folder or cifar-10-python.tar.gz",
        default_scale="unit",
        takes_path=True,
    ),
]
_REGISTRY = Registry("name", {e.name: e for e in _ENTRIES})


def datasets() -> list[str]:
    """Names :func:`load` accepts without a path, sorted."""
    return sorted(e.name for e in _ENTRIES if not e.takes_path)


def describe() -> dict[str, str]:
    """One line per dataset for ``bnlab list datasets``: names, then ``format:PATH`` forms."""
    named = {e.name: e.description for e in _ENTRIES if not e.takes_path}
    local = {f"{e.name}:PATH": e.description for e in _ENTRIES if e.takes_path}
    return {**dict(sorted(named.items())), **local}


def dataset_options(name: str) -> list[str]:
    """The option names ``load(name, ...)`` accepts (for spec validation and error hints)."""
    return _resolve(name)[0].valid_options


def _detect(path: Path) -> str | None:
    """The format of an existing path given without a ``format:`` prefix."""
    if path.is_file():
        if path.suffix == ".npz":
            return "npz"
        return "cifar" if path.name == CIFAR_ARCHIVE else None
    if (path / "data_batch_1").is_file() or (path / "cifar-10-batches-py").is_dir():
        return "cifar"
    if not find_idx_files(path)[1]:
        return "idx"
    return "imagefolder"


def _resolve(name: Any) -> tuple[Entry, str | None]:
    if isinstance(name, Path):
        name = str(name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name: {name!r} is not a dataset name or path")
    if name in _REGISTRY and not _REGISTRY[name].takes_path:
        return _REGISTRY[name], None
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _REGISTRY and _REGISTRY[prefix].takes_path:
        if not rest:
            raise ConfigError(f"name: {name!r} needs a path after '{prefix}:'")
        return _REGISTRY[prefix], rest
    path = Path(name).expanduser()
    if path.exists():
        kind = _detect(path)
        if kind is None:
            raise DataError(
                f"{name}: cannot tell its format; use npz:PATH, imagefolder:PATH, idx:PATH or cifar:PATH"
            )
        return _REGISTRY[kind], name
    if "/" in name or "\\" in name or name.endswith(".npz"):
        raise DataError(f"{name}: no such file or folder")
    known = datasets() + [f"{e.name}:PATH" for e in _ENTRIES if e.takes_path]
    raise ConfigError(
        f"name: {name!r} is not a dataset{did_you_mean(name, datasets())}; "
        f"known: {', '.join(known)}"
    )


def load(name: str, **options: Any) -> Dataset:
    """Load a dataset as float32 tensors (images NCHW) with int64 labels.

    ``name``: one of :func:`datasets`, ``"<format>:<path>"`` or an existing path. Options:
    those of :mod:`bnlab.data.options` (``scale``, ``train_range``, ``test_range``,
    ``test_from``, ``validation_split``, ``stratify``, ``split_seed``) plus the dataset's own
    (:func:`dataset_options`); an option given as None takes its default. Unknown options
    raise ConfigError listing the valid ones; bad data raises DataError saying what is wrong
    and how to fix it.

    Example (seed 002's split: train = first 1000 training images, test = the next 1000)::

        load("fashion_mnist", train_range=[0, 1000], test_from="train", test_range=[1000, 2000])
    """
    options = {k: v for k, v in options.items() if v is not None}  # None = the default
    entry, path = _resolve(name)
    check_options(f"data.load({name!r})", options, entry.valid_options)
    common = parse_common(options, entry.default_scale)
    own = {k: v for k, v in options.items() if k in entry.options}
    validation = options.pop("validation", None)
    raw = entry.read(path, own, common)
    dataset = finalize(raw, common, name, dict(options))
    if validation is not None:
        dataset = _with_validation(dataset, validation, own, common)
    return dataset


def _with_validation(
    dataset: Dataset, source: Any, own: dict[str, Any], common: CommonOptions
) -> Dataset:
    """``dataset`` with its validation set taken from ``source`` (the ``validation`` option)."""
    if not isinstance(source, str) or not source:
        raise ConfigError(
            f"validation: {source!r} is not a dataset name or path; give e.g. "
            "'imagefolder:data/val' or 'npz:val.npz'"
        )
    if common.validation_split:
        raise ConfigError(
            f"validation: {source!r} and validation_split={common.validation_split} both "
            "choose the validation set; give one of them"
        )
    entry, _ = _resolve(source)
    # Format options (image size, colour, layout) carry over; split options do not: the whole
    # training split of the source is the validation set.
    options = {k: v for k, v in own.items() if k in entry.options and k not in _SPLIT_OPTIONS}
    if common.scale is not None and entry.default_scale is not None:
        options["scale"] = common.scale
    held = load(source, **options)
    if held.input_shape != dataset.input_shape:
        raise DataError(
            f"validation: {source!r} holds samples of shape {held.input_shape}, the training "
            f"set {dataset.input_shape}; they must match (resize with the size option)"
        )
    if held.classes != dataset.classes:
        raise DataError(
            f"validation: {source!r} has classes {held.classes[:6]}, the training set "
            f"{dataset.classes[:6]}; the class lists must be equal"
        )
    x_val, y_val = held.x_train, held.y_train
    if entry.name == "imagefolder":  # a validation folder is validation data, all of it
        x_val, y_val = torch.cat((x_val, held.x_test)), torch.cat((y_val, held.y_test))
    meta = {
        **dataset.meta,
        "validation_source": source,
        "sizes": {**dataset.meta.get("sizes", {}), "validation": len(y_val)},
    }
    return dataclasses.replace(dataset, x_val=x_val, y_val=y_val, meta=meta)
