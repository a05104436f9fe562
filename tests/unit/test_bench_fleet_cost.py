"""The fleet-cost benchmark's helpers compute what they claim: recall, merges, tuning, shards.

The benchmark's verdict rests on them; each is checked against an independent
brute-force computation or the routing core's own rule, so a wrong helper
fails here instead of printing a flattering table.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from benchmarks import bench_fleet_cost
from benchmarks.bench_fleet_cost import (
    EF_CANDIDATES,
    Built,
    EngineShards,
    Hits,
    Layout,
    Tuner,
    coverage_prefix,
    exact_top_k,
    filtered_path_check,
    flat_layout,
    grouped_visits,
    hash_shards,
    kmeans_partitions,
    library_layouts,
    merge_top_k,
    partition_groups,
    place_library,
    recall_at_k,
    shard_switch_cost,
    smallest_reaching,
    synthetic_vectors,
    tune,
)

from librarian.core.routing import build_router


def _unit_rows(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exact_top_k_matches_a_full_sort_across_chunks() -> None:
    data, queries = _unit_rows(1_000, 16, 1), _unit_rows(20, 16, 2)
    ids, scores = exact_top_k(data, queries, 10, chunk=7)  # chunks smaller than k too
    everything = queries @ data.T
    expected = np.argsort(-everything, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(everything, expected, 1), rtol=1e-6)


def test_merge_of_per_shard_top_k_is_the_global_top_k() -> None:
    data, query = _unit_rows(500, 8, 3), _unit_rows(1, 8, 4)[0]
    scores = data @ query
    shard_of = hash_shards(np.arange(500, dtype=np.int64), 6)
    parts = []
    for shard in range(6):
        members = np.flatnonzero(shard_of == shard)
        best = members[np.argsort(-scores[members])[:10]]
        parts.append(Hits(best, scores[best]))
    merged = merge_top_k(parts, 10)
    expected = np.argsort(-scores)[:10]
    np.testing.assert_array_equal(merged.ids, expected)
    np.testing.assert_allclose(merged.scores, scores[expected])


def test_merge_breaks_ties_by_id_and_handles_short_and_empty_answers() -> None:
    tied = merge_top_k(
        [
            Hits(np.array([9, 4]), np.array([0.5, 0.5], np.float32)),
            Hits(np.array([2]), np.array([0.5], np.float32)),
            Hits.empty(),
        ],
        2,
    )
    assert tied.ids.tolist() == [2, 4]
    assert merge_top_k([], 10).ids.tolist() == []
    assert merge_top_k([Hits(np.array([1]), np.array([0.1], np.float32))], 10).ids.tolist() == [1]


def test_recall_counts_hits_and_exact_ties_but_never_more_than_k() -> None:
    truth = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    kth = np.array([0.6, 0.6], np.float32)
    exact_scores = {8: 0.6, 9: 0.2}  # id 8 ties with the 4th true neighbour, id 9 does not

    def exact(row: int, ids: np.ndarray) -> np.ndarray:
        return np.array([exact_scores[int(i)] for i in ids], np.float32)

    assert recall_at_k([np.array([0, 1, 2, 3]), np.array([7, 6, 5, 4])], truth, kth, exact) == 1.0
    assert recall_at_k([np.array([0, 1, 9, 9]), np.array([4, 5])], truth, kth, exact) == 0.5
    assert recall_at_k([np.array([0, 1, 2, 8]), np.array([4, 5, 6, 9])], truth, kth, exact) == (
        pytest.approx((1.0 + 0.75) / 2)
    )
    # Only the first k returned ids are judged.
    assert recall_at_k([np.array([9, 9, 9, 9, 0]), np.array([])], truth, kth, exact) == 0.0


@pytest.mark.parametrize("first_good", range(9))
def test_tuning_picks_the_cheapest_candidate_reaching_the_goal(first_good: int) -> None:
    candidates = [10, 20, 30, 40, 50, 60, 70, 80]
    evaluated: list[int] = []

    def recall(candidate: int) -> float:
        evaluated.append(candidate)
        return 0.99 if candidates.index(candidate) >= first_good else 0.5 + 0.01 * candidate / 10

    chosen, reached, seen = smallest_reaching(candidates, recall, 0.95)
    if first_good < len(candidates):
        assert (chosen, reached) == (candidates[first_good], 0.99)
        assert all(seen[c] < 0.95 for c in candidates[:first_good] if c in seen)
    else:  # none reaches: the last, with its recall, for the caller to report
        assert (chosen, reached) == (80, 0.58)
    assert len(evaluated) == len(set(evaluated)) == len(seen)
    if first_good <= 1:
        assert 80 not in evaluated  # the costly end is not tried when a cheap one suffices


def test_coverage_prefix_is_the_routers_own_coverage_rule() -> None:
    data = _unit_rows(3_000, 12, 5)
    labels = np.argmax(data @ _unit_rows(20, 12, 6).T, axis=1)
    router = build_router(data, labels, [None] * 20, strategy="hybrid", seed=0)
    queries = _unit_rows(40, 12, 7)
    for query in queries:
        row = router.scores(query, strategy="hybrid")
        order = np.argsort(-row, kind="stable")
        for coverage in (0.3, 0.6, 0.9, 0.99, 1.0):
            decided = router.decide(query, strategy="hybrid", coverage=coverage).units
            assert coverage_prefix(row, order, coverage).tolist() == decided


def test_hash_shards_are_deterministic_balanced_and_in_range() -> None:
    ids = np.arange(80_000, dtype=np.int64)
    shards = hash_shards(ids, 8)
    np.testing.assert_array_equal(shards, hash_shards(ids, 8))
    counts = np.bincount(shards, minlength=8)
    assert shards.min() == 0
    assert shards.max() == 7
    assert counts.min() > 0.95 * len(ids) / 8


def test_synthetic_vectors_are_seeded_unit_rows() -> None:
    first = synthetic_vectors(2_000, 32, clusters=50, topics=5, seed=3, chunk=700)
    assert first.shape == (2_000, 32)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(
        first, synthetic_vectors(2_000, 32, clusters=50, topics=5, seed=3, chunk=700)
    )
    assert not np.array_equal(first, synthetic_vectors(2_000, 32, clusters=50, topics=5, seed=4))


def test_engine_shards_searched_and_merged_give_the_exact_top_k(tmp_path: Path) -> None:
    """Small shards are searched exactly by the engine: the merged answer is brute force's."""
    data, queries = _unit_rows(1_200, 16, 8), _unit_rows(10, 16, 9)
    shard_of = hash_shards(np.arange(len(data), dtype=np.int64), 3)
    store = EngineShards(tmp_path)
    try:
        for shard in range(3):
            members = np.flatnonzero(shard_of == shard).astype(np.int64)
            assert store.create(data[members], members, hnsw_everywhere=False) == shard
        truth, truth_scores = exact_top_k(data, queries, 10)
        for row, query in enumerate(queries):
            merged = merge_top_k([store.search(s, query.tolist(), 10, None) for s in range(3)], 10)
            np.testing.assert_array_equal(merged.ids, truth[row])
            np.testing.assert_allclose(merged.scores, truth_scores[row], atol=1e-5)
    finally:
        store.close()


