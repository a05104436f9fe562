"""The write path's outbox: cleanups a write could not finish, kept until a cluster takes them.

Why this exists: a write is acknowledged once its new home holds it; removing
older copies of the point from other homes (or leaving tombstones there) must
not make a write to a healthy cluster fail because another cluster is down.
So a cleanup that cannot reach its cluster is written here first (a SQLite
file: it survives a router restart when the path is on a volume) and retried
in the background until the cluster takes it. Every entry is conditional on
the version of the write that queued it, so replaying one late, twice, or
after newer writes changes nothing but what it must.

The outbox is bounded: when it is full a write that would need it is refused
(503) rather than acknowledged without a durable cleanup intent.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from librarian.storage.port import PointId

__all__ = ["Cleanup", "CleanupKind", "Outbox", "OutboxFull"]


class CleanupKind(StrEnum):
    REMOVE_OLDER = "remove_older"  # delete the ids where their version is older
    TOMBSTONE = "tombstone"  # turn the ids into tombstones where their version is older
    # A write landed in this collection while another home did not answer: once every home
    # answers (and the ids are here at this version or newer), settle it as the write would
    # have (remove older copies elsewhere, or yield to a newer one).
    SETTLE = "settle"
    # A write to this collection timed out and may still land, whatever happens to the ids
    # meanwhile: settle it once it has landed (the ids here at exactly this version).
    WATCH = "watch"
    # A move's second home missed a write its first home took: copy the ids over from
    # ``source`` where this collection holds them older.
    COPY = "copy"


@dataclass(frozen=True)
class Cleanup:
    """One pending cleanup: what to do to which ids in which collection, at which version."""

    cluster: str
    collection: str
    kind: CleanupKind
    ids: tuple[PointId, ...]
    version: int
    label: str | None = None  # the domain a tombstone keeps (the home's slice)
    source: tuple[str, str] | None = None  # (cluster, collection) a copy is made from
    entry_id: int = 0  # assigned by the outbox
    attempts: int = 0
    queued_at: float = 0.0
    last_error: str = ""


class OutboxFull(Exception):
    """The outbox holds its maximum number of entries."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cleanups (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster TEXT NOT NULL,
    collection TEXT NOT NULL,
    kind TEXT NOT NULL,
    ids TEXT NOT NULL,
    version INTEGER NOT NULL,
    label TEXT,
    source TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT ''
)
"""


class Outbox:
    """Pending cleanups in a SQLite database (``":memory:"`` when no path is given).

    ``clock`` gives wall seconds (injected so tests control ages).
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float],
    ) -> None:
        self.path = str(path) if path else ":memory:"
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.durable = bool(path)
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def add(self, cleanups: Sequence[Cleanup]) -> None:
        """Record ``cleanups`` durably (all or none); raises :class:`OutboxFull`."""
        if not cleanups:
            return
        now = self._clock()
        with self._lock:
            if self._count() + len(cleanups) > self.max_entries:
                raise OutboxFull(
                    f"the write path's outbox holds {self.max_entries} pending cleanups; "
                    "a cluster has been unreachable for long: bring it back or remove it "
                    "from the library"
                )
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO cleanups (cluster, collection, kind, ids, version, label, "
                    "source, queued_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            c.cluster,
                            c.collection,
                            c.kind.value,
                            json.dumps(list(c.ids)),
                            c.version,
                            c.label,
                            json.dumps(list(c.source)) if c.source else None,
                            now,
                            c.last_error,
                        )
                        for c in cleanups
                    ],
                )

    def pending(self, limit: int = 1000) -> list[Cleanup]:
        """The oldest pending cleanups first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT entry_id, cluster, collection, kind, ids, version, label, source, "
                "attempts, queued_at, last_error FROM cleanups ORDER BY entry_id LIMIT ?",
                (limit,),
            ).fetchall()
        return [_cleanup(row) for row in rows]

    def done(self, entry_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM cleanups WHERE entry_id = ?", (entry_id,))

    def failed(self, entry_id: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE cleanups SET attempts = attempts + 1, last_error = ? WHERE entry_id = ?",
                (error[:500], entry_id),
            )

    def full(self) -> bool:
        with self._lock:
            return self._count() >= self.max_entries

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM cleanups").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def summary(self) -> dict[str, Any]:
        """Entries, the oldest entry's age, and the clusters waited for (for status)."""
        with self._lock:
            count = self._count()
            oldest = self._db.execute("SELECT MIN(queued_at) FROM cleanups").fetchone()[0]
            clusters = [
                row[0]
                for row in self._db.execute(
                    "SELECT DISTINCT cluster FROM cleanups ORDER BY cluster"
                ).fetchall()
            ]
        return {
            "entries": count,
            "oldestAgeSeconds": (
                round(max(self._clock() - oldest, 0.0), 3) if oldest is not None else None
            ),
            "clusters": clusters,
            "durable": self.durable,
            "maxEntries": self.max_entries,
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _cleanup(row: tuple[Any, ...]) -> Cleanup:
    entry_id, cluster, collection, kind, ids, version, label, source, attempts, queued_at, error = (
        row
    )
    where = json.loads(source) if source else None
    return Cleanup(
        cluster=cluster,
        collection=collection,
        kind=CleanupKind(kind),
        ids=tuple(json.loads(ids)),
        version=int(version),
        label=label,
        source=(str(where[0]), str(where[1])) if where else None,
        entry_id=int(entry_id),
        attempts=int(attempts),
        queued_at=float(queued_at),
        last_error=error,
    )
