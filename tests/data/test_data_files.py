"""Local formats (npz, IDX, CIFAR-10 batches, image folders) and a DataError for every bad input."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from data_helpers import small_images, write_cifar_batches, write_idx, write_idx_set
from PIL import Image

import bnlab.data as data
from bnlab.errors import ConfigError, DataError, UnsafeFileError


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def four(x_train, y_train, x_test, y_test):
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# --------------------------------------------------------------------------------- npz


@pytest.mark.parametrize(
    ("train_shape", "nchw"),
    [
        ((6, 5, 7), (6, 1, 5, 7)),
        ((6, 5, 7, 3), (6, 3, 5, 7)),
        ((6, 3, 5, 7), (6, 3, 5, 7)),
        ((6, 7), (6, 7)),
    ],
)
def test_npz_layouts_become_nchw(tmp_path, train_shape, nchw):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=train_shape, dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    path = save_npz(tmp_path / "d.npz", **four(x, y, x[:2], y[:2]))
    ds = data.load(f"npz:{path}")
    assert tuple(ds.x_train.shape) == nchw and ds.x_train.dtype == torch.float32
    if len(train_shape) == 4 and train_shape[-1] == 3:
        np.testing.assert_array_equal(ds.x_train.numpy(), x.transpose(0, 3, 1, 2))
    assert ds.classes == ["0", "1", "2"]


def test_npz_layout_option_resolves_ambiguous_shapes(tmp_path):
    x = np.arange(2 * 3 * 7 * 4, dtype=np.uint8).reshape(2, 3, 7, 4)
    path = save_npz(tmp_path / "d.npz", **four(x, np.array([0, 1]), x, np.array([1, 0])))
    assert data.load(f"npz:{path}", layout="nchw").x_train.shape == (2, 3, 7, 4)
    assert data.load(f"npz:{path}", layout="nhwc").x_train.shape == (2, 4, 3, 7)


def test_npz_classes_and_keras_style_labels(tmp_path):
    x = np.zeros((4, 2, 2), np.uint8)
    y_onehot = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]
    path = save_npz(
        tmp_path / "d.npz",
        **four(x, y_onehot, x, np.array([[0], [1], [2], [2]])),
        classes=np.array(["cat", "dog", "eel"]),
    )
    ds = data.load(f"npz:{path}")
    assert ds.y_train.tolist() == [0, 2, 1, 2] and ds.y_test.tolist() == [0, 1, 2, 2]
    assert ds.classes == ["cat", "dog", "eel"]


def test_bare_paths_are_recognised(tmp_path):
    x, y = small_images(6)
    path = save_npz(tmp_path / "d.npz", **four(x, y, x, y))
    assert data.load(str(path)).x_train.shape == (6, 1, 6, 5)
    write_idx_set(tmp_path / "idxdir")
    assert data.load(str(tmp_path / "idxdir")).x_train.shape == (12, 1, 6, 5)


def test_missing_file(tmp_path):
    with pytest.raises(
        DataError, match=r"file not found: .*nope\.npz; give the path of an \.npz holding x_train"
    ):
        data.load(f"npz:{tmp_path / 'nope.npz'}")
    with pytest.raises(DataError, match="no such file or folder"):
        data.load(str(tmp_path / "nope.npz"))


def test_npz_missing_arrays_and_pickles(tmp_path):
    x, y = small_images(4)
    path = save_npz(tmp_path / "d.npz", x_train=x, y_train=y)
    with pytest.raises(
        DataError, match="missing array.s. x_test, y_test; the file holds x_train, y_train"
    ):
        data.load(f"npz:{path}")
    objects = np.empty(4, dtype=object)
    objects[:] = [np.zeros(2)] * 4
    path = save_npz(tmp_path / "o.npz", **four(objects, y, x, y))
    with pytest.raises(DataError, match="without unpickling"):
        data.load(f"npz:{path}")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz file"):
        data.load(f"npz:{tmp_path / 'bad.npz'}")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            four(np.zeros((5, 3, 3)), np.zeros(4), np.zeros((2, 3, 3)), np.zeros(2)),
            "x_train has 5 samples but y_train has 4 labels",
        ),
        (
            four(np.zeros((5, 3, 3)), np.zeros(5), np.zeros((2, 4, 3)), np.zeros(2)),
            r"train samples have shape \(3, 3\) but test samples \(4, 3\)",
        ),
        (
            four(np.zeros(5), np.zeros(5), np.zeros(2), np.zeros(2)),
            r"x_train has shape \(5,\); expected",
        ),
        (
            four(np.zeros((5, 3, 3)), np.zeros(5), np.zeros((0, 3, 3)), np.zeros(0)),
            "x_test is empty",
        ),
        (
            four(np.zeros((2, 5, 5, 5, 5)), np.zeros(2), np.zeros((2, 5, 5, 5, 5)), np.zeros(2)),
            "images must be",
        ),
        (
            four(np.zeros((2, 5, 7, 9)), np.zeros(2), np.zeros((2, 5, 7, 9)), np.zeros(2)),
            "cannot tell the channel axis",
        ),
        (
            four(np.zeros((2, 3, 7, 4)), np.zeros(2), np.zeros((2, 3, 7, 4)), np.zeros(2)),
            "could be channels-last or channels-first; pass layout=",
        ),
        (
            four(np.full((2, 3), np.nan), np.zeros(2), np.zeros((2, 3)), np.zeros(2)),
            "NaN or infinite",
        ),
    ],
)
def test_wrong_shapes_and_values(tmp_path, arrays, message):
    y = arrays["y_train"]
    arrays["y_train"] = np.where(np.arange(len(y)) % 2 == 0, 0, 1) if len(y) else y
    arrays["y_test"] = np.arange(len(arrays["y_test"])) % 2
    path = save_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        data.load(f"npz:{path}")


@pytest.mark.parametrize(
    ("y_train", "y_test", "classes", "message"),
    [
        ([0, 1, -1, 1], [0, 1], None, r"y_train holds labels from -1 to 1, outside 0 or more"),
        (
            [0, 1, 0, 1],
            [0, 3],
            ["a", "b"],
            r"y_test holds labels from 0 to 3, outside 0..1 \(the dataset names 2 classes\)",
        ),
        ([0.0, 1.5, 0.0, 1.0], [0, 1], None, "labels must be whole class indices"),
        ([0, 0, 0, 0], [0, 0], None, "has 1 class; a classifier needs at least two"),
        (["a", "b", "a", "b"], [0, 1], None, "labels must be integer class indices"),
    ],
)
def test_labels_out_of_range(tmp_path, y_train, y_test, classes, message):
    extra = {"classes": np.array(classes)} if classes else {}
    x = np.zeros((4, 2, 2), np.uint8)
    path = save_npz(
        tmp_path / "d.npz", **four(x, np.array(y_train), x[:2], np.array(y_test)), **extra
    )
    with pytest.raises(DataError, match=message):
        data.load(f"npz:{path}")


# --------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder(tmp_path, gz):
    written = write_idx_set(tmp_path / "mnist", gz=gz)
    ds = data.load(f"idx:{tmp_path / 'mnist'}", scale="unit")
    np.testing.assert_allclose(ds.x_train[:, 0].numpy() * 255, written["x_train"], rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test.numpy(), written["y_test"])
    assert ds.x_test.shape == (6, 1, 6, 5) and ds.classes == ["0", "1", "2"]


def test_idx_missing_and_corrupted(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_set(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte.gz in"):
        data.load(f"idx:{folder}")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(6, np.uint8))
    data.load(f"idx:{folder}")  # an uncompressed file serves as well
    good = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    import gzip

    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(gzip.decompress(good)[:-7]))
    with pytest.raises(
        DataError, match=r"header announces shape \(12, 6, 5\).*truncated or corrupted"
    ):
        data.load(f"idx:{folder}")
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(DataError, match="not an IDX file"):
        data.load(f"idx:{folder}")


def test_idx_sample_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_set(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="x_train has 12 samples but y_train has 11 labels"):
        data.load(f"idx:{folder}")


# ------------------------------------------------------------------------------ CIFAR-10


def test_cifar_folder_and_archive(tmp_path):
    written = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    from_folder = data.load(f"cifar:{tmp_path}")
    expected_x = np.concatenate([d for d, _ in written["train"]]).reshape(-1, 3, 32, 32)
    # default scale of CIFAR-10 is "unit" (seed 003 divides by 255)
    np.testing.assert_allclose(from_folder.x_train.numpy() * 255, expected_x, rtol=1e-6)
    assert from_folder.y_train.tolist() == sum((lab for _, lab in written["train"]), [])
    assert from_folder.x_test.shape == (4, 3, 32, 32)
    assert from_folder.classes[:3] == ["airplane", "automobile", "bird"]
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_archive = data.load(f"cifar:{archive}", scale="raw")
    np.testing.assert_array_equal(from_archive.x_train.numpy(), expected_x.astype(np.float32))


def test_cifar_refuses_foreign_pickles_and_missing_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    (folder / "data_batch_3").write_bytes(
        pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2)
    )
    with pytest.raises(
        UnsafeFileError, match=r"data_batch_3: refusing to unpickle (__builtin__|builtins).print"
    ):
        data.load(f"cifar:{folder}")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing CIFAR-10 batch file.s. data_batch_3"):
        data.load(f"cifar:{folder}")


# --------------------------------------------------------------------------- image folder


def make_folder(root, classes=("cat", "dog"), per_class=5, size=(6, 8), mode="RGB"):
    rng = np.random.default_rng(1)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[0], size[1], 3) if mode == "RGB" else size
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / name / f"{i}.png")
    return root


def test_imagefolder_split_classes_and_pixels(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=("b_dog", "a_cat", "c_eel"), per_class=10)
    (root / "a_cat" / "notes.txt").write_text("not an image")
    ds = data.load(f"imagefolder:{root}", test_split=0.3, stratify=True, split_seed=0)
    assert ds.classes == ["a_cat", "b_dog", "c_eel"]  # sorted, like flow_from_directory
    assert ds.x_train.shape == (21, 3, 6, 8) and ds.x_test.shape == (9, 3, 6, 8)
    assert np.bincount(ds.y_test.numpy()).tolist() == [3, 3, 3]
    # every loaded image is one of the files, pixel for pixel (RGB -> channels first)
    files = {np.asarray(Image.open(p)).transpose(2, 0, 1).tobytes() for p in root.glob("*/*.png")}
    assert all(img.numpy().astype(np.uint8).tobytes() in files for img in ds.x_train)


def test_imagefolder_resize_grayscale_and_given_split(tmp_path):
    root = tmp_path / "imgs"
    make_folder(root / "train", size=(10, 10), mode="L", per_class=3)
    make_folder(root / "test", size=(10, 10), mode="L", per_class=2)
    ds = data.load(f"imagefolder:{root}", image_size=[4, 6])
    assert ds.x_train.shape == (6, 1, 4, 6) and ds.x_test.shape == (4, 1, 4, 6)
    assert ds.y_test.tolist() == [0, 0, 1, 1]
    rgb = data.load(f"imagefolder:{root}", image_size=5, color="rgb")
    assert rgb.x_train.shape == (6, 3, 5, 5)
    with pytest.raises(ConfigError, match="test_split: 0.2 cannot apply"):
        data.load(f"imagefolder:{root}", test_split=0.2)


def test_imagefolder_errors(tmp_path):
    one = make_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match=r"found 1 class folder.s. \('only'\).*needs at least two"):
        data.load(f"imagefolder:{one}")
    mixed = make_folder(tmp_path / "mixed")
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(mixed / "cat" / "small.png")
    with pytest.raises(DataError, match=r"different sizes .*pass image_size=\[height, width\]"):
        data.load(f"imagefolder:{mixed}")
    (mixed / "cat" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        data.load(f"imagefolder:{mixed}", image_size=[3, 3])
    empty = make_folder(tmp_path / "empty")
    (empty / "zebra").mkdir()
    with pytest.raises(DataError, match="class folder .*zebra holds no images"):
        data.load(f"imagefolder:{empty}")
    with pytest.raises(DataError, match="folder not found"):
        data.load(f"imagefolder:{tmp_path / 'absent'}")
    given = tmp_path / "given"
    make_folder(given / "train")
    make_folder(given / "test", classes=("cat", "emu"))
    with pytest.raises(DataError, match="class folder 'emu' .* is not one of the training classes"):
        data.load(f"imagefolder:{given}")


def test_image_bytes_round_trip_through_png():
    # guard for the pixel comparison above: PNG is lossless through PIL
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(buf.getvalue()))), pixels)
