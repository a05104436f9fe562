"""Named dense, sparse and multivectors through the router's write path, over real HTTP.

A library routed on its named dense vector ``text``, whose points also carry
``image``, a multivector and a sparse vector (some lacking some). Every write
is made through the router with the official client and the same write on
qdrant-client's local mode (one collection: the independent reference); the
points read back through the router must equal the reference's, and each
point must live in exactly one home: the domain nearest its routing vector,
or, without one, the domain its id hashes to.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.contracts.payload import TOMBSTONE_KEY
from librarian.core.unrouted import domain_for_unrouted
from librarian.router.library import DomainRoute, LibraryDefinition
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import PointId, PointRecord, QdrantPort
from librarian.storage.vectors import vectors_equal

from .router_support import HeldCall, RouterThread, client_of, make_state
from .vector_shapes import (
    SHAPED_SPEC,
    TEXT_DIM,
    reference_collection,
    reference_points,
    shaped_vectors,
)

pytestmark = pytest.mark.timeout(300)

DOMAINS = 3


@dataclass
class Shaped:
    fleet: Fleet
    definition: LibraryDefinition
    centres: np.ndarray
    reference: QdrantClient


def _nearest(centres: np.ndarray, vector: list[float]) -> int:
    unit = np.asarray(vector) / np.linalg.norm(vector)
    return int(np.argmax(centres @ unit))


def _home_of(built: Shaped, point: PointRecord) -> int:
    text = point.dense("text")
    if text is not None:
        return _nearest(built.centres, text)
    ids = [d.domain_id for d in built.definition.domains]
    return ids.index(domain_for_unrouted(point.id, ids))


def _near(built: Shaped, domain: int, seed: int) -> list[float]:
    vector = built.centres[domain] + np.random.default_rng(seed).normal(size=TEXT_DIM) * 0.05
    return [float(x) for x in vector]


@pytest.fixture
def shaped(tmp_path: Path) -> Iterator[Shaped]:
    """Three domains on two embedded clusters, each home with the full vectors config."""
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(DOMAINS, TEXT_DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    east = EmbeddedQdrant("east", tmp_path / "east")
    west = EmbeddedQdrant("west", tmp_path / "west")
    routes = []
    for d in range(DOMAINS):
        port: QdrantPort = east if d < 2 else west
        port.create_collection(f"library-d{d}", SHAPED_SPEC)
        routes.append(
            DomainRoute(
                domain_id=f"d{d}",
                name=f"domain {d}",
                cluster=port.cluster,
                collection=f"library-d{d}",
                centroid=tuple(float(x) for x in centres[d]),
                size=0,
                specialized=True,
                versioned=True,
            )
        )
    definition = LibraryDefinition(
        name="library", domains=tuple(routes), default_cluster="east", version="v1", vector="text"
    )
    reference = QdrantClient(":memory:")
    reference_collection(reference, "library")
    built = Shaped(Fleet.of_ports({"east": east, "west": west}), definition, centres, reference)
    # A few points per domain so the library has something to learn from.
    seed_points = [
        PointRecord(1000 + 10 * d + k, {"text": _near(built, d, 10 * d + k)}, {"seed": True})
        for d in range(DOMAINS)
        for k in range(5)
    ]
    for point in seed_points:
        route = routes[_nearest(centres, point.dense("text") or [])]
        built.fleet.get(route.cluster).upsert(route.collection, [point])
    reference.upsert("library", reference_points(seed_points))
    try:
        yield built
    finally:
        built.fleet.close()


def _points(built: Shaped, n: int, start: int, seed: int) -> list[PointRecord]:
    """Points of every shape; their routing vectors near the domains' centres."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        vectors = shaped_vectors(rng, start + i)
        if "text" in vectors:
            vectors["text"] = _near(built, i % DOMAINS, seed * 1000 + i)
        points.append(PointRecord(start + i, vectors, {"n": start + i}))
    return points


def _structs(points: list[PointRecord]) -> list[models.PointStruct]:
    return reference_points(points)


