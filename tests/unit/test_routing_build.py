"""Building the router cheaply without moving its calibrated operating point.

The build shares one truth computation between the strategies it compares, may
search the calibration queries' true neighbours among a uniform subset of a
large library (weighted by the chance each is one of the library's top 10), and
skips the sample's neighbour search when even an oracle bound says neighbour
profiles could not pay. Each shortcut is checked against the long way round:
separate builds, a brute-force scan of the subset, an LP solver for the bound,
and held-out queries judged on their exact top 10 over the whole library.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.optimize import linprog

from librarian.core.routing import (
    _calibration_truth,
    _least_touched,
    _truth_weights,
    build_router,
)

from .conftest import make_mixture, unit_rows


def _paired(seed: int) -> dict[str, Any]:
    """Each unit is the union of two unrelated clouds: neighbour profiles pay here."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(12, 24))
    which = rng.integers(0, 12, 4_200)
    vectors = unit_rows(means[which] * 0.6 + rng.normal(size=(4_200, 24)))
    return {"data": vectors[200:], "labels": (which % 6)[200:]}


def _held_out(router: Any, data: dict[str, Any]) -> tuple[float, float]:
    """Recall@10 (exact top 10 over the whole library) and touched share on held-out queries."""
    labels = data["labels"]
    truth = labels[np.argsort(-(data["queries"] @ data["data"].T), axis=1)[:, :10]]
    sizes = np.bincount(labels, minlength=router.unit_count)
    decisions = router.decide_many(data["queries"])
    recall = np.mean([np.isin(t, d.units).mean() for t, d in zip(truth, decisions, strict=True)])
    touched = np.mean([sizes[d.units].sum() / len(labels) for d in decisions])
    return float(recall), float(touched)


# ---------------------------------------------------------------- one truth, shared


def test_auto_compares_both_strategies_on_the_truth_each_builds_alone() -> None:
    data = _paired(seed=3)
    auto = build_router(data["data"], data["labels"], [None] * 6)
    hybrid = build_router(data["data"], data["labels"], [None] * 6, strategy="hybrid")
    centroid = build_router(data["data"], data["labels"], [None] * 6, strategy="domain_affinity")
    described = auto.describe()
    assert described["strategy"] == "hybrid"
    assert described["strategy_touched_hybrid"] == round(hybrid.calibration["touched"], 4)
    assert described["strategy_touched_centroid"] == round(centroid.calibration["touched"], 4)
    assert auto.coverage == hybrid.coverage
    assert auto.calibration == hybrid.calibration


# ---------------------------------------------------------------- the truth on a subset


def test_truth_on_a_subset_is_its_exact_nearest_rows_weighted_for_the_library() -> None:
    rng = np.random.default_rng(4)
    source = rng.normal(size=(3_000, 16)) * rng.uniform(0.5, 3, size=(3_000, 1))
    assigned = rng.integers(0, 40, len(source))
    own = rng.choice(len(source), 90, replace=False)
    scanned = np.sort(rng.choice(len(source), 700, replace=False))
    queries = (source[own] / np.linalg.norm(source[own], axis=1, keepdims=True)).astype(np.float32)
    # blocks of about 130 scanned rows, the last one partial
    units, weights = _calibration_truth(
        queries, own, source, assigned, 5 * len(source), 10, 130 * (16 * 8 + 90 * 12), scanned
    )
    share = 700 / 3_000 * 2_999 / (5 * 3_000 - 1)
    np.testing.assert_allclose(weights, _truth_weights(10, share, 700))
    unit_rows = source[scanned] / np.linalg.norm(source[scanned], axis=1, keepdims=True)
    scores = queries @ unit_rows.T
    mine = scanned[None, :] == own[:, None]  # a query's own row, when it was drawn
    scores[mine] = -np.inf
    expected = assigned[scanned[np.argsort(-scores, axis=1)[:, : len(weights)]]]
    np.testing.assert_array_equal(units, expected)


@pytest.fixture(scope="module")
def large() -> dict[str, Any]:
    """A library of 40,000 points in 400 fine units, 1,000 held-out queries."""
    return make_mixture(41_000, 32, 400, noise=1.2, seed=8, queries=1000)


