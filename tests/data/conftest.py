"""Fixtures of the data tests: every test runs with its caches inside tmp_path."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test reads or writes the user's caches: HOME, BNLAB_CACHE point into tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BNLAB_DATA", raising=False)
    monkeypatch.setenv("BNLAB_NO_PROGRESS", "1")
    return tmp_path
