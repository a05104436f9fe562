"""Routing core, optimised: the same scores, decisions and calibration as the plain formula.

The reference functions below are the routing formula written the direct way
(dense neighbour profiles, a full sort, a unit-by-unit loop, exact neighbours
from one full score matrix); the router's optimised computation must agree
with them within float tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from librarian.core.routing import LibraryRouter, _top_neighbours, build_router


def _clouds(n: int, dim: int, centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim))
    vectors = means[rng.integers(0, centres, n)] * 0.6 + rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _fine_units(vectors: np.ndarray, units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``units`` cells: seeded centres, each point labelled by its nearest centre."""
    rng = np.random.default_rng(seed)
    centres = vectors[rng.choice(len(vectors), units, replace=False)]
    return np.argmax(vectors @ centres.T, axis=1), centres


# ---------------------------------------------------------------- the plain formula


def _reference_scores(
    router: LibraryRouter, queries: np.ndarray, strategy: str, budget: int = 0
) -> np.ndarray:
    """The plain formula; with ``budget``, only the sample points of the query's best units
    (by centroid, best first, until they hold ``budget`` points; a point's unit is its
    nearest centroid) may be its neighbours."""
    options = router.options
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    logits = (q @ router.centroids.T) / options.temperature
    prior = np.exp(logits - logits.max(axis=1, keepdims=True))
    prior /= prior.sum(axis=1, keepdims=True)
    if strategy == "domain_affinity" or not len(router.sample_vectors):
        return prior
    sims = q @ router.sample_vectors.T
    if budget:
        home = np.argmax(router.sample_vectors @ router.centroids.T, axis=1)
        held = np.bincount(home, minlength=router.unit_count)
        for row in range(len(q)):
            taken: list[int] = []
            for unit in np.argsort(-logits[row], kind="stable"):
                if sum(held[taken]) >= budget:
                    break
                taken.append(int(unit))
            sims[row, ~np.isin(home, taken)] = -np.inf
    m = min(options.sample_neighbours, sims.shape[1])
    top = np.argsort(-sims, axis=1)[:, :m]
    top_sims = np.take_along_axis(sims, top, axis=1)
    weights = np.exp((top_sims - top_sims.max(axis=1, keepdims=True)) / options.temperature)
    blended = np.einsum("qm,qmu->qu", weights, router.sample_profiles[top])
    blended /= blended.sum(axis=1, keepdims=True)
    return (1 - options.centroid_prior) * blended + options.centroid_prior * prior


def _reference_decision(router: LibraryRouter, scores: np.ndarray, coverage: float) -> list[int]:
    options = router.options
    order = np.argsort(-scores, kind="stable")
    chosen: list[int] = []
    mass = 0.0
    limit = options.max_units or len(order)
    for unit in order:
        if len(chosen) >= limit or (mass >= coverage and len(chosen) >= options.min_units):
            break
        chosen.append(int(unit))
        mass += float(scores[unit])
    return chosen


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def fine() -> dict[str, Any]:
    vectors = _clouds(6_000, 32, 40, seed=11)
    queries, data = vectors[:300], vectors[300:]
    labels, centres = _fine_units(data, 240, seed=2)
    return {"data": data, "queries": queries, "labels": labels, "centres": centres}


