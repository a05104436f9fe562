"""Labeling over id ranges, on both adapters: every point once, resumable, concurrent-safe.

The labels are compared with :func:`librarian.core.discovery.assign` computed
here over vectors read straight from the collection.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY, TOMBSTONE_KEY, VERSION_KEY
from librarian.core.discovery import assign, discover
from librarian.core.unrouted import domain_for_unrouted
from librarian.services.labeling_job import (
    LabelingProgressStore,
    NoLabelingPlan,
    RangeProgress,
    WorkerInterrupted,
    label_range,
    plan_labeling,
)
from librarian.storage.port import CollectionSpec, PointId, PointRecord, QdrantPort

N = 900
DIM = 16


def _ids(kind: str) -> list[PointId]:
    if kind == "int":
        return [i * 7919 for i in range(N)]
    if kind == "uuid":
        return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")) for i in range(N)]
    return [i if i % 2 else str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")) for i in range(N)]


def _fill(port: QdrantPort, kind: str) -> tuple[list[PointId], np.ndarray]:
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((4, DIM))
    vectors = (centers[rng.integers(0, 4, N)] + 0.3 * rng.standard_normal((N, DIM))).astype(
        np.float32
    )
    ids = _ids(kind)
    port.create_collection("docs", CollectionSpec(vector_size=DIM))
    port.upsert(
        "docs",
        [
            PointRecord(id=i, vector=[float(x) for x in v], payload={"n": k})
            for k, (i, v) in enumerate(zip(ids, vectors, strict=True))
        ],
    )
    return ids, vectors


def _labels(port: QdrantPort) -> dict[PointId, Any]:
    labels: dict[PointId, Any] = {}
    offset = None
    while True:
        page, offset = port.scroll(
            "docs", limit=500, offset=offset, with_vectors=False, with_payload=True
        )
        labels.update({p.id: p.payload for p in page})
        if offset is None:
            return labels


def _expected(port: QdrantPort, plan_domains: Sequence[Any]) -> dict[PointId, str]:
    """Each point's domain by assign() over the vectors as the collection holds them."""
    points: list[PointRecord] = []
    offset = None
    while True:
        page, offset = port.scroll("docs", limit=500, offset=offset, with_vectors=True)
        points += page
        if offset is None:
            break
    nearest = assign(np.asarray([p.dense() for p in points], dtype=np.float32), plan_domains)
    return {p.id: plan_domains[int(i)].id for p, i in zip(points, nearest, strict=True)}


class _Counting:
    """A port that counts the ids it is asked to label and can act before each label write."""

    def __init__(self, port: QdrantPort, before_write: Any = None) -> None:
        self._port = port
        self.labelled: list[PointId] = []
        self.before_write = before_write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)

    def set_payload(self, collection: str, payload: Any, ids: Any = None, **kwargs: Any) -> None:
        if self.before_write is not None:
            self.before_write(list(ids or ()))
        self.labelled += list(ids or ())
        self._port.set_payload(collection, payload, ids, **kwargs)


@pytest.mark.parametrize("kind", ["int", "uuid", "mixed"])
def test_workers_label_every_point_once_as_assign_says(port: QdrantPort, kind: str) -> None:
    ids, vectors = _fill(port, kind)
    domains = discover(vectors[:400], strategy="kmeans", seed=0, min_domains=3).domains
    plan = plan_labeling(port, "docs", domains, name="team/map@v1", version=1, workers=4)
    assert len(plan.ranges) == 4
    assert plan.total == N
    store = LabelingProgressStore(port)
    store.save_plan(plan)
    loaded = store.load_plan("team/map@v1")
    assert loaded.ranges == plan.ranges
    counting = _Counting(port)
    with ThreadPoolExecutor(4) as pool:
        ends = list(
            pool.map(
                lambda i: label_range(counting, loaded, i, store=store, batch_size=64),  # type: ignore[arg-type]
                range(4),
            )
        )
    assert all(end.done for end in ends)
    assert sum(end.labeled for end in ends) == N
    assert sorted(map(str, counting.labelled)) == sorted(map(str, ids))  # each id written once
    labels = _labels(port)
    expected = _expected(port, domains)
    assert {i: p[LABEL_KEY] for i, p in labels.items()} == expected
    assert all(p[VERSION_KEY] == 1 for p in labels.values())
    assert store.progress("team/map@v1", 4) == ends
    # a finished worker run again does nothing
    again = _Counting(port)
    assert label_range(again, loaded, 2, store=store).done  # type: ignore[arg-type]
    assert again.labelled == []


