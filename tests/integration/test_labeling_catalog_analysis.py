"""Sampling, labeling (resumable), catalog and the analysis glue, on both adapters."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, VERSION_KEY
from librarian.core.discovery import DiscoveryBounds, discover, partition_count
from librarian.demo.data import load_demo_data
from librarian.router.loader import catalog_loader
from librarian.services.analysis import analyze_collection, publish_domains
from librarian.services.catalog import (
    delete_catalog,
    labels_pending,
    mark_labelled,
    read_catalog,
    read_partitions,
    read_previous,
    write_catalog,
)
from librarian.services.labeling import label_points, remove_labels
from librarian.services.sampling import EmptySource, sample_points
from librarian.storage.errors import CollectionNotFound
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

N = 600


@pytest.fixture
def packages(port: QdrantPort) -> QdrantPort:
    data = load_demo_data(limit=N)
    port.create_collection("packages", CollectionSpec(vector_size=data.vectors.shape[1]))
    port.upsert(
        "packages",
        [
            PointRecord(
                id=i,
                vector=[float(x) for x in data.vectors[i]],
                payload={"text": data.texts[i], "package": str(data.records[i]["package"])},
            )
            for i in range(N)
        ],
    )
    return port


def _labelled(port: QdrantPort, version: int) -> int:
    return port.count(
        "packages",
        count_filter=models.Filter(
            must=[models.FieldCondition(key=VERSION_KEY, match=models.MatchValue(value=version))]
        ),
    )


def test_sample_points_gives_vectors_and_texts(packages: QdrantPort) -> None:
    sample = sample_points(packages, "packages", 200)
    assert sample.vectors.shape == (200, 384)
    assert sample.vectors.dtype == np.float32
    assert sample.texts is not None
    assert len(sample.texts) == 200
    assert all(sample.texts)


def test_the_whole_collection_sampled_twice_gives_the_same_input(packages: QdrantPort) -> None:
    first, second = (sample_points(packages, "packages", 10 * N) for _ in range(2))
    assert first.ids == second.ids == sorted(first.ids)  # same domains from the same points
    assert np.array_equal(first.vectors, second.vectors)


def test_sampling_an_empty_or_missing_source_is_a_clear_error(port: QdrantPort) -> None:
    port.create_collection("empty", CollectionSpec(vector_size=4))
    with pytest.raises(EmptySource, match="collection 'empty': the source collection is empty"):
        sample_points(port, "empty", 10)
    with pytest.raises(CollectionNotFound, match="collection 'absent'"):
        sample_points(port, "absent", 10)


def test_labeling_labels_everything_and_resumes_after_a_crash(packages: QdrantPort) -> None:
    result = discover(sample_points(packages, "packages", N).vectors, seed=0)

    class Crash(RuntimeError):
        pass

    calls = {"n": 0}
    original = packages.set_payload

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise Crash("process died")
        return original(*args, **kwargs)

    packages.set_payload = flaky  # type: ignore[method-assign]
    with pytest.raises(Crash):
        label_points(packages, "packages", result.domains, version=1, batch_size=100)
    partial = _labelled(packages, 1)
    assert 0 < partial < N
    packages.set_payload = original  # type: ignore[method-assign]
    progress: list[tuple[int, int]] = []
    report = label_points(
        packages,
        "packages",
        result.domains,
        version=1,
        batch_size=100,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert report.complete
    assert report.labeled == N
    assert report.total == N
    assert progress[0] == (partial, N)
    assert progress[-1] == (N, N)
    assert sum(report.per_domain.values()) == N - partial  # only the rest was labelled
    assert _labelled(packages, 1) == N
    again = label_points(packages, "packages", result.domains, version=1)
    assert again.per_domain == {}  # idempotent: nothing left to do
    by_domain = sum(
        packages.count(
            "packages",
            count_filter=models.Filter(
                must=[models.FieldCondition(key=LABEL_KEY, match=models.MatchValue(value=d.id))]
            ),
        )
        for d in result.domains
    )
    assert by_domain == N
    remove_labels(packages, "packages")
    assert _labelled(packages, 1) == 0


def test_catalog_round_trip_and_stale_entries(port: QdrantPort) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    result = discover(vectors, n_domains=4, min_domains=1)
    write_catalog(
        port,
        "catalog",
        "team-a",
        result.domains,
        1,
        partitions=result.partitions,
        source=("general", "docs"),
    )
    write_catalog(port, "catalog", "team-b", result.domains[:1], 1)
    entries = read_catalog(port, "catalog", owner="team-a")
    assert sorted(e.domain_id for e in entries) == sorted(d.id for d in result.domains)
    back = {e.domain_id: e.to_domain() for e in entries}
    for domain in result.domains:
        np.testing.assert_allclose(back[domain.id].centroid, domain.centroid, atol=1e-6)
        assert back[domain.id].keywords == domain.keywords
    assert entries[0].source_collection == "docs"
    write_catalog(port, "catalog", "team-a", result.domains[:2], 2)  # two domains vanished
    assert len(read_catalog(port, "catalog", owner="team-a")) == 2
    assert len(read_catalog(port, "catalog")) == 3
    delete_catalog(port, "catalog", "team-a")
    assert read_catalog(port, "catalog", owner="team-a") == []
    assert port.collection_exists("catalog")  # team-b still uses it
    delete_catalog(port, "catalog", "team-b")
    assert not port.collection_exists("catalog")
    assert read_catalog(port, "catalog") == []


def test_a_version_whose_labels_are_being_written_is_marked_until_they_are(
    port: QdrantPort,
) -> None:
    """Routers read labelled slices of the source: a catalog published before a labeling
    Job wrote its labels says so, and a router's loader waits it out."""
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    result = discover(vectors, n_domains=3, min_domains=1)
    fleet = Fleet.of_ports({"general": port})
    load = catalog_loader(
        fleet, name="docs", source=("general", "docs"), catalog=("general", "catalog"), owner="a"
    )
    write_catalog(port, "catalog", "a", result.domains, 1, partitions=result.partitions)
    assert not labels_pending(port, "catalog", "a")  # labelled before it was published
    assert asyncio.run(load()) is not None
    write_catalog(
        port, "catalog", "a", result.domains, 2, partitions=result.partitions, labelled=False
    )
    write_catalog(port, "catalog", "b", result.domains[:1], 2)
    assert labels_pending(port, "catalog", "a")
    assert not labels_pending(port, "catalog", "b")
    assert asyncio.run(load()) is None  # keep serving what is loaded
    # the marker is not a domain nor a partition
    assert len(read_catalog(port, "catalog", owner="a")) == len(result.domains)
    assert len(read_partitions(port, "catalog", "a")) == len(result.partitions)
    mark_labelled(port, "catalog", "a", 1)  # an older version's Job: not this one
    assert labels_pending(port, "catalog", "a")
    mark_labelled(port, "catalog", "a", 2)
    assert not labels_pending(port, "catalog", "a")
    loaded = asyncio.run(load())
    assert loaded is not None
    assert {r.domain_id for r in loaded.domains} == {d.id for d in result.domains}
    write_catalog(port, "catalog", "a", result.domains, 3, labelled=False)
    write_catalog(port, "catalog", "a", result.domains, 4)  # a newer analysis labelled in place
    assert not labels_pending(port, "catalog", "a")


