"""Shard keys through the storage port: custom-sharded collections answer as one collection
holding the same points would, selectors narrow reads (where the adapter can), and a point id
lives under one key at a time. The reference is qdrant-client's local mode holding the same
points in one unsharded collection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models

from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import InvalidRequest
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort
from librarian.storage.remote import RemoteQdrant

from .conftest import make_points
from .recording_server import Answer, Recorded, qdrant_ok, recording_server

KEYS = ("p0", "p1", "p2")
SHARDED = CollectionSpec(vector_size=8, distance="Cosine", shard_keys=KEYS)


def _key_of(point: PointRecord) -> str:
    return KEYS[int(point.id) % len(KEYS)]


def _sharded(port: QdrantPort, points: list[PointRecord]) -> None:
    port.create_collection("docs", SHARDED)
    port.create_payload_index("docs", "group", models.PayloadSchemaType.KEYWORD)
    port.create_payload_index("docs", "n", models.PayloadSchemaType.INTEGER)
    for key in KEYS:
        port.upsert("docs", [p for p in points if _key_of(p) == key], shard_key=key)


def _reference(points: list[PointRecord]) -> QdrantClient:
    client = QdrantClient(":memory:")
    client.create_collection(
        "docs", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
    )
    client.upsert(
        "docs",
        [models.PointStruct(id=p.id, vector=p.vector or [], payload=p.payload) for p in points],
    )
    return client


def _group(value: str) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="group", match=models.MatchValue(value=value))]
    )


def _same_ranking(got: list[tuple[object, float]], want: list[tuple[object, float]]) -> None:
    """Same scores rank by rank; ids equal where scores are not tied."""
    assert len(got) == len(want)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    for (gid, gs), (wid, _) in zip(got, want, strict=True):
        tied = sum(1 for _, s in want if abs(s - gs) < 1e-5)
        if tied == 1:
            assert gid == wid


def test_points_across_keys_answer_like_one_collection(port: QdrantPort) -> None:
    points = make_points(90, seed=3)
    _sharded(port, points)
    reference = _reference(points)
    queries = make_points(6, seed=4)
    for query in queries:
        vector = query.vector or []
        hits = port.query("docs", vector, limit=10, exact=True)
        want = reference.query_points("docs", vector, limit=10).points
        _same_ranking([(h.id, h.score) for h in hits], [(p.id, p.score) for p in want])
        filtered = port.query("docs", vector, limit=7, query_filter=_group("g1"), exact=True)
        want_filtered = reference.query_points(
            "docs", vector, limit=7, query_filter=_group("g1")
        ).points
        _same_ranking([(h.id, h.score) for h in filtered], [(p.id, p.score) for p in want_filtered])
        request = models.QueryRequest(
            query=vector, limit=5, offset=4, params=models.SearchParams(exact=True)
        )
        paged = port.query_points("docs", request)
        want_paged = reference.query_points("docs", vector, limit=5, offset=4).points
        _same_ranking([(p.id, p.score) for p in paged], [(p.id, p.score) for p in want_paged])
    assert port.count("docs") == 90
    assert (
        port.count("docs", count_filter=_group("g2"))
        == reference.count("docs", count_filter=_group("g2")).count
    )
    seen: list[object] = []
    offset = None
    while True:
        page, offset = port.scroll("docs", limit=11, offset=offset, with_vectors=False)
        seen += [p.id for p in page]
        if offset is None:
            break
    assert seen == list(range(90))
    got = port.retrieve("docs", [5, 1, 77, 1000], with_vectors=False)
    assert [p.id for p in got] == [5, 1, 77]
    facet = port.facet("docs", models.FacetRequest(key="group", exact=True))
    want_facet = reference.facet("docs", "group", exact=True).hits
    assert [(h.value, h.count) for h in facet] == [(h.value, h.count) for h in want_facet]
    ordered, _ = port.scroll_points(
        "docs",
        models.ScrollRequest(
            limit=6, order_by=models.OrderBy(key="n", direction=models.Direction.DESC)
        ),
    )
    assert [r.id for r in ordered] == [89, 88, 87, 86, 85, 84]
    assert port.collection_info("docs").points_count == 90


def test_a_selector_restricts_reads_to_its_keys(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        points = make_points(60, seed=5)
        _sharded(port, points)
        held = {p.id for p in points if _key_of(p) in ("p0", "p2")}
        reference = _reference([p for p in points if p.id in held])
        for query in make_points(4, seed=6):
            vector = query.vector or []
            hits = port.query("docs", vector, limit=8, exact=True, shard_keys=["p0", "p2"])
            assert {h.id for h in hits} <= held
            want = reference.query_points("docs", vector, limit=8).points
            _same_ranking([(h.id, h.score) for h in hits], [(p.id, p.score) for p in want])
        assert port.count("docs", shard_keys=["p1"]) == 20
        assert port.count("docs", shard_keys=["p0", "p2"]) == 40
        assert port.retrieve("docs", [1, 2, 3], shard_keys=["p1"], with_vectors=False)[0].id == 1
        assert len(port.retrieve("docs", [1, 2, 3], shard_keys=["p1"])) == 1
        page, _ = port.scroll("docs", limit=100, shard_keys=["p2"], with_vectors=False)
        assert [p.id for p in page] == [i for i in range(60) if i % 3 == 2]
        port.delete_points("docs", ids=[0, 1, 2], shard_keys=["p1"])  # only 1 lives there
        assert port.count("docs") == 59
        assert {p.id for p in port.retrieve("docs", [0, 1, 2])} == {0, 2}
    finally:
        port.close()


def test_local_mode_keeps_every_point_in_one_place_so_a_selector_does_not_narrow() -> None:
    port = RemoteQdrant.connect("remote", ":memory:")
    try:
        _sharded(port, make_points(30))
        assert port.collection_info("docs").spec.shard_keys == KEYS
        assert port.count("docs", shard_keys=["p1"]) == 30  # what local mode can do
        with pytest.raises(InvalidRequest, match="Shard key nope not found"):
            port.count("docs", shard_keys=["nope"])
    finally:
        port.close()


def test_a_point_written_under_a_key_is_found_by_id_without_a_selector(port: QdrantPort) -> None:
    port.create_collection("docs", SHARDED)
    point = make_points(1, start=42)[0]
    port.upsert("docs", [point], shard_key="p2")
    [found] = port.retrieve("docs", [42])
    assert found.payload == point.payload
    np.testing.assert_allclose(found.vector or [], point.vector or [], atol=1e-6)
    assert port.count("docs") == 1


def test_a_write_names_a_known_key_and_only_on_a_sharded_collection(port: QdrantPort) -> None:
    port.create_collection("docs", SHARDED)
    port.create_collection("plain", CollectionSpec(vector_size=8))
    with pytest.raises(InvalidRequest, match="Shard key not specified"):
        port.upsert("docs", make_points(1))
    with pytest.raises(InvalidRequest, match="Shard key nope not found"):
        port.upsert("docs", make_points(1), shard_key="nope")
    with pytest.raises(InvalidRequest, match="no custom sharding"):
        port.upsert("plain", make_points(1), shard_key="p0")
    with pytest.raises(InvalidRequest, match="no custom sharding"):
        port.count("plain", shard_keys=["p0"])
    assert port.count("docs") == 0
    assert port.count("plain") == 0


def _versioned(version: int, tag: str) -> PointRecord:
    return PointRecord(7, [1.0] + [0.0] * 7, {"librarian_version": version, "tag": tag})


def _older_than(version: int) -> models.Filter:
    return models.Filter(
        should=[
            models.FieldCondition(key="librarian_version", range=models.Range(lt=version)),
            models.IsEmptyCondition(is_empty=models.PayloadField(key="librarian_version")),
        ]
    )


def _copies(port: QdrantPort) -> list[tuple[object, object]]:
    page, _ = port.scroll("docs", limit=10, with_vectors=False)
    return [(p.id, p.payload.get("tag")) for p in page]


def test_a_point_moved_to_another_key_leaves_no_copy_behind(port: QdrantPort) -> None:
    port.create_collection("docs", SHARDED)
    port.upsert("docs", [_versioned(1, "first")], shard_key="p0")
    port.upsert("docs", [_versioned(2, "moved")], shard_key="p1")
    assert _copies(port) == [(7, "moved")]
    assert port.count("docs") == 1
    hits = port.query("docs", [1.0] + [0.0] * 7, limit=5)
    assert [h.id for h in hits] == [7]
    if isinstance(port, EmbeddedQdrant):  # only the engine narrows reads by key
        assert port.count("docs", shard_keys=["p0"]) == 0
        assert port.count("docs", shard_keys=["p1"]) == 1


def test_a_conditional_write_is_judged_where_the_point_is(port: QdrantPort) -> None:
    port.create_collection("docs", SHARDED)
    port.upsert("docs", [_versioned(5, "newest")], shard_key="p0")
    port.upsert("docs", [_versioned(3, "stale")], shard_key="p1", update_filter=_older_than(3))
    assert _copies(port) == [(7, "newest")]  # an older write neither overwrites nor copies
    port.upsert(
        "docs", [_versioned(9, "insert")], shard_key="p2", update_mode=models.UpdateMode.INSERT_ONLY
    )
    assert _copies(port) == [(7, "newest")]  # the point exists: insert_only leaves it
    port.upsert("docs", [_versioned(6, "newer")], shard_key="p2", update_filter=_older_than(6))
    assert _copies(port) == [(7, "newer")]
    if isinstance(port, EmbeddedQdrant):
        assert port.count("docs", shard_keys=["p2"]) == 1
        assert port.count("docs", shard_keys=["p0", "p1"]) == 0


def test_payload_changes_and_deletes_find_points_under_any_key(port: QdrantPort) -> None:
    points = make_points(12)
    _sharded(port, points)
    port.set_payload("docs", {"label": "x"}, [0, 1, 2])
    assert {
        p.id
        for p in port.scroll(
            "docs",
            limit=20,
            scroll_filter=models.Filter(
                must=[models.FieldCondition(key="label", match=models.MatchValue(value="x"))]
            ),
        )[0]
    } == {0, 1, 2}
    port.update_vectors("docs", [PointRecord(4, [0.0] * 7 + [1.0])])
    [moved] = port.retrieve("docs", [4])
    np.testing.assert_allclose(moved.vector or [], [0.0] * 7 + [1.0], atol=1e-6)
    port.delete_points("docs", ids=[0, 4, 8])
    assert port.count("docs") == 9
    port.delete_points("docs", points_filter=_group("g1"))
    assert port.count("docs") == sum(1 for p in points if p.id not in (0, 4, 8)) - sum(
        1 for p in points if p.payload["group"] == "g1" and p.id not in (0, 4, 8)
    )


def test_keys_written_later_get_the_payload_indexes_and_survive_a_reopen(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        port.create_collection("docs", SHARDED)
        port.create_payload_index("docs", "group", models.PayloadSchemaType.KEYWORD)
        assert port.collection_info("docs").payload_schema == {"group": "keyword"}
        port.upsert("docs", make_points(9), shard_key="p1")
        described = port.describe_collection("docs")
        assert described.payload_schema["group"].points == 9
        assert described.config.params.sharding_method == models.ShardingMethod.CUSTOM
    finally:
        port.close()
    reopened = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        assert reopened.collection_info("docs").spec.shard_keys == KEYS
        assert reopened.count("docs", shard_keys=["p1"]) == 9
        assert reopened.count("docs", shard_keys=["p0"]) == 0
        hits = reopened.facet("docs", models.FacetRequest(key="group", exact=True))
        assert sum(h.count for h in hits) == 9
    finally:
        reopened.close()


def test_a_fusion_over_several_keys_is_refused_with_the_way_out(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        _sharded(port, make_points(30))
        vector = make_points(1, seed=9)[0].vector or []
        request = models.QueryRequest(
            prefetch=[
                models.Prefetch(query=vector, limit=5),
                models.Prefetch(query=vector, limit=3),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            limit=4,
        )
        with pytest.raises(InvalidRequest, match="query one shard key at a time"):
            port.query_points("docs", request)
        assert len(port.query_points("docs", request, shard_keys=["p1"])) == 4
        sample = models.QueryRequest(
            query=models.SampleQuery(sample=models.Sample.RANDOM), limit=12
        )
        drawn = [p.id for p in port.query_points("docs", sample)]
        assert len(set(drawn)) == 12
    finally:
        port.close()


def _server_answer(request: Recorded, index: int) -> Answer:
    """Qdrant's answers to the calls a custom-sharded write makes (point 7 lives under p0)."""
    path = request.path.split("?")[0]
    if path.endswith("/exists"):
        return qdrant_ok({"exists": False})
    if path == "/collections/docs/points" and request.method == "POST":  # retrieve
        return qdrant_ok([{"id": 7, "payload": None, "vector": None, "shard_key": "p0"}])
    if path == "/collections/docs/points/scroll":
        return qdrant_ok(
            {"points": [{"id": 7, "payload": None, "vector": None}], "next_page_offset": None}
        )
    if path == "/collections/docs/points/count":
        return qdrant_ok({"count": 3})
    if path.startswith("/collections/docs/points"):
        return qdrant_ok({"operation_id": index, "status": "completed"})
    return qdrant_ok(True)


