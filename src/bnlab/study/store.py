"""The durable store of studies: one SQLite file (WAL journal), safe against ``kill -9``.

Tables (``SCHEMA_VERSION`` 1):

``studies``
    ``study_id, name, version, question, spec_json, spec_hash, variants_json, bnlab_version,
    torch_version, python_version, created``. ``(name, version)`` is unique. A study is
    identified by its name; running a *changed* spec under an existing name is refused unless
    ``new=True``, which adds version ``n + 1`` of that name (the older versions stay, readable as
    ``"name@n"``). Selecting a study by plain name always means its latest version.
``runs``
    ``run_id, study_id, variant, seed, status, diverged_at_epoch, error, seconds, config_json,
    params_json, engine, device, started, finished``; one row per *completed* run
    (``status`` in ``finished | diverged | failed``), unique per ``(study_id, variant, seed)``.
    A run interrupted by a crash leaves no row and is simply run again. A ``failed`` row is
    replaced when the run is retried; ``finished`` and ``diverged`` rows are final.
``metrics``
    long form ``(run_id, epoch, name, value)``, epoch 1-based, one row per History key and
    epoch. NaN is stored as NULL (SQLite has no NaN) and read back as NaN.
``leases``
    the runs some process is training now (:mod:`bnlab.study.leases`): several ``bnlab run``
    processes on one store share its runs instead of each training all of them.

A SQLite file that already holds tables but is not a bnlab store is refused (never extended
with bnlab's tables); an empty file becomes a store.

Every run is written in one ``BEGIN IMMEDIATE … COMMIT`` transaction (run row + all its metric
rows) with ``synchronous=FULL``, so a run is either entirely in the store or not at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError, DataError
from bnlab.study import leases as _leases
from bnlab.study.jobs import RunOutcome, utc_now

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    study_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    question TEXT NOT NULL DEFAULT '',
    spec_json TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    variants_json TEXT NOT NULL,
    bnlab_version TEXT NOT NULL,
    torch_version TEXT NOT NULL,
    python_version TEXT NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies (study_id),
    variant TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('finished', 'diverged', 'failed')),
    diverged_at_epoch INTEGER,
    error TEXT,
    seconds REAL,
    config_json TEXT NOT NULL,
    params_json TEXT NOT NULL,
    engine TEXT NOT NULL,
    device TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT NOT NULL,
    UNIQUE (study_id, variant, seed)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, name, epoch)
) WITHOUT ROWID;
""" + _leases.LEASE_SCHEMA