@pytest.mark.parametrize("strategy", ["hybrid", "domain_affinity"])
def test_scores_equal_the_plain_formula(fine: dict[str, Any], strategy: str) -> None:
    router = build_router(
        fine["data"],
        fine["labels"],
        list(fine["centres"]),
        profile_tolerance=None,
        strategy=strategy,
        sample_candidates=0,
    )
    assert len(router.sample_vectors) > router.options.sample_neighbours
    batched = router.scores_many(fine["queries"])
    expected = _reference_scores(router, fine["queries"], strategy)
    np.testing.assert_allclose(batched, expected, rtol=1e-4, atol=1e-6)
    one = router.scores(fine["queries"][7])
    np.testing.assert_allclose(one, expected[7], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("budget", [40, 300])
def test_scores_searching_the_best_cells_equal_the_plain_formula_restricted_to_them(
    fine: dict[str, Any], budget: int
) -> None:
    router = build_router(
        fine["data"],
        fine["labels"],
        list(fine["centres"]),
        strategy="hybrid",
        sample_candidates=budget,
        whole_sample_work=0,
    )
    assert len(router.sample_vectors) > budget
    expected = _reference_scores(router, fine["queries"], "hybrid", budget)
    np.testing.assert_allclose(router.scores_many(fine["queries"]), expected, rtol=1e-4, atol=1e-6)


def test_a_cheap_whole_sample_is_searched_whole(fine: dict[str, Any]) -> None:
    router = build_router(
        fine["data"], fine["labels"], list(fine["centres"]), strategy="hybrid", sample_candidates=40
    )
    expected = _reference_scores(router, fine["queries"], "hybrid")
    np.testing.assert_allclose(router.scores_many(fine["queries"]), expected, rtol=1e-4, atol=1e-6)


def test_decisions_equal_the_unit_by_unit_rule(fine: dict[str, Any]) -> None:
    router = build_router(
        fine["data"],
        fine["labels"],
        list(fine["centres"]),
        strategy="hybrid",
        profile_tolerance=None,
        min_units=3,
    )
    scores = router.scores_many(fine["queries"])
    decisions = router.decide_many(fine["queries"])
    for coverage in (0.3, 0.9, 0.999, 1.0, router.coverage):
        for query in fine["queries"][:60]:
            row = router.scores(query)
            expected = _reference_decision(router, row, coverage)
            got = router.decide(query, coverage=coverage)
            assert got.units == expected
            assert got.estimated_recall == pytest.approx(
                min(1.0, float(np.sum(row[expected], dtype=np.float64))), abs=1e-9
            )
    assert [d.units for d in decisions] == [
        _reference_decision(router, row, router.coverage) for row in scores
    ]
    tied = np.full(router.unit_count, 1.0 / router.unit_count, dtype=np.float32)
    assert router._decide(tied, "hybrid", 0.05).units == _reference_decision(router, tied, 0.05)


def test_max_units_caps_the_decision(fine: dict[str, Any]) -> None:
    router = build_router(
        fine["data"],
        fine["labels"],
        list(fine["centres"]),
        strategy="hybrid",
        profile_tolerance=None,
        max_units=4,
    )
    for query in fine["queries"][:20]:
        units = router.decide(query, coverage=1.0).units
        assert units == _reference_decision(router, router.scores(query), 1.0)
        assert len(units) == 4


@pytest.mark.parametrize("k", [1, 3, 7])  # 7: the whole row sorted, not chunks
def test_exact_neighbours_in_small_blocks_equal_one_full_sort(k: int) -> None:
    rng = np.random.default_rng(k)
    reference = _clouds(3_000, 16, 10, seed=k)
    queries = _clouds(700, 16, 10, seed=k + 10)
    exclude = rng.integers(-1, len(reference), len(queries))
    # about 100 query rows per block: several blocks, the last one partial
    found = _top_neighbours(queries, reference, k, exclude, block_bytes=100 * 3_000 * 12)
    scores = queries @ reference.T
    scores[np.flatnonzero(exclude >= 0), exclude[exclude >= 0]] = -np.inf
    expected = np.sort(np.argsort(-scores, axis=1)[:, :k], axis=1)
    np.testing.assert_array_equal(np.sort(found, axis=1), expected)


def test_fine_units_drop_the_sample_when_it_does_not_pay(fine: dict[str, Any]) -> None:
    whole = build_router(
        fine["data"],
        fine["labels"],
        list(fine["centres"]),
        strategy="hybrid",
        profile_tolerance=None,
    )
    grown = build_router(
        fine["data"],
        fine["labels"],
        list(fine["centres"]),
        strategy="hybrid",
        profile_tolerance=0.1,
    )
    assert len(grown.sample_vectors) < len(whole.sample_vectors)
    assert grown.calibration["recall"] >= grown.options.target_recall
    # the same sample points (stored unit by unit): part of the whole sample
    whole_rows = {row.tobytes() for row in whole.sample_vectors}
    assert {row.tobytes() for row in grown.sample_vectors} <= whole_rows


def _paired_clouds(n: int, dim: int, clouds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping clouds, each unit the union of two unrelated ones: a unit's centroid lies
    between its halves, so nearest-centroid routing misjudges it and neighbour profiles,
    which learn where a point's neighbours live, do not."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(clouds, dim))
    which = rng.integers(0, clouds, n)
    vectors = means[which] * 0.6 + rng.normal(size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), which % (clouds // 2)


def test_each_step_of_the_sample_pays_its_tolerance() -> None:
    # Units that are not the cells of their centroids: the profiles pay, so every step of the
    # sample is kept and the centroids alone touch more for the same calibrated recall.
    # (On cells of their own centroids the profiles gain under 1% once both are calibrated
    # to the same recall exactly: there is nothing for them to pay there.)
    vectors, labels = _paired_clouds(4_000, 24, 12, seed=3)
    units = [None] * int(labels.max() + 1)
    grown = build_router(vectors, labels, units, strategy="hybrid", profile_tolerance=0.0)
    centroid_only = build_router(vectors, labels, units, strategy="domain_affinity")
    whole = build_router(vectors, labels, units, strategy="hybrid", profile_tolerance=None)
    for router in (grown, centroid_only, whole):
        assert router.calibration["recall"] >= router.options.target_recall
    assert centroid_only.calibration["touched"] > 1.1 * whole.calibration["touched"]
    assert len(grown.sample_vectors) == len(whole.sample_vectors)
    assert grown.calibration["touched"] == whole.calibration["touched"]
    # a step must lower the touched share by more than the tolerance to be kept: a sample of
    # an eighth (250 points) does not lower it by half, so none is kept
    halving = build_router(vectors, labels, units, strategy="hybrid", profile_tolerance=0.5)
    assert len(halving.sample_vectors) == 0
    assert halving.calibration["touched"] == centroid_only.calibration["touched"]
    assert halving.calibration["sample_points_tried"] == len(whole.sample_vectors) // 8


@pytest.mark.parametrize("points", [1, 2, 4, 12])
def test_a_library_of_a_few_points_builds_a_router(points: int) -> None:
    """A library smaller than the neighbours asked for (the router's sample of a small
    library): every point has as many neighbours as the others can give, at least one."""
    rng = np.random.default_rng(points)
    vectors = rng.standard_normal((points, 8)).astype(np.float32)
    labels = np.arange(points) % 3 if points > 2 else np.zeros(points, dtype=np.int64)
    units = max(1, int(labels.max()) + 1)
    router = build_router(vectors, labels, [None] * units, k=10, min_sample=0)
    decision = router.decide(vectors[0])
    assert decision.units
    assert set(decision.units) <= set(range(units))