def _live_homes(built: Shaped, ids: list[PointId]) -> dict[PointId, list[int]]:
    """The domains holding a live copy of each id, read from the engines."""
    found: dict[PointId, list[int]] = {i: [] for i in ids}
    for index, route in enumerate(built.definition.domains):
        port = built.fleet.get(route.cluster)
        for record in port.retrieve(route.collection, ids, with_vectors=False):
            if TOMBSTONE_KEY not in record.payload:
                found[record.id].append(index)
    return found


def _same_as_reference(client: QdrantClient, built: Shaped, ids: list[PointId]) -> None:
    got = {r.id: r for r in client.retrieve("library", ids, with_vectors=True)}
    expected = {r.id: r for r in built.reference.retrieve("library", ids, with_vectors=True)}
    assert got.keys() == expected.keys()
    for point_id, record in expected.items():
        assert vectors_equal(got[point_id].vector, record.vector, atol=1e-5), point_id  # type: ignore[arg-type]
        assert got[point_id].payload == record.payload


def test_upserts_of_every_shape_are_held_as_local_mode_holds_them(shaped: Shaped) -> None:
    built = shaped
    listed = _points(built, 30, 0, seed=1)
    batched = _points(built, 12, 100, seed=2)
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        client.upsert("library", _structs(listed))
        built.reference.upsert("library", _structs(listed))
        # A batch with named vectors: one list per name (here: points that have all of them).
        full = [p for p in batched if len(p.vector or {}) == 4]
        batch = models.Batch(
            ids=[p.id for p in full],
            vectors={
                name: [p.vector[name] for p in full]  # type: ignore[call-overload,index]
                for name in ("text", "image", "colbert", "keywords")
            },
            payloads=[p.payload for p in full],
        )
        client.upsert("library", batch)
        built.reference.upsert("library", batch)
        ids = [p.id for p in listed + full]
        _same_as_reference(client, built, ids)
        # only some named vectors, as asked
        [record] = client.retrieve("library", [listed[0].id], with_vectors=["keywords"])
        assert set(record.vector or {}) <= {"keywords"}  # type: ignore[arg-type]
    homes = _live_homes(built, ids)
    by_id = {p.id: p for p in listed + full}
    assert {i: h for i, h in homes.items()} == {i: [_home_of(built, by_id[i])] for i in ids}
    assert any(p.dense("text") is None for p in listed)  # some are placed by their id


