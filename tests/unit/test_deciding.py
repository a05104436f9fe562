"""Routing decisions on their own threads, and the bound on the router's BLAS threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from librarian.core.discovery import discover
from librarian.core.routing import LibraryRouter, RouteDecision, RoutingError, build_router
from librarian.router.deciding import BlasThreadBound, Decisions, blas_threads


@pytest.fixture(scope="module")
def router() -> LibraryRouter:
    rng = np.random.default_rng(5)
    means = rng.normal(size=(6, 12))
    vectors = means[rng.integers(0, 6, 1200)] + rng.normal(size=(1200, 12)) * 0.5
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    result = discover(vectors, seed=0, min_partition_size=100)
    return build_router(vectors, result.partition_labels, result.partitions)


def test_the_bound_limits_blas_while_held_and_release_restores_the_count() -> None:
    assert blas_threads() is not None  # numpy's BLAS is loaded
    with threadpool_limits(limits=2, user_api="blas"):
        assert blas_threads() == 2
        bound = BlasThreadBound(1)
        assert blas_threads() == 1
        bound.release()
        bound.release()  # a second release changes nothing
        assert blas_threads() == 2


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        BlasThreadBound(0)
    with pytest.raises(ValueError, match="at least one worker"):
        Decisions(0)


async def test_a_decision_runs_on_a_routing_thread_under_the_bound_and_equals_the_routers(
    router: LibraryRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int | None]] = []
    decide = router.decide

    def spied(query: Any, **options: Any) -> RouteDecision:
        seen.append((threading.current_thread().name, blas_threads()))
        return decide(query, **options)

    monkeypatch.setattr(router, "decide", spied)
    query = [float(x) for x in np.random.default_rng(1).normal(size=12)]
    decisions = Decisions(2)
    with threadpool_limits(limits=2, user_api="blas"):
        bound = BlasThreadBound(1)
        try:
            for strategy in ("hybrid", "domain_affinity", None):
                got = await decisions.decide(router, query, strategy)
                expected = decide(query, strategy=strategy)
                assert got.units == expected.units
                assert got.estimated_recall == pytest.approx(expected.estimated_recall)
                np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-6)
        finally:
            bound.release()
            decisions.close()
    assert len(seen) == 3
    assert all(name.startswith("routing") for name, _ in seen), seen
    assert all(threads == 1 for _, threads in seen), seen


class _HeldRouter:
    """A router whose decision waits until the test lets it go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def decide(self, query: Any, *, strategy: str | None = None) -> RouteDecision:
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise AssertionError("the decision was never released: the event loop was stalled")
        return RouteDecision([0], 1.0, np.ones(1))


async def test_the_event_loop_runs_other_work_while_a_decision_is_held() -> None:
    held = _HeldRouter()
    decisions = Decisions(1)
    try:
        deciding = asyncio.ensure_future(
            decisions.decide(held, [0.0], None)  # type: ignore[arg-type]
        )
        assert await asyncio.to_thread(held.entered.wait, 30)
        other = await asyncio.wait_for(asyncio.ensure_future(_other_work()), timeout=10)
        assert other == "answered"
        assert not deciding.done()  # still held: the other work did not wait for it
        held.release.set()
        decision = await asyncio.wait_for(deciding, timeout=30)
        assert decision.units == [0]
    finally:
        held.release.set()
        decisions.close()


async def _other_work() -> str:
    await asyncio.sleep(0)
    return "answered"


async def _held_then(
    decisions: Decisions, router: LibraryRouter, vectors: list[list[float]]
) -> list[asyncio.Future[RouteDecision]]:
    """Hold the only routing thread, ask for ``vectors``' decisions meanwhile, let it go."""
    held = _HeldRouter()
    holding = asyncio.ensure_future(decisions.decide(held, [0.0], None))  # type: ignore[arg-type]
    assert await asyncio.to_thread(held.entered.wait, 30)
    waiting = [asyncio.ensure_future(decisions.decide(router, v, None)) for v in vectors]
    await asyncio.sleep(0)  # let each ask reach the queue
    held.release.set()
    await asyncio.wait_for(holding, timeout=30)
    await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), timeout=30)
    return waiting


async def test_decisions_asked_while_the_thread_is_busy_are_scored_as_one_batch(
    router: LibraryRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    decide_many = router.decide_many

    def spied(queries: Any, **options: Any) -> list[RouteDecision]:
        batches.append(len(queries))
        return decide_many(queries, **options)

    monkeypatch.setattr(router, "decide_many", spied)
    rng = np.random.default_rng(4)
    vectors = [[float(x) for x in rng.normal(size=12)] for _ in range(10)]
    decisions = Decisions(1)
    try:
        answered = await _held_then(decisions, router, vectors)
    finally:
        decisions.close()
    assert batches == [10]
    for vector, future in zip(vectors, answered, strict=True):
        expected = router.decide(vector)
        got = future.result()
        assert got.units == expected.units
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-7)


async def test_a_bad_vector_in_a_batch_fails_alone(router: LibraryRouter) -> None:
    rng = np.random.default_rng(6)
    vectors = [[float(x) for x in rng.normal(size=12)] for _ in range(4)]
    vectors.insert(2, [1.0, 0.0, 0.0])
    decisions = Decisions(1, max_batch=8)
    try:
        answered = await _held_then(decisions, router, vectors)
    finally:
        decisions.close()
    with pytest.raises(RoutingError, match="12 dimensions, got 3"):
        answered[2].result()
    for index in (0, 1, 3, 4):
        assert answered[index].result().units == router.decide(vectors[index]).units


def test_a_batch_holds_at_least_one_decision() -> None:
    with pytest.raises(ValueError, match="at least one decision"):
        Decisions(1, max_batch=0)
