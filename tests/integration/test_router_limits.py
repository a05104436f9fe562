"""Hostile requests over real HTTP, and one hung cluster: the router refuses, bounds and keeps serving.

Each attack asserts its status code, that it ended within a bounded time, that
the process's memory grew by a bounded amount, and that the router still
answers an ordinary query afterwards. The bulkhead test hangs one cluster (its
calls block on an event) and checks that requests which do not need it are
answered while every call to it is still blocked, and that only its circuit
can open.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from librarian.storage.fleet import Fleet
from librarian.testing.router import resident_bytes

from .router_support import (
    DIM,
    FlakyPort,
    Library,
    RouterThread,
    build_embedded_library,
    make_state,
)

MiB = 1024 * 1024
LIMITS = {
    "max_body_bytes": 32 * MiB,
    "max_batch_queries": 100,
    "max_ids_per_call": 1000,
    "max_points_per_upsert": 100,
    "max_limit_plus_offset": 1000,
    "max_json_depth": 64,
    "cache_max_bytes": 1 * MiB,
    "header_read_timeout": "1s",
    "body_read_timeout": "1s",
}
TIME_BOUND_S = 20.0  # far above what a refusal takes; far below the unbounded behaviour
RSS_BOUND = 150 * MiB


@pytest.fixture
def library(tmp_path: Path) -> Iterator[tuple[Library, FlakyPort]]:
    built = build_embedded_library(tmp_path)
    west = FlakyPort(built.fleet.get("west"))
    built.fleet = Fleet.of_ports({"east": built.fleet.get("east"), "west": west})  # type: ignore[dict-item]
    yield built, west
    west.release()
    west.wait_idle(30)
    built.fleet.close()


@pytest.fixture
def router(library: tuple[Library, FlakyPort]) -> Iterator[RouterThread]:
    built, _ = library
    settings = {"limits": LIMITS, "caching": {"enable_result_cache": True}}
    with RouterThread(make_state(built, settings=settings)) as served:
        yield served


def _vector(seed: int = 0) -> list[float]:
    return [((seed + i) % 7 + 1) / 10 for i in range(DIM)]


def _query(seed: int = 0) -> dict[str, Any]:
    return {"query": _vector(seed), "limit": 3}


def _error(response: httpx.Response) -> str:
    return str(response.json()["status"]["error"])


def _still_serving(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/collections/library/points/query", json=_query(99))
        assert r.status_code == 200, r.text
        assert r.json()["result"]["points"]


def _attack(router: RouterThread, send: Any) -> httpx.Response:
    """Run ``send(http)``; assert it took bounded time and memory and the router still serves."""
    before = resident_bytes()
    started = time.perf_counter()
    with httpx.Client(base_url=router.url, timeout=60) as http:
        response: httpx.Response = send(http)
    assert time.perf_counter() - started < TIME_BOUND_S
    assert resident_bytes() - before < RSS_BOUND
    _still_serving(router.url)
    return response


def _post(path: str, content: bytes | str) -> Any:
    return lambda http: http.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )


def test_a_body_over_the_cap_is_a_413(router: RouterThread) -> None:
    padded = " " * (50 * MiB) + json.dumps(_query()) + " " * 1024
    r = _attack(router, _post("/collections/library/points/query", padded))
    assert r.status_code == 413
    assert "over the limit of 33554432 bytes (limits.max_body_bytes)" in _error(r)


def test_ten_million_floats_are_refused_without_building_them(router: RouterThread) -> None:
    huge = '{"limit": 3, "query": [' + ",".join(["0.5"] * 10_000_000) + "]}"
    r = _attack(router, _post("/collections/library/points/query", huge))
    assert r.status_code == 413


def test_a_vector_of_the_wrong_dimension_is_a_400_before_any_model(router: RouterThread) -> None:
    wide = {"limit": 3, "query": [0.5] * 1_000_000}
    r = _attack(router, _post("/collections/library/points/query", json.dumps(wide)))
    assert r.status_code == 400
    assert "expected dim: 16, got 1000000" in _error(r)
    points = {"points": [{"id": 1, "vector": [0.1] * (DIM + 1)}]}
    r = _attack(router, lambda http: http.put("/collections/library/points", json=points))
    assert r.status_code == 400
    assert "expected dim: 16" in _error(r)


@pytest.mark.parametrize(
    ("path", "method", "body", "words"),
    [
        ("/points/query/batch", "post", {"searches": [_query()] * 5000}, "5000 searches"),
        (
            "/points/search/batch",
            "post",
            {"searches": [{"vector": _vector(), "limit": 1}] * 101},
            "101 searches",
        ),
        ("/points", "post", {"ids": list(range(1001))}, "1001 ids"),
        ("/points/delete", "post", {"points": list(range(1001))}, "1001 ids"),
        (
            "/points",
            "put",
            {"points": [{"id": i, "vector": _vector()} for i in range(101)]},
            "101 points",
        ),
        (
            "/points/query",
            "post",
            {"query": _vector(), "limit": 10, "offset": 995},
            "limit + offset",
        ),
        ("/points/scroll", "post", {"limit": 5000}, "limit + offset"),
    ],
)
def test_caps_on_one_call(
    router: RouterThread, path: str, method: str, body: Any, words: str
) -> None:
    r = _attack(router, lambda http: http.request(method, f"/collections/library{path}", json=body))
    assert r.status_code == 400
    assert words in _error(r)


@pytest.mark.parametrize("depth", [65, 1000, 200_000])
def test_deep_nesting_is_a_400(router: RouterThread, depth: int) -> None:
    condition = {"key": "group", "match": {"value": "g1"}}
    nested: str = json.dumps(condition)
    for _ in range(min(depth, 1000)):
        nested = '{"must": [' + nested + "]}"
    if depth > 1000:  # deeper than any parser recursion: built as raw text
        nested = '{"must": [' * depth + json.dumps(condition) + "]}" * depth
    body = '{"query": ' + json.dumps(_vector()) + ', "limit": 3, "filter": ' + nested + "}"
    r = _attack(router, _post("/collections/library/points/query", body))
    assert r.status_code == 400
    assert "nested deeper than 64" in _error(r)


def test_padded_copies_of_one_query_share_one_bounded_cache_entry(router: RouterThread) -> None:
    cache = router.state.cache
    cache.clear()

    def send(http: httpx.Client) -> httpx.Response:
        response = http.post("/collections/library/points/query", json=_query())
        for n in range(30):
            padded = json.dumps(_query(), indent=n) + " " * MiB
            response = http.post(
                "/collections/library/points/query",
                content=padded,
                headers={"Content-Type": "application/json"},
            )
            assert response.headers.get("X-Librarian-Cache") == "hit"
        assert len(cache) == 1
        return response

    assert _attack(router, send).status_code == 200
    assert cache.size_bytes <= 1 * MiB


def test_the_cache_keeps_within_its_byte_budget(router: RouterThread) -> None:
    cache = router.state.cache
    cache.clear()
    with httpx.Client(base_url=router.url, timeout=30) as http:
        for seed in range(200):
            body = {"query": _vector(seed), "limit": 100, "with_payload": True, "with_vector": True}
            assert http.post("/collections/library/points/query", json=body).status_code == 200
    assert 0 < cache.size_bytes <= 1 * MiB
    assert len(cache) < 200  # results of ~20 KB each: the oldest were evicted


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes) -> bool:
    """Send ``trickle`` a byte at a time until the server closes the socket (True) or time is up."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    for byte in trickle * 1000:
        if time.monotonic() > deadline:
            return False
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_slow_headers_are_cut_off(router: RouterThread) -> None:
    host, port = router.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /collections/library/points/query HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert _closed_within(sock, TIME_BOUND_S, b"X-Slow: y\r\n")
        assert time.monotonic() - started < TIME_BOUND_S
    _still_serving(router.url)