@pytest.mark.parametrize(
    ("vector", "words"),
    [
        ({"nope": [1.0] * TEXT_DIM}, "Not existing vector name error: nope"),
        ({"text": [1.0, 2.0]}, "Vector dimension error: expected dim: 6, got 2"),
        ({"colbert": [1.0, 2.0, 3.0]}, "Wrong input"),
        ({"text": {"indices": [1], "values": [1.0]}}, "sparse"),
        ({"keywords": {"indices": [1, 2], "values": [1.0]}}, "same length"),
        ([1.0] * TEXT_DIM, "Unnamed vectors are not allowed"),
        ({"text": [math.nan] * TEXT_DIM}, "NaN"),
    ],
)
def test_malformed_vectors_get_qdrant_400_and_change_nothing(
    shaped: Shaped, vector: Any, words: str
) -> None:
    built = shaped
    # The reference refuses the same point (local mode checks it as Qdrant does).
    with pytest.raises(Exception):  # noqa: B017, PT011 - local mode raises plain errors
        built.reference.upsert("library", [models.PointStruct(id=1, vector=vector)])
    with RouterThread(make_state(built)) as router:
        body = {"points": [{"id": 1, "vector": vector, "payload": {}}]}
        # NaN is not JSON: sent as Python's json writes it, as a client in another language might
        text = json.dumps(body).encode()
        response = httpx.put(
            f"{router.url}/collections/library/points?wait=true",
            content=text,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 400, response.text
        error = response.json()["status"]["error"]
        assert words in error
        assert error.startswith("Wrong input")
        # and through update_vectors the same
        response = httpx.put(
            f"{router.url}/collections/library/points/vectors?wait=true",
            content=json.dumps({"points": [{"id": 1000, "vector": vector}]}).encode(),
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 400, response.text
    assert _live_homes(built, [1]) == {1: []}


def test_vector_updates_of_every_shape_and_a_point_that_gets_its_routing_vector(
    shaped: Shaped,
) -> None:
    built = shaped
    points = _points(built, 27, 0, seed=3)
    unrouted = next(p for p in points if p.dense("text") is None)
    placed_at = _home_of(built, unrouted)
    target = (placed_at + 1) % DOMAINS
    routed = next(p for p in points if p.dense("text") is not None and p.id != unrouted.id)
    updates = [
        models.PointVectors(id=unrouted.id, vector={"text": _near(built, target, 77)}),
        models.PointVectors(
            id=routed.id,
            vector={
                "keywords": models.SparseVector(indices=[7, 3], values=[0.7, 0.3]),
                "colbert": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
            },
        ),
    ]
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        client.upsert("library", _structs(points))
        built.reference.upsert("library", _structs(points))
        assert _live_homes(built, [unrouted.id]) == {unrouted.id: [placed_at]}
        client.update_vectors("library", updates)
        built.reference.update_vectors("library", updates)
        _same_as_reference(client, built, [p.id for p in points])
        # missing point: Qdrant's 404
        with pytest.raises(UnexpectedResponse) as missing:
            client.update_vectors(
                "library", [models.PointVectors(id=99_999, vector={"image": [0.0] * 4})]
            )
        assert missing.value.status_code == 404
    homes = _live_homes(built, [unrouted.id, routed.id])
    assert homes[unrouted.id] == [target]  # moved, as an upsert would place it
    assert homes[routed.id] == [_home_of(built, routed)]  # changed in place


def test_vector_updates_with_update_filter_change_and_place_only_matching_points(
    shaped: Shaped,
) -> None:
    """``update_filter`` decides on each point's newest copy: a matching point changes (one
    that gets its routing vector moves), a point that does not match keeps its vectors and
    its home, as local mode keeps them."""
    built = shaped
    points = _points(built, 27, 0, seed=4)
    unrouted = [p for p in points if p.dense("text") is None]
    assert [p.id for p in unrouted] == [8, 17, 26]
    below_20 = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(lt=20))])
    targets = {p.id: (_home_of(built, p) + 1) % DOMAINS for p in unrouted}
    updates = [
        models.PointVectors(id=p.id, vector={"text": _near(built, targets[p.id], 80 + p.id)})
        for p in unrouted
    ] + [models.PointVectors(id=i, vector={"image": [0.5, -0.5, 0.25, 1.0]}) for i in (1, 21)]
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        client.upsert("library", _structs(points))
        built.reference.upsert("library", _structs(points))
        before = {p.id: _home_of(built, p) for p in unrouted}
        client.update_vectors("library", updates, update_filter=below_20)
        built.reference.update_vectors("library", updates, update_filter=below_20)
        _same_as_reference(client, built, [p.id for p in points])
    homes = _live_homes(built, [p.id for p in unrouted])
    assert homes == {8: [targets[8]], 17: [targets[17]], 26: [before[26]]}


