"""Leases: how several ``bnlab run`` processes share the runs of one study store.

Before a process trains a run it *claims* it: one row in the ``leases`` table, keyed by
``(study_id, variant, seed)``, holding the claimant (``owner``: host, pid and a random token),
and an expiry time (``expires``, seconds since the epoch). A claim is one ``BEGIN IMMEDIATE``
transaction, so two processes can never both claim a run. While the process trains, a
:class:`Heartbeat` thread renews its leases every ``ttl / 3`` seconds; recording the run
(:meth:`bnlab.study.store.Store.record`) deletes the lease in the same transaction as the run
row, and a process that stops (Ctrl-C, an error) releases the leases it still holds.

A lease is *reclaimable* by another process when it has expired (its process stopped renewing
it: killed, frozen, its machine gone), or at once when its owner ran on this host and that
pid no longer exists (``kill -9``). So N processes on one store each take the next free run
and finish the study about N times faster, a run is never trained twice at once, and a run
whose process died is trained again by whoever comes next.

The unit a process claims is what its engine trains together: one run with the sequential
engine, one stack of runs with the stacked engine.

SQLite's locking (which makes a claim atomic) holds on a local disk. On network file
systems (NFS, SMB) file locks are often unreliable and two machines may both claim a run:
share a store between processes of one machine, and use the Ray executor
(``--executor ray``) to spread one study over several machines.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

#: Seconds a lease lives without renewal (the heartbeat renews it every ``TTL / 3``).
DEFAULT_TTL = 60.0

LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    study_id INTEGER NOT NULL REFERENCES studies (study_id),
    variant TEXT NOT NULL,
    seed INTEGER NOT NULL,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (study_id, variant, seed)
);
"""


def lease_ttl() -> float:
    """``$BNLAB_LEASE_SECONDS`` when set (a number > 0), else :data:`DEFAULT_TTL`."""
    text = os.environ.get("BNLAB_LEASE_SECONDS", "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_TTL
    return value if value > 0 else DEFAULT_TTL


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: this process, named by host, pid and a random token."""

    host: str
    pid: int
    token: str

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12])

    @property
    def key(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"


@dataclass(frozen=True)
class Lease:
    """A run held by some process (as read from the table)."""

    variant: str
    seed: int
    owner: str
    host: str
    pid: int
    expires: float

    def reclaimable(self, now: float, host: str) -> bool:
        """Expired, or held by a process of this host that no longer exists."""
        return self.expires < now or (self.host == host and not pid_alive(self.pid))


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or we cannot tell: assume alive)
    return True


def read_leases(conn: sqlite3.Connection, study_id: int) -> list[Lease]:
    rows = conn.execute(
        "SELECT variant, seed, owner, host, pid, expires FROM leases WHERE study_id = ?",
        (study_id,),
    ).fetchall()
    return [Lease(r[0], int(r[1]), r[2], r[3], int(r[4]), float(r[5])) for r in rows]


def claim(
    conn: sqlite3.Connection,
    study_id: int,
    keys: Iterable[tuple[str, int]],
    owner: Owner,
    ttl: float,
) -> list[tuple[str, int]]:
    """Claim those of ``keys`` that no live process holds and that have no final run row.

    Call inside a ``BEGIN IMMEDIATE`` transaction. Reclaimable leases of others are replaced.
    Returns the keys now held by ``owner`` (in the order given).
    """
    now = time.time()
    held = {(lease.variant, lease.seed): lease for lease in read_leases(conn, study_id)}
    final = {
        (v, int(s))
        for v, s in conn.execute(
            "SELECT variant, seed FROM runs WHERE study_id = ? AND status != 'failed'",
            (study_id,),
        ).fetchall()
    }
    got = []
    for key in keys:
        if key in final:
            continue
        lease = held.get(key)
        if lease is not None and lease.owner != owner.key and not lease.reclaimable(
            now, owner.host
        ):
            continue
        conn.execute(
            "INSERT OR REPLACE INTO leases (study_id, variant, seed, owner, host, pid, expires) "
            "VALUES (?,?,?,?,?,?,?)",
            (study_id, key[0], int(key[1]), owner.key, owner.host, owner.pid, now + ttl),
        )
        got.append(key)
    return got


def release(conn: sqlite3.Connection, owner: Owner, study_id: int | None = None) -> None:
    """Drop every lease ``owner`` holds (of one study, or of all)."""
    if study_id is None:
        conn.execute("DELETE FROM leases WHERE owner = ?", (owner.key,))
    else:
        conn.execute(
            "DELETE FROM leases WHERE owner = ? AND study_id = ?", (owner.key, study_id)
        )


class Heartbeat:
    """A daemon thread that pushes the expiry of ``owner``'s leases forward every ``ttl/3`` s.

    It has its own SQLite connection (connections are not shared between threads). A failed
    renewal (the store briefly locked) is retried at the next beat.
    """

    def __init__(self, path: str | os.PathLike, owner: Owner, ttl: float):
        self.path, self.owner, self.ttl = path, owner, float(ttl)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="bnlab-lease", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _beat(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        try:
            while not self._stop.wait(self.ttl / 3):
                try:
                    conn.execute(
                        "UPDATE leases SET expires = ? WHERE owner = ?",
                        (time.time() + self.ttl, self.owner.key),
                    )
                except sqlite3.OperationalError:
                    continue
        finally:
            conn.close()