def spec_hash(spec: dict[str, Any]) -> str:
    """sha256 (hex, first 16 digits) of the spec's canonical JSON (sorted keys)."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class StudyRef:
    """One study version in a store."""

    study_id: int
    name: str
    version: int
    question: str
    spec: dict[str, Any]
    spec_hash: str
    variants: list[str]
    created: str
    bnlab_version: str
    torch_version: str

    @property
    def label(self) -> str:
        """``name`` for version 1, ``name@N`` after ``new=True`` re-runs."""
        return self.name if self.version == 1 else f"{self.name}@{self.version}"


class Store:
    """An open study store. Use as a context manager or call :meth:`close`.

    ``create=False`` refuses a path that does not exist (readers never create empty stores).
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise DataError(f"store: {str(self.path)!r} does not exist (run a study first)")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=60.0)
            self._refuse_foreign()
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
            self._check_schema()
        except sqlite3.DatabaseError as error:
            raise DataError(
                f"store: {str(self.path)!r} is not a bnlab study store ({error})"
            ) from None

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): all or nothing."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _refuse_foreign(self) -> None:
        """A database with tables but no bnlab ``meta`` row is someone else's: refuse it before
        anything (even the WAL switch) writes to it."""
        tables = {
            r[0]
            for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            ).fetchall()
        }
        if not tables:
            return
        ours = "meta" in tables and self._conn.execute(
            "SELECT 1 FROM meta WHERE key = 'schema_version'"
        ).fetchone()
        if not ours:
            self._conn.close()
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise DataError(
                f"store: {str(self.path)!r} is an SQLite database but not a bnlab study store "
                f"(it holds the tables {shown}); bnlab leaves it untouched: give --store a "
                "new file"
            )

    def _check_schema(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            with self.transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        elif int(row[0]) != SCHEMA_VERSION:
            raise DataError(
                f"store: {str(self.path)!r} has schema version {row[0]}, this bnlab reads "
                f"version {SCHEMA_VERSION}; use a new --store file"
            )

    # -- studies ---------------------------------------------------------------------------
    def studies(self) -> list[StudyRef]:
        """Every study version, oldest first."""
        rows = self._conn.execute(
            "SELECT study_id, name, version, question, spec_json, spec_hash, variants_json, "
            "created, bnlab_version, torch_version FROM studies ORDER BY study_id"
        ).fetchall()
        return [
            StudyRef(
                r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], json.loads(r[6]), r[7], r[8], r[9]
            )
            for r in rows
        ]

    def select(self, study: str | None = None) -> list[StudyRef]:
        """The study versions ``study`` names.

        ``None``: the latest version of every study name in the store; ``"name"``: the latest
        version of ``name``; ``"name@N"``: version ``N``. Unknown names raise ConfigError.
        """
        refs = self.studies()
        latest = {ref.name: ref for ref in refs}  # later versions overwrite earlier ones
        if study is None:
            return list(latest.values())
        name, _, version = str(study).partition("@")
        if name not in latest:
            known = ", ".join(latest) or "none"
            raise ConfigError(
                f"study: {study!r} is not in {str(self.path)!r}{did_you_mean(name, latest)}; "
                f"studies there: {known}"
            )
        if not version:
            return [latest[name]]
        matches = [r for r in refs if r.name == name and str(r.version) == version]
        if not matches:
            versions = ", ".join(f"{name}@{r.version}" for r in refs if r.name == name)
            raise ConfigError(
                f"study: {study!r} is not in {str(self.path)!r}; versions: {versions}"
            )
        return matches

    def one(self, study: str | None = None) -> StudyRef:
        """Exactly one study version: ``study`` or, when None, the most recently created one."""
        refs = self.select(study)
        if not refs:
            raise DataError(f"store: {str(self.path)!r} holds no study yet")
        return max(refs, key=lambda r: r.study_id)

    def open_study(
        self,
        name: str,
        spec: dict[str, Any],
        *,
        question: str,
        variants: list[str],
        new: bool,
        run_changes: Callable[[dict[str, Any], set[tuple[str, int]]], list[str]] | None = None,
    ) -> tuple[StudyRef, bool]:
        """The study version a run of ``spec`` continues, or a new one; returns ``(ref, created)``.

        Same name and identical spec: the latest version (resume). Different spec: refused with
        ConfigError naming the differences, unless ``new`` (then version ``n + 1``), or unless
        the latest version holds no run yet (then its spec is replaced: nothing was measured
        under the old one). ``new`` on an identical spec also starts a fresh version (a
        deliberate repeat of the study).

        ``run_changes(old_spec, stored_runs)`` (the runner passes
        :func:`bnlab.study.growth.run_changes`) lets a study *grow in place*: it returns the
        changes that alter what a stored ``(variant, seed)`` run means; when there are none
        (seeds or variants added, the question reworded) the study's spec is replaced and
        every stored run is kept; otherwise the refusal names those changes.
        """
        digest = spec_hash(spec)
        existing = [r for r in self.studies() if r.name == name]
        if existing and not new:
            latest = existing[-1]
            if latest.spec_hash == digest:
                return latest, False
            altering: list[str] | None = None
            if run_changes is not None and self._has_runs(latest):
                altering = run_changes(latest.spec, self.completed(latest))
            if not self._has_runs(latest) or altering == []:
                # Nothing measured under the old spec changes meaning: re-specify in place.
                with self.transaction() as conn:
                    conn.execute(
                        "UPDATE studies SET spec_json = ?, spec_hash = ?, variants_json = ?, "
                        "question = ? WHERE study_id = ?",
                        (
                            canonical_json(spec),
                            digest,
                            json.dumps(variants),
                            question,
                            latest.study_id,
                        ),
                    )
                return self.select(f"{name}@{latest.version}")[0], False
            changes = "; ".join(describe_changes(latest.spec, spec)) or "formatting only"
            why = ""
            if altering:
                why = f", which changes runs already stored: {'; '.join(altering)}"
            raise ConfigError(
                f"study {name!r} in {str(self.path)!r} was run with a different spec "
                f"({changes}){why}; pass new=True (--new) to start {name}@{latest.version + 1} "
                f"in this store, or use another store"
            )
        version = existing[-1].version + 1 if existing else 1
        try:
            self._insert_study(name, version, spec, digest, question, variants)
        except sqlite3.IntegrityError:
            # Another process created this version between our read and our write (two
            # `bnlab run` started together): the same spec is the same study, shared.
            same = self.select(f"{name}@{version}")[0]
            if same.spec_hash != digest:
                raise ConfigError(
                    f"study {name!r}: another process just started {same.label} in "
                    f"{str(self.path)!r} with a different spec; run again to see the changes"
                ) from None
            return same, False
        return self.select(f"{name}@{version}")[0], True

    def _insert_study(
        self,
        name: str,
        version: int,
        spec: dict[str, Any],
        digest: str,
        question: str,
        variants: list[str],
    ) -> None:
        import torch

        from bnlab import __version__

        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO studies (name, version, question, spec_json, spec_hash, variants_json, "
                "bnlab_version, torch_version, python_version, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    version,
                    question,
                    canonical_json(spec),
                    digest,
                    json.dumps(variants),
                    __version__,
                    torch.__version__,
                    platform.python_version(),
                    _now(),
                ),
            )

    # -- runs ------------------------------------------------------------------------------
    def _has_runs(self, ref: StudyRef) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM runs WHERE study_id = ? LIMIT 1", (ref.study_id,)
        ).fetchone()
        return row is not None

    def completed(self, ref: StudyRef) -> set[tuple[str, int]]:
        """``(variant, seed)`` of the runs that need no re-run (finished or diverged)."""
        rows = self._conn.execute(
            "SELECT variant, seed FROM runs WHERE study_id = ? AND status != 'failed'",
            (ref.study_id,),
        ).fetchall()
        return {(v, int(s)) for v, s in rows}

    def record(self, ref: StudyRef, outcome: RunOutcome) -> int | None:
        """Write one run and its metrics in a single transaction; returns its ``run_id``.

        A stored ``failed`` row of the same (variant, seed) is replaced; a stored finished or
        diverged one is kept and ``None`` returned (another process finished it first).
        """
        req = outcome.request
        with self.transaction() as conn:
            old = conn.execute(
                "SELECT run_id, status FROM runs WHERE study_id = ? AND variant = ? AND seed = ?",
                (ref.study_id, req.variant, req.seed),
            ).fetchone()
            conn.execute(
                "DELETE FROM leases WHERE study_id = ? AND variant = ? AND seed = ?",
                (ref.study_id, req.variant, req.seed),
            )
            if old is not None:
                if old[1] != "failed":
                    return None
                conn.execute("DELETE FROM runs WHERE run_id = ?", (old[0],))
            cur = conn.execute(
                "INSERT INTO runs (study_id, variant, seed, status, diverged_at_epoch, error, "
                "seconds, config_json, params_json, engine, device, started, finished) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    ref.study_id,
                    req.variant,
                    req.seed,
                    outcome.status,
                    outcome.diverged_at_epoch,
                    outcome.error,
                    _real(outcome.seconds),
                    canonical_json(req.config()),
                    canonical_json(outcome.params),
                    outcome.engine,
                    outcome.device,
                    outcome.started or _now(),
                    outcome.finished or _now(),
                ),
            )
            run_id = int(cur.lastrowid)
            conn.executemany(
                "INSERT INTO metrics (run_id, epoch, name, value) VALUES (?,?,?,?)",
                [
                    (run_id, epoch, name, _real(value))
                    for name, values in outcome.metrics.items()
                    for epoch, value in enumerate(values, start=1)
                ],
            )
        return run_id

    # -- leases (bnlab.study.leases) -------------------------------------------------------
    def claim(
        self,
        ref: StudyRef,
        keys: Iterable[tuple[str, int]],
        owner: _leases.Owner,
        ttl: float = _leases.DEFAULT_TTL,
    ) -> list[tuple[str, int]]:
        """Claim the runs of ``keys`` that are neither stored nor held by a live process."""
        with self.transaction() as conn:
            return _leases.claim(conn, ref.study_id, list(keys), owner, ttl)

    def release(self, ref: StudyRef, owner: _leases.Owner) -> None:
        """Give back every run ``owner`` still holds in ``ref`` (it stops training them)."""
        with self.transaction() as conn:
            _leases.release(conn, owner, ref.study_id)

    def leases(self, ref: StudyRef) -> list[_leases.Lease]:
        """The runs of ``ref`` that some process holds now."""
        return _leases.read_leases(self._conn, ref.study_id)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read-only helper for the loaders in :mod:`bnlab.study.frames`."""
        return self._conn.execute(sql, params).fetchall()


def describe_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two spec dicts, e.g. ``train.epochs 10 -> 20``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                out.append(f"{path} removed")
            elif key not in old:
                out.append(f"{path} added")
            else:
                out.extend(describe_changes(old[key], new[key], path))
        return out
    if canonical_json(old) != canonical_json(new):
        return [
            f"{prefix or 'spec'} {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"
        ]
    return []


def _real(value: float | None) -> float | None:
    """SQLite stores NaN as NULL anyway; make it explicit (and keep +-inf)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _now() -> str:
    return utc_now()
