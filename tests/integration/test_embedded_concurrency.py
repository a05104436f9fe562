"""Reads of one embedded collection run at once; writes, optimization and close wait their turn.

Reference: qdrant-client's local mode holding the same points (for rankings and
scores), and the adapter's own answers read one at a time before any thread
starts (for everything a thread reads). Overlap is shown by two readers meeting
inside the engine (a barrier in a wrapper around the shard), never by timing;
exclusion by a writer seen waiting on the collection's lock while readers are
inside, and entering only once they have left.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models

from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import ClusterUnreachable, QdrantError
from librarian.storage.port import CollectionSpec, PointRecord

COLLECTION = "c"
DIM = 8
POINTS = 300
COLORS = ["red", "green", "blue"]
DEADLINE_S = 20.0


def _points(round_: int = 0) -> list[PointRecord]:
    rng = random.Random(7)
    return [
        PointRecord(
            id=i,
            vector=[rng.uniform(-1, 1) for _ in range(DIM)],
            payload={"color": COLORS[i % len(COLORS)], "n": i, "round": round_},
        )
        for i in range(POINTS)
    ]


@pytest.fixture
def adapter(tmp_path: Path) -> Iterator[EmbeddedQdrant]:
    port = EmbeddedQdrant("embedded", tmp_path)
    port.create_collection(COLLECTION, CollectionSpec(vector_size=DIM))
    port.upsert(COLLECTION, _points())
    port.create_keyword_index(COLLECTION, "color")
    yield port
    port.close()


def _queries(count: int) -> list[list[float]]:
    rng = random.Random(11)
    return [[rng.uniform(-1, 1) for _ in range(DIM)] for _ in range(count)]


def _red() -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="color", match=models.MatchValue(value="red"))]
    )


def _reads(port: EmbeddedQdrant, vector: list[float]) -> dict[str, Any]:
    """One of each read, as comparable plain values."""
    hits = port.query(COLLECTION, vector, limit=10, query_filter=_red())
    page, next_offset = port.scroll(COLLECTION, limit=50, offset=25, with_vectors=False)
    facet = port.facet(COLLECTION, models.FacetRequest(key="color", exact=True))
    return {
        "query": [(h.id, h.score) for h in hits],
        "scroll": ([(p.id, p.payload) for p in page], next_offset),
        "count": port.count(COLLECTION, count_filter=_red()),
        "retrieve": [(r.id, r.payload) for r in port.retrieve(COLLECTION, [3, 1, 299, 5000])],
        "facet": sorted((str(h.value), h.count) for h in facet),
    }


def _same_ranking(got: list[tuple[Any, float]], expected: list[tuple[Any, float]]) -> None:
    assert len(got) == len(expected)
    for (_, score), (_, want) in zip(got, expected, strict=True):
        assert math.isclose(score, want, rel_tol=1e-4, abs_tol=1e-6)
    # equal scores may come in any order: compare ids per score
    by_score: dict[float, set[Any]] = {}
    for point_id, score in expected:
        by_score.setdefault(round(score, 4), set()).add(point_id)
    for point_id, score in got:
        assert point_id in by_score[round(score, 4)]


def test_reads_from_many_threads_equal_serial_reads_and_local_mode(
    adapter: EmbeddedQdrant,
) -> None:
    queries = _queries(12)
    serial = [_reads(adapter, q) for q in queries]

    local = QdrantClient(":memory:")
    local.create_collection(
        COLLECTION,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
    )
    local.upsert(
        COLLECTION,
        [models.PointStruct(id=p.id, vector=p.dense() or [], payload=p.payload) for p in _points()],
    )
    for vector, answers in zip(queries, serial, strict=True):
        reference = local.query_points(COLLECTION, vector, limit=10, query_filter=_red()).points
        _same_ranking(answers["query"], [(p.id, p.score) for p in reference])
    assert serial[0]["count"] == POINTS // len(COLORS)
    assert serial[0]["facet"] == sorted((c, POINTS // len(COLORS)) for c in COLORS)

    rounds = 4
    work = [i for _ in range(rounds) for i in range(len(queries))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: (i, _reads(adapter, queries[i])), work))
    for i, got in answers:
        assert got["scroll"] == serial[i]["scroll"]
        assert got["count"] == serial[i]["count"]
        assert got["retrieve"] == serial[i]["retrieve"]
        assert got["facet"] == serial[i]["facet"]
        _same_ranking(got["query"], serial[i]["query"])


class _MeetingShard:
    """Wraps the engine's shard: every ``query`` waits inside until ``readers`` are in."""

    def __init__(self, shard: Any, readers: int) -> None:
        self._shard = shard
        self.met = threading.Barrier(readers, timeout=DEADLINE_S)
        self.release = threading.Event()
        self.inside = 0
        self.inside_at_update: list[int] = []
        self._count = threading.Lock()

    def query(self, request: Any) -> Any:
        with self._count:
            self.inside += 1
        try:
            self.met.wait()  # raises BrokenBarrierError if the readers never meet
            assert self.release.wait(DEADLINE_S)
            return self._shard.query(request)
        finally:
            with self._count:
                self.inside -= 1

    def update(self, operation: Any) -> Any:
        with self._count:
            self.inside_at_update.append(self.inside)
        return self._shard.update(operation)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)


