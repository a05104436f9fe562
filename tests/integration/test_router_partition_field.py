"""The router over a home placed by partition field: one shard whose points each carry their
partition in the reserved, indexed payload field. Searches keep the chosen partitions with a
``partition in [chosen]`` condition ANDed with the read filter, writes mark each point's
partition (vector and field rewritten together when a vector moves it), the field never shows
in answers and a write naming it is refused.

Answers are compared with qdrant-client's local mode holding the same points in one collection.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from librarian.contracts.payload import PARTITION_KEY, TOMBSTONE_KEY
from librarian.router.library import DomainRoute, LibraryDefinition, PartitionRef
from librarian.services.placement import (
    GRAPH_SHARE,
    Placement,
    ensure_partition_index,
    searched_by_graph,
)
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.placing import PlacingPort
from librarian.storage.port import (
    CollectionSpec,
    HnswSpec,
    OptimizersSpec,
    PointRecord,
    QdrantPort,
)

from .recording_server import Recorded, qdrant_ok, recording_server
from .router_support import DIM, Library, RouterThread, client_of, library_points, make_state

pytestmark = pytest.mark.timeout(300)

PARTS = 4
HOME = "library-d2"
KEYS = tuple(f"d2-p{i}" for i in range(PARTS))


class _Recording:
    """A port that records the shard keys and filter of every universal query."""

    def __init__(self, inner: QdrantPort) -> None:
        self._inner = inner
        self.asked: list[tuple[str, Any, models.Filter | None]] = []
        self._lock = threading.Lock()

    def query_points(self, collection: str, request: models.QueryRequest, **kw: Any) -> Any:
        with self._lock:
            self.asked.append((collection, request.shard_key, request.filter))
        return self._inner.query_points(collection, request, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _nearest(cells: np.ndarray, vectors: Any) -> list[int]:
    return [int(i) for i in np.argmax(np.asarray(vectors) @ cells.T, axis=1)]


Placed = tuple[Library, _Recording, QdrantClient, np.ndarray]


@pytest.fixture
def placed(tmp_path: Path) -> Iterator[Placed]:
    """Domains 0/1 in their own collections on east; domain 2 on west in one shard, each point
    carrying its partition (nearest partition centroid) in the indexed field. The home is too
    small for the engine to index: it is scanned."""
    yield from _placed(tmp_path, CollectionSpec(vector_size=DIM))


@pytest.fixture
def placed_in_graph(tmp_path: Path) -> Iterator[Placed]:
    """The same library, domain 2's home indexed however small: its points are in a graph."""
    spec = CollectionSpec(
        vector_size=DIM,
        hnsw=HnswSpec(full_scan_threshold=1),
        optimizers=OptimizersSpec(indexing_threshold=1),
    )
    yield from _placed(tmp_path, spec)


def _placed(tmp_path: Path, home_spec: CollectionSpec) -> Iterator[Placed]:
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
    in_two = [p for p, c in zip(points, clouds, strict=True) if c == 2]
    rng = np.random.default_rng(3)
    cells = np.asarray([p.vector for p in in_two])[rng.choice(len(in_two), PARTS, replace=False)]
    routes = []
    for d in range(3):
        mine = [p for p, c in zip(points, clouds, strict=True) if c == d]
        collection = f"library-d{d}"
        partitions: tuple[PartitionRef, ...] = ()
        if d < 2:
            east.create_collection(collection, CollectionSpec(vector_size=DIM))
            east.upsert(collection, mine)
        else:
            west.create_collection(collection, home_spec)
            ensure_partition_index(west, collection)
            nearest = _nearest(cells, [p.vector for p in mine])
            west.upsert(
                collection,
                [
                    PointRecord(p.id, p.vector, {**p.payload, PARTITION_KEY: KEYS[n]})
                    for p, n in zip(mine, nearest, strict=True)
                ],
            )
            partitions = tuple(
                PartitionRef(key, tuple(float(x) for x in cell))
                for key, cell in zip(KEYS, cells, strict=True)
            )
            west.optimize(collection)
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