def test_a_slow_body_is_a_408(router: RouterThread) -> None:
    host, port = router.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /collections/library/points/query HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"query"'
        )
        sock.settimeout(TIME_BOUND_S)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    _still_serving(router.url)


def test_a_batch_has_one_deadline(library: tuple[Library, FlakyPort]) -> None:
    built, west = library
    state = make_state(
        built,
        settings={
            "limits": {**LIMITS, "batch_concurrency": 2},
            "caching": {"enable_result_cache": False},
        },
    )
    with RouterThread(state) as router, httpx.Client(base_url=router.url, timeout=60) as http:
        west.mode, west.delay_s = "slow", 1.0
        started = time.perf_counter()
        batch = {"searches": [_query(seed) for seed in range(100)]}
        r = http.post("/collections/library/points/query/batch?timeout=0.5", json=batch)
        elapsed = time.perf_counter() - started
        # 100 queries, 2 at a time, each waiting up to 1 s on west: 50 s without one deadline
        assert elapsed < 20.0
        assert r.status_code in (200, 504)
        if r.status_code == 200:
            assert r.headers["X-Librarian-Partial"] == "west/library-d2"
        west.mode = "ok"
        _still_serving(router.url)


def test_a_hung_cluster_delays_only_the_requests_that_need_it(
    library: tuple[Library, FlakyPort],
) -> None:
    built, west = library
    workers = 2
    state = make_state(
        built,
        settings={
            "limits": {**LIMITS, "upstream_workers_per_cluster": workers},
            "caching": {"enable_result_cache": False},
        },
        passthrough=frozenset({"reference"}),
    )
    with RouterThread(state) as router, ThreadPoolExecutor(16) as clients:
        west.mode = "hung"
        stuck = [
            clients.submit(
                httpx.post,
                f"{router.url}/collections/library/points/query",
                json=_query(s),
                timeout=60,
            )
            for s in range(12)  # more than any default thread pool here: they would starve it
        ]
        assert west.wait_blocked(workers, 30)
        with httpx.Client(base_url=router.url, timeout=20) as http:
            for seed in range(20):
                r = http.post("/collections/reference/points/query", json=_query(seed))
                assert r.status_code == 200, r.text
                assert len(r.json()["result"]["points"]) == 3
                r = http.post("/collections/reference/points/count", json={})
                assert r.json()["result"]["count"] == 900
        # every call to the hung cluster still blocked, none more than its own pool holds
        assert west.blocked == workers
        assert not any(future.done() for future in stuck)
        assert state.breaker.state("east") == "closed"
        west.release()
        for future in stuck:
            assert future.result(60).status_code == 200
        assert state.breaker.state("east") == "closed"


