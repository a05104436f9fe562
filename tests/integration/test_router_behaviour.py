"""The router under bad input, slow and dead clusters, and its cache, quality, metrics and status."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.contracts.payload import POINT_VERSION_KEY as RESERVED_VERSION
from librarian.contracts.payload import TOMBSTONE_KEY as RESERVED_TOMBSTONE
from librarian.core.routing import LibraryRouter
from librarian.router.library import LibraryDefinition
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, QdrantPort

from .router_support import (
    DIM,
    FlakyPort,
    Library,
    RouterThread,
    build_embedded_library,
    make_state,
    near,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def library(tmp_path: Path) -> Iterator[tuple[Library, FlakyPort]]:
    built = build_embedded_library(tmp_path)
    west = FlakyPort(built.fleet.get("west"))
    built.fleet = Fleet.of_ports({"east": built.fleet.get("east"), "west": west})  # type: ignore[dict-item]
    yield built, west
    built.fleet.close()


def _vector(seed: int = 0) -> list[float]:
    row = np.random.default_rng(seed).normal(size=DIM)
    return [float(x) for x in row / np.linalg.norm(row)]


def _error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"status", "time"}, body
    return str(body["status"]["error"])


def test_bad_input_gets_qdrant_style_errors(library) -> None:
    built, _ = library
    with RouterThread(make_state(built)) as router, httpx.Client(base_url=router.url) as http:
        r = http.post("/collections/library/points/query", content=b"{not json")
        assert r.status_code == 400
        assert "Format error in JSON body" in _error(r)
        r = http.post("/collections/library/points/query", json={"query": [0.1, 0.2], "limit": 3})
        assert r.status_code == 400
        assert "expected dim: 16, got 2" in _error(r)
        r = http.post("/collections/library/points/query", json={"query": _vector(), "limt": 3})
        assert r.status_code == 400
        assert "limt" in _error(r)
        r = http.post("/collections/nowhere/points/query", json={"query": _vector()})
        assert r.status_code == 404
        assert "Collection `nowhere` doesn't exist" in _error(r)
        r = http.post(
            "/collections/library/points/query", json={"query": _vector(), "using": "image"}
        )
        assert r.status_code == 400  # the library has no vector of that name
        r = http.put(
            "/collections/library/points", json={"points": [{"id": -1, "vector": _vector()}]}
        )
        assert r.status_code == 400
        assert "unsigned integer or a UUID" in _error(r)
        r = http.get("/collections/library/nothing-here")
        assert r.status_code == 404
        assert "Not Found" in _error(r)
        r = http.post("/librarian/query", json={"vector": _vector(), "maxResults": 0})
        assert r.status_code == 400
        assert "maxResults" in _error(r)
        # the official client surfaces the message
        client = QdrantClient(url=router.url, check_compatibility=False)
        with pytest.raises(UnexpectedResponse, match="Vector dimension error"):
            client.query_points("library", query=[1.0, 2.0])
        client.close()


def test_dead_cluster_gives_partial_results_then_opens_its_circuit(library) -> None:
    built, west = library
    state = make_state(
        built,
        settings={
            "circuit_breaker": {"failure_threshold": 2, "reset_timeout": "1h"},
            "caching": {"enable_result_cache": False},
        },
    )
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        west.mode = "down"
        for _ in range(3):
            r = http.post(
                "/collections/library/points/query", json={"query": _vector(), "limit": 5}
            )
            assert r.status_code == 200
            assert r.headers["X-Librarian-Partial"] == "west/library-d2"
            assert len(r.json()["result"]["points"]) == 5  # east still answers
        calls = west.calls
        assert state.breaker.state("west") == "open"
        http.post("/collections/library/points/query", json={"query": _vector(), "limit": 5})
        assert west.calls == calls  # open circuit: not even tried
        status = http.get("/librarian/status").json()["result"]
        assert status["circuits"]["west"] == "open"
        metrics = httpx.get(router.metrics_url).text
        assert 'librarian_router_circuit_open{cluster="west"} 1.0' in metrics
        assert "librarian_router_partial_results_total 4.0" in metrics
        # everything down: a 5xx in Qdrant's format
        r = http.post("/collections/library/points/count", json={})
        assert r.status_code == 502
        assert "count needs every domain" in _error(r)


def test_slow_cluster_times_out_within_the_request_timeout(library) -> None:
    """West hangs until released, so an answer at all means the request's timeout cut it
    off; the timeout leaves the healthy homes time to answer on a loaded machine."""
    built, west = library
    state = make_state(built, settings={"timeout": "4s", "caching": {"enable_result_cache": False}})
    with RouterThread(state) as router, httpx.Client(base_url=router.url, timeout=60) as http:
        west.mode = "hung"
        try:
            r = http.post(
                "/collections/library/points/query", json={"query": _vector(), "limit": 5}
            )
            assert r.status_code == 200, r.text
            assert r.headers["X-Librarian-Partial"] == "west/library-d2"
        finally:
            west.release()
            assert west.wait_idle(30)
        west.mode = "ok"
        r = http.post("/collections/library/points/query?timeout=0", json={"query": _vector()})
        assert r.status_code == 400
        assert "timeout" in _error(r)


def test_a_timeout_is_a_504_and_an_unreachable_cluster_a_502_whatever_the_message(
    library,
) -> None:
    built, west = library
    state = make_state(
        built, settings={"timeout": "300ms", "caching": {"enable_result_cache": False}}
    )
    only_west = {"vector": list(built.definition.domains[2].centroid), "clusters": ["west"]}
    with RouterThread(state) as router, httpx.Client(base_url=router.url, timeout=30) as http:
        west.mode, west.reason = "down", "did not answer: connection reset"
        r = http.post("/librarian/query", json=only_west)
        assert r.status_code == 502
        assert "no cluster answered (west/library-d2)" in _error(r)
        west.mode, west.delay_s = "slow", 1.0
        r = http.post("/librarian/query", json=only_west)
        assert r.status_code == 504
        assert "no cluster answered (west/library-d2)" in _error(r)
        west.mode = "ok"


def test_cache_hits_and_is_cleared_by_writes(library) -> None:
    built, _ = library
    state = make_state(built, settings={"caching": {"enable_result_cache": True}})
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        body = {"query": _vector(3), "limit": 4}
        first = http.post("/collections/library/points/query", json=body)
        second = http.post("/collections/library/points/query", json=body)
        assert "X-Librarian-Cache" not in first.headers
        assert second.headers["X-Librarian-Cache"] == "hit"
        assert first.json()["result"] == second.json()["result"]
        http.put(
            "/collections/library/points",
            json={"points": [{"id": 5000, "vector": body["query"], "payload": {}}]},
        )
        third = http.post("/collections/library/points/query", json=body)
        assert "X-Librarian-Cache" not in third.headers
        assert third.json()["result"]["points"][0]["id"] == 5000
        assert state.cache.hit_rate == pytest.approx(1 / 3)


def test_shadow_queries_estimate_recall_and_metrics_report_it(library) -> None:
    built, _ = library
    state = make_state(
        built,
        settings={
            "routing_strategy": "hybrid",
            "shadow_fraction": 1.0,
            "target_recall": 0.93,
            "caching": {"enable_result_cache": False},
        },
    )
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        for seed in range(30):
            assert (
                http.post(
                    "/collections/library/points/query", json={"query": _vector(seed), "limit": 10}
                ).status_code
                == 200
            )
        router.run(state.drain())
        status = http.get("/librarian/status").json()["result"]
        quality = status["quality"]
        assert quality["shadowQueries"] > 0
        assert 0.0 <= quality["estimatedRecall"] <= 1.0
        assert 0.0 <= status["routingEfficiency"] < 1.0
        assert [d["id"] for d in status["library"]["domains"]] == ["d0", "d1", "d2"]
        metrics = httpx.get(router.metrics_url).text
        for name in (
            "librarian_router_estimated_recall",
            "librarian_router_domains_probed_bucket",
            'librarian_router_upstream_latency_seconds_bucket{cluster="east"',
            "librarian_router_cache_hit_rate",
            "librarian_router_routing_efficiency",
            'librarian_router_queries_total{strategy="hybrid"}',
            "librarian_router_target_recall 0.93",  # what estimated_recall is held against
        ):
            assert name in metrics, name
        shadowed = f"librarian_router_shadow_queries_total {float(quality['shadowQueries'])}"
        assert shadowed in metrics.splitlines()
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200


def test_predict_and_cross_cluster_query(library) -> None:
    built, _ = library
    with RouterThread(make_state(built)) as router, httpx.Client(base_url=router.url) as http:
        centroid = list(built.definition.domains[2].centroid)
        predicted = http.post(
            "/librarian/predict", json={"vector": centroid, "strategy": "hybrid"}
        ).json()["result"]
        assert predicted["domains"][0]["id"] == "d2"
        assert predicted["clusters"][0] == "west"
        result = http.post(
            "/librarian/query",
            json={
                "vector": centroid,
                "maxResults": 5,
                "clusters": ["east"],
                "fusion": "rrf",
                "preferences": {"east": 2.0},
            },
        ).json()["result"]
        assert result["clusters"] == ["east"]
        assert len(result["points"]) == 5
        assert all(p["domain"].startswith("east/") for p in result["points"])
        assert result["fusion"] == "rrf"
        assert result["partial"] is False
        r = http.post("/librarian/query", json={"vector": centroid, "fusion": "borda"})
        assert r.status_code == 400
        assert "borda" in _error(r)


def test_reload_picks_up_a_new_definition(library) -> None:
    built, _ = library
    state = make_state(built)
    definitions = [built.definition]

    async def loader():
        return definitions[-1]

    state.config.loader = loader
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        assert len(http.get("/librarian/status").json()["result"]["library"]["domains"]) == 3
        from dataclasses import replace

        definitions.append(
            replace(built.definition, domains=built.definition.domains[:2], version="v2")
        )
        assert router.run(state.reload()) is True
        status = http.get("/librarian/status").json()["result"]
        assert status["library"]["version"] == "v2"
        assert len(status["library"]["domains"]) == 2
        assert router.run(state.reload()) is False  # unchanged: no rebuild


def _mutations(rng: random.Random) -> Iterator[tuple[str, str, bytes]]:
    valid = {
        "/points/query": {
            "query": _vector(),
            "limit": 3,
            "filter": {"must": [{"key": "group", "match": {"value": "g1"}}]},
        },
        "/points/search": {"vector": _vector(), "limit": 3},
        "/points/scroll": {"limit": 3, "offset": 1},
        "/points/count": {"exact": True},
        "/points": {"ids": [1, 2]},
        "/points/query/batch": {"searches": [{"query": _vector(), "limit": 2}]},
    }
    junk: list[Any] = [
        None,
        -1,
        0,
        1e308,
        "x",
        "",
        [],
        {},
        [1, "a"],
        True,
        {"nested": {"a": [None]}},
        "00000000-0000-0000-0000-000000000000",
        2**70,
    ]
    for _ in range(300):
        path, body = rng.choice(list(valid.items()))
        mutated = json.loads(json.dumps(body))
        choice = rng.random()
        if choice < 0.4:
            key = rng.choice(list(mutated))
            mutated[key] = rng.choice(junk)
        elif choice < 0.6:
            mutated[
                rng.choice(
                    [
                        "limit",
                        "offset",
                        "with_payload",
                        "with_vector",
                        "params",
                        "prefetch",
                        "query",
                        "filter",
                    ]
                )
            ] = rng.choice(junk)
        elif choice < 0.8:
            mutated.pop(rng.choice(list(mutated)))
        raw = json.dumps(mutated).encode()
        if rng.random() < 0.1:
            raw = raw[: rng.randrange(len(raw))]
        yield "POST", path, raw


def test_fuzzed_request_bodies_never_crash_the_router(library) -> None:
    built, _ = library
    rng = random.Random(1234)
    state = make_state(built, passthrough=frozenset({"reference"}))
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        for method, path, raw in _mutations(rng):
            for collection in ("library", "reference"):
                r = http.request(method, f"/collections/{collection}{path}", content=raw)
                assert r.status_code in (200, 400, 404, 422), (path, raw, r.status_code, r.text)
                body = r.json()
                assert "time" in body, body
                assert "result" in body or "error" in body["status"], body


def _hashed_homes(built: Library) -> LibraryDefinition:
    """The same library in collections whose names hold a ``#`` (Qdrant allows it)."""
    routes = []
    for route in built.definition.domains:
        port = built.fleet.get(route.cluster)
        records, _ = port.scroll(route.collection, limit=10_000)
        name = f"shelf#{route.domain_id}"
        port.create_collection(name, CollectionSpec(vector_size=DIM))
        port.upsert(name, records)
        routes.append(replace(route, collection=name))
    return replace(built.definition, domains=tuple(routes), version="hashed")