def _poll(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.001)


def test_two_readers_are_inside_the_engine_at_once_and_a_write_waits_for_them(
    adapter: EmbeddedQdrant,
) -> None:
    adapter.count(COLLECTION)  # the shard is open
    # instrumenting the engine behind the adapter (the collection's one shard has no key)
    shards: dict[Any, Any] = adapter._shards[COLLECTION]
    meeting = _MeetingShard(shards[None], readers=2)
    shards[None] = meeting
    lock = adapter._lock(COLLECTION)
    vector = _queries(1)[0]
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            readers = [pool.submit(adapter.query, COLLECTION, vector, limit=5) for _ in range(2)]
            _poll(lambda: meeting.met.n_waiting == 0 and meeting.inside == 2)  # both met
            assert lock.readers == 2
            write = pool.submit(adapter.set_payload, COLLECTION, {"seen": True}, [1])
            _poll(lambda: lock.writers_waiting == 1)
            assert meeting.inside_at_update == []  # and has not reached the engine
            meeting.release.set()
            first, second = (r.result(timeout=DEADLINE_S) for r in readers)
            write.result(timeout=DEADLINE_S)
    finally:
        shards[None] = meeting._shard
    assert [h.id for h in first] == [h.id for h in second]
    assert meeting.inside_at_update == [0]  # the write ran with no reader inside
    assert adapter.retrieve(COLLECTION, [1])[0].payload["seen"] is True


def test_a_write_during_concurrent_reads_is_never_lost_or_torn(adapter: EmbeddedQdrant) -> None:
    rounds = 15
    stop = threading.Event()
    problems: list[str] = []

    def read() -> int:
        last_round, last_count, reads = 0, POINTS, 0
        while not stop.is_set() or reads == 0:
            page, _ = adapter.scroll(COLLECTION, limit=2 * POINTS + rounds, with_vectors=False)
            seen = {p.payload["round"] for p in page if isinstance(p.id, int) and p.id < POINTS}
            if len(seen) != 1:
                problems.append(f"a page mixes rounds {sorted(seen)}")
            current = min(seen)
            if current < last_round:
                problems.append(f"round {current} read after round {last_round}")
            if len(page) < last_count:
                problems.append(f"{len(page)} points read after {last_count}")
            last_round, last_count = current, len(page)
            reads += 1
        return reads

    with ThreadPoolExecutor(max_workers=4) as pool:
        readers = [pool.submit(read) for _ in range(4)]
        for round_ in range(1, rounds + 1):
            extra = PointRecord(id=POINTS + round_, vector=[1.0] * DIM, payload={"round": round_})
            adapter.upsert(COLLECTION, [*_points(round_), extra])  # one operation: all or none
        stop.set()
        assert all(r.result(timeout=DEADLINE_S) > 0 for r in readers)
    assert problems == []
    assert adapter.count(COLLECTION) == POINTS + rounds
    final = adapter.retrieve(COLLECTION, list(range(POINTS)), with_vectors=False)
    assert {p.payload["round"] for p in final} == {rounds}


def test_close_during_reads_is_safe(tmp_path: Path) -> None:
    port = EmbeddedQdrant("embedded", tmp_path)
    port.create_collection(COLLECTION, CollectionSpec(vector_size=DIM))
    port.upsert(COLLECTION, _points())
    port.create_keyword_index(COLLECTION, "color")
    vector = _queries(1)[0]
    started = threading.Barrier(5, timeout=DEADLINE_S)

    def read() -> tuple[int, BaseException]:
        reads = 0
        started.wait()
        while True:
            try:
                _reads(port, vector)
            except QdrantError as error:  # the end: anything else fails the test
                return reads, error
            reads += 1

    with ThreadPoolExecutor(max_workers=4) as pool:
        readers = [pool.submit(read) for _ in range(4)]
        started.wait()
        port.close()
        outcomes = [r.result(timeout=DEADLINE_S) for r in readers]
    assert all(isinstance(error, ClusterUnreachable) for _, error in outcomes), outcomes
    with pytest.raises(ClusterUnreachable):
        port.count(COLLECTION)
    with pytest.raises(ClusterUnreachable):  # no handle is opened after close
        port.create_collection("late", CollectionSpec(vector_size=DIM))
    reopened = EmbeddedQdrant("embedded", tmp_path)  # the shard was let go of cleanly
    try:
        assert reopened.count(COLLECTION) == POINTS
        assert _reads(reopened, vector)["count"] == POINTS // len(COLORS)
    finally:
        reopened.close()
