"""The readers-writer lock behind the embedded adapter: shared reads, exclusive writes,
writers first, and the reentrancy the adapter relies on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from librarian.storage.shared_lock import ReadWriteLock

DEADLINE_S = 10.0


def _poll(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.001)


def test_readers_share_the_lock() -> None:
    lock = ReadWriteLock()
    met = threading.Barrier(3, timeout=DEADLINE_S)

    def read() -> None:
        with lock.reading():
            met.wait()  # all three inside at once, or a BrokenBarrierError

    with ThreadPoolExecutor(max_workers=3) as pool:
        for future in [pool.submit(read) for _ in range(3)]:
            future.result(timeout=DEADLINE_S)
    assert lock.readers == 0


def test_a_waiting_writer_holds_back_new_readers_and_then_runs_alone() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    first_in, release = threading.Event(), threading.Event()

    def first_reader() -> None:
        with lock.reading():
            first_in.set()
            assert release.wait(DEADLINE_S)
            order.append("first reader")

    def writer() -> None:
        with lock.writing():
            assert lock.readers == 0
            order.append("writer")

    def late_reader() -> None:
        with lock.reading():
            order.append("late reader")

    with ThreadPoolExecutor(max_workers=3) as pool:
        reading = pool.submit(first_reader)
        assert first_in.wait(DEADLINE_S)
        writing = pool.submit(writer)
        _poll(lambda: lock.writers_waiting == 1)
        late = pool.submit(late_reader)
        release.set()
        for future in (reading, writing, late):
            future.result(timeout=DEADLINE_S)
    assert order == ["first reader", "writer", "late reader"]


def test_reentrancy_a_writer_may_write_and_read_again_a_reader_may_read_again() -> None:
    lock = ReadWriteLock()
    with lock.writing(), lock.writing(), lock.reading():
        pass
    with lock.reading(), lock.reading():
        assert lock.readers == 1
        with pytest.raises(RuntimeError, match="cannot write"), lock.writing():
            pass
    with lock.writing():  # nothing left held
        pass


def test_a_reader_reentering_while_a_writer_waits_does_not_deadlock() -> None:
    lock = ReadWriteLock()
    inside, again = threading.Event(), threading.Event()

    def reader() -> None:
        with lock.reading():
            inside.set()
            assert again.wait(DEADLINE_S)
            with lock.reading():  # would wait forever behind the writer if not reentrant
                pass

    def writer() -> None:
        with lock.writing():
            pass

    with ThreadPoolExecutor(max_workers=2) as pool:
        reading = pool.submit(reader)
        assert inside.wait(DEADLINE_S)
        writing = pool.submit(writer)
        _poll(lambda: lock.writers_waiting == 1)
        again.set()
        reading.result(timeout=DEADLINE_S)
        writing.result(timeout=DEADLINE_S)