def test_kmeans_partitions_are_compact_nearest_cells_nested_in_the_nearest_domain() -> None:
    data = _unit_rows(2_000, 8, 10)
    domains = _unit_rows(3, 8, 11)
    labels, domain_of = kmeans_partitions(data, 40, domains, seed=0, per_cell=20)
    count = len(domain_of)
    assert sorted(set(labels.tolist())) == list(range(count))  # every cell holds points
    centres = np.stack([data[labels == p].mean(axis=0) for p in range(count)])
    assert set(domain_of.tolist()) <= {0, 1, 2}
    # Each point sits in the cell of its nearest fitted centre: its own cell's mean is at
    # least as close as most others' (Voronoi cells of the centres, checked loosely).
    own = np.einsum("ij,ij->i", data, centres[labels])
    assert np.mean(own >= np.median(data @ centres.T, axis=1)) > 0.99


def test_layouts_sharing_a_tuner_are_judged_on_their_own_shards(tmp_path: Path) -> None:
    """Shard 0 of one layout is not shard 0 of another: each recall is the layout's own."""
    data, queries = _unit_rows(1_000, 8, 12), _unit_rows(20, 8, 13)
    truth, scores = exact_top_k(data, queries, 10)
    tuner = Tuner(queries, truth, scores[:, -1], data)
    whole = flat_layout("one collection", data, 1, tmp_path, hnsw_everywhere=False)
    even = np.arange(0, len(data), 2, dtype=np.int64)
    halves = EngineShards(tmp_path / "half")
    halves.create(data[even], even, hnsw_everywhere=False)
    half = replace(whole, name="half", store=halves)
    try:
        assert tuner.recall(whole, 10, None) == 1.0
        expected = recall_at_k(
            [merge_top_k([halves.search(0, q.tolist(), 10, 10)], 10).ids for q in queries],
            truth,
            scores[:, -1],
            tuner.exact,
        )
        assert tuner.recall(half, 10, None) == pytest.approx(expected)
        assert expected < 0.8
    finally:
        whole.store.close()
        halves.close()


