"""The result cache never serves a stale answer: two router replicas over one library.

Every answer is compared with an independent reference: qdrant-client's local
mode holding the same points in one collection, changed by the same writes.
Time is a hand-driven clock shared by both replicas (versions, the settle
window and the cache's time-to-live all read it): nothing sleeps.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models

from librarian.contracts.payload import POINT_VERSION_KEY
from librarian.core.discovery import Domain
from librarian.router.generation import DETECTS
from librarian.services.labeling import label_points
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointRecord

from .router_support import (
    DIM,
    FailsOnce,
    FlakyPort,
    Library,
    RouterThread,
    build_embedded_library,
    make_state,
    near,
)

pytestmark = pytest.mark.timeout(300)

SETTLE_S = 5.0
TTL_S = 60.0
QUERY = "/collections/library/points/query"


@dataclass
class HandClock:
    """Wall milliseconds that move only when a test says so."""

    ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def __call__(self) -> int:
        return self.ms

    def settle(self) -> None:
        """Past the settle window of every write made so far."""
        self.ms += int(SETTLE_S * 1000) + 1


@dataclass
class Replicas:
    built: Library
    west: FlakyPort
    clock: HandClock
    a: RouterThread
    b: RouterThread
    reference: QdrantClient

    def upsert(self, router: RouterThread, points: list[dict[str, Any]]) -> None:
        """Write through ``router``, and the same into the reference."""
        r = httpx.put(f"{router.url}/collections/library/points", json={"points": points})
        assert r.status_code == 200, r.text
        self.reference.upsert("reference", [models.PointStruct(**p) for p in points])

    def delete(self, router: RouterThread, ids: list[int]) -> None:
        r = httpx.post(f"{router.url}/collections/library/points/delete", json={"points": ids})
        assert r.status_code == 200, r.text
        self.reference.delete("reference", models.PointIdsList(points=ids))


def _settings(**caching: Any) -> dict[str, Any]:
    return {
        "timeout": "10s",
        "caching": {
            "enable_result_cache": True,
            "settle_window": SETTLE_S,
            "cache_ttl": TTL_S,
            **caching,
        },
    }


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    built = build_embedded_library(tmp_path)
    west = FlakyPort(built.fleet.get("west"))
    built.fleet = Fleet.of_ports({"east": built.fleet.get("east"), "west": west})  # type: ignore[dict-item]
    clock = HandClock()
    reference = QdrantClient(":memory:")
    reference.create_collection(
        "reference", models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    reference.upsert(
        "reference",
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in built.points],
    )
    state_a = make_state(built, settings=_settings(), wall_ms=clock, node_id=1)
    state_b = make_state(built, settings=_settings(), wall_ms=clock, node_id=2)
    with RouterThread(state_a) as a, RouterThread(state_b) as b:
        yield Replicas(built, west, clock, a, b, reference)
    west.release()
    built.fleet.close()


def _vector(seed: int) -> list[float]:
    row = np.random.default_rng(seed).normal(size=DIM)
    return [float(x) for x in row / np.linalg.norm(row)]


def _ask(router: RouterThread, body: dict[str, Any], **params: str) -> httpx.Response:
    r = httpx.post(f"{router.url}{QUERY}", json=body, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r


def _hit(response: httpx.Response) -> bool:
    return response.headers.get("X-Librarian-Cache") == "hit"


def _expected(reference: QdrantClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The reference's answer to a query body, as the router renders points."""
    request = models.QueryRequest.model_validate(body)
    answer = reference.query_points(
        "reference",
        query=request.query,
        query_filter=request.filter,
        limit=request.limit if request.limit is not None else 10,
        offset=request.offset,
        with_payload=request.with_payload if request.with_payload is not None else False,
        with_vectors=request.with_vector if request.with_vector is not None else False,
        score_threshold=request.score_threshold,
        search_params=request.params,
    )
    return [p.model_dump(mode="json") for p in answer.points]