def test_writes_reach_every_collection_whatever_its_name(library) -> None:
    built, _ = library
    hashed = Library(built.fleet, _hashed_homes(built), built.points)
    east = built.fleet.get("east")
    with (
        RouterThread(make_state(hashed)) as router,
        httpx.Client(base_url=router.url) as http,
    ):

        def count() -> int:
            return int(
                http.post("/collections/library/points/count", json={}).json()["result"]["count"]
            )

        assert count() == len(built.points)
        records, _ = east.scroll("shelf#d1", limit=1)
        moved = records[0].id
        near_d0 = list(built.definition.domains[0].centroid)
        r = http.put(
            "/collections/library/points", json={"points": [{"id": moved, "vector": near_d0}]}
        )
        assert r.status_code == 200
        assert [p.id for p in east.retrieve("shelf#d0", [moved])] == [moved]
        assert east.retrieve("shelf#d1", [moved]) == []  # moved, not copied
        assert count() == len(built.points)
        r = http.post("/collections/library/points/delete", json={"points": [moved]})
        assert r.status_code == 200
        [tombstone] = east.retrieve("shelf#d0", [moved], with_vectors=False)
        assert tombstone.payload.keys() == {
            RESERVED_VERSION,
            RESERVED_TOMBSTONE,
            "librarian_domain",
        }
        assert count() == len(built.points) - 1
        r = http.post("/collections/library/points", json={"ids": [moved]})
        assert r.json()["result"] == []


