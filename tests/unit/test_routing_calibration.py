"""Routing calibration: the coverage the router settles on, judged on queries it never saw.

The reference here is computed independently of the router's calibration: the
exact top-10 of every held-out query by brute force over the library, the
recall@10 and share of points touched for every number of units a query may
probe, and, by a sweep over every coverage at which some query's decision
changes, the least-touching coverage that reaches the target on those queries.
The calibrated coverage must reach the target on the held-out queries (within
sampling noise) without touching much more than that minimum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from librarian.core.routing import (
    LibraryRouter,
    _calibrate,
    _calibration_truth,
    _truth_weights,
    build_router,
)

HELD_OUT = 1_000


def _clouds(n: int, dim: int, centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim))
    vectors = means[rng.integers(0, centres, n)] * 0.6 + rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _cells(vectors: np.ndarray, units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``units`` fine cells: seeded centres, each point labelled by its nearest centre."""
    centres = vectors[np.random.default_rng(seed).choice(len(vectors), units, replace=False)]
    return np.argmax(vectors @ centres.T, axis=1), centres


def _sweep(
    masses: np.ndarray,
    recall_by_count: np.ndarray,
    touched_by_count: np.ndarray,
    target: float,
    least: int = 1,
    limit: int | None = None,
) -> tuple[float, float, float]:
    """The smallest coverage whose mean recall reaches ``target``, and its (recall, touched).

    ``masses[q, j]`` is query ``q``'s cumulative score over its ``j + 1`` best units;
    ``recall_by_count[q, c - 1]`` / ``touched_by_count[q, c - 1]`` are its recall and
    touched share when it probes ``c`` units. A coverage just above ``masses[q, j]``
    makes ``q`` probe at least ``j + 2`` units (clipped to ``least`` .. ``limit``):
    visiting every mass in ascending order, one event at a time, gives each coverage's
    recall without deciding any query twice.
    """
    queries, units = masses.shape
    limit = units if limit is None else limit
    count = np.full(queries, least)
    rows = np.arange(queries)
    recall_sum = float(recall_by_count[rows, least - 1].sum())
    deciding = slice(least - 1, limit)  # past ``limit`` units no mass changes a decision
    positions = np.broadcast_to(np.arange(units), masses.shape)[:, deciding].ravel()
    owners = np.broadcast_to(rows[:, None], masses.shape)[:, deciding].ravel()
    values = masses[:, deciding].ravel()
    events = np.lexsort((positions, values))
    previous = None
    for event in events:
        value = float(values[event])
        if value != previous and recall_sum / queries >= target:
            break
        previous = value
        q = owners[event]
        now = min(limit, max(count[q], positions[event] + 2))
        recall_sum += float(recall_by_count[q, now - 1] - recall_by_count[q, count[q] - 1])
        count[q] = now
    else:
        value = float("inf")
    return value, recall_sum / queries, float(touched_by_count[rows, count - 1].mean())