def test_shard_switch_cost_measures_both_patterns(tmp_path: Path) -> None:
    data = _unit_rows(300, 8, 14)
    store = EngineShards(tmp_path)
    try:
        for shard in range(3):
            rows = np.arange(shard * 100, (shard + 1) * 100, dtype=np.int64)
            store.create(data[rows], rows, hnsw_everywhere=False)
        same, switching = shard_switch_cost(store, 3, data[0].tolist())
        assert same > 0
        assert switching > 0
    finally:
        store.close()


def test_grouped_visits_ask_each_shard_once_filtered_to_the_chosen_partitions() -> None:
    shard_of_partition = np.array([0, 0, 1, 1, 1, 2], dtype=np.int64)
    visit = grouped_visits(shard_of_partition)
    assert visit([3, 0, 4, 1]) == [(1, (3, 4)), (0, None)]  # shard 0: both its partitions
    assert visit([5]) == [(2, None)]
    assert visit([2]) == [(1, (2,))]
    assert visit([]) == []


def test_a_partition_filter_gives_the_exact_top_k_of_the_kept_partitions(tmp_path: Path) -> None:
    """One shard holding several partitions, asked for some of them, answers what brute force
    over those partitions' points answers (the engine scans the points the index keeps)."""
    data, queries = _unit_rows(3_000, 16, 20), _unit_rows(15, 16, 21)
    partitions = np.random.default_rng(22).integers(0, 12, len(data)).astype(np.int64)
    ids = np.arange(len(data), dtype=np.int64)
    store = EngineShards(tmp_path)
    try:
        store.create(data, ids, hnsw_everywhere=False, partitions=partitions)
        for row, query in enumerate(queries):
            kept = sorted({row % 12, (row * 5 + 3) % 12})
            rows = np.flatnonzero(np.isin(partitions, kept))
            truth, truth_scores = exact_top_k(data[rows], query[None, :], 10)
            answer = store.search(0, query.tolist(), 10, None, kept)
            np.testing.assert_array_equal(answer.ids, rows[truth[0]])
            np.testing.assert_allclose(answer.scores, truth_scores[0], atol=1e-5)
        assert len(store.search(0, queries[0].tolist(), 10, None, [99]).ids) == 0
    finally:
        store.close()


def test_partition_groups_stay_inside_their_domain_and_number_about_the_square_root() -> None:
    data = _unit_rows(4_000, 8, 23)
    labels = np.random.default_rng(24).integers(0, 30, len(data)).astype(np.int64)
    domain_of = np.array([0] * 16 + [1] * 9 + [2] * 5, dtype=np.int64)
    group = partition_groups(data, labels, domain_of, seed=0)
    assert sorted(set(group.tolist())) == list(range(int(group.max()) + 1))
    for g in range(int(group.max()) + 1):
        assert len(set(domain_of[group == g].tolist())) == 1
    per_domain = [len(set(group[domain_of == d].tolist())) for d in range(3)]
    assert per_domain == [4, 3, 2]


def test_every_placement_of_the_library_answers_alike_at_one_probe_depth(tmp_path: Path) -> None:
    """The same routed partitions, whether each is a shard, or a domain's partitions share a
    shard (filtered), or groups of them do, give the same recall (small shards are scanned
    exactly, so the answers are the same points)."""
    data, queries = _unit_rows(3_000, 8, 25), _unit_rows(40, 8, 26)
    truth, scores = exact_top_k(data, queries, 10)
    labels = np.argmax(data @ data[:30].T, axis=1).astype(np.int64)  # 30 cells
    domain_of = np.arange(30, dtype=np.int64) % 4
    library = place_library(data, labels, domain_of, 4, 0.0, 0, tmp_path, hnsw_everywhere=False)
    try:
        assert [p.name for p in library.placements] == ["partition", "home", "groups"]
        layouts, router, _ = library_layouts(library, data, "centroid", 0)
        tuner = Tuner(queries, truth, scores[:, -1], data, router, "centroid")
        for depth in (1, 3, 8):
            recalls = {layout.name: tuner.recall(layout, None, depth) for layout in layouts}
            assert len(set(recalls.values())) == 1, recalls
        home = layouts[1]
        home.depth = 3
        check = filtered_path_check(home, tuner, library.partition_labels, queries=10)
        if check.searches:
            assert check.exact == 1.0
    finally:
        for placement in library.placements:
            placement.store.close()


