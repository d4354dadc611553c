"""Downloading a dataset file: streamed, sha256-verified, renamed into place atomically.

A file is written to a temporary name beside its destination and only renamed to its real
name (``os.replace``, atomic on one file system) once its sha256 matches the table in
:mod:`bnlab.data.sources`; an interrupted or corrupted download therefore never leaves a
file that a later run would trust. Several URLs per file are tried in order. A rich progress
bar is shown on an interactive terminal unless ``BNLAB_NO_PROGRESS=1``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from bnlab.data.sources import RemoteFile
from bnlab.errors import DataError

CHUNK = 1 << 20  # bytes read per step
TIMEOUT_S = 30.0  # seconds without data before a URL counts as unreachable


def show_progress() -> bool:
    """A progress bar only on an interactive stderr, and never with ``BNLAB_NO_PROGRESS=1``."""
    return (
        os.environ.get("BNLAB_NO_PROGRESS", "") not in ("1", "true", "yes") and sys.stderr.isatty()
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class _Bar:
    """A rich download bar, or nothing when progress is off."""

    def __init__(self, label: str, enabled: bool):
        self._progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._label = label

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=None)
        return self

    def total(self, size: int | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=size)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()


def _fetch_one(url: str, tmp, label: str, progress: bool) -> str:
    """Stream ``url`` into the open file ``tmp``; return the sha256 of what was written."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"only http(s) URLs are fetched, not {url!r}")
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "bnlab"})
    with (
        urllib.request.urlopen(request, timeout=TIMEOUT_S) as response,
        _Bar(label, progress) as bar,
    ):
        length = response.headers.get("Content-Length")
        bar.total(int(length) if length and length.isdigit() else None)
        for block in iter(lambda: response.read(CHUNK), b""):
            tmp.write(block)
            digest.update(block)
            bar.advance(len(block))
    return digest.hexdigest()


def download(remote: RemoteFile, folder: str | Path, *, progress: bool | None = None) -> Path:
    """Fetch ``remote`` into ``folder`` (created if needed) and return its final path.

    Each URL is tried in turn; a file whose sha256 differs from ``remote.sha256`` is deleted
    and counts as a failure. Raises DataError listing every URL's failure when none works.
    An existing file of that name is returned as is (it was verified when it was written).
    """
    folder = Path(folder).expanduser()
    dest = folder / remote.filename
    if dest.is_file():
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    progress = show_progress() if progress is None else progress
    failures = []
    for url in remote.urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=folder)
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as tmp:
                digest = _fetch_one(url, tmp, remote.filename, progress)
            if digest != remote.sha256:
                failures.append(
                    f"{url}: checksum mismatch, sha256 {digest} but expected {remote.sha256} "
                    "(file discarded)"
                )
                continue
            os.replace(tmp_path, dest)
            return dest
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            failures.append(f"{url}: {type(err).__name__}: {reason}")
        finally:
            tmp_path.unlink(missing_ok=True)
    raise DataError(
        f"could not download {remote.filename} into {folder} ({'; '.join(failures)})"
    )
