"""Routing at build time: which strategy pays, and the fast centroid scoring for many units.

The references below are written the direct way (a full product with every
centroid, a unit-by-unit coverage loop, a fresh SVD); the router's fast paths
must choose the same units, and the strategy chosen at build must follow the
data: centroids alone where the neighbours hold no structure the centroids
miss, neighbour profiles where they do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from librarian.core.routing import LibraryRouter, build_router

from .conftest import make_mixture, unit_rows


def _paired(seed: int) -> dict[str, Any]:
    """Overlapping clouds where each unit is the union of two unrelated ones: a unit's centroid
    lies between its halves, so centroids misjudge it, while neighbour profiles (which learn
    where a point's neighbours live) do not."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(12, 24))
    which = rng.integers(0, 12, 4_200)
    vectors = unit_rows(means[which] * 0.6 + rng.normal(size=(4_200, 24)))
    return {"data": vectors[200:], "queries": vectors[:200], "labels": (which % 6)[200:]}


def _full_scan_scores(router: LibraryRouter, queries: np.ndarray) -> np.ndarray:
    logits = (unit_rows(queries) @ router.centroids.T) / router.options.temperature
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def _chosen(router: LibraryRouter, scores: np.ndarray, coverage: float) -> list[int]:
    """The coverage rule, unit by unit: best first (ties by index) until the mass is reached."""
    chosen: list[int] = []
    mass = 0.0
    for unit in np.argsort(-scores, kind="stable"):
        if mass >= coverage and len(chosen) >= router.options.min_units:
            break
        chosen.append(int(unit))
        mass += float(scores[unit])
    return chosen


def _index_scores(router: LibraryRouter, queries: np.ndarray) -> np.ndarray:
    """The fast formula written out: every unit scored in the leading directions of a fresh
    SVD of the centroids (plus the router's fitted corrections), the best re-scored exactly."""
    index = router.unit_index
    assert index is not None
    temperature = router.options.temperature
    _, _, directions = np.linalg.svd(router.centroids.astype(np.float64), full_matrices=False)
    basis = directions[: index.dims].T
    q = unit_rows(queries).astype(np.float64)
    logits = (q @ basis) @ (router.centroids @ basis).T / temperature + index.correction
    exact = q @ router.centroids.T / temperature
    for row in range(len(q)):
        best = np.argsort(-logits[row])[: router.unit_index_rerank]
        logits[row, best] = exact[row, best]
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- the strategy chosen


def test_centroids_are_chosen_where_the_profiles_add_nothing() -> None:
    data = make_mixture(6_200, 32, 40, noise=0.5, seed=3, queries=200)
    router = build_router(data["data"], data["labels"], [None] * 40)
    described = router.describe()
    assert router.options.strategy == "domain_affinity"
    assert len(router.sample_vectors) == 0  # the sample is not kept
    assert described["strategy_chosen_by"] == "build"
    # not even an oracle could touch 10% less than the centroids: hybrid was not built
    hybrid = described["strategy_touched_hybrid_at_least"]
    centroid = described["strategy_touched_centroid"]
    assert hybrid > centroid * (1 - router.options.hybrid_margin)


def test_hybrid_is_chosen_where_the_profiles_pay() -> None:
    data = _paired(seed=3)
    router = build_router(data["data"], data["labels"], [None] * 6)
    described = router.describe()
    assert router.options.strategy == "hybrid"
    assert len(router.sample_vectors) > 0
    hybrid, centroid = described["strategy_touched_hybrid"], described["strategy_touched_centroid"]
    assert hybrid <= centroid * (1 - router.options.hybrid_margin)
    assert router.calibration["recall"] >= router.options.target_recall


def test_a_configured_strategy_is_kept() -> None:
    data = make_mixture(6_200, 32, 40, noise=0.5, seed=3, queries=200)
    router = build_router(data["data"], data["labels"], [None] * 40, strategy="hybrid")
    assert router.options.strategy == "hybrid"
    assert len(router.sample_vectors) > 0
    assert router.describe()["strategy_chosen_by"] == "configuration"


def test_asking_for_auto_per_query_means_the_builds_choice() -> None:
    data = make_mixture(6_200, 32, 40, noise=0.5, seed=3, queries=200)
    router = build_router(data["data"], data["labels"], [None] * 40)
    query = data["queries"][0]
    assert router.decide(query, strategy="auto").units == router.decide(query).units


# ---------------------------------------------------------------- the unit index


@pytest.fixture(scope="module")
def many_units() -> dict[str, Any]:
    """600 units of 128-d vectors, the index tried whatever the size (``unit_index_work=0``)."""
    data = make_mixture(12_200, 128, 600, noise=1.0, seed=5, queries=200)
    router = build_router(
        data["data"],
        data["labels"],
        [None] * 600,
        strategy="domain_affinity",
        unit_index_work=0,
    )
    return {**data, "router": router}


def _agreement(router: LibraryRouter, rerank: int, queries: np.ndarray) -> float:
    """Share of ``queries`` whose units, the index re-scoring ``rerank`` units, equal the
    unit-by-unit rule's on the full scan's scores."""
    kept = router.unit_index_rerank
    try:
        router.unit_index_rerank = rerank
        scan = _full_scan_scores(router, queries)
        expected = [_chosen(router, row, router.coverage) for row in scan]
        chosen = [d.units for d in router.decide_many(queries)]
    finally:
        router.unit_index_rerank = kept
    return float(np.mean([a == b for a, b in zip(chosen, expected, strict=True)]))


def test_library_points_are_judged_without_their_own_pull(many_units: dict[str, Any]) -> None:
    """Units of 20 points: a library point pulls its unit's centroid towards itself, so on
    library points the index seems to choose as the full scan (99.6-100% of them from 16
    re-scored units), while queries from outside the library disagree on 3.5% or more at
    every step. Judged with each calibration point left out of its own centroid, the build
    sees what outside queries see, and keeps the full scan."""
    router: LibraryRouter = many_units["router"]
    assert router.unit_index is not None  # tried
    assert router.unit_index_rerank == 0
    assert router.describe()["unit_index"] == "full scan"
    library_points = many_units["data"][:500]
    steps = [8, 16, 32, 64, 128]
    on_library = [_agreement(router, rerank, library_points) for rerank in steps]
    outside = [_agreement(router, rerank, many_units["queries"]) for rerank in steps]
    assert max(on_library) >= 0.996  # what judging library points as they are saw
    assert max(outside) < router.options.unit_index_agreement
    assert max(outside) <= 0.98


def test_the_full_scan_kept_chooses_as_the_full_scan(many_units: dict[str, Any]) -> None:
    router: LibraryRouter = many_units["router"]
    queries = many_units["queries"]
    expected = [_chosen(router, row, router.coverage) for row in _full_scan_scores(router, queries)]
    assert [d.units for d in router.decide_many(queries)] == expected
    assert [router.decide(q).units for q in queries[:50]] == expected[:50]


def test_the_re_scored_units_chosen_hold_on_queries_from_outside_the_library(
    many_units: dict[str, Any],
) -> None:
    """With a lower agreement bar the index is kept: the number of units it re-scores is the
    least whose agreement, judged on calibration points left out of their own centroid,
    reaches the bar; on queries from outside the library it agrees as often, within the
    sampling noise of 250 judged queries."""
    router = build_router(
        many_units["data"],
        many_units["labels"],
        [None] * 600,
        strategy="domain_affinity",
        unit_index_work=0,
        unit_index_agreement=0.96,
    )
    assert router.unit_index_rerank > 0
    assert router.calibration["unit_index_agreement"] >= 0.96
    outside = _agreement(router, router.unit_index_rerank, many_units["queries"])
    assert outside >= 0.96 - 0.02
    smaller = router.unit_index_rerank // 2
    if smaller >= 8:  # the step before did not hold outside either
        assert _agreement(router, smaller, many_units["queries"]) < 0.96
    # what a differing decision costs: the same recall@10, more units (a lower mass
    # estimate near the coverage takes many more); the bar trades decision cost for that
    queries, data, labels = many_units["queries"], many_units["data"], many_units["labels"]
    truth = labels[np.argsort(-(queries @ data.T), axis=1)[:, :10]]
    expected = [_chosen(router, row, router.coverage) for row in _full_scan_scores(router, queries)]
    chosen = [d.units for d in router.decide_many(queries)]
    found = [np.isin(t, units).mean() for t, units in zip(truth, chosen, strict=True)]
    scanned = [np.isin(t, units).mean() for t, units in zip(truth, expected, strict=True)]
    assert np.mean(found) >= np.mean(scanned)


def test_the_unit_index_scores_equal_its_formula(many_units: dict[str, Any]) -> None:
    router: LibraryRouter = many_units["router"]
    queries = many_units["queries"]
    router.unit_index_rerank = 32
    try:
        expected = _index_scores(router, queries)
        np.testing.assert_allclose(router.scores_many(queries), expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(router.scores(queries[3]), expected[3], rtol=1e-4, atol=1e-6)
    finally:
        router.unit_index_rerank = 0


def test_the_full_scan_is_kept_when_the_index_misses() -> None:
    """Units unrelated to the geometry (random labels): every centroid is near the mean, the
    rule takes most units in an order set by tiny differences, which the index cannot keep."""
    rng = np.random.default_rng(7)
    vectors = unit_rows(rng.standard_normal((6_200, 128)))
    data, queries = vectors[200:], vectors[:200]
    labels = rng.integers(0, 300, len(data))
    router = build_router(data, labels, [None] * 300, strategy="domain_affinity", unit_index_work=0)
    assert router.unit_index is not None  # tried, and not kept
    assert router.unit_index_rerank == 0
    assert router.describe()["unit_index"] == "full scan"
    np.testing.assert_allclose(
        router.scores_many(queries), _full_scan_scores(router, queries), rtol=1e-4, atol=1e-7
    )
    expected = [_chosen(router, row, router.coverage) for row in _full_scan_scores(router, queries)]
    assert [d.units for d in router.decide_many(queries)] == expected


def test_batched_decisions_with_ties_follow_the_unit_by_unit_rule(
    many_units: dict[str, Any],
) -> None:
    router: LibraryRouter = many_units["router"]
    units = router.unit_count
    tied = np.full((3, units), 1.0 / units, dtype=np.float32)
    tied[1, :40] = 2.0 / units  # 40 tied best units: more than the first candidates
    tied[1] /= tied[1].sum()
    tied[2, [5, 9]] = 0.3  # two tied best units, the rule settled among them
    tied[2] /= tied[2].sum()
    for coverage in (0.05, 0.5, 0.95):
        decided = router._decide_batch(tied, "domain_affinity", coverage)
        assert [d.units for d in decided] == [_chosen(router, row, coverage) for row in tied]
