"""Routing partitions: their count follows the data's size and the bounds, their ids are
deterministic and stable across re-analysis, and every point sits in a partition of its
own domain."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from librarian.core.discovery import (
    DiscoveryBounds,
    DiscoveryError,
    DiscoveryResult,
    _apportion,
    discover,
    partition_count,
)

from .conftest import make_blobs


def _owned_by_own_domain(result: DiscoveryResult) -> None:
    owner = np.array([p.domain for p in result.partitions])
    np.testing.assert_array_equal(owner[result.partition_labels], result.labels)
    sizes = np.bincount(result.partition_labels, minlength=len(result.partitions))
    np.testing.assert_array_equal(sizes, [p.size for p in result.partitions])
    assert sizes.min() >= 1


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        (1_000, 10),  # 4·sqrt = 126, but at least 100 points each
        (10_000, 100),  # 4·sqrt = 400, but at least 100 points each
        (100_000, 1000),  # 4·sqrt = 1265, but at least 100 points each
        (250_000, 2000),  # 4·sqrt(n), as IVF indexes use
        (400_000, 2530),
        (4_000_000, 4096),  # capped by max_partitions
    ],
)
def test_partition_count_follows_the_data_size(points: int, expected: int) -> None:
    assert partition_count(points, DiscoveryBounds()) == expected


def test_partition_count_follows_the_bounds() -> None:
    assert partition_count(400_000, DiscoveryBounds(max_partitions=500)) == 500
    assert partition_count(400_000, DiscoveryBounds(min_partition_size=1_000)) == 400
    assert partition_count(400_000, DiscoveryBounds(partitions=77)) == 77
    assert partition_count(50, DiscoveryBounds(partitions=77)) == 50  # never more than rows
    assert partition_count(1_000, DiscoveryBounds(), domains=12) == 12  # one per domain at least
    # A sample of a bigger collection: the count follows the collection, within what the
    # sample can fit (10 rows per partition).
    assert partition_count(20_000, DiscoveryBounds(population=1_000_000)) == 2000
    assert partition_count(100_000, DiscoveryBounds(population=1_000_000)) == 4000


def test_bad_partition_bounds_are_refused() -> None:
    vectors, _, _ = make_blobs(centres=2, per=50)
    for bad in ({"partitions": 0}, {"max_partitions": 0}, {"min_partition_size": 0}):
        with pytest.raises(DiscoveryError, match="must be >= 1"):
            discover(vectors, **bad)
    with pytest.raises(DiscoveryError, match="population must be >= 1"):
        discover(vectors, population=0)


def test_apportion_splits_by_size_with_one_at_least_each() -> None:
    sizes = np.array([600, 300, 90, 10])
    counts = _apportion(20, sizes)
    assert counts.sum() == 20
    assert counts.tolist() == [12, 6, 1, 1]
    assert _apportion(3, np.array([5, 5, 5, 5])).tolist() == [1, 1, 1, 1]  # one each at least
    assert _apportion(10, np.array([2, 100])).tolist() == [1, 9]
    assert _apportion(50, np.array([2, 3])).tolist() == [2, 3]  # at most one point each


@pytest.mark.parametrize("points_per_blob", [400, 1_600])
def test_discovered_partitions_follow_the_data_size(points_per_blob: int) -> None:
    vectors, _, _ = make_blobs(centres=4, per=points_per_blob, dim=16)
    result = discover(vectors, seed=0, n_domains=4, min_partition_size=5)
    expected = partition_count(len(vectors), DiscoveryBounds(min_partition_size=5))
    assert expected == round(4 * np.sqrt(len(vectors)))
    # k-means may leave a cell empty, which is dropped; never more than asked for
    assert 0.9 * expected <= len(result.partitions) <= expected
    _owned_by_own_domain(result)


def test_population_sets_the_count_of_a_sample() -> None:
    vectors, _, _ = make_blobs(centres=3, per=300, dim=16)
    alone = discover(vectors, seed=0)
    sampled = discover(vectors, seed=0, population=1_000_000)
    assert len(alone.partitions) == 9  # 900 points, 100 each at least
    assert 0.9 * 90 <= len(sampled.partitions) <= 90  # 10 sample rows each
    _owned_by_own_domain(sampled)


def test_forced_partitions_and_caps_reach_discovery() -> None:
    vectors, _, _ = make_blobs(centres=3, per=200, dim=16)
    forced = discover(vectors, seed=0, n_domains=3, partitions=12)
    assert len(forced.partitions) == 12
    capped = discover(vectors, seed=0, n_domains=3, max_partitions=2)
    assert len(capped.partitions) == len(capped.domains) == 3  # never fewer than one each
    _owned_by_own_domain(forced)
    _owned_by_own_domain(capped)


@pytest.mark.parametrize("strategy", ["hybrid", "kmeans", "dbscan", "hierarchical"])
def test_every_point_is_in_a_partition_of_its_own_domain(strategy: str) -> None:
    vectors, _, _ = make_blobs(centres=5, per=150, dim=16, seed=3)
    result = discover(vectors, strategy=strategy, seed=0, min_partition_size=15)
    assert len(result.partitions) > len(result.domains)
    _owned_by_own_domain(result)


def test_partition_ids_are_deterministic() -> None:
    vectors, _, _ = make_blobs(centres=3, per=300, dim=16)
    first = discover(vectors, seed=5, min_partition_size=30)
    again = discover(vectors, seed=5, min_partition_size=30)
    assert [p.id for p in first.partitions] == [p.id for p in again.partitions]
    np.testing.assert_array_equal(first.partition_labels, again.partition_labels)
    ids = [p.id for p in first.partitions]
    assert len(set(ids)) == len(ids)
    for partition in first.partitions:  # readable: the domain's id, then the cell's
        assert partition.id.startswith(first.domains[partition.domain].id + "-p")


def test_partition_ids_stay_stable_across_reanalysis() -> None:
    vectors, _, _ = make_blobs(centres=3, per=300, dim=16)
    first = discover(vectors, seed=0, min_partition_size=30)
    rng = np.random.default_rng(1)
    resampled = vectors[rng.permutation(len(vectors))[:800]]  # another sample, another seed
    fresh = discover(resampled, seed=1, min_partition_size=30)
    again = discover(
        resampled,
        seed=1,
        min_partition_size=30,
        previous=first.domains,
        previous_partitions=first.partitions,
    )
    old = {p.id for p in first.partitions}
    assert not old & {p.id for p in fresh.partitions}  # another seed alone: other ids
    kept = [p.id for p in again.partitions if p.id in old]
    assert len(kept) >= 0.8 * len(again.partitions)
    ids = [p.id for p in again.partitions]
    assert len(set(ids)) == len(ids)


def test_an_unmatched_partition_never_takes_an_old_id() -> None:
    vectors, _, _ = make_blobs(centres=3, per=300, dim=16)
    first = discover(vectors, seed=0, n_domains=3, min_partition_size=30)
    # The same cells, but the previous ones filed under other domains: none can keep its
    # id, and the content ids they would get (same seed, same centroids) are taken.
    misfiled = [replace(p, domain=(p.domain + 1) % 3) for p in first.partitions]
    again = discover(
        vectors,
        seed=0,
        n_domains=3,
        min_partition_size=30,
        previous=first.domains,
        previous_partitions=misfiled,
    )
    assert [d.id for d in again.domains] == [d.id for d in first.domains]
    old = {p.id for p in first.partitions}
    ids = [p.id for p in again.partitions]
    assert not old & set(ids)
    assert len(set(ids)) == len(ids) == len(first.partitions)