def _breaker_state(router: RouterThread, cluster: str) -> str:
    return str(router.state.upstream.breaker.state(cluster))


def test_a_request_out_of_its_own_time_is_not_a_failure_of_the_cluster(
    library: tuple[Library, FlakyPort],
) -> None:
    """A call cut short by the request's deadline (``?timeout=``) says nothing about the
    cluster: a busy client must not open the breaker of a cluster that answers within its
    own timeout. The cluster's own timeout, exceeded, still counts."""
    built, west = library
    breaker = {"failure_threshold": 2, "reset_timeout": "1h"}
    settings: dict[str, Any] = {
        "limits": LIMITS,
        "caching": {"enable_result_cache": False},
        "circuit_breaker": breaker,
    }
    state = make_state(built, settings=settings)
    with RouterThread(state) as router, httpx.Client(base_url=router.url, timeout=60) as http:
        west.mode, west.delay_s = "slow", 0.4
        for seed in range(4):
            r = http.post("/collections/library/points/query?timeout=0.1", json=_query(seed))
            assert r.status_code in (200, 504)
        west.wait_idle(30)
        west.mode = "ok"
        assert _breaker_state(router, "west") == "closed"
        _still_serving(router.url)
    state = make_state(built, settings={**settings, "timeout": 0.1})
    with RouterThread(state) as router, httpx.Client(base_url=router.url, timeout=60) as http:
        west.mode = "slow"
        for seed in range(3):
            http.post("/collections/library/points/query", json=_query(seed))
        west.wait_idle(30)
        assert _breaker_state(router, "west") == "open"