def _partition_of(west: QdrantPort, point_id: int) -> list[Any]:
    """The partition field of every stored copy of ``point_id`` (one copy: one value)."""
    return [r.payload.get(PARTITION_KEY) for r in west.retrieve(HOME, [point_id])]


def _partition_conditions(flt: models.Filter | None) -> list[list[str]]:
    """The partition conditions anywhere in ``flt``: each ``should`` of single-value matches on
    the partition field (the chosen partitions, as reads send them) and each match-any on it
    (every partition of a placement, which points marked by an earlier analysis lack)."""
    found: list[list[str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, models.FieldCondition) and node.key == PARTITION_KEY:
            assert isinstance(node.match, models.MatchAny)
            found.append([str(v) for v in node.match.any])
        elif isinstance(node, models.Filter):
            should = node.should if isinstance(node.should, list) else []
            values = [
                c for c in should if isinstance(c, models.FieldCondition) and c.key == PARTITION_KEY
            ]
            if values:
                assert all(isinstance(c.match, models.MatchValue) for c in values)
                found.append([str(c.match.value) for c in values])  # type: ignore[union-attr]
            for part in (node.must, node.should, node.must_not):
                for item in part if isinstance(part, list) else [part] if part else []:
                    if not any(item is c for c in values):
                        walk(item)

    walk(flt)
    return found


def _unit(vector: Any) -> list[float]:
    v = np.asarray(vector, dtype=np.float64)
    return [float(x) for x in v / np.linalg.norm(v)]


def test_a_search_over_every_partition_answers_like_one_collection(placed: Any) -> None:
    built, recording, reference, cells = placed
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        for i in range(4):
            vector = [float(x) for x in cells[i % PARTS]]
            ours = client.query_points(
                "library", vector, limit=10, search_params=models.SearchParams(exact=True)
            ).points
            theirs = reference.query_points("all", vector, limit=10).points
            assert len(ours) == len(theirs) == 10
            np.testing.assert_allclose(
                [p.score for p in ours], [p.score for p in theirs], atol=1e-4
            )
            assert all(PARTITION_KEY not in (p.payload or {}) for p in ours)
    asked = [(keys, flt) for collection, keys, flt in recording.asked if collection == HOME]
    assert asked, "the home was asked"
    assert all(keys is None for keys, _ in asked)  # one shard: never a shard key selector


def test_a_routed_search_keeps_the_chosen_partitions_by_a_condition_on_the_field(
    placed: Any,
) -> None:
    built, recording, reference, cells = placed
    points = built.points
    clouds = {d.domain_id: d for d in built.definition.domains}
    assert clouds
    state = make_state(built, settings={"routing_strategy": "hybrid"})
    in_home = {r.id: r.payload[PARTITION_KEY] for r in recording.scroll(HOME, limit=2000)[0]}
    by_domain: dict[str, set[Any]] = {"d2": set(in_home)}
    for d in ("d0", "d1"):
        by_domain[d] = {r.id for r in built.fleet.get("east").scroll(f"library-{d}", limit=2000)[0]}
    user_filter = models.Filter(
        must=[models.FieldCondition(key="group", match=models.MatchAny(any=["g1", "g2"]))]
    )
    narrowed = 0  # searches that kept only some partitions of the home
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        for probe in range(PARTS):
            vector = [float(x) for x in cells[probe]]
            predicted = http.post(
                "/librarian/predict", json={"vector": vector, "strategy": "hybrid"}
            ).json()["result"]
            two = [d for d in predicted["domains"] if d["id"] == "d2"]
            assert two, predicted
            chosen = two[0]["partitions"]
            assert chosen
            assert set(chosen) <= set(KEYS)
            recording.asked.clear()
            response = http.post(
                "/collections/library/points/query",
                json={
                    "query": vector,
                    "limit": 5,
                    "filter": user_filter.model_dump(exclude_none=True),
                    "with_payload": True,
                },
            )
            assert response.status_code == 200, response.text
            asked = [(k, f) for c, k, f in recording.asked if c == HOME]
            assert len(asked) == 1  # one call to the home
            keys, flt = asked[0]
            assert keys is None
            conditions = _partition_conditions(flt)
            if set(chosen) == set(KEYS):
                assert conditions == []  # every partition: the whole home, no condition
            else:
                assert [sorted(c) for c in conditions] == [sorted(chosen)]
                narrowed += 1
            # the answer is one collection's over exactly the points the route kept
            kept: set[Any] = set()
            for domain in predicted["domains"]:
                if domain["id"] == "d2":
                    kept |= {i for i, p in in_home.items() if p in set(chosen)}
                else:
                    kept |= by_domain[domain["id"]]
            theirs = reference.query_points(
                "all",
                vector,
                limit=5,
                query_filter=models.Filter(
                    must=[models.HasIdCondition(has_id=sorted(kept)), user_filter]
                ),
            ).points
            ours = response.json()["result"]["points"]
            assert len(ours) == len(theirs) == 5
            np.testing.assert_allclose(
                [p["score"] for p in ours], [p.score for p in theirs], atol=1e-4
            )
            assert all(PARTITION_KEY not in p["payload"] for p in ours)
        status = http.get("/librarian/status").json()["result"]
    assert narrowed
    domains = {d["id"]: d for d in status["library"]["domains"]}
    assert domains["d2"]["partitionLayout"] == "field"
    assert domains["d2"]["shardedByPartition"] is False
    assert domains["d2"]["partitions"] == list(KEYS)
    assert domains["d0"]["partitionLayout"] == ""
    assert status["library"]["routing"]["partitions"]["units"] == 2 + PARTS
    assert len(points) == sum(len(v) for v in by_domain.values())


def test_writes_mark_the_partition_and_a_vector_change_moves_it(placed: Any) -> None:
    built, recording, _, cells = placed
    west = recording._inner
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        first, last = _unit(cells[0]), _unit(cells[3])
        client.upsert("library", [models.PointStruct(id=5000, vector=first, payload={"n": 1})])
        assert _partition_of(west, 5000) == ["d2-p0"]
        client.upsert("library", [models.PointStruct(id=5000, vector=last, payload={"n": 2})])
        assert _partition_of(west, 5000) == ["d2-p3"]  # one copy, marked anew
        client.update_vectors("library", [models.PointVectors(id=5000, vector=first)])
        assert _partition_of(west, 5000) == ["d2-p0"]
        [stored] = west.retrieve(HOME, [5000])
        assert stored.payload["n"] == 2  # the payload moved with it
        np.testing.assert_allclose(stored.vector or [], first, atol=1e-5)
        client.overwrite_payload("library", {"m": 7}, points=[5000])
        [stored] = west.retrieve(HOME, [5000], with_vectors=False)
        assert stored.payload.get("m") == 7
        assert "n" not in stored.payload
        assert stored.payload[PARTITION_KEY] == "d2-p0"  # an overwrite keeps the partition
        client.clear_payload("library", points_selector=models.PointIdsList(points=[5000]))
        assert _partition_of(west, 5000) == ["d2-p0"]
        [seen] = client.retrieve("library", [5000], with_payload=True)
        assert seen.payload == {}
        hits = client.query_points("library", first, limit=3, with_payload=True).points
        assert hits[0].id == 5000
        assert hits[0].payload == {}
        listed, _ = client.scroll("library", limit=2000, with_payload=True)
        assert all(PARTITION_KEY not in (r.payload or {}) for r in listed)
        client.delete("library", points_selector=models.PointIdsList(points=[5000]))
        copies = [r.payload for r in west.retrieve(HOME, [5000], with_vectors=False)]
        assert len(copies) <= 1
        assert all(TOMBSTONE_KEY in c for c in copies)
        assert client.retrieve("library", [5000]) == []


def test_a_write_naming_the_partition_field_is_refused(placed: Any) -> None:
    built, recording, _, cells = placed
    with RouterThread(make_state(built)) as router, httpx.Client(base_url=router.url) as http:
        vector = _unit(cells[1])
        attempts = [
            (
                "PUT",
                "/collections/library/points",
                {"points": [{"id": 6000, "vector": vector, "payload": {PARTITION_KEY: "d2-p3"}}]},
            ),
            (
                "POST",
                "/collections/library/points/payload",
                {"payload": {PARTITION_KEY: "d2-p3"}, "points": [1]},
            ),
            (
                "PUT",
                "/collections/library/points/payload",
                {"payload": {PARTITION_KEY: "d2-p3"}, "points": [1]},
            ),
            (
                "POST",
                "/collections/library/points/payload/delete",
                {"keys": [PARTITION_KEY], "points": [1]},
            ),
        ]
        for method, path, body in attempts:
            response = http.request(method, path, json=body)
            assert response.status_code == 400, (path, response.text)
            answer = response.json()
            assert set(answer) == {"status", "time"}
            assert PARTITION_KEY in answer["status"]["error"]
        assert recording.retrieve(HOME, [6000]) == []
        stored = {r.id: r.payload[PARTITION_KEY] for r in recording.scroll(HOME, limit=2000)[0]}
        assert all(value in KEYS for value in stored.values())
        index = http.put(
            "/collections/library/index",
            json={"field_name": PARTITION_KEY, "field_schema": "keyword"},
        )
        assert index.status_code == 400, index.text


def test_concurrent_writers_on_the_same_ids_leave_one_copy_in_its_partition(
    placed: Any,
) -> None:
    built, recording, _, cells = placed
    west = recording._inner
    ids = [7000, 7001, 7002]
    directions = [
        _unit(cells[i] + 0.05 * np.random.default_rng(i).normal(size=DIM)) for i in range(PARTS)
    ]
    errors: list[BaseException] = []
    with RouterThread(make_state(built)) as router:

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            try:
                with closing(client_of(router)) as client:
                    for step in range(12):
                        point_id = rng.choice(ids)
                        vector = directions[rng.randrange(PARTS)]
                        if step % 3 == 2:
                            try:
                                client.update_vectors(
                                    "library", [models.PointVectors(id=point_id, vector=vector)]
                                )
                            except Exception as error:
                                if "404" not in str(error) and "Not found" not in str(error):
                                    raise
                        else:
                            client.upsert(
                                "library",
                                [
                                    models.PointStruct(
                                        id=point_id, vector=vector, payload={"w": seed}
                                    )
                                ],
                            )
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        assert not errors, errors
        with closing(client_of(router)) as client:
            seen = {p.id: p for p in client.retrieve("library", ids, with_vectors=True)}
    assert set(seen) == set(ids)
    for point_id in ids:
        copies = west.retrieve(HOME, [point_id])
        assert len(copies) == 1, copies  # never lost, never duplicated
        [copy] = copies
        assert copy.vector is not None
        expected = KEYS[_nearest(cells, [copy.vector])[0]]
        assert copy.payload[PARTITION_KEY] == expected  # the field follows the stored vector
        np.testing.assert_allclose(seen[point_id].vector, copy.vector, atol=1e-5)
        assert any(np.allclose(copy.vector, d, atol=1e-5) for d in directions)
    for domain in ("library-d0", "library-d1"):
        assert built.fleet.get("east").retrieve(domain, ids) == []


class _KilledUpsert:
    """A port whose upserts die (a router killed in the middle of a vector update)."""

    def __init__(self, inner: QdrantPort) -> None:
        self._inner = inner

    def upsert(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_vector_move_killed_midway_keeps_the_point_whole(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        port.create_collection(HOME, CollectionSpec(vector_size=DIM))
        ensure_partition_index(port, HOME)
        rng = np.random.default_rng(5)
        cells = rng.normal(size=(PARTS, DIM))
        cells /= np.linalg.norm(cells, axis=1, keepdims=True)
        placement = Placement("d2", "", KEYS, cells.astype(np.float32), by_field=True)
        placing = PlacingPort(port, {HOME: placement.writes}, by_field={HOME})
        placing.upsert(HOME, [PointRecord(1, _unit(cells[0]), {"n": 1})])
        assert _partition_of(port, 1) == ["d2-p0"]
        killed = PlacingPort(
            _KilledUpsert(port),  # type: ignore[arg-type]
            {HOME: placement.writes},
            by_field={HOME},
        )
        with pytest.raises(RuntimeError, match="killed"):
            killed.update_vectors(HOME, [PointRecord(1, _unit(cells[2]))])
        [stored] = port.retrieve(HOME, [1])  # as before: one copy, vector and field agreeing
        assert stored.payload == {"n": 1, PARTITION_KEY: "d2-p0"}
        np.testing.assert_allclose(stored.vector or [], _unit(cells[0]), atol=1e-5)
        placing.update_vectors(HOME, [PointRecord(1, _unit(cells[2]))])  # the retry
        [stored] = port.retrieve(HOME, [1])
        assert stored.payload == {"n": 1, PARTITION_KEY: "d2-p2"}
        assert port.count(HOME) == 1
        # a condition the point no longer matches leaves it alone (no rewrite of a newer write)
        placing.update_vectors(
            HOME,
            [PointRecord(1, _unit(cells[3]))],
            update_filter=models.Filter(
                must=[models.FieldCondition(key="n", match=models.MatchValue(value=2))]
            ),
        )
        assert _partition_of(port, 1) == ["d2-p2"]
    finally:
        port.close()


def test_the_partition_index_is_declared_is_tenant_on_a_server() -> None:
    """Checked against the requests qdrant-client sends (a recording server, not a Qdrant)."""
    from librarian.storage.remote import RemoteQdrant

    def answer(request: Recorded, index: int) -> Any:
        return qdrant_ok({"operation_id": 1, "status": "completed"})

    with recording_server(answer) as server:
        port = RemoteQdrant.connect("main", server.url)
        try:
            ensure_partition_index(port, "home")
        finally:
            port.close()
    [put] = [r for r in server.requests if r.method == "PUT"]
    assert put.path.startswith("/collections/home/index")
    assert put.body == {
        "field_name": PARTITION_KEY,
        "field_schema": {"type": "keyword", "is_tenant": True},
    }


def test_a_home_whose_points_are_in_a_graph_is_asked_whole(placed_in_graph: Placed) -> None:
    """A search of a home answering from its HNSW graph sends no partition condition (the
    graph search of the whole home costs the engine less than scoring the chosen partitions),
    and answers as one collection does over every point of the domains it asked."""
    built, recording, reference, cells = placed_in_graph
    info = recording.collection_info(HOME)
    assert searched_by_graph(info.points_count, info.indexed_vectors_count)
    state = make_state(built, settings={"routing_strategy": "hybrid"})
    in_home = {r.id for r in recording.scroll(HOME, limit=2000)[0]}
    by_domain: dict[str, set[Any]] = {"d2": in_home}
    for d in ("d0", "d1"):
        by_domain[d] = {r.id for r in built.fleet.get("east").scroll(f"library-{d}", limit=2000)[0]}
    narrowed = 0
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        for probe in range(PARTS):
            vector = [float(x) for x in cells[probe]]
            predicted = http.post(
                "/librarian/predict", json={"vector": vector, "strategy": "hybrid"}
            ).json()["result"]
            [two] = [d for d in predicted["domains"] if d["id"] == "d2"]
            narrowed += set(two["partitions"]) < set(KEYS)
            recording.asked.clear()
            response = http.post(
                "/collections/library/points/query",
                json={"query": vector, "limit": 5, "with_payload": True},
            )
            assert response.status_code == 200, response.text
            [(keys, flt)] = [(k, f) for c, k, f in recording.asked if c == HOME]
            assert keys is None
            assert _partition_conditions(flt) == []
            kept = set().union(*(by_domain[d["id"]] for d in predicted["domains"]))
            theirs = reference.query_points(
                "all",
                vector,
                limit=5,
                query_filter=models.Filter(must=[models.HasIdCondition(has_id=sorted(kept))]),
            ).points
            ours = response.json()["result"]["points"]
            assert [p["id"] for p in ours] == [p.id for p in theirs]
            np.testing.assert_allclose(
                [p["score"] for p in ours], [p.score for p in theirs], atol=1e-4
            )
    assert narrowed  # the router chose some partitions only, and still asked the home whole


def test_a_home_answers_from_its_graph_when_nearly_all_its_points_are_indexed() -> None:
    assert not searched_by_graph(0, 0)
    assert not searched_by_graph(1_000, None)
    assert not searched_by_graph(1_000, 0)
    assert not searched_by_graph(1_000, round(GRAPH_SHARE * 1_000) - 1)
    assert searched_by_graph(1_000, round(GRAPH_SHARE * 1_000))
    assert searched_by_graph(1_000, 2_000)  # two named vectors per point


def test_the_chosen_partitions_are_kept_by_one_match_each() -> None:
    """The condition a scanned home is read with: a ``should`` of one single-value match per
    chosen partition (the engine scores only their points), without repeats; with points
    marked by an earlier analysis, those too; none on a home answering from its graph."""
    cells = np.eye(PARTS, DIM, dtype=np.float32)
    by_field = Placement("d2", "", KEYS, cells, by_field=True)
    chosen = [KEYS[2], KEYS[0], KEYS[2]]
    value = lambda key: models.FieldCondition(  # noqa: E731
        key=PARTITION_KEY, match=models.MatchValue(value=key)
    )
    assert by_field.read_filter(chosen) == models.Filter(should=[value(KEYS[2]), value(KEYS[0])])
    strays = Placement("d2", "", KEYS, cells, by_field=True, strays=True)
    assert strays.read_filter(chosen) == models.Filter(
        should=[value(KEYS[2]), value(KEYS[0]), models.Filter(must_not=[strays.current()])]
    )
    graph = Placement("d2", "", KEYS, cells, by_field=True, strays=True, graph=True)
    assert graph.read_filter(chosen) is None
    kept = graph.restricted(KEYS[:2])
    assert kept is not None
    assert (kept.keys, kept.graph, kept.strays) == (KEYS[:2], True, True)


def test_the_partition_condition_is_left_out_when_every_partition_is_chosen() -> None:
    cells = np.eye(PARTS, DIM, dtype=np.float32)
    by_field = Placement("d2", "", KEYS, cells, by_field=True)
    assert by_field.read_filter(KEYS) is None
    assert by_field.read_filter(list(reversed(KEYS))) is None
    some = by_field.read_filter(KEYS[:2])
    assert some is not None
    assert _partition_conditions(some) == [list(KEYS[:2])]
    assert Placement("d2", "", KEYS, cells).read_filter(KEYS[:2]) is None  # shard keys: none


def test_points_marked_by_an_earlier_analysis_stay_in_routed_searches(placed: Any) -> None:
    """A point whose partition is none of the catalog's (an earlier analysis' id) is kept by
    every partition-filtered read of its home, so a re-analysis loses no point."""
    built, recording, reference, cells = placed
    stray = _unit(cells[0] + 0.01 * np.random.default_rng(9).normal(size=DIM))
    recording.upsert(HOME, [PointRecord(8000, stray, {"n": 8000, PARTITION_KEY: "d2-gone"})])
    reference.upsert("all", [models.PointStruct(id=8000, vector=stray, payload={"n": 8000})])
    state = make_state(built, settings={"routing_strategy": "hybrid"})
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        vector = [float(x) for x in cells[0]]
        predicted = http.post(
            "/librarian/predict", json={"vector": vector, "strategy": "hybrid"}
        ).json()["result"]
        [two] = [d for d in predicted["domains"] if d["id"] == "d2"]
        assert set(two["partitions"]) < set(KEYS)  # a search of some partitions only
        recording.asked.clear()
        response = http.post(
            "/collections/library/points/query", json={"query": vector, "limit": 3}
        )
        assert response.status_code == 200, response.text
        ours = response.json()["result"]["points"]
        theirs = reference.query_points("all", vector, limit=3).points
        assert [p["id"] for p in ours] == [p.id for p in theirs]
        assert 8000 in [p.id for p in theirs]
        np.testing.assert_allclose([p["score"] for p in ours], [p.score for p in theirs], atol=1e-4)
        [(_, flt)] = [(k, f) for c, k, f in recording.asked if c == HOME]
        assert sorted(map(sorted, _partition_conditions(flt))) == sorted(
            [sorted(two["partitions"]), sorted(KEYS)]  # the chosen, or none of the current
        )