class GatedPort:
    """Delegates to a real port; its searches wait until the test opens the gate."""

    def __init__(self, inner: QdrantPort) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _gated(self) -> None:
        self.entered.set()
        if not self.gate.wait(60):
            raise RuntimeError("the gate was never opened")

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self._gated()
        return self.inner.query(*args, **kwargs)

    def query_points(self, *args: Any, **kwargs: Any) -> Any:
        self._gated()
        return self.inner.query_points(*args, **kwargs)


def test_latency_is_recorded_against_the_snapshot_the_request_used(tmp_path: Path) -> None:
    built = build_embedded_library(tmp_path)
    west = GatedPort(built.fleet.get("west"))
    built.fleet = Fleet.of_ports({"east": built.fleet.get("east"), "west": west})  # type: ignore[dict-item]
    definitions = [built.definition]

    async def loader() -> LibraryDefinition:
        return definitions[-1]

    state = make_state(built, settings={"caching": {"enable_result_cache": False}})
    state.config.loader = loader
    try:
        with RouterThread(state) as router, ThreadPoolExecutor(1) as pool:
            before = state.library
            assert before is not None
            assert before.domains[2].cluster == "west"
            pending = pool.submit(
                httpx.post,
                f"{router.url}/collections/library/points/query",
                json={"query": _vector(), "limit": 5},
                timeout=60,
            )
            assert west.entered.wait(60)  # the request is at west, on the first snapshot
            definitions.append(replace(built.definition, version="v2"))
            assert router.run(state.reload()) is True
            after = state.library
            assert after is not None
            assert after is not before
            west.gate.set()
            assert pending.result(60).status_code == 200
            assert (
                before.router.hedge_after(2) is not None
            )  # west's latency: the request's snapshot
            assert after.router.hedge_after(2) is None  # ... not the one loaded meanwhile
    finally:
        west.gate.set()
        built.fleet.close()