def test_a_server_gets_custom_sharding_keys_and_a_move_as_qdrant_takes_them() -> None:
    """The requests a remote Qdrant receives: the collection with custom sharding and its keys,
    a write under its key, a point held under another key written then deleted from there
    (judged there when the write is conditional), reads with their selector."""
    with recording_server(_server_answer) as server:
        port = RemoteQdrant.connect("remote", server.url, retries=0)
        port.create_collection("docs", SHARDED)
        port.upsert("docs", [_versioned(4, "moved")], shard_key="p1", update_filter=_older_than(4))
        assert port.count("docs", shard_keys=["p1", "p2"]) == 3
        port.close()
    requests = [(r.method, r.path.split("?")[0], r.body) for r in server.requests]
    created = next(b for m, p, b in requests if (m, p) == ("PUT", "/collections/docs"))
    assert created["sharding_method"] == "custom"
    keys = [b for m, p, b in requests if (m, p) == ("PUT", "/collections/docs/shards")]
    assert keys == [{"shard_key": key, "shards_number": 1} for key in KEYS]
    scrolled = next(b for m, p, b in requests if p == "/collections/docs/points/scroll")
    assert scrolled["shard_key"] == "p0"  # the condition is judged where the point is
    writes = [b for m, p, b in requests if (m, p) == ("PUT", "/collections/docs/points")]
    assert [w["shard_key"] for w in writes] == ["p1"]
    assert "update_filter" not in writes[0]  # it matched where it was: moved as it is
    deleted = next(b for m, p, b in requests if p == "/collections/docs/points/delete")
    assert deleted == {"points": [7], "shard_key": "p0"}
    counted = next(b for m, p, b in requests if p == "/collections/docs/points/count")
    assert counted["shard_key"] == ["p1", "p2"]
