"""``mnist``, ``fashion_mnist`` and ``cifar10`` by name: found on disk, or downloaded once.

Lookup order, first hit wins:

1. the ``data_dir`` option,
2. the folder named by the environment variable ``BNLAB_DATA``,
3. bnlab's cache, ``$BNLAB_CACHE`` or ``~/.cache/bnlab``,
4. Keras's cache, ``~/.keras/datasets`` (read only).

In each folder bnlab accepts ``<name>.npz`` (arrays ``x_train``, ``y_train``, ``x_test``,
``y_test``, optionally ``classes``: Keras's ``mnist.npz`` and the files in bnlab's shared data
folder are of this form) or the original files, directly in ``data_dir`` or in a sub-folder
named after the dataset (``mnist/``, ``fashion_mnist/``, ``fashion-mnist/``, ``cifar10/``,
torchvision's ``MNIST/raw``): the four IDX files of MNIST / Fashion-MNIST (gzip-compressed or
not), CIFAR-10's ``cifar-10-batches-py`` folder or ``cifar-10-python.tar.gz``.

When nothing is found and ``download`` is true (the default), the official files (see
:mod:`bnlab.data.sources`) are downloaded into ``<cache>/<name>/`` and verified. Without
network a DataError says which files to put where.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bnlab.data.arrays import RawData
from bnlab.data.download import download
from bnlab.data.formats import (
    CIFAR_ARCHIVE,
    CIFAR_FOLDER,
    find_idx_files,
    read_cifar,
    read_idx_folder,
    read_npz,
)
from bnlab.data.options import CommonOptions, check_bool
from bnlab.data.sources import CLASSES, SOURCES
from bnlab.errors import ConfigError, DataError

NAMES = tuple(SOURCES)
FOLDERS = {
    "mnist": ("mnist", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
    "cifar10": ("cifar10", "cifar-10-batches-py-target"),
}


def cache_dir() -> Path:
    """bnlab's download cache: ``$BNLAB_CACHE`` or ``~/.cache/bnlab``."""
    return Path(os.environ.get("BNLAB_CACHE") or Path.home() / ".cache" / "bnlab").expanduser()


def search_roots(data_dir: str | None) -> list[tuple[str, Path, bool]]:
    """``(label, folder, explicit)`` in lookup order; ``explicit`` folders may hold the files
    directly, the others only in a sub-folder named after the dataset (or ``<name>.npz``)."""
    roots = []
    if data_dir is not None:
        roots.append(("data_dir option", Path(data_dir).expanduser(), True))
    if os.environ.get("BNLAB_DATA"):
        roots.append(("BNLAB_DATA", Path(os.environ["BNLAB_DATA"]).expanduser(), False))
    roots.append(("bnlab cache", cache_dir(), False))
    roots.append(("Keras cache", Path.home() / ".keras" / "datasets", False))
    return roots


def _candidates(name: str, root: Path, explicit: bool) -> Iterator[tuple[str, Path]]:
    yield "npz", root / f"{name}.npz"
    folders = [root / sub for sub in FOLDERS[name]]
    for folder in ([root] if explicit else []) + folders:
        yield "npz", folder / f"{name}.npz"
        if name == "cifar10":
            yield "cifar", folder / CIFAR_FOLDER
            yield "cifar", folder / CIFAR_ARCHIVE
            yield "cifar", folder
        else:
            yield "idx", folder


def _usable(kind: str, path: Path) -> bool:
    if kind == "npz":
        return path.is_file()
    if kind == "idx":
        return path.is_dir() and not find_idx_files(path)[1]
    # cifar: the archive, or a folder with the batches
    return path.is_file() if path.suffix == ".gz" else (path / "data_batch_1").is_file()


def locate(name: str, data_dir: str | None = None) -> tuple[str, Path] | None:
    """``(kind, path)`` of the first usable copy of ``name``, or None."""
    for _, root, explicit in search_roots(data_dir):
        if not root.is_dir():
            continue
        for kind, path in _candidates(name, root, explicit):
            if _usable(kind, path):
                return kind, path
    return None


def _expected_files(name: str) -> str:
    files = ", ".join(f"{f.filename} ({f.urls[0]})" for f in SOURCES[name])
    return f"{name}.npz (arrays x_train, y_train, x_test, y_test) or {files}"


def _missing(name: str, data_dir: str | None, reason: str) -> DataError:
    searched = "; ".join(f"{label}: {root}" for label, root, _ in search_roots(data_dir))
    return DataError(
        f"{name}: not found on this machine{reason}. Searched {searched}. Put {_expected_files(name)} "
        f"into {cache_dir() / name} (or into a folder given by data_dir=... or the BNLAB_DATA "
        "environment variable), or load it once with network access."
    )


def fetch(name: str) -> Path:
    """Download every file of ``name`` into ``<cache>/<name>/``; return that folder."""
    folder = cache_dir() / name
    for remote in SOURCES[name]:
        download(remote, folder)
    return folder


def read_named(name: str, options: dict[str, Any], common: CommonOptions) -> RawData:
    """Find (or download) ``name`` and read it; options ``data_dir`` and ``download``."""
    data_dir = options.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"data_dir: {data_dir!r} is not a folder path")
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"{name}: data_dir {str(data_dir)!r} is not a folder")
    allow_download = check_bool("download", options.get("download", True))
    found = locate(name, data_dir)
    if found is None:
        if not allow_download:
            raise _missing(name, data_dir, " and download=false")
        try:
            fetch(name)
        except DataError as err:
            raise _missing(name, data_dir, f" and the download failed ({err})") from None
        found = locate(name, data_dir)
        if found is None:  # pragma: no cover - fetch() wrote every file locate() looks for
            raise _missing(name, data_dir, "")
    kind, path = found
    if kind == "npz":
        raw = read_npz(path, where=f"{name} ({path})")
    elif kind == "idx":
        raw = read_idx_folder(path, where=f"{name} ({path})")
    else:
        raw = read_cifar(path, where=f"{name} ({path})")
    if raw.classes is None:
        raw.classes = list(CLASSES[name])
    return raw