def test_a_search_on_the_routing_vector_ranks_as_local_mode(shaped: Shaped) -> None:
    built = shaped
    points = _points(built, 60, 0, seed=5)
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        client.upsert("library", _structs(points))
        built.reference.upsert("library", _structs(points))
        for seed in range(5):
            query = _near(built, seed % DOMAINS, 500 + seed)
            got = client.query_points(
                "library",
                query=query,
                using="text",
                limit=8,
                search_params=models.SearchParams(exact=True),
                with_vectors=True,
            ).points
            expected = built.reference.query_points(
                "library", query=query, using="text", limit=8, with_vectors=True
            ).points
            assert [p.id for p in got] == [p.id for p in expected]
            assert [p.score for p in got] == pytest.approx([p.score for p in expected], rel=1e-4)
            for hit, want in zip(got, expected, strict=True):
                assert vectors_equal(hit.vector, want.vector, atol=1e-5)  # type: ignore[arg-type]
        # the collection's info shows its real vectors
        params = client.get_collection("library").config.params
        reference = built.reference.get_collection("library").config.params
        assert isinstance(params.vectors, dict)
        assert isinstance(reference.vectors, dict)
        assert {
            n: (v.size, v.distance, v.multivector_config) for n, v in params.vectors.items()
        } == {n: (v.size, v.distance, v.multivector_config) for n, v in reference.vectors.items()}
        assert {n: v.modifier for n, v in (params.sparse_vectors or {}).items()} == {
            n: v.modifier for n, v in (reference.sparse_vectors or {}).items()
        }
        # another named vector is answered too: by every home, as one collection would
        image = [0.5, -0.25, 0.125, 1.0]
        got = client.query_points("library", query=image, using="image", limit=3).points
        expected = built.reference.query_points("library", query=image, using="image", limit=3)
        assert [p.id for p in got] == [p.id for p in expected.points]


def test_deleting_vectors_keeps_the_rest_and_unroutes_a_point_without_its_routing_vector(
    shaped: Shaped,
) -> None:
    built = shaped
    points = _points(built, 24, 0, seed=6)
    routed = [p for p in points if p.dense("text") is not None]
    movers = routed[:6]
    ids = [p.id for p in points]
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        client.upsert("library", _structs(points))
        built.reference.upsert("library", _structs(points))
        for selector in (
            models.PointIdsList(points=[p.id for p in routed[6:10]]),
            models.FilterSelector(
                filter=models.Filter(
                    must=[models.FieldCondition(key="n", range=models.Range(gte=12, lt=18))]
                )
            ),
        ):
            client.delete_vectors("library", ["image", "keywords"], points=selector)
            built.reference.delete_vectors("library", ["image", "keywords"], points=selector)
        moved = models.PointIdsList(points=[p.id for p in movers])
        client.delete_vectors("library", ["text"], points=moved)
        built.reference.delete_vectors("library", ["text"], points=moved)
        _same_as_reference(client, built, ids)
        with pytest.raises(UnexpectedResponse) as unknown:
            client.delete_vectors("library", ["nope"], points=moved)
        assert unknown.value.status_code == 400
        assert "Not existing vector name error: nope" in str(unknown.value)
    homes = _live_homes(built, ids)
    domain_ids = [d.domain_id for d in built.definition.domains]
    for point in movers:  # now placed by id, once
        assert homes[point.id] == [domain_ids.index(domain_for_unrouted(point.id, domain_ids))]
    for point in points:
        if point not in movers:
            assert homes[point.id] == [_home_of(built, point)]


def test_batch_operations_of_every_shape_match_local_mode(shaped: Shaped) -> None:
    built = shaped
    points = _points(built, 18, 0, seed=7)
    operations = [
        models.UpsertOperation(upsert=models.PointsList(points=_structs(points))),
        models.UpdateVectorsOperation(
            update_vectors=models.UpdateVectors(
                points=[
                    models.PointVectors(
                        id=points[1].id,
                        vector={"keywords": models.SparseVector(indices=[4], values=[0.4])},
                    ),
                    models.PointVectors(id=points[2].id, vector={"colbert": [[1.0, 0.0, 1.0]]}),
                ]
            )
        ),
        models.DeleteVectorsOperation(
            delete_vectors=models.DeleteVectors(points=[points[3].id], vector=["image"])
        ),
    ]
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        client.batch_update_points("library", operations)
        built.reference.batch_update_points("library", operations)
        _same_as_reference(client, built, [p.id for p in points])