def test_a_truth_on_part_of_the_library_errs_on_the_safe_side(large: dict[str, Any]) -> None:
    """Past ``truth_limit`` points the calibration queries are judged on a uniform subset, each
    neighbour found there weighted by the chance it is one of the library's top 10. The
    weighting counts a nearest subset point that is not in the top 10 as partly in it, and
    such a point lies in the query's best units less often than a true neighbour: the recall
    is underestimated, so the calibrated coverage reaches the target on held-out queries
    judged on their exact top 10, touching more than the exact truth's (on a quarter of the
    library here, about a quarter more: why the default scans a million points exactly)."""
    data, labels = large["data"], large["labels"]
    options = {"strategy": "domain_affinity", "target_recall": 0.95}
    exact = build_router(data, labels, [None] * 400, **options)
    assert exact.calibration["truth_neighbours"] == 10
    recall, touched = _held_out(exact, large)
    assert recall >= 0.95 - 0.005
    for seed in (1, 2):
        subset = build_router(data, labels, [None] * 400, truth_limit=10_000, seed=seed, **options)
        assert 3 < subset.calibration["truth_neighbours"] < 10
        sub_recall, sub_touched = _held_out(subset, large)
        assert sub_recall >= recall, (sub_recall, recall)
        assert touched < sub_touched <= 1.4 * touched, (sub_touched, touched)


# ---------------------------------------------------------------- skipping hybrid


def test_the_least_touched_bound_is_the_optimum_of_its_linear_programme() -> None:
    rng = np.random.default_rng(6)
    sizes = rng.integers(5, 200, 12)
    weights = _truth_weights(10, 0.4, 10)  # nine neighbours weighted
    truth = rng.integers(0, 12, (30, len(weights)))
    for target in (0.3, 0.8, 0.97):
        bound = _least_touched(truth, weights, sizes, target)
        # one variable per (query, unit) holding some of the query's neighbours
        pairs = sorted({(q, int(u)) for q in range(30) for u in truth[q]})
        share = weights / weights.sum()
        gain = [share[truth[q] == u].sum() / 30 for q, u in pairs]
        cost = [sizes[u] / sizes.sum() / 30 for _, u in pairs]
        solved = linprog(cost, A_ub=[[-g for g in gain]], b_ub=[-target], bounds=(0, 1))
        assert solved.status == 0
        assert bound == pytest.approx(solved.fun, rel=1e-9, abs=1e-12)
    assert _least_touched(truth, weights, sizes, 1.0) == pytest.approx(
        sum(sizes[u] for q in range(30) for u in set(truth[q].tolist())) / sizes.sum() / 30
    )


def test_hybrid_is_not_built_when_even_an_oracle_could_not_pay() -> None:
    """Well separated units: one unit per query reaches the target, so nothing can touch
    10% less; the build says so without searching the sample's neighbours, and a hybrid
    router built anyway confirms it (it touches no less than the bound)."""
    data = make_mixture(8_000, 32, 40, noise=0.5, seed=3, queries=1000)
    auto = build_router(data["data"], data["labels"], [None] * 40)
    described = auto.describe()
    assert described["strategy"] == "domain_affinity"
    assert len(auto.sample_vectors) == 0
    assert "strategy_touched_hybrid" not in described  # never built
    bound = described["strategy_touched_hybrid_at_least"]
    centroid_touched = described["strategy_touched_centroid"]
    assert bound > centroid_touched * (1 - auto.options.hybrid_margin)
    hybrid = build_router(data["data"], data["labels"], [None] * 40, strategy="hybrid")
    assert hybrid.calibration["recall"] >= hybrid.options.target_recall
    assert hybrid.calibration["touched"] >= bound - 1e-4
    assert hybrid.calibration["touched"] > centroid_touched * (1 - auto.options.hybrid_margin)
    # the same router as comparing both would have chosen
    centroid = build_router(data["data"], data["labels"], [None] * 40, strategy="domain_affinity")
    assert auto.coverage == centroid.coverage
    centroid.calibration.pop("sample_points_tried")  # it searched its sample's neighbours
    assert auto.calibration == centroid.calibration


def test_a_capped_number_of_units_still_compares_both() -> None:
    """With ``max_units`` hybrid may miss the target where centroids reach it: no shortcut."""
    data = make_mixture(8_000, 32, 40, noise=0.5, seed=3, queries=1000)
    auto = build_router(data["data"], data["labels"], [None] * 40, max_units=3)
    assert "strategy_touched_hybrid" in auto.describe()