def _curves(
    router: LibraryRouter, queries: np.ndarray, truth_units: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's cumulative scores, recall and touched share for 1..units units probed."""
    scores = router.scores_many(queries)
    order = np.argsort(-scores, axis=1, kind="stable")
    masses = np.cumsum(np.take_along_axis(scores, order, axis=1), axis=1, dtype=np.float64)
    units = scores.shape[1]
    recall = np.zeros((len(queries), units))
    for q in range(len(queries)):
        first_seen = {int(unit): position for position, unit in enumerate(order[q])}
        for unit in truth_units[q]:
            recall[q, first_seen[int(unit)] :] += 1.0 / truth_units.shape[1]
    touched = np.cumsum(sizes[order], axis=1) / sizes.sum()
    return masses, recall, touched


def _probed(router: LibraryRouter, queries: np.ndarray, truth_units: np.ndarray, sizes: np.ndarray):
    """Recall@10 and touched share of the router's own decisions on ``queries``."""
    decisions = router.decide_many(queries)
    recall = np.mean(
        [np.isin(t, d.units).mean() for t, d in zip(truth_units, decisions, strict=True)]
    )
    touched = np.mean([sizes[d.units].sum() / sizes.sum() for d in decisions])
    return float(recall), float(touched)


@pytest.fixture(scope="module")
def fine() -> dict[str, Any]:
    vectors = _clouds(21_000, 32, 60, seed=0)
    queries, data = vectors[:HELD_OUT], vectors[HELD_OUT:]
    labels, centres = _cells(data, 300, seed=0)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    return {
        "data": data,
        "queries": queries,
        "labels": labels,
        "centres": centres,
        "sizes": np.bincount(labels, minlength=300),
        "truth": labels[exact],
    }


@pytest.mark.parametrize("target", [0.9, 0.97])
def test_calibrated_coverage_reaches_the_target_on_held_out_queries_near_the_least_touched(
    fine: dict[str, Any], target: float
) -> None:
    router = build_router(fine["data"], fine["labels"], list(fine["centres"]), target_recall=target)
    recall, touched = _probed(router, fine["queries"], fine["truth"], fine["sizes"])
    curves = _curves(router, fine["queries"], fine["truth"], fine["sizes"])
    _, best_recall, least_touched = _sweep(*curves, target)
    assert best_recall >= target
    # 1,000 held-out queries: the calibration (on 500 others) is off by sampling noise only
    assert recall >= target - 0.01, (recall, touched, least_touched)
    assert touched <= 1.1 * least_touched, (recall, touched, least_touched)
    # the model says what it will do: its expected recall, touched share and units per query
    report = router.describe()
    assert report["calibration_recall"] >= target
    assert report["calibration_touched"] == pytest.approx(touched, rel=0.1)
    assert report["calibration_truth_neighbours"] == 10
    units = np.mean([len(d.units) for d in router.decide_many(fine["queries"])])
    assert report["calibration_units_per_query"] == pytest.approx(units, rel=0.1)


def test_a_library_known_by_a_sample_calibrates_for_the_whole_librarys_top_10(
    fine: dict[str, Any],
) -> None:
    """The router learns from a fifth of the library; the truth it cannot see (the whole
    library's top-10) is what the held-out queries are judged on."""
    data, labels = fine["data"], fine["labels"]
    sample = np.random.default_rng(5).choice(len(data), len(data) // 5, replace=False)
    router = build_router(
        data[sample],
        labels[sample],
        list(fine["centres"]),
        unit_sizes=fine["sizes"],
        target_recall=0.95,
    )
    assert router.calibration["truth_neighbours"] < 10  # a few, weighted: see below
    recall, touched = _probed(router, fine["queries"], fine["truth"], fine["sizes"])
    curves = _curves(router, fine["queries"], fine["truth"], fine["sizes"])
    _, _, least_touched = _sweep(*curves, 0.95)
    # Each calibration query's truth is about two weighted neighbours (a fifth of its top
    # 10), and the smallest coverage whose estimate reaches the target is picked where the
    # estimate errs high: the shortfall on other queries is a few hundredths at most.
    assert recall >= 0.95 - 0.03, (recall, touched, least_touched)
    assert touched <= 1.2 * least_touched, (recall, touched, least_touched)


@pytest.mark.parametrize("options", [{}, {"min_units": 3, "max_units": 120}])
def test_calibration_picks_the_smallest_coverage_meeting_the_target(
    fine: dict[str, Any], options: dict[str, Any]
) -> None:
    router = build_router(
        fine["data"], fine["labels"], list(fine["centres"]), target_recall=0.93, **options
    )
    queries, truth = fine["queries"][:400], fine["truth"][:400]
    _calibrate(router, queries, truth)
    least = options.get("min_units", 1)
    limit = options.get("max_units")
    coverage, recall, touched = _sweep(
        *_curves(router, queries, truth, fine["sizes"]), 0.93, least, limit
    )
    assert router.coverage == coverage
    assert router.calibration["recall"] == pytest.approx(recall, abs=1e-9)
    assert router.calibration["touched"] == pytest.approx(touched, abs=1e-9)
    # the router's own decisions at that coverage take what the calibration counted
    assert _probed(router, queries, truth, fine["sizes"]) == pytest.approx((recall, touched))


def test_an_unreachable_target_probes_every_unit_it_may(fine: dict[str, Any]) -> None:
    router = build_router(
        fine["data"], fine["labels"], list(fine["centres"]), target_recall=1.0, max_units=5
    )
    decisions = router.decide_many(fine["queries"][:50])
    assert {len(d.units) for d in decisions} == {5}


@pytest.mark.parametrize("share", [1.0, 0.5, 0.2, 0.02])
def test_truth_weights_are_the_chance_a_nearest_point_at_hand_is_in_the_top_10(
    share: float,
) -> None:
    """Draw a share of a library at random many times: how often is the ``j``-th nearest
    drawn point one of the library's 10 nearest?"""
    weights = _truth_weights(10, share, available=1_000)
    rng = np.random.default_rng(7)
    drawn = rng.random((40_000, 200)) < share  # ranks 1..200 of the library, drawn or not
    in_top = np.cumsum(drawn[:, :10], axis=1)[:, -1]  # how many of the top 10 were drawn
    observed = [(in_top >= j).mean() for j in range(1, len(weights) + 1)]
    np.testing.assert_allclose(weights, observed, atol=0.01)
    assert weights[-1] >= 1e-3
    if share == 1.0:
        assert list(weights) == [1.0] * 10
    assert len(_truth_weights(10, share, available=2)) <= 2


def test_calibration_truth_is_the_exact_top_k_scanned_in_blocks() -> None:
    rng = np.random.default_rng(3)
    source = rng.normal(size=(2_500, 16)) * rng.uniform(0.5, 3, size=(2_500, 1))  # float64
    assigned = rng.integers(0, 40, len(source))
    own = rng.choice(len(source), 120, replace=False)
    queries = source[own] / np.linalg.norm(source[own], axis=1, keepdims=True)
    # a block holds about 100 source rows: 25 blocks
    units, weights = _calibration_truth(
        queries.astype(np.float32),
        own,
        source,
        assigned,
        len(source),
        10,
        100 * (16 * 4 + 120 * 12),
    )
    unit_rows = source / np.linalg.norm(source, axis=1, keepdims=True)
    scores = queries @ unit_rows.T
    scores[np.arange(len(own)), own] = -np.inf
    expected = assigned[np.argsort(-scores, axis=1)[:, :10]]
    np.testing.assert_array_equal(units, expected)
    assert list(weights) == [1.0] * 10
    # a library four times as large: the nearest few, weighted by the chance they are its top 10
    _, weights = _calibration_truth(
        queries.astype(np.float32), own, source, assigned, 4 * len(source), 10, 1 << 20
    )
    np.testing.assert_allclose(weights, _truth_weights(10, 2_499 / (4 * 2_500 - 1), 2_499))
