"""A readers-writer lock: many readers at once, or one writer alone.

Why this exists: the embedded engine lets several threads read one shard at once
(and releases the interpreter lock while it searches), but its writes, its
optimizer and closing a shard must have the shard to themselves. One plain
lock per collection made every read wait for every other read; this lock lets
reads share a collection while writes, optimization and close stay exclusive.

It prefers writers (a waiting writer holds back new readers, so a steady
stream of reads cannot starve a write) and is reentrant the ways the adapter
needs: a thread that reads may read again, a thread that writes may write or
read again. A reader asking to write would wait for itself forever, so that
raises instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    """Shared reading, exclusive writing; see the module's docstring."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._readers: dict[int, int] = {}  # thread id -> how deep it reads
        self._writer: int | None = None
        self._writer_depth = 0
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the lock shared (with other readers) for the block."""
        me = threading.get_ident()
        with self._condition:
            if self._writer != me and me not in self._readers:
                while self._writer is not None or self._writers_waiting:
                    self._condition.wait()
            self._readers[me] = self._readers.get(me, 0) + 1
        try:
            yield
        finally:
            with self._condition:
                depth = self._readers[me] - 1
                if depth:
                    self._readers[me] = depth
                else:
                    del self._readers[me]
                    if not self._readers:
                        self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the lock alone for the block."""
        me = threading.get_ident()
        with self._condition:
            if self._writer != me:
                if me in self._readers:
                    raise RuntimeError("a thread that holds the lock to read cannot write")
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._condition.wait()
                finally:
                    self._writers_waiting -= 1
                    self._condition.notify_all()  # readers held back for this writer
                self._writer = me
            self._writer_depth += 1
        try:
            yield
        finally:
            with self._condition:
                self._writer_depth -= 1
                if not self._writer_depth:
                    self._writer = None
                    self._condition.notify_all()

    @property
    def readers(self) -> int:
        """How many threads hold the lock to read now (for tests and diagnostics)."""
        with self._condition:
            return len(self._readers)

    @property
    def writers_waiting(self) -> int:
        """How many threads wait to write now (for tests and diagnostics)."""
        with self._condition:
            return self._writers_waiting
