"""Named datasets: lookup order, downloads from a server on 127.0.0.1, checksums, offline errors."""

from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from data_helpers import write_cifar_batches, write_idx_set

import bnlab.data as data
from bnlab.data import download as download_module
from bnlab.data import named, sources
from bnlab.data.download import download
from bnlab.data.sources import RemoteFile
from bnlab.errors import DataError


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture()
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (base_url, folder, requests)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []
    handler = functools.partial(type("H", (_Handler,), {"requests": requests}), directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_verifies_and_renames_into_place(server, tmp_path):
    base, www, requests = server
    payload = bytes(range(256)) * 5000  # 1.28 MB: several chunks
    (www / "blob.bin").write_bytes(payload)
    dest = tmp_path / "cache" / "x"
    path = download(RemoteFile("blob.bin", sha(payload), (base + "blob.bin",)), dest)
    assert path == dest / "blob.bin" and path.read_bytes() == payload
    assert sorted(p.name for p in dest.iterdir()) == ["blob.bin"]  # no temporary file left
    download(RemoteFile("blob.bin", sha(payload), (base + "blob.bin",)), dest)
    assert requests == ["/blob.bin"]  # the second call found the verified file


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    base, www, _ = server
    (www / "blob.bin").write_bytes(b"tampered")
    dest = tmp_path / "cache" / "x"
    remote = RemoteFile("blob.bin", sha(b"original"), (base + "blob.bin",))
    with pytest.raises(
        DataError,
        match=f"checksum mismatch, sha256 {sha(b'tampered')} but expected {sha(b'original')}",
    ):
        download(remote, dest)
    assert list(dest.iterdir()) == []


def test_next_url_is_tried_after_a_failure(server, tmp_path):
    base, www, requests = server
    (www / "good.bin").write_bytes(b"payload")
    (www / "bad.bin").write_bytes(b"corrupt")
    remote = RemoteFile(
        "f.bin", sha(b"payload"), (closed_port_url() + "f.bin", base + "bad.bin", base + "good.bin")
    )
    path = download(remote, tmp_path / "d")
    assert path.read_bytes() == b"payload"
    assert requests == ["/bad.bin", "/good.bin"]


def test_unreachable_urls_list_every_failure(tmp_path):
    url = closed_port_url()
    with pytest.raises(
        DataError, match=r"could not download f.bin into \S+ \(http://127.0.0.1:\d+/a: URLError"
    ):
        download(RemoteFile("f.bin", "0" * 64, (url + "a", url + "b")), tmp_path / "d")
    with pytest.raises(DataError, match="only http.s. URLs"):
        download(RemoteFile("f.bin", "0" * 64, ("file:///etc/passwd",)), tmp_path / "d")


def small_npz(path: Path) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        "y_train": np.arange(20) % 10,
        "x_test": rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8),
        "y_test": np.arange(10) % 10,
    }
    np.savez(path, **arrays)
    return arrays


def test_load_by_name_downloads_once_into_the_cache(server, tmp_path, monkeypatch):
    base, www, requests = server
    arrays = small_npz(www / "mnist.npz")
    digest = sha((www / "mnist.npz").read_bytes())
    monkeypatch.setitem(
        sources.SOURCES, "mnist", (RemoteFile("mnist.npz", digest, (base + "mnist.npz",)),)
    )
    ds = data.load("mnist")
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), arrays["x_train"])
    assert (tmp_path / "cache" / "mnist" / "mnist.npz").is_file()
    assert ds.meta["source"] == str(tmp_path / "cache" / "mnist" / "mnist.npz")
    data.load("mnist", train_range=[0, 5])
    assert requests == ["/mnist.npz"]


