"""The router over a home sharded by partition: searches route over partitions and ask the home
once with the chosen shard keys, writes put each point under its partition's key (one copy when
its vector moves it), and predict and status name the partitions.

Answers are compared with qdrant-client's local mode holding the same points in one collection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from librarian.contracts.payload import TOMBSTONE_KEY
from librarian.router.library import DomainRoute, LibraryDefinition, PartitionRef
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, QdrantPort

from .router_support import DIM, Library, RouterThread, client_of, library_points, make_state

pytestmark = pytest.mark.timeout(300)

PARTS = 4


class _Recording:
    """A port that records the shard keys of every universal query (the engine answers)."""

    def __init__(self, inner: QdrantPort) -> None:
        self._inner = inner
        self.asked: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def query_points(self, collection: str, request: models.QueryRequest, **kw: Any) -> Any:
        with self._lock:
            self.asked.append((collection, request.shard_key))
        return self._inner.query_points(collection, request, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _partition_centres(vectors: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return vectors[rng.choice(len(vectors), PARTS, replace=False)]


@pytest.fixture
def sharded(tmp_path: Path) -> Iterator[tuple[Library, _Recording, QdrantClient, np.ndarray]]:
    """Domains 0/1 in their own collections on east; domain 2 on west in a home with one
    shard key per partition (the points placed by nearest partition centroid)."""
    points, clouds, centres = library_points()
    east = EmbeddedQdrant("east", tmp_path / "east")
    west = EmbeddedQdrant("west", tmp_path / "west")
    reference = QdrantClient(":memory:")
    reference.create_collection(
        "all", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    reference.upsert(
        "all",
        [models.PointStruct(id=p.id, vector=p.vector or [], payload=p.payload) for p in points],
    )
    routes = []
    in_two = [p for p, c in zip(points, clouds, strict=True) if c == 2]
    cells = _partition_centres(np.asarray([p.vector for p in in_two]), seed=3)
    keys = tuple(f"d2-p{i}" for i in range(PARTS))
    for d in range(3):
        mine = [p for p, c in zip(points, clouds, strict=True) if c == d]
        collection = f"library-d{d}"
        partitions: tuple[PartitionRef, ...] = ()
        if d < 2:
            east.create_collection(collection, CollectionSpec(vector_size=DIM))
            east.upsert(collection, mine)
        else:
            west.create_collection(collection, CollectionSpec(vector_size=DIM, shard_keys=keys))
            nearest = np.argmax(np.asarray([p.vector for p in mine]) @ cells.T, axis=1)
            for i, key in enumerate(keys):
                west.upsert(
                    collection,
                    [p for p, n in zip(mine, nearest, strict=True) if n == i],
                    shard_key=key,
                )
            partitions = tuple(
                PartitionRef(key, tuple(float(x) for x in cell))
                for key, cell in zip(keys, cells, strict=True)
            )
        routes.append(
            DomainRoute(
                domain_id=f"d{d}",
                name=f"domain {d}",
                cluster="east" if d < 2 else "west",
                collection=collection,
                centroid=tuple(float(x) for x in centres[d]),
                size=len(mine),
                specialized=True,
                versioned=True,
                partitions=partitions,
            )
        )
    definition = LibraryDefinition(
        name="library", domains=tuple(routes), default_cluster="east", version="v1"
    )
    recording = _Recording(west)
    fleet = Fleet.of_ports({"east": east, "west": recording})  # type: ignore[dict-item]
    try:
        yield Library(fleet, definition, points), recording, reference, cells
    finally:
        fleet.close()
        reference.close()


def west_count(built: Library, key: str) -> int:
    return built.fleet.get("west").count("library-d2", shard_keys=[key])


def _keys_of(west: QdrantPort, point_id: int) -> list[str]:
    return [
        key
        for key in (f"d2-p{i}" for i in range(PARTS))
        if west.retrieve("library-d2", [point_id], shard_keys=[key], with_vectors=False)
    ]


def test_a_search_over_every_partition_answers_like_one_collection(sharded: Any) -> None:
    built, recording, reference, cells = sharded
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        for i in range(4):
            vector = [float(x) for x in cells[i % PARTS]]
            ours = client.query_points(
                "library", vector, limit=10, search_params=models.SearchParams(exact=True)
            ).points
            theirs = reference.query_points("all", vector, limit=10).points
            assert len(ours) == len(theirs)
            np.testing.assert_allclose(
                [p.score for p in ours], [p.score for p in theirs], atol=1e-4
            )
    asked = [keys for collection, keys in recording.asked if collection == "library-d2"]
    assert asked, "the sharded home was asked"
    assert all(keys is not None for keys in asked)  # always with the chosen partitions


def test_a_routed_search_asks_the_home_once_with_the_chosen_partitions(sharded: Any) -> None:
    built, recording, _, cells = sharded
    state = make_state(built, settings={"routing_strategy": "hybrid"})
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        vector = [float(x) for x in cells[1]]
        predicted = http.post(
            "/librarian/predict", json={"vector": vector, "strategy": "hybrid"}
        ).json()["result"]
        two = [d for d in predicted["domains"] if d["id"] == "d2"]
        assert two, predicted
        chosen = two[0]["partitions"]
        assert chosen
        assert set(chosen) <= {f"d2-p{i}" for i in range(PARTS)}
        recording.asked.clear()
        response = http.post(
            "/collections/library/points/query",
            json={"query": vector, "limit": 5},
        )
        assert response.status_code == 200, response.text
        asked = [keys for collection, keys in recording.asked if collection == "library-d2"]
        assert len(asked) == 1  # one call to the home
        assert sorted(asked[0]) == sorted(chosen)
        # the share of points touched counts the chosen partitions, not their whole domain
        sizes = {key: west_count(built, key) for key in (f"d2-p{i}" for i in range(PARTS))}
        others = [d for d in predicted["domains"] if d["id"] != "d2"]
        whole = sum(
            r.size for r in built.definition.domains if r.domain_id in {d["id"] for d in others}
        )
        total = sum(r.size for r in built.definition.domains)
        assert state.touched_share == pytest.approx(
            (whole + sum(sizes[k] for k in chosen)) / total, abs=0.02
        )
        status = http.get("/librarian/status").json()["result"]
        domains = {d["id"]: d for d in status["library"]["domains"]}
        assert domains["d2"]["shardedByPartition"] is True
        assert domains["d2"]["partitions"] == [f"d2-p{i}" for i in range(PARTS)]
        assert domains["d0"]["shardedByPartition"] is False
        # the model over partitions reports its calibration beside the one over domains
        over_partitions = status["library"]["routing"]["partitions"]
        assert over_partitions["units"] == 2 + PARTS
        assert over_partitions["calibration_recall"] >= over_partitions["target_recall"]
        assert 0.0 < over_partitions["calibration_touched"] <= 1.0
        assert 1.0 <= over_partitions["calibration_units_per_query"] <= 2 + PARTS
        assert status["library"]["routing"]["units"] == 3


def test_writes_go_under_their_partition_and_move_with_their_vector(sharded: Any) -> None:
    built, recording, _, cells = sharded
    west = recording._inner
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        first = [float(x) for x in cells[0] / np.linalg.norm(cells[0])]
        client.upsert("library", [models.PointStruct(id=5000, vector=first, payload={"n": 1})])
        assert _keys_of(west, 5000) == ["d2-p0"]
        second = [float(x) for x in cells[3] / np.linalg.norm(cells[3])]
        client.upsert("library", [models.PointStruct(id=5000, vector=second, payload={"n": 2})])
        assert _keys_of(west, 5000) == ["d2-p3"]  # moved: no copy left under d2-p0
        client.update_vectors("library", [models.PointVectors(id=5000, vector=first)])
        assert _keys_of(west, 5000) == ["d2-p0"]
        [stored] = west.retrieve("library-d2", [5000])
        assert stored.payload["n"] == 2
        client.delete("library", points_selector=models.PointIdsList(points=[5000]))
        copies = [r.payload for r in west.retrieve("library-d2", [5000], with_vectors=False)]
        assert len(copies) <= 1
        assert all(TOMBSTONE_KEY in c for c in copies)
        assert client.retrieve("library", [5000]) == []