def _same(response: httpx.Response, expected: list[dict[str, Any]]) -> None:
    """The router's points are the reference's (see :func:`_same_points`)."""
    _same_points(response.json()["result"]["points"], expected)


def _same_points(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Ranked ids with scores (ties in any order), payloads and vectors where asked."""
    assert [p["score"] for p in got] == pytest.approx([p["score"] for p in expected], abs=1e-5)
    by_score: dict[float, set[Any]] = {}
    for point in expected:
        by_score.setdefault(round(point["score"], 5), set()).add(point["id"])
    for point in got:
        assert point["id"] in by_score[round(point["score"], 5)], (point, expected)
    want = {p["id"]: p for p in expected}
    for point in got:
        assert point["payload"] == want[point["id"]]["payload"]
        if want[point["id"]]["vector"] is None:
            assert point["vector"] is None
        else:
            assert point["vector"] == pytest.approx(want[point["id"]]["vector"], abs=1e-5)


def _point(point_id: int, vector: list[float], **payload: Any) -> dict[str, Any]:
    return {"id": point_id, "vector": vector, "payload": payload}


# ---------------------------------------------------------------------- other replicas' writes


def test_a_write_through_one_replica_is_seen_by_the_others_next_read(replicas: Replicas) -> None:
    body = {"query": near(replicas.built, 0), "limit": 5, "with_payload": True}
    first = _ask(replicas.b, body)
    assert not _hit(first)
    assert _hit(_ask(replicas.b, body))
    _same(_ask(replicas.b, body), _expected(replicas.reference, body))

    # a new point, best for the query: the home's count changes
    replicas.upsert(replicas.a, [_point(5000, body["query"], tag="new")])
    fresh = _ask(replicas.b, body)
    assert not _hit(fresh)
    assert fresh.json()["result"]["points"][0]["id"] == 5000
    _same(fresh, _expected(replicas.reference, body))
    # written within the settle window: computed, not cached
    assert not _hit(_ask(replicas.b, body))

    replicas.clock.settle()
    _same(_ask(replicas.b, body), _expected(replicas.reference, body))
    assert _hit(_ask(replicas.b, body))


def test_overwrites_and_deletes_that_keep_the_count_are_seen(replicas: Replicas) -> None:
    body = {"query": near(replicas.built, 1), "limit": 4, "with_payload": True}
    cached = _ask(replicas.b, body)
    assert _hit(_ask(replicas.b, body))
    top = cached.json()["result"]["points"][0]
    vector = next(p.vector for p in replicas.built.points if p.id == top["id"])
    assert vector is not None

    # an overwrite in place: the same id, the same home, a new payload (the count stays)
    replicas.upsert(replicas.a, [_point(top["id"], vector, tag="rewritten")])
    replicas.clock.settle()
    seen = _ask(replicas.b, body)
    assert not _hit(seen)
    assert seen.json()["result"]["points"][0]["payload"] == {"tag": "rewritten"}
    _same(seen, _expected(replicas.reference, body))
    assert _hit(_ask(replicas.b, body))

    # a delete leaves a tombstone in place of the point (the count stays)
    replicas.delete(replicas.a, [top["id"]])
    replicas.clock.settle()
    after = _ask(replicas.b, body)
    assert not _hit(after)
    assert top["id"] not in [p["id"] for p in after.json()["result"]["points"]]
    _same(after, _expected(replicas.reference, body))


def test_a_write_landing_below_the_newest_version_within_the_settle_window_is_seen(
    replicas: Replicas,
) -> None:
    """Of two concurrent writes, the older may land last (same count, no newer version): an
    answer read within the settle window of the newer one is not cached."""
    body = {"query": near(replicas.built, 0), "limit": 4, "with_payload": True}
    replicas.upsert(replicas.a, [_point(5000, body["query"], tag="newer")])
    east = replicas.built.fleet.get("east")
    (newer,) = east.retrieve("library-d0", [5000], with_vectors=False)
    version = newer.payload[POINT_VERSION_KEY]
    seen = _ask(replicas.b, body)
    second = seen.json()["result"]["points"][1]
    vector = next(p.vector for p in replicas.built.points if p.id == second["id"])
    assert vector is not None
    late = {"tag": "older write, landed late"}
    east.upsert(
        "library-d0", [PointRecord(second["id"], vector, {**late, POINT_VERSION_KEY: version - 1})]
    )
    replicas.reference.upsert(
        "reference", [models.PointStruct(id=second["id"], vector=vector, payload=late)]
    )
    after = _ask(replicas.b, body)
    assert not _hit(after)
    assert after.json()["result"]["points"][1]["payload"] == late
    _same(after, _expected(replicas.reference, body))


def test_concurrent_readers_never_keep_an_answer_older_than_an_acknowledged_write(
    replicas: Replicas,
) -> None:
    """Clients hammer replica B with one query (computing and caching it concurrently) while
    replica A overwrites its best point again and again: after each acknowledged write, B's
    next answer is the new one."""
    body = {"query": near(replicas.built, 1), "limit": 3, "with_payload": True}
    top = _ask(replicas.b, body).json()["result"]["points"][0]["id"]
    vector = next(p.vector for p in replicas.built.points if p.id == top)
    assert vector is not None
    stop = threading.Event()
    served: list[int] = []

    def hammer() -> None:
        with httpx.Client(base_url=replicas.b.url, timeout=30) as http:
            while not stop.is_set():
                r = http.post(QUERY, json=body)
                assert r.status_code == 200, r.text
                served.append(int(_hit(r)))

    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(hammer) for _ in range(4)]
        try:
            for round_ in range(6):
                replicas.upsert(replicas.a, [_point(top, vector, round=round_)])
                replicas.clock.settle()
                after = _ask(replicas.b, body)
                assert after.json()["result"]["points"][0]["payload"] == {"round": round_}
                _same(after, _expected(replicas.reference, body))
        finally:
            stop.set()
        for reader in readers:
            reader.result()
    assert sum(served) > 0  # the readers were served from the cache between the writes


def test_search_and_batches_are_cached_and_seen_stale_alike(replicas: Replicas) -> None:
    vector = near(replicas.built, 2)
    search = {"vector": vector, "limit": 3, "with_payload": True}
    batch = {"searches": [{"query": vector, "limit": 3, "with_payload": True}]}
    urls = (
        f"{replicas.b.url}/collections/library/points/search",
        f"{replicas.b.url}/collections/library/points/query/batch",
    )

    def both() -> list[httpx.Response]:
        return [
            httpx.post(u, json=b, timeout=30) for u, b in zip(urls, (search, batch), strict=True)
        ]

    first = both()
    assert [_hit(r) for r in both()] == [True, True]
    top = first[0].json()["result"][0]["id"]
    point = next(p for p in replicas.built.points if p.id == top)
    assert point.vector is not None
    replicas.upsert(replicas.a, [_point(top, point.vector, changed=True)])
    replicas.clock.settle()
    expected = _expected(replicas.reference, {"query": vector, "limit": 3, "with_payload": True})
    found, batched = both()
    assert not _hit(found)
    assert not _hit(batched)
    assert found.json()["result"][0]["payload"] == {"changed": True}
    assert batched.json()["result"][0]["points"] == found.json()["result"]
    _same_points(found.json()["result"], expected)


def test_writes_straight_to_a_home_that_change_its_count_are_seen(replicas: Replicas) -> None:
    body = {"query": near(replicas.built, 2), "limit": 5, "with_payload": True}
    _ask(replicas.b, body)
    assert _hit(_ask(replicas.b, body))
    west = replicas.built.fleet.get("west")
    # around the router: no version, but one more point
    west.upsert("library-d2", [PointRecord(7000, body["query"], {"tag": "direct"})])
    replicas.reference.upsert(
        "reference", [models.PointStruct(id=7000, vector=body["query"], payload={"tag": "direct"})]
    )
    seen = _ask(replicas.b, body)
    assert not _hit(seen)
    assert seen.json()["result"]["points"][0]["id"] == 7000
    _same(seen, _expected(replicas.reference, body))
    assert _hit(_ask(replicas.b, body))  # no newer version: settled at once

    west.delete_points("library-d2", ids=[7000])
    replicas.reference.delete("reference", models.PointIdsList(points=[7000]))
    gone = _ask(replicas.b, body)
    assert not _hit(gone)
    _same(gone, _expected(replicas.reference, body))


def test_an_answer_depends_only_on_the_homes_it_read(tmp_path: Path) -> None:
    """A search routed to one domain is kept while another home changes, not when its own does."""
    built = build_embedded_library(tmp_path)
    clock = HandClock()
    state = make_state(
        built,
        settings={**_settings(), "routing_strategy": "domain_affinity"},
        wall_ms=clock,
    )
    body = {"query": near(built, 0), "limit": 3}
    with RouterThread(state) as router:
        first = _ask(router, body)
        assert _hit(_ask(router, body))
        (answer,) = state.cache.values()
        assert set(answer.depends) == {("east", "library-d0")}
        west = built.fleet.get("west")
        west.upsert("library-d2", [PointRecord(8000, near(built, 2), {})])
        assert _hit(_ask(router, body))
        east = built.fleet.get("east")
        east.upsert("library-d0", [PointRecord(8001, body["query"], {})])
        changed = _ask(router, body)
        assert not _hit(changed)
        assert changed.json()["result"]["points"][0]["id"] == 8001
        assert first.json()["result"]["points"][0]["id"] != 8001
    built.fleet.close()


# ---------------------------------------------------------------------- what is never cached


def test_partial_answers_are_never_cached(replicas: Replicas) -> None:
    body = {"query": near(replicas.built, 2), "limit": 5}
    failing = FailsOnce(replicas.west.inner, "query_points")
    replicas.west.inner = failing  # type: ignore[assignment]
    failing.armed = True
    partial = _ask(replicas.b, body)
    assert partial.headers["X-Librarian-Partial"] == "west/library-d2"
    complete = _ask(replicas.b, body)
    assert not _hit(complete)
    assert "X-Librarian-Partial" not in complete.headers
    _same(complete, _expected(replicas.reference, body))
    assert _hit(_ask(replicas.b, body))


def test_a_hung_home_means_no_cache_and_no_wait_beyond_the_deadline(replicas: Replicas) -> None:
    body = {"query": near(replicas.built, 0), "limit": 5}
    _ask(replicas.b, body)
    assert _hit(_ask(replicas.b, body))
    replicas.west.mode = "hung"
    for _ in range(2):
        started = time.monotonic()
        r = httpx.post(f"{replicas.b.url}{QUERY}", json=body, params={"timeout": "1"}, timeout=30)
        elapsed = time.monotonic() - started
        assert elapsed < 20.0, elapsed  # hung until released: only the deadline ends it
        assert not _hit(r)
        assert r.status_code in (200, 504)
        if r.status_code == 200:  # the domains that answered, flagged as partial
            assert r.headers["X-Librarian-Partial"] == "west/library-d2"
    replicas.west.release()
    assert replicas.west.wait_idle(30)
    fine = _ask(replicas.b, body)
    _same(fine, _expected(replicas.reference, body))


def test_a_plain_collection_is_never_cached(tmp_path: Path) -> None:
    built = build_embedded_library(tmp_path)
    state = make_state(built, settings=_settings(), passthrough=frozenset({"reference"}))
    body = {"query": _vector(1), "limit": 3}
    with RouterThread(state) as router:
        for _ in range(3):
            r = httpx.post(f"{router.url}/collections/reference/points/query", json=body)
            assert r.status_code == 200, r.text
            assert not _hit(r)
    assert len(state.cache) == 0
    built.fleet.close()


# ---------------------------------------------------------------------- the key


def test_equal_requests_hit_whatever_their_key_order_and_spacing(replicas: Replicas) -> None:
    body = {
        "query": near(replicas.built, 1),
        "limit": 4,
        "filter": {"must": [{"key": "group", "match": {"value": "g1"}}]},
        "with_payload": ["n", "group"],
    }
    _ask(replicas.b, body)
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=3) + "\n\n"
    r = httpx.post(
        f"{replicas.b.url}{QUERY}",
        content=reordered,
        headers={"Content-Type": "application/json"},
    )
    assert _hit(r)
    _same(r, _expected(replicas.reference, body))
    assert _hit(_ask(replicas.b, body, timeout="5"))  # the timeout changes no answer


@pytest.mark.parametrize(
    "change",
    [
        {"limit": 3},
        {"offset": 2},
        {"query": None},
        {"filter": {"must": [{"key": "group", "match": {"value": "g2"}}]}},
        {"filter": {"must_not": [{"key": "group", "match": {"value": "g1"}}]}},
        {"with_payload": True},
        {"with_payload": ["n"]},
        {"with_vector": True},
        {"score_threshold": 0.5},
        {"params": {"exact": True}},
        {"params": {"hnsw_ef": 8}},
    ],
    ids=lambda change: "-".join(f"{k}" for k in change),
)
def test_requests_that_differ_in_what_changes_the_answer_miss(
    replicas: Replicas, change: dict[str, Any]
) -> None:
    base = {
        "query": near(replicas.built, 1),
        "limit": 5,
        "filter": {"must": [{"key": "group", "match": {"value": "g1"}}]},
        "with_payload": ["group"],
    }
    _ask(replicas.b, base)
    assert _hit(_ask(replicas.b, base))
    other = {**base, **change}
    if change.get("query", 0) is None:
        other["query"] = near(replicas.built, 1, seed=7)
    r = _ask(replicas.b, other)
    assert not _hit(r)
    _same(r, _expected(replicas.reference, other))
    assert _hit(_ask(replicas.b, other))


def test_entries_expire_after_their_time_to_live(replicas: Replicas) -> None:
    body = {"query": near(replicas.built, 0), "limit": 2}
    _ask(replicas.b, body)
    replicas.clock.ms += int(TTL_S * 1000) - 1
    assert _hit(_ask(replicas.b, body))
    replicas.clock.ms += 2
    assert not _hit(_ask(replicas.b, body))


def test_status_says_what_the_cache_sees(replicas: Replicas) -> None:
    body = {"query": near(replicas.built, 0), "limit": 2}
    _ask(replicas.b, body)
    _ask(replicas.b, body)
    cache = httpx.get(f"{replicas.b.url}/librarian/status").json()["result"]["cache"]
    assert cache["detects"] == DETECTS
    assert cache["settleWindowSeconds"] == SETTLE_S
    assert cache["entries"] == 1
    assert cache["sizeBytes"] > 0
    assert cache["hitRate"] == 0.5
    # the homes got the integer index the generation's order_by scroll needs
    for cluster, collection in (("east", "library-d0"), ("west", "library-d2")):
        schema = replicas.built.fleet.get(cluster).collection_info(collection).payload_schema
        assert schema[POINT_VERSION_KEY] == "integer"


def test_labelling_a_source_collection_makes_the_version_index(tmp_path: Path) -> None:
    port = EmbeddedQdrant("east", tmp_path / "east")
    port.create_collection("source", CollectionSpec(vector_size=DIM))
    port.upsert("source", [PointRecord(i, _vector(i), {}) for i in range(20)])
    domain = Domain("d0", "domain 0", np.asarray(_vector(0)), 0.5, 20, 0.9)
    label_points(port, "source", [domain], version=1)
    assert port.collection_info("source").payload_schema[POINT_VERSION_KEY] == "integer"
    port.close()
