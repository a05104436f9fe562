"""Routing core: the public build_router contract, strategies, calibration and feedback."""

from __future__ import annotations

import numpy as np
import pytest

from librarian.core.discovery import discover
from librarian.core.routing import STRATEGIES, LatencyTracker, RoutingError, build_router


def _library(n: int = 3000, dim: int = 24, centres: int = 12, seed: int = 3):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim))
    which = rng.integers(0, centres, n)
    vectors = means[which] * 0.6 + rng.normal(size=(n, dim))  # overlapping clouds
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _quality(router, vectors, labels, queries, sizes):
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    routes = [router.route(q) for q in queries]
    recall = np.mean([np.isin(labels[t], r).mean() for t, r in zip(truth, routes, strict=True)])
    touched = np.mean([sizes[r].sum() / len(vectors) for r in routes])
    return float(recall), float(touched)


@pytest.fixture(scope="module")
def library():
    data = _library()
    queries, vectors = data[:200], data[200:]
    result = discover(vectors, seed=0, min_partition_size=100)
    return vectors, queries, result


def test_route_contract_returns_unit_indices_best_first(library) -> None:
    vectors, queries, result = library
    router = build_router(vectors, result.partition_labels, result.partitions)
    route = router.route(queries[0])
    assert route
    assert all(isinstance(u, int) for u in route)
    assert len(set(route)) == len(route)
    assert max(route) < len(result.partitions)
    scores = router.scores(queries[0])
    assert scores.shape == (len(result.partitions),)
    assert abs(float(scores.sum()) - 1) < 1e-4
    assert list(np.argsort(-scores[route], kind="stable")) == list(range(len(route)))


def test_hybrid_meets_its_calibrated_recall_and_beats_centroids_per_point_touched(library) -> None:
    vectors, queries, result = library
    labels = result.partition_labels
    sizes = np.bincount(labels, minlength=len(result.partitions))
    hybrid = build_router(vectors, labels, result.partitions, target_recall=0.95)
    recall, touched = _quality(hybrid, vectors, labels, queries, sizes)
    assert recall >= 0.92, (recall, touched)
    assert touched < 0.8
    assert abs(hybrid.calibration["recall"] - recall) < 0.05  # calibration predicts held-out recall

    # Nearest centroids probing the same share of points find fewer neighbours.
    centroids = np.stack([p.centroid for p in result.partitions])
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    centroid_recall = []
    for q, t in zip(queries, truth, strict=True):
        order = np.argsort(-(centroids @ q))
        cumulative = np.cumsum(sizes[order]) / len(vectors)
        chosen = order[: int(np.searchsorted(cumulative, touched)) + 1]
        centroid_recall.append(np.isin(labels[t], chosen).mean())
    assert recall > float(np.mean(centroid_recall))


def test_higher_target_recall_probes_more(library) -> None:
    vectors, queries, result = library
    labels = result.partition_labels
    sizes = np.bincount(labels, minlength=len(result.partitions))
    low = build_router(vectors, labels, result.partitions, target_recall=0.8)
    high = build_router(vectors, labels, result.partitions, target_recall=0.99)
    low_recall, low_touched = _quality(low, vectors, labels, queries, sizes)
    high_recall, high_touched = _quality(high, vectors, labels, queries, sizes)
    assert high_recall > low_recall
    assert high_touched > low_touched
    assert low.coverage < high.coverage


def test_accuracy_first_probes_every_unit(library) -> None:
    vectors, queries, result = library
    router = build_router(vectors, result.labels, result.domains, strategy="accuracy_first")
    assert sorted(router.route(queries[5])) == list(range(len(result.domains)))


def test_every_strategy_routes(library) -> None:
    vectors, queries, result = library
    for strategy in STRATEGIES:
        router = build_router(vectors, result.labels, result.domains, strategy=strategy)
        assert router.route(queries[1]), strategy


def test_units_without_centroids_use_their_members_mean() -> None:
    data = _library(600, 8, 3)
    labels = (data[:, 0] > 0).astype(int)
    router = build_router(data, labels, ["left", "right"])
    assert router.route(data[labels == 1][0])[0] == 1


def test_load_balancing_skips_a_hot_unit_that_adds_little(library) -> None:
    vectors, queries, result = library
    router = build_router(
        vectors, result.labels, result.domains, strategy="load_balancing", slack=0.05
    )
    query = queries[2]
    decision = router.decide(query, strategy="hybrid", coverage=1.0)
    tail = decision.units[-1]  # the unit with the smallest share
    loads = np.ones(router.unit_count)
    loads[tail] = 50.0
    router.record_load(loads)
    balanced = router.decide(query, coverage=1.0)
    assert tail not in balanced.units
    assert tail in balanced.skipped
    assert balanced.units[0] == decision.units[0]  # the best unit is never skipped
    with pytest.raises(RoutingError, match="expected"):
        router.record_load([1.0])


def test_latency_optimized_skips_a_slow_marginal_unit_and_hedges(library) -> None:
    vectors, queries, result = library
    router = build_router(
        vectors, result.labels, result.domains, strategy="latency_optimized", slack=0.05
    )
    decision = router.decide(queries[3], strategy="hybrid", coverage=1.0)
    slow = decision.units[-1]
    for unit in range(router.unit_count):
        router.record_latency(unit, 0.2 if unit == slow else 0.001)
    assert slow not in router.decide(queries[3], coverage=1.0).units
    assert router.hedge_after(slow) >= 0.2
    assert LatencyTracker(2).hedge_after(0) is None


def test_latency_tracker_follows_a_shift() -> None:
    tracker = LatencyTracker(1, alpha=0.5)
    for _ in range(20):
        tracker.observe(0, 0.01)
    for _ in range(20):
        tracker.observe(0, 0.05)
    assert tracker.mean[0] == pytest.approx(0.05, rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "random"}, "strategy 'random' is unknown; accepted: auto, hybrid"),
        ({"target_recall": 1.5}, "target_recall must be in"),
        ({"nprobe": 3}, "unknown routing option"),
        ({"temperature": 0}, "temperature must be > 0"),
    ],
)
def test_bad_options_are_named(kwargs, message) -> None:
    data = _library(300, 8, 3)
    with pytest.raises(RoutingError, match=message):
        build_router(data, np.zeros(len(data), dtype=int), ["only"], **kwargs)


def test_bad_inputs_are_named() -> None:
    data = _library(300, 8, 3)
    with pytest.raises(RoutingError, match="one entry per vector"):
        build_router(data, [0, 1], ["a", "b"])
    with pytest.raises(RoutingError, match="indices into units"):
        build_router(data, np.full(len(data), 5), ["a", "b"])
    with pytest.raises(RoutingError, match="no units"):
        build_router(data, np.zeros(len(data), dtype=int), [])
    router = build_router(data, np.zeros(len(data), dtype=int), ["a"])
    with pytest.raises(RoutingError, match="8 dimensions, got 3"):
        router.route([1.0, 0.0, 0.0])
