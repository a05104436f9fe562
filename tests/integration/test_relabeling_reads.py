"""Reads while a re-analysis's labels are written: answers stay those of one collection.

Routers keep serving the previous snapshot of a library until the labeling Job of a
new analysis has written every label (the catalog holds a marker meanwhile). A point
the Job has already relabelled into a domain id the served snapshot does not have is
in none of its labelled slices: without care a count, a scroll, a retrieve by id or a
search answers 200 without it. The labeling Job here is paused after each page it
writes (an injected barrier), and at every pause the router's answers are compared
with qdrant-client's local mode holding the same points in one collection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from librarian.contracts.payload import LABEL_KEY, VERSION_KEY
from librarian.core.discovery import discover
from librarian.router.loader import catalog_loader
from librarian.services.catalog import labels_pending, mark_labelled, write_catalog
from librarian.services.labeling_job import RangeProgress, label_range, plan_labeling
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, QdrantPort

from .router_support import DIM, RouterThread, client_of, library_points, make_state

pytestmark = pytest.mark.timeout(300)

PAGE = 100


class _Library:
    """What a router state is made for: the clusters and the loaded definition."""

    def __init__(self, fleet: Fleet, definition: object) -> None:
        self.fleet = fleet
        self.definition = definition


@pytest.fixture
def source(tmp_path: Path) -> Iterator[QdrantPort]:
    port = EmbeddedQdrant("general", tmp_path / "general")
    yield port
    port.close()


def _labels(port: QdrantPort) -> dict[int, str]:
    records, _ = port.scroll("docs", limit=10_000, with_payload=[LABEL_KEY], with_vectors=False)
    return {int(r.id): str(r.payload.get(LABEL_KEY)) for r in records}


def _same_answers(client: QdrantClient, reference: QdrantClient, queries: np.ndarray) -> None:
    assert client.count("docs").count == reference.count("docs").count
    got, _ = client.scroll("docs", limit=10_000)
    want, _ = reference.scroll("docs", limit=10_000)
    assert sorted(int(r.id) for r in got) == sorted(int(r.id) for r in want)
    ids = [int(r.id) for r in want]
    held = {int(r.id): r.payload for r in client.retrieve("docs", ids)}
    assert held == {int(r.id): r.payload for r in reference.retrieve("docs", ids)}
    for query in queries:
        answer = client.query_points("docs", query=list(query), limit=10).points
        expected = reference.query_points("docs", query=list(query), limit=10).points
        assert [int(p.id) for p in answer] == [int(p.id) for p in expected]
        np.testing.assert_allclose(
            [p.score for p in answer], [p.score for p in expected], atol=1e-4
        )


def test_router_answers_equal_one_collections_while_a_labeling_job_is_paused(
    source: QdrantPort,
) -> None:
    points, _, _ = library_points(600, seed=4)
    source.create_collection("docs", CollectionSpec(vector_size=DIM))
    source.upsert("docs", points)
    reference = QdrantClient(":memory:")
    reference.create_collection(
        "docs", models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    reference.upsert(
        "docs",
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points],  # type: ignore[arg-type]
    )
    vectors = np.asarray([p.vector for p in points], dtype=np.float32)
    first = discover(vectors, n_domains=3, min_domains=1).domains
    # the re-analysis finds other domains, under ids the first snapshot does not have
    second = [replace(d, id=f"re{k}") for k, d in enumerate(discover(vectors, n_domains=4).domains)]
    assert not {d.id for d in first} & {d.id for d in second}
    for version, domains in ((1, first),):
        plan = plan_labeling(source, "docs", domains, name="first", version=version, workers=1)
        label_range(source, plan, 0, batch_size=PAGE)
        write_catalog(source, "catalog", "docs", domains, version)
    fleet = Fleet.of_ports({"general": source})
    load = catalog_loader(
        fleet, name="docs", source=("general", "docs"), catalog=("general", "catalog"), owner="docs"
    )
    definition = asyncio.run(load())
    assert definition is not None
    state = make_state(_Library(fleet, definition))  # type: ignore[arg-type]
    state.config.loader = load
    queries = vectors[::97] + 0.01

    paused = threading.Event()
    resume = threading.Event()
    pages: list[int] = []

    def pause(progress: RangeProgress) -> None:
        if progress.scanned:  # a page is written: the test reads through the router now
            pages.append(progress.scanned)
            resume.clear()
            paused.set()
            assert resume.wait(60), "the test never let the labeling go on"

    with RouterThread(state) as router, closing(client_of(router)) as client:
        _same_answers(client, reference, queries)
        write_catalog(source, "catalog", "docs", second, 2, labelled=False)
        plan = plan_labeling(source, "docs", second, name="second", version=2, workers=1)
        job = threading.Thread(
            target=label_range,
            args=(source, plan, 0),
            kwargs={"batch_size": PAGE, "should_stop": pause},
        )
        job.start()
        try:
            while job.is_alive() or paused.is_set():
                if not paused.wait(1):
                    continue
                paused.clear()
                relabelled = sum(v.startswith("re") for v in _labels(source).values())
                assert 0 < relabelled < len(points) or len(pages) > 1
                assert (
                    asyncio.run_coroutine_threadsafe(state.reload(), router.loop).result(60)
                    is False
                )
                _same_answers(client, reference, queries)
                resume.set()
        finally:
            resume.set()
            job.join(60)
        assert len(pages) >= 3  # paused part-way, several times
        assert labels_pending(source, "catalog", "docs")
        _same_answers(client, reference, queries)  # every point relabelled, the old snapshot
        mark_labelled(source, "catalog", "docs", 2)
        assert asyncio.run_coroutine_threadsafe(state.reload(), router.loop).result(60)
        assert {r.domain_id for r in state.library.definition.domains} == {d.id for d in second}  # type: ignore[union-attr]
        _same_answers(client, reference, queries)
    assert set(_labels(source).values()) <= {d.id for d in second}
    assert all(
        r.payload.get(VERSION_KEY) == 2
        for r in source.scroll("docs", limit=10_000, with_payload=[VERSION_KEY])[0]
    )
