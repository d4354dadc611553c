"""Readers of the file formats datasets come in: ``.npz``, MNIST IDX files, CIFAR-10 batches.

Each reader returns a :class:`~bnlab.data.arrays.RawData` with the stored uint8 pixels
(``full_scale=255``) or raises :class:`~bnlab.errors.DataError` saying what is missing or
malformed and what bnlab expected instead. Nothing is ever unpickled beyond plain numpy
arrays: CIFAR-10's python batches go through a restricted unpickler.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from bnlab.data.arrays import RawData
from bnlab.errors import DataError, UnsafeFileError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

# ---------------------------------------------------------------------------------------
# .npz


def read_npz(path: str | Path, *, layout: str = "auto", where: str | None = None) -> RawData:
    """An ``.npz`` holding ``x_train``, ``y_train``, ``x_test``, ``y_test`` (and optionally
    ``classes``), as written by ``np.savez`` or Keras's ``mnist.npz``. Images may be
    ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``; pickled object arrays are refused."""
    path = Path(path).expanduser()
    where = where or f"npz:{path}"
    if not path.is_file():
        raise DataError(
            f"{where}: file not found: {path}; give the path of an .npz holding "
            f"{', '.join(NPZ_KEYS)} (np.savez(path, x_train=..., y_train=..., ...))"
        )
    if not zipfile.is_zipfile(path):
        raise DataError(f"{where}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise DataError(
                    f"{where}: missing array(s) {', '.join(missing)}; the file holds "
                    f"{', '.join(archive.files) or 'nothing'}, bnlab needs {', '.join(NPZ_KEYS)}"
                    " (classes optional)"
                )
            arrays = {k: archive[k] for k in NPZ_KEYS}
            classes = [str(c) for c in archive["classes"]] if "classes" in archive.files else None
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"{where}: not a readable .npz file ({err})") from None
    except ValueError as err:  # object arrays need pickle, which is refused
        raise DataError(f"{where}: cannot read the arrays without unpickling ({err})") from None
    return RawData(**arrays, classes=classes, full_scale=255.0, layout=layout, source=str(path))


# ---------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

IDX_PARTS = {
    "x_train": ("train", "images", "idx3"),
    "y_train": ("train", "labels", "idx1"),
    "x_test": ("t10k", "images", "idx3"),
    "y_test": ("t10k", "labels", "idx1"),
}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_file_names(part: str) -> list[str]:
    """Accepted names of one IDX file, e.g. ``train-images-idx3-ubyte[.gz]`` (the official
    name) or ``train-images.idx3-ubyte`` (as some mirrors unpack it)."""
    split, kind, idx = IDX_PARTS[part]
    stems = (f"{split}-{kind}-{idx}-ubyte", f"{split}-{kind}.{idx}-ubyte")
    return [stem + ext for stem in stems for ext in (".gz", "")]


def find_idx_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """``(found, missing)``: paths of the four IDX files in ``folder`` and the missing parts."""
    found, missing = {}, []
    for part in IDX_PARTS:
        hit = next((folder / n for n in idx_file_names(part) if (folder / n).is_file()), None)
        if hit is None:
            missing.append(part)
        else:
            found[part] = hit
    return found, missing


def read_idx_file(path: Path) -> np.ndarray:
    """One IDX array (gzip-compressed or not): magic ``0 0 dtype ndim``, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes of data (truncated or corrupted download?)"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def read_idx_folder(folder: str | Path, *, classes=None, where: str | None = None) -> RawData:
    """The four MNIST-style IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-...``,
    ``t10k-images-...``, ``t10k-labels-...``) in ``folder``."""
    folder = Path(folder).expanduser()
    where = where or f"idx:{folder}"
    if not folder.is_dir():
        raise DataError(f"{where}: folder not found: {folder}")
    found, missing = find_idx_files(folder)
    if missing:
        names = ", ".join(idx_file_names(p)[0] for p in missing)
        raise DataError(f"{where}: missing {names} in {folder} (gzip-compressed or not)")
    arrays = {part: read_idx_file(path) for part, path in found.items()}
    return RawData(**arrays, classes=classes, full_scale=255.0, layout="auto", source=str(folder))