def test_concurrent_updates_giving_one_point_its_routing_vector_leave_one_copy(
    shaped: Shaped,
) -> None:
    """Several clients at once give the same id-placed points routing vectors near different
    domains: each point ends in exactly one home, with the last routing vector and its other
    vectors kept."""
    built = shaped
    points = [
        PointRecord(
            500 + i,
            {
                "image": [float(i), 1.0, 0.0, 0.0],
                "keywords": models.SparseVector(indices=[i], values=[1.0]),
            },
            {"n": i},
        )
        for i in range(6)
    ]
    with RouterThread(make_state(built)) as router:
        with closing(client_of(router)) as client:
            client.upsert("library", _structs(points))
        barrier = threading.Barrier(DOMAINS)
        errors: list[Any] = []

        def writer(domain: int) -> None:
            try:
                with closing(client_of(router)) as client:
                    barrier.wait()
                    for point in points:
                        client.update_vectors(
                            "library",
                            [
                                models.PointVectors(
                                    id=point.id, vector={"text": _near(built, domain, point.id)}
                                )
                            ],
                        )
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(
                    (error, getattr(error, "status_code", None), getattr(error, "content", b""))
                )

        threads = [threading.Thread(target=writer, args=(d,)) for d in range(DOMAINS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        with closing(client_of(router)) as client:
            final = {
                r.id: r
                for r in client.retrieve("library", [p.id for p in points], with_vectors=True)
            }
    homes = _live_homes(built, [p.id for p in points])
    for point in points:
        record = final[point.id]
        vectors = record.vector
        assert isinstance(vectors, dict)
        assert set(vectors) == {"text", "image", "keywords"}
        assert vectors_equal(
            {"image": vectors["image"], "keywords": vectors["keywords"]},  # type: ignore[dict-item]
            {k: v for k, v in (point.vector or {}).items()},  # type: ignore[union-attr]
            atol=1e-6,
        )
        # one copy; the first update placed it, the later ones changed it in place (a point
        # that has its routing vector keeps its domain when the vector changes)
        assert len(homes[point.id]) == 1, homes


def test_a_payload_change_that_overtakes_a_move_is_kept(shaped: Shaped) -> None:
    """A point placed by id (on west) gets its routing vector (near a domain on east); the
    move's write to east is held while another client changes the point's payload on west,
    at a newer version. Both are acknowledged: the point ends in one home, east, with both
    the new vector and the payload change (placing the stale copy again would drop it)."""
    built = shaped
    domain_ids = [d.domain_id for d in built.definition.domains]
    point_id = next(i for i in range(700, 800) if domain_for_unrouted(i, domain_ids) == "d2")
    east = built.fleet.get("east")
    held = HeldCall(
        east,
        "upsert",
        when=lambda collection, points, **_: any(p.id == point_id for p in points),
    )
    built.fleet = Fleet.of_ports({"east": held, "west": built.fleet.get("west")})  # type: ignore[dict-item]
    text = _near(built, 0, 9)
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        client.upsert(
            "library",
            [
                models.PointStruct(
                    id=point_id, vector={"image": [1.0, 2.0, 3.0, 4.0]}, payload={"a": 1}
                )
            ],
        )
        assert _live_homes(built, [point_id]) == {point_id: [2]}
        held.armed = True
        outcome: list[BaseException | None] = []

        def move() -> None:
            try:
                with closing(client_of(router)) as other:
                    other.update_vectors(
                        "library", [models.PointVectors(id=point_id, vector={"text": text})]
                    )
                outcome.append(None)
            except BaseException as error:  # noqa: BLE001 - reported below
                outcome.append(error)

        mover = threading.Thread(target=move)
        mover.start()
        assert held.entered.wait(30)
        client.set_payload("library", {"late": True}, points=[point_id])
        held.release.set()
        mover.join(60)
        assert outcome == [None]
        [record] = client.retrieve("library", [point_id], with_vectors=True)
    assert record.payload == {"a": 1, "late": True}
    assert isinstance(record.vector, dict)
    assert set(record.vector) == {"image", "text"}
    unit = [float(x) for x in np.asarray(text) / np.linalg.norm(text)]  # Cosine: stored unit
    assert vectors_equal(record.vector["text"], unit, atol=1e-5)  # type: ignore[arg-type]
    assert _live_homes(built, [point_id]) == {point_id: [0]}
