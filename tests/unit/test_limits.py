"""Request limits on parsed JSON, the cache's byte budget, per-cluster pools and given-up calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from librarian.router.library import DomainRoute
from librarian.router.limits import Deadline, bounded_gather, check_json, request_deadline
from librarian.router.load import LoadMeter
from librarian.router.metrics import RouterMetrics
from librarian.router.qdrant_api import ApiError
from librarian.router.resilience import CircuitBreaker, ResultCache, json_size
from librarian.router.upstream import Upstream, UpstreamTimeout
from librarian.settings import LimitsSettings
from librarian.storage.fleet import Fleet

LIMITS = LimitsSettings(
    max_json_depth=8,
    max_batch_queries=3,
    max_ids_per_call=5,
    max_points_per_upsert=2,
    max_limit_plus_offset=100,
)


def _refused(data: Any, vector_size: int | None = None) -> str:
    with pytest.raises(ApiError) as caught:
        check_json(data, LIMITS, vector_size)
    assert caught.value.status == 400
    return caught.value.message


def test_depth_is_checked_without_recursion() -> None:
    nested: Any = 1
    for _ in range(100_000):
        nested = {"must": [nested]}
    assert "nested deeper than 8" in _refused(nested)
    shallow: Any = {"a": {"b": [[1]]}}
    check_json(shallow, LIMITS)


def test_list_caps() -> None:
    assert "4 searches in one batch; at most 3" in _refused({"searches": [{}] * 4})
    assert "4 operations" in _refused({"operations": [{}] * 4})
    assert "6 ids in one call; at most 5" in _refused({"ids": list(range(6))})
    assert "6 ids" in _refused({"filter": {"points": list(range(6))}})  # anywhere in the body
    assert "3 points in one call; at most 2" in _refused({"points": [{"id": 1}] * 3})
    check_json({"searches": [{}] * 3, "ids": list(range(5)), "points": [{"id": 1}] * 2}, LIMITS)


def test_limit_plus_offset() -> None:
    assert "limit + offset is 101" in _refused({"limit": 91, "offset": 10})
    assert "limit + offset is 101" in _refused({"searches": [{"limit": 101}]})
    check_json({"limit": 90, "offset": 10}, LIMITS)
    check_json({"limit": True, "offset": "x"}, LIMITS)  # not numbers: left to the models
    # a scroll's offset is the id of the point to start from, whatever its value
    check_json({"limit": 90, "offset": 100_000}, LIMITS, scroll=True)
    assert "limit + offset is 108" in _refused({"limit": 101, "offset": 7})


def test_vector_dimension_only_on_the_library() -> None:
    assert "expected dim: 4, got 5 (in query)" in _refused({"query": [0.1] * 5}, 4)
    assert "got 3 (in nearest)" in _refused({"query": {"nearest": [0.1] * 3}}, 4)
    assert "(in vector)" in _refused({"points": [{"id": 1, "vector": [1, 2]}]}, 4)
    assert "(in vectors)" in _refused({"batch": {"ids": [1], "vectors": [[1.0] * 9]}}, 4)
    check_json({"query": [0.1] * 4, "points": [{"id": 1, "vector": [0.0] * 4}]}, LIMITS, 4)
    check_json({"query": 17}, LIMITS, 4)  # a point id, not a vector
    check_json({"query": [0.1] * 5}, LIMITS)  # a passthrough collection: its own dimension


def test_named_vectors_keep_their_own_dimension() -> None:
    check_json({"query": {"nearest": [0.1] * 3}, "using": "image"}, LIMITS, 4)
    check_json(
        {"prefetch": [{"query": [0.1] * 7, "using": "small"}], "query": [0.1] * 4}, LIMITS, 4
    )
    check_json({"vector": {"name": "image", "vector": [0.1] * 3}, "limit": 2}, LIMITS, 4)
    assert "got 3 (in query)" in _refused(
        {"prefetch": [{"query": [0.1] * 7, "using": "small"}], "query": [0.1] * 3}, 4
    )  # the unnamed vector next to a named one is still checked


def test_cache_byte_budget_bounds_bytes_and_entries() -> None:
    result = {"points": [{"id": i, "payload": "x" * 100} for i in range(10)]}
    size = json_size(result)
    cache = ResultCache(ttl_s=60, max_entries=1000, max_bytes=size * 5)
    for key in range(20):
        cache.put(key, result)
    assert len(cache) == 5
    assert cache.size_bytes <= size * 5
    cache.put("huge", {"payload": "x" * size * 6})  # larger than the whole budget
    assert cache.get("huge") is None
    small = ResultCache(ttl_s=60, max_entries=3, max_bytes=10 * size)
    for key in range(10):
        small.put(key, {"tiny": 1})
    assert len(small) == 3  # the entry count still holds
    assert not ResultCache(ttl_s=60, max_entries=3, max_bytes=0).enabled


def test_bounded_gather_keeps_order_and_concurrency() -> None:
    running = 0
    peak = 0

    async def work(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        return n * n

    assert asyncio.run(bounded_gather(2, range(10), work)) == [n * n for n in range(10)]
    assert peak == 2


def test_request_deadline_is_a_504_and_deadline_counts_down() -> None:
    now = [0.0]
    deadline = Deadline(2.0, clock=lambda: now[0])
    now[0] = 1.5
    assert deadline.remaining() == pytest.approx(0.5)
    now[0] = 9.0
    assert deadline.remaining() == 0.001

    async def late() -> None:
        async with request_deadline(0.01):
            await asyncio.Event().wait()

    with pytest.raises(UpstreamTimeout, match="deadline of 0.01s"):
        asyncio.run(late())


class _Port:
    cluster = "c"

    def close(self) -> None:
        pass


def _upstream(breaker: CircuitBreaker, workers: int) -> Upstream:
    return Upstream(
        lambda: Fleet.of_ports({"c": _Port(), "d": _Port()}),  # type: ignore[dict-item]
        breaker=breaker,
        metrics=RouterMetrics(),
        load=LoadMeter(),
        workers_per_cluster=workers,
    )


def test_a_given_up_call_ends_a_half_open_trial_and_frees_its_queue_place() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=10, clock=lambda: now[0])
    upstream = _upstream(breaker, workers=1)
    route = DomainRoute("c", "c", "c", "coll", (), 0)
    other = DomainRoute("d", "d", "d", "coll", (), 0)
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def hang(_: Any) -> str:
        started.set()
        release.wait(30)
        return "late"

    def queued(_: Any) -> str:
        ran.append("queued")
        return "queued"

    async def scenario() -> None:
        breaker.failure("c")
        now[0] = 11.0  # half-open: the next call is the trial
        trial = asyncio.ensure_future(upstream.call(route, hang, 30))
        await asyncio.to_thread(started.wait, 30)
        waiting = asyncio.ensure_future(upstream.call(route, queued, 30))
        # c's only thread is taken: another cluster's calls do not wait for it
        assert await upstream.call(other, lambda _: "d answers", 30) == "d answers"
        assert breaker.allow("c") is False  # the trial is in flight
        trial.cancel()
        waiting.cancel()
        await asyncio.gather(trial, waiting, return_exceptions=True)
        assert breaker.allow("c") is True  # given up: not stuck half-open

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        upstream.close()
    assert ran == []  # the call still waiting for a thread was dropped
    assert breaker.state("d") == "closed"


def test_every_limit_is_in_the_shipped_configuration_and_overridable() -> None:
    from pathlib import Path

    import yaml

    from librarian.settings import ConfigError, load_settings

    config = Path(__file__).resolve().parents[2] / "config" / "multi-cluster-managers.yaml"
    shipped = yaml.safe_load(config.read_text())["multi_cluster_managers"]
    assert set(shipped["domain_library_orchestrator"]["limits"]) == set(LimitsSettings.model_fields)
    env = {"LIBRARIAN__DOMAIN_LIBRARY_ORCHESTRATOR__LIMITS__MAX_BODY_BYTES": "4096"}
    settings = load_settings(
        config, environ=env, overrides=["domain_library_orchestrator.limits.body_read_timeout=2s"]
    )
    limits = settings.domain_library_orchestrator.limits
    assert (limits.max_body_bytes, limits.body_read_timeout) == (4096, 2.0)
    with pytest.raises(ConfigError, match="max_batch_queries"):
        load_settings(
            environ={}, overrides=["domain_library_orchestrator.limits.max_batch_queries=0"]
        )


def test_an_upstream_call_ends_by_the_request_deadline_whatever_its_own_timeout() -> None:
    from librarian.router.upstream import REQUEST_DEADLINE

    upstream = _upstream(CircuitBreaker(), workers=1)
    route = DomainRoute("c", "c", "c", "coll", (), 0)
    release = threading.Event()

    async def late_call() -> None:
        now = [0.0]
        deadline = Deadline(1.0, clock=lambda: now[0])
        now[0] = 0.95  # 50 ms left of the request's second
        REQUEST_DEADLINE.set(deadline)
        await upstream.call(route, lambda _: release.wait(30), 30)

    try:
        with pytest.raises(UpstreamTimeout, match="within 0.05s"):
            asyncio.run(late_call())
    finally:
        release.set()
        upstream.close()
    assert REQUEST_DEADLINE.get() is None  # set only inside that request's context