# ---------------------------------------------------------------------------------------
# CIFAR-10 python batches

CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_META = "batches.meta"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"

# Globals that rebuild a numpy array from a pickle, and nothing else. ``_codecs.encode`` is
# how pickle protocol 2 spells a bytes object when Python 3 writes it (the original batches,
# written by Python 2, do not need it).
_NUMPY_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays; refuses any other global."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeFileError(
            f"refusing to unpickle {module}.{name}: a CIFAR-10 batch holds only numpy arrays "
            "and lists; this file is not one (corrupted or malicious)"
        )


def _unpickle_batch(data: bytes, where: str) -> dict:
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafeFileError as err:
        raise UnsafeFileError(f"{where}: {err}") from None
    except Exception as err:  # any malformed pickle
        raise DataError(
            f"{where}: not a CIFAR-10 python batch ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: not a CIFAR-10 python batch (holds a {type(batch).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_arrays(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or "labels" not in batch:
        raise DataError(
            f"{where}: a CIFAR-10 batch needs 'data' and 'labels', found {sorted(batch)}"
        )
    data = np.asarray(batch["data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: 'data' has shape {data.shape}, expected (N, 3072)")
    # Each row is 1024 red, then green, then blue values in row-major order: NCHW.
    return data.reshape(-1, 3, 32, 32), np.asarray(batch["labels"])


def _cifar_members(path: Path) -> dict[str, bytes]:
    """The batch files by name, from a ``cifar-10-batches-py`` folder or the ``.tar.gz``."""
    wanted = (*CIFAR_TRAIN, CIFAR_TEST, CIFAR_META)
    if path.is_dir():
        folder = path / CIFAR_FOLDER if (path / CIFAR_FOLDER).is_dir() else path
        return {n: (folder / n).read_bytes() for n in wanted if (folder / n).is_file()}
    try:
        with tarfile.open(path, "r:*") as tar:
            # Members are read into memory by base name; nothing is extracted to disk.
            out = {}
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    out[base] = tar.extractfile(member).read()
            return out
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable CIFAR-10 archive ({err})") from None


def read_cifar(path: str | Path, *, where: str | None = None) -> RawData:
    """CIFAR-10's python version: a ``cifar-10-batches-py`` folder (or its parent) holding
    ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, or ``cifar-10-python.tar.gz``.
    Images ``(N, 3, 32, 32)`` uint8; class names from ``batches.meta``."""
    path = Path(path).expanduser()
    where = where or f"cifar:{path}"
    if not path.exists():
        raise DataError(f"{where}: not found: {path}")
    members = _cifar_members(path)
    missing = [n for n in (*CIFAR_TRAIN, CIFAR_TEST) if n not in members]
    if missing:
        raise DataError(
            f"{where}: missing CIFAR-10 batch file(s) {', '.join(missing)} in {path}; expected "
            f"the python version ({CIFAR_ARCHIVE} or its {CIFAR_FOLDER} folder)"
        )
    parts = [
        _cifar_arrays(_unpickle_batch(members[n], f"{where}/{n}"), f"{where}/{n}")
        for n in CIFAR_TRAIN
    ]
    x_test, y_test = _cifar_arrays(
        _unpickle_batch(members[CIFAR_TEST], f"{where}/{CIFAR_TEST}"), f"{where}/{CIFAR_TEST}"
    )
    classes = None
    if CIFAR_META in members:
        meta = _unpickle_batch(members[CIFAR_META], f"{where}/{CIFAR_META}")
        names = meta.get("label_names")
        if names is not None:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return RawData(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        x_test,
        y_test,
        classes=classes,
        full_scale=255.0,
        layout="nchw",
        source=str(path),
    )