def test_analyze_and_publish(packages: QdrantPort) -> None:
    stages: list[str] = []
    outcome = analyze_collection(
        packages, "packages", sample_size=400, seed=0, on_stage=stages.append
    )
    assert stages == ["sampling", "discovering"]
    assert outcome.sampled == 400
    assert outcome.dimension == 384
    assert outcome.source_points == N
    assert len(outcome.result.domains) >= 2
    report = publish_domains(packages, "packages", packages, "catalog", "dm", outcome.result, 1)
    assert report is not None
    assert report.labeled == N
    assert len(read_catalog(packages, "catalog", owner="dm")) == len(outcome.result.domains)
    previous = [e.to_domain() for e in read_catalog(packages, "catalog", owner="dm")]
    again = analyze_collection(packages, "packages", sample_size=400, seed=1, previous=previous)
    kept = {d.id for d in again.result.domains} & {d.id for d in previous}
    assert len(kept) >= len(previous) // 2  # re-analysis keeps ids where domains match


def test_a_re_analysis_keeps_the_partition_ids_the_catalog_holds(packages: QdrantPort) -> None:
    """Partitions are the shard keys of specialized homes: a re-analysis takes the last
    published ones back from the catalog so that matching cells keep their ids."""
    bounds = {"n_domains": 3, "min_partition_size": 60}
    first = analyze_collection(packages, "packages", sample_size=N, seed=0, thresholds=bounds)
    write_catalog(
        packages, "catalog", "dm", first.result.domains, 1, partitions=first.result.partitions
    )
    domains, partitions = read_previous(packages, "catalog", "dm")
    assert [d.id for d in domains] == sorted(d.id for d in first.result.domains)
    assert {p.id for p in partitions} == {p.id for p in first.result.partitions}
    by_id = {p.id: p for p in first.result.partitions}
    for partition in partitions:  # each points at its own domain in the list it came with
        assert domains[partition.domain].id == first.result.domains[by_id[partition.id].domain].id
        np.testing.assert_allclose(partition.centroid, by_id[partition.id].centroid, atol=1e-6)
    packages.delete_points("packages", ids=list(range(N - 30, N)))  # the data moved a little

    def again(**previous: object) -> set[str]:
        outcome = analyze_collection(
            packages, "packages", sample_size=N, seed=0, thresholds=bounds, **previous
        )
        return {p.id for p in outcome.result.partitions}

    old_ids = {p.id for p in partitions}
    kept = again(previous=domains, previous_partitions=partitions) & old_ids
    assert not again(previous=domains) & old_ids  # without them every cell's id is new
    assert len(kept) >= len(old_ids) // 2


def test_partition_count_follows_the_collection_not_the_sample(packages: QdrantPort) -> None:
    bounds = {"min_partition_size": 20, "n_domains": 2}
    outcome = analyze_collection(packages, "packages", sample_size=400, seed=0, thresholds=bounds)
    of_sample = partition_count(400, DiscoveryBounds(**bounds))
    of_collection = partition_count(400, DiscoveryBounds(**bounds, population=N))
    assert (of_sample, of_collection) == (20, 30)  # 400 vs 600 points, 20 each
    assert 0.9 * of_collection <= len(outcome.result.partitions) <= of_collection