def test_a_home_in_a_graph_is_asked_whole_and_a_scanned_one_filtered(tmp_path: Path) -> None:
    """The benchmark asks its homes what the router asks them: a home the engine scans with
    the chosen partitions' condition, a home whose points are in an HNSW graph with none (its
    answer is then the whole home's top-k, a superset of the chosen partitions')."""
    data, queries = _unit_rows(2_000, 8, 27), _unit_rows(5, 8, 28)
    partitions = np.random.default_rng(29).integers(0, 6, len(data)).astype(np.int64)
    ids = np.arange(len(data), dtype=np.int64)
    store = EngineShards(tmp_path)
    try:
        scanned = store.create(data, ids, hnsw_everywhere=False, partitions=partitions)
        graph = store.create(data, ids, hnsw_everywhere=True, partitions=partitions)
        assert not store.asks_whole(scanned)
        assert store.asks_whole(graph)
        for query in queries:
            vector = query.tolist()
            assert store.request(scanned, vector, 10, None, [1, 4]).filter is not None
            assert store.request(graph, vector, 10, None, [1, 4]).filter is None
            assert store.request(graph, vector, 10, None, [1, 4], scanned=True).filter is not None
            kept = store.search(scanned, vector, 10, None, [1, 4])
            assert set(partitions[kept.ids].tolist()) <= {1, 4}
            whole = store.search(graph, vector, 10, None, [1, 4])
            truth, _ = exact_top_k(data, query[None, :], 10)
            assert len(set(whole.ids.tolist()) & set(truth[0].tolist())) >= 9
    finally:
        store.close()


class _RecallTable:
    """A tuner whose recall at (hnsw_ef, depth) is read from a table: deeper or a larger
    hnsw_ef never lowers it."""

    def __init__(self, table: dict[tuple[int | None, int], float]) -> None:
        self.table = table
        self.asked: list[tuple[int | None, int]] = []

    def recall(self, layout: object, ef: int | None, depth: int) -> float:
        self.asked.append((ef, depth))
        return self.table.get((ef, depth), 0.0)


def _table(needed: dict[int | None, int]) -> dict[tuple[int | None, int], float]:
    """Recall 0.96 from the depth each hnsw_ef needs, 0.5 below it."""
    return {(ef, d): 0.96 if d >= need else 0.5 for ef, need in needed.items() for d in DEPTHS}


DEPTHS = list(range(1, 31))


def _routed_layout(indexed: int) -> Layout:
    return Layout(
        name="library centroid/home",
        store=None,  # type: ignore[arg-type]
        unit_sizes=np.ones(30, dtype=np.int64),
        shard_sizes=np.ones(3, dtype=np.int64),
        shard_collection=np.arange(3),
        built=Built(np.ones(3, dtype=np.int64), 0.0, 0.0, indexed),
        plan=lambda query, depth: [],
        depths=DEPTHS,
        depth_name="nprobe",
    )


def test_the_library_is_tuned_by_the_cheapest_pair_of_hnsw_ef_and_depth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With graph-searched shards, each hnsw_ef gets its smallest depth reaching the target and
    the pair with the least probed CPU wins, not the default hnsw_ef nor the shallowest probe."""
    needed: dict[int | None, int] = {ef: max(2, 26 - ef // 8) for ef in EF_CANDIDATES}
    needed[None] = 12
    cost = {ef: abs((ef or 100) - 48) + 1 for ef in needed}  # cheapest in the middle
    probed: list[tuple[int | None, int]] = []

    def probe(layout: Layout, tuner: object, ef: int | None, depth: int) -> float:
        probed.append((ef, depth))
        assert depth == needed[ef], "only the smallest depth reaching the target is probed"
        return float(cost[ef])

    monkeypatch.setattr(bench_fleet_cost, "probe_cpu", probe)
    layout = _routed_layout(indexed=100)
    tune(layout, _RecallTable(_table(needed)))  # type: ignore[arg-type]
    cheapest = min(probed, key=lambda pair: cost[pair[0]])
    assert (layout.ef, layout.depth) == cheapest == (48, needed[48])
    assert layout.ef is not None
    assert layout.tuned_recall >= 0.95
    assert (None, 12) in probed  # the engine's default was a candidate too


def test_a_library_on_scanned_shards_is_tuned_by_depth_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hnsw_ef changes nothing on scanned shards: no hnsw_ef is tried or probed."""
    monkeypatch.setattr(bench_fleet_cost, "probe_cpu", pytest.fail)
    tuner = _RecallTable(_table({None: 7}))
    layout = _routed_layout(indexed=0)
    tune(layout, tuner)  # type: ignore[arg-type]
    assert (layout.ef, layout.depth) == (None, 7)
    assert {ef for ef, _ in tuner.asked} == {None}