def test_a_killed_worker_resumes_from_its_last_page(port: QdrantPort) -> None:
    _, vectors = _fill(port, "mixed")
    domains = discover(vectors[:400], strategy="kmeans", seed=0, min_domains=3).domains
    plan = plan_labeling(port, "docs", domains, name="kill@v1", version=1, workers=1)
    store = LabelingProgressStore(port)
    store.save_plan(plan)

    def kill_after_three_pages(progress: RangeProgress) -> None:
        if progress.scanned >= 300:
            raise WorkerInterrupted("killed")

    first = _Counting(port)
    with pytest.raises(WorkerInterrupted):
        label_range(first, plan, 0, store=store, batch_size=100, should_stop=kill_after_three_pages)  # type: ignore[arg-type]
    recorded = store.load_range("kill@v1", 0)
    assert recorded is not None
    assert recorded.scanned == 300
    assert not recorded.done
    second = _Counting(port)
    end = label_range(second, plan, 0, store=store, batch_size=100)  # type: ignore[arg-type]
    assert end.done
    assert end.labeled == N
    assert end.attempts == 2
    assert len(second.labelled) == N - 300  # the rest only, nothing relabelled
    assert not set(map(str, first.labelled)) & set(map(str, second.labelled))
    labels = _labels(port)
    assert len(labels) == N
    assert {i: p[LABEL_KEY] for i, p in labels.items()} == _expected(port, domains)


def test_a_point_rewritten_or_deleted_meanwhile_keeps_what_the_router_wrote(
    port: QdrantPort,
) -> None:
    ids, vectors = _fill(port, "int")
    domains = discover(vectors[:400], strategy="kmeans", seed=0, min_domains=3).domains
    rewritten, deleted, tombstoned = ids[10], ids[11], ids[12]
    port.upsert(
        "docs",
        [
            PointRecord(
                tombstoned,
                [float(x) for x in vectors[12]],
                {TOMBSTONE_KEY: True, POINT_VERSION_KEY: 5, LABEL_KEY: domains[0].id},
            )
        ],
    )
    plan = plan_labeling(port, "docs", domains, name="race@v1", version=1, workers=2)
    store = LabelingProgressStore(port)
    store.save_plan(plan)
    done: set[str] = set()

    def router_writes(batch: list[PointId]) -> None:
        if rewritten in batch and "write" not in done:  # a newer version with its own label
            done.add("write")
            port.upsert(
                "docs",
                [
                    PointRecord(
                        rewritten,
                        [float(x) for x in vectors[10]],
                        {"n": -1, POINT_VERSION_KEY: 10**12, LABEL_KEY: "routers-choice"},
                    )
                ],
            )
        if deleted in batch and "delete" not in done:
            done.add("delete")
            port.delete_points("docs", ids=[deleted])

    racing = _Counting(port, before_write=router_writes)
    for index in range(len(plan.ranges)):
        label_range(racing, plan, index, store=store, batch_size=50)  # type: ignore[arg-type]
    assert done == {"write", "delete"}
    labels = _labels(port)
    assert deleted not in labels  # not brought back
    assert labels[rewritten] == {"n": -1, POINT_VERSION_KEY: 10**12, LABEL_KEY: "routers-choice"}
    assert labels[tombstoned][TOMBSTONE_KEY] is True
    assert labels[tombstoned][POINT_VERSION_KEY] == 5
    progress = [store.load_range("race@v1", i) for i in range(len(plan.ranges))]
    assert sum(p.skipped for p in progress if p) == 2  # rewritten and deleted
    assert sum(p.labeled for p in progress if p) == N - 2
    assert (
        port.count(
            "docs",
            count_filter=models.Filter(
                must=[models.FieldCondition(key=VERSION_KEY, match=models.MatchValue(value=1))]
            ),
        )
        == N - 2
    )


def test_points_without_the_vector_go_where_their_id_hashes(port: QdrantPort) -> None:
    ids, vectors = _fill(port, "uuid")
    domains = discover(vectors[:400], strategy="kmeans", seed=0, min_domains=3).domains
    port.delete_vectors("docs", [""], ids=ids[:5])
    plan = plan_labeling(port, "docs", domains, name="bare@v1", version=1, workers=2)
    store = LabelingProgressStore(port)
    store.save_plan(plan)
    for index in range(len(plan.ranges)):
        label_range(port, plan, index, store=store)
    labels = _labels(port)
    for point_id in ids[:5]:
        assert labels[point_id][LABEL_KEY] == domain_for_unrouted(point_id, [d.id for d in domains])


def test_a_worker_without_a_plan_says_so(port: QdrantPort) -> None:
    with pytest.raises(NoLabelingPlan, match="no labeling plan named 'absent@v1'"):
        LabelingProgressStore(port).load_plan("absent@v1")
