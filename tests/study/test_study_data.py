"""How a study finds its data: --data-dir, image folders sized to the preset, the real seed 002."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.errors import DataError
from bnlab.study import load_runs, run
from bnlab.study.runner import load_data
from bnlab.study.spec import read_spec_source


def _image_folder(root, size=12, per_class=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 200)):
        folder = root / "imgs" / label
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 20, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")


def test_relative_image_folder_under_data_dir_is_resized_to_the_preset(tmp_path, monkeypatch):
    monkeypatch.delenv("BNLAB_DATA", raising=False)
    _image_folder(tmp_path)
    spec = {
        "name": "folder",
        "seeds": 1,
        "model": {"preset": "digits_cnn"},
        "data": {"name": "imagefolder:imgs", "test_split": 0.25},
        "train": {"epochs": 1, "batch_size": 4},
        "variants": {"no_bn": {"norm": "none"}, "bn": {}},
    }
    result = run(
        spec, store=tmp_path / "runs.db", data_dir=tmp_path, engine="sequential", progress=False
    )
    assert result.trained == 2
    runs = load_runs(tmp_path / "runs.db")
    assert set(runs["status"]) == {"finished"}, runs["error"].tolist()
    # the 12x12 grayscale images were read at the preset's 8x8, one channel, two classes
    data = load_data(
        "imagefolder:imgs", {"test_split": 0.25}, data_dir=tmp_path, input_shape=(1, 8, 8)
    )
    assert tuple(data.x_train.shape[1:]) == (1, 8, 8) and data.num_classes == 2
    assert len(data.x_train) == 12 and len(data.x_test) == 4
    # BNLAB_DATA works like data_dir
    monkeypatch.setenv("BNLAB_DATA", str(tmp_path))
    assert load_data("imagefolder:imgs", {}, input_shape=(1, 8, 8)).num_classes == 2


def test_missing_builtin_data_stops_with_the_hint(tmp_path):
    spec = read_spec_source("seed000")
    with pytest.raises(DataError) as info:
        run(spec, store=tmp_path / "runs.db", data_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "Malimg" in message and "--data-dir" in message and "\n" not in message
    assert load_runs(tmp_path / "runs.db").empty


def test_seed002_on_the_real_fashion_mnist(tmp_path, shared_data):
    """seed002 as shipped (split, pixels, model), shortened to 1 epoch and 1 seed."""
    spec = read_spec_source("seed002")
    spec["train"]["epochs"], spec["seeds"] = 1, 1
    spec["train"]["precise_eval"] = False
    data = load_data(
        "fashion_mnist",
        {k: v for k, v in spec["data"].items() if k not in ("name", "hint")},
        data_dir=shared_data,
    )
    raw = np.load(shared_data / "fashion_mnist.npz")
    assert data.x_train.shape == (1000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    np.testing.assert_array_equal(data.x_test[:, 0].numpy(), raw["x_train"][1000:2000])
    np.testing.assert_array_equal(data.y_train.numpy(), raw["y_train"][:1000])
    result = run(
        spec, store=tmp_path / "runs.db", data_dir=shared_data, engine="sequential", progress=False
    )
    runs = load_runs(tmp_path / "runs.db").set_index("variant")
    # four variants: the seed's raw-pixel pair and the scale = "unit" pair
    assert result.trained == 4 and set(runs["status"]) == {"finished"}, runs["error"].tolist()
    # one epoch of 16 steps beats chance (0.1); not bn_unit in inference mode, whose moving
    # variance still holds its initial 1 (the reversal its report explains)
    assert (runs.drop(index="bn_unit")["final_val_accuracy"] > 0.3).all()


def _small_cifar(folder, per_batch: int = 16) -> None:
    """CIFAR-10 python batches as the real ones are written (pickle protocol 2, bytes keys)."""
    import pickle

    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, size=per_batch)],
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))


def test_seed003_as_shipped_on_whatever_cifar10_the_user_has(tmp_path):
    """seed003's split, augmentation and L2 variants on an 80-image CIFAR-10, 1 epoch, 1 seed;
    without CIFAR-10 the study stops with the hint before anything is stored."""
    from bnlab.report import collect, render_html
    from bnlab.study import load
    from bnlab.study.runner import load_data

    spec = read_spec_source("seed003")
    spec["train"]["epochs"], spec["seeds"] = 1, 1
    spec["data"]["download"] = False  # no network in tests
    with pytest.raises(DataError) as info:
        run(spec, store=tmp_path / "none.db", data_dir=tmp_path, progress=False)
    assert "CIFAR-10" in str(info.value) and "\n" not in str(info.value)

    _small_cifar(tmp_path / "cifar-10-batches-py")
    options = {k: v for k, v in spec["data"].items() if k not in ("name", "hint")}
    data = load_data("cifar10", options, data_dir=tmp_path)
    # 80 training images, 20 % held out as train_test_split(test_size=0.2, random_state=42)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (64, 16, 16)
    assert float(data.x_train.max()) <= 1.0  # pixels / 255, as the seed
    store = tmp_path / "runs.db"
    run(spec, store=store, data_dir=tmp_path, engine="sequential", progress=False)
    runs = load_runs(store).set_index("variant")
    assert set(runs["status"]) == {"finished"}, runs["error"].tolist()
    assert set(runs["val_source"]) == {"validation"}  # val_* columns: the held-out 20 %
    frame = load(store).set_index("variant")
    assert frame.loc["l2_001", "reg_loss"] > 0 and frame.loc["no_l2", "reg_loss"] == 0
    text = render_html(collect(store), tmp_path / "report.html").read_text()
    assert "regularizer share of the training loss per epoch" in text