def test_without_network_or_files_the_error_says_what_to_put_where(tmp_path, monkeypatch):
    url = closed_port_url()
    files = tuple(
        RemoteFile(f.filename, f.sha256, (url + f.filename,))
        for f in sources.SOURCES["fashion_mnist"]
    )
    monkeypatch.setitem(sources.SOURCES, "fashion_mnist", files)
    with pytest.raises(DataError) as err:
        data.load("fashion_mnist")
    message = str(err.value)
    assert "fashion_mnist: not found on this machine and the download failed" in message
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "fashion_mnist.npz"):
        assert name in message
    assert f"into {tmp_path / 'cache' / 'fashion_mnist'}" in message
    assert "BNLAB_DATA" in message
    with pytest.raises(DataError, match="and download=false"):
        data.load("fashion_mnist", download=False)


def test_lookup_order_data_dir_then_bnlab_data_then_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(named, "fetch", lambda name: pytest.fail("no download expected"))
    explicit = write_idx_set(tmp_path / "given", n_train=12)  # IDX files directly in data_dir
    env = tmp_path / "env"
    env.mkdir()
    env_arrays = small_npz(env / "fashion_mnist.npz")
    monkeypatch.setenv("BNLAB_DATA", str(env))
    cached = write_idx_set(tmp_path / "cache" / "fashion_mnist", n_train=7)
    from_dir = data.load("fashion_mnist", data_dir=str(tmp_path / "given"))
    np.testing.assert_array_equal(from_dir.x_train[:, 0].numpy(), explicit["x_train"])
    assert from_dir.classes[0] == "T-shirt/top"  # the dataset's class names
    from_env = data.load("fashion_mnist")
    np.testing.assert_array_equal(from_env.x_train[:, 0].numpy(), env_arrays["x_train"])
    monkeypatch.delenv("BNLAB_DATA")
    from_cache = data.load("fashion_mnist")
    np.testing.assert_array_equal(from_cache.x_train[:, 0].numpy(), cached["x_train"])


def test_keras_cache_is_found_and_data_dir_must_exist(tmp_path, monkeypatch):
    monkeypatch.setattr(named, "fetch", lambda name: pytest.fail("no download expected"))
    keras_dir = tmp_path / "home" / ".keras" / "datasets" / "fashion-mnist"
    written = write_idx_set(keras_dir)
    ds = data.load("fashion_mnist", download=False)
    np.testing.assert_array_equal(ds.y_train.numpy(), written["y_train"])
    with pytest.raises(DataError, match="data_dir '.*nowhere' is not a folder"):
        data.load("mnist", data_dir=str(tmp_path / "nowhere"))


def test_cifar10_archive_is_downloaded_and_read_in_place(server, tmp_path, monkeypatch):
    base, www, requests = server
    written = write_cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    with tarfile.open(www / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    digest = sha((www / "cifar-10-python.tar.gz").read_bytes())
    remote = RemoteFile("cifar-10-python.tar.gz", digest, (base + "cifar-10-python.tar.gz",))
    monkeypatch.setitem(sources.SOURCES, "cifar10", (remote,))
    ds = data.load("cifar10", validation_split=0.25, split_seed=42)
    assert (tmp_path / "cache" / "cifar10" / "cifar-10-python.tar.gz").is_file()
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_val.shape == (5, 3, 32, 32)
    assert float(ds.x_test.max()) <= 1.0  # CIFAR-10 defaults to scale="unit"
    expected = written["test"][0].reshape(-1, 3, 32, 32) / 255.0
    np.testing.assert_allclose(ds.x_test.numpy(), expected, rtol=1e-6)
    assert ds.classes[-1] == "truck"
    data.load("cifar10")
    assert requests == ["/cifar-10-python.tar.gz"]


def test_progress_bar_is_silent_unless_interactive(server, tmp_path, monkeypatch):
    base, www, _ = server
    (www / "blob.bin").write_bytes(b"x" * 3_000_000)
    assert not download_module.show_progress()  # BNLAB_NO_PROGRESS=1 (conftest)
    monkeypatch.delenv("BNLAB_NO_PROGRESS")
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert not download_module.show_progress()  # not a terminal
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert download_module.show_progress()
    # the bar itself (forced on) does not disturb the download
    remote = RemoteFile("blob.bin", sha(b"x" * 3_000_000), (base + "blob.bin",))
    assert download(remote, tmp_path / "d", progress=True).stat().st_size == 3_000_000