def test_a_slow_routing_decision_leaves_the_router_answering_others(
    library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision held on its thread: health checks and reads needing no decision are
    answered meanwhile, and the held search still answers as one collection would."""
    built, _ = library
    entered, release, stalled = threading.Event(), threading.Event(), threading.Event()
    decide = LibraryRouter.decide

    def held(self: LibraryRouter, query: Any, **options: Any) -> Any:
        entered.set()
        if not release.wait(timeout=30):
            stalled.set()  # never released: the test could not run while it was held
        return decide(self, query, **options)

    query = near(built, 0)
    with (
        RouterThread(make_state(built)) as router,
        httpx.Client(base_url=router.url, timeout=10) as searcher,
        httpx.Client(base_url=router.url, timeout=10) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        monkeypatch.setattr(LibraryRouter, "decide", held)
        searching = pool.submit(
            searcher.post,
            "/collections/library/points/query",
            json={"query": query, "limit": 5, "with_payload": False},
        )
        try:
            assert entered.wait(timeout=30)
            assert http.get("/healthz").status_code == 200
            r = http.post("/collections/library/points", json={"ids": [3, 1], "with_payload": True})
            assert r.status_code == 200
            assert sorted(p["id"] for p in r.json()["result"]) == [1, 3]
            assert not searching.done()  # the decision is still held
        finally:
            release.set()
        answer = searching.result(timeout=30)
    assert not stalled.is_set()
    assert answer.status_code == 200
    got = [(p["id"], p["score"]) for p in answer.json()["result"]["points"]]

    reference = QdrantClient(":memory:")
    reference.create_collection(
        "ref", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    reference.upsert(
        "ref", [models.PointStruct(id=p.id, vector=p.vector, payload={}) for p in built.points]
    )
    expected = [(p.id, p.score) for p in reference.query_points("ref", query, limit=5).points]
    reference.close()
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-4)
