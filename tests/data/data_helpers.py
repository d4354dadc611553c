"""Writers of small dataset files in the real formats (IDX, CIFAR-10 python batches)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file (uint8), gzip-compressed when the name ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def small_images(n: int, h: int = 6, w: int = 5, seed: int = 0, classes: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    y = np.arange(n) % classes
    return x, y.astype(np.uint8)


def write_idx_set(folder: Path, *, gz: bool = True, n_train: int = 12, n_test: int = 6) -> dict:
    """The four MNIST-style files; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    x_train, y_train = small_images(n_train, seed=1)
    x_test, y_test = small_images(n_test, seed=2)
    write_idx(folder / f"train-images-idx3-ubyte{ext}", x_train)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", y_train)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", x_test)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", y_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def write_cifar_batches(folder: Path, per_batch: int = 4) -> dict:
    """CIFAR-10 python batches (pickle protocol 2, bytes keys, like the real files)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    written = {"train": [], "test": None}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"batch_label": name.encode(), b"labels": labels, b"data": data}, f, protocol=2
            )
        if name == "test_batch":
            written["test"] = (data, labels)
        else:
            written["train"].append((data, labels))
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return written
