"""One contract, two adapters: the embedded engine and the remote client behave alike."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models

from librarian.core.collection_spec import with_source_vectors
from librarian.storage.collection_config import apply_collection_config
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import CollectionExists, CollectionNotFound, InvalidRequest
from librarian.storage.port import (
    CollectionSpec,
    HnswSpec,
    OptimizersSpec,
    PointRecord,
    QdrantPort,
    QuantizationSpec,
    SparseVectorSpec,
)
from librarian.storage.remote import spec_from_create
from librarian.storage.vectors import vectors_equal

from .conftest import make_points
from .vector_shapes import (
    SHAPED_SPEC,
    reference_collection,
    reference_points,
    reference_vectors,
    shaped_points,
)


def _match(key: str, value: object) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))  # type: ignore[arg-type]


def test_create_exists_info_delete(port: QdrantPort) -> None:
    assert not port.collection_exists("docs")
    port.create_collection("docs", CollectionSpec(vector_size=8, distance="Cosine"))
    assert port.collection_exists("docs")
    with pytest.raises(CollectionExists, match=f"cluster '{port.cluster}', collection 'docs'"):
        port.create_collection("docs", CollectionSpec(vector_size=8))
    info = port.collection_info("docs")
    assert (info.vector_size, info.distance, info.points_count) == (8, "Cosine", 0)
    port.delete_collection("docs")
    port.delete_collection("docs")  # idempotent
    assert not port.collection_exists("docs")


def test_update_mutable_config_and_refuse_immutable(port: QdrantPort) -> None:
    port.create_collection("docs", CollectionSpec(vector_size=8))
    port.upsert("docs", make_points(20))
    tuned = CollectionSpec(
        vector_size=8,
        hnsw=HnswSpec(m=32, ef_construct=200),
        quantization=QuantizationSpec(kind="scalar", always_ram=True),
        optimizers=OptimizersSpec(indexing_threshold=1000),
    )
    port.update_collection("docs", tuned)
    assert port.count("docs") == 20  # nothing lost by a config change
    with pytest.raises(InvalidRequest, match="immutable"):
        port.update_collection("docs", CollectionSpec(vector_size=16))


def test_missing_collection_names_cluster_and_collection(port: QdrantPort) -> None:
    for action in (
        lambda: port.count("absent"),
        lambda: port.collection_info("absent"),
        lambda: port.scroll("absent", limit=1),
    ):
        with pytest.raises(CollectionNotFound) as caught:
            action()
        assert f"cluster '{port.cluster}'" in str(caught.value)
        assert "collection 'absent'" in str(caught.value)


def test_scroll_pages_through_everything_in_id_order(filled: QdrantPort) -> None:
    seen: list[object] = []
    offset = None
    while True:
        page, offset = filled.scroll("docs", limit=7, offset=offset)
        seen += [p.id for p in page]
        assert all(p.vector is not None and len(p.vector) == 8 for p in page)
        if offset is None:
            break
    assert seen == list(range(50))


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (models.Filter(must=[_match("group", "g1")]), 17),
        (
            models.Filter(
                must=[models.FieldCondition(key="group", match=models.MatchAny(any=["g1", "g2"]))]
            ),
            33,
        ),
        (models.Filter(must_not=[_match("group", "g0")]), 33),
        (models.Filter(must=[models.HasIdCondition(has_id=[1, 2, 3, 99])]), 3),
        (
            models.Filter(
                must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="missing"))]
            ),
            50,
        ),
        (models.Filter(should=[_match("n", 1), _match("n", 2)]), 2),
    ],
)
def test_filters_in_count_and_scroll(filled: QdrantPort, flt: models.Filter, expected: int) -> None:
    assert filled.count("docs", count_filter=flt) == expected
    page, _ = filled.scroll("docs", limit=100, scroll_filter=flt)
    assert len(page) == expected


def test_query_orders_by_similarity(filled: QdrantPort) -> None:
    target = make_points(50)[17]
    hits = filled.query("docs", target.vector or [], limit=5)
    assert hits[0].id == 17
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].payload["text"] == "doc 17"
    exact = filled.query("docs", target.vector or [], limit=5, exact=True)
    assert [h.id for h in exact] == [h.id for h in hits]
    filtered = filled.query(
        "docs",
        target.vector or [],
        limit=5,
        query_filter=models.Filter(must=[_match("group", "g0")]),
    )
    assert all(h.payload["group"] == "g0" for h in filtered)


def test_sample_is_random_distinct_and_has_vectors(filled: QdrantPort) -> None:
    sample = filled.sample("docs", 20)
    ids = [p.id for p in sample]
    assert len(ids) == 20
    assert len(set(ids)) == 20
    assert all(p.vector is not None and len(p.vector) == 8 for p in sample)
    assert all("text" in p.payload for p in sample)


def test_retrieve_skips_missing(filled: QdrantPort) -> None:
    got = filled.retrieve("docs", [3, 4, 1000])
    assert sorted(p.id for p in got) == [3, 4]  # type: ignore[type-var]
    original = make_points(50)[3]
    record = next(p for p in got if p.id == 3)
    np.testing.assert_allclose(record.vector or [], original.vector or [], atol=1e-6)
    assert record.payload == original.payload


def test_payload_set_and_delete(filled: QdrantPort) -> None:
    filled.set_payload("docs", {"label": "a"}, [1, 2])
    assert filled.count("docs", count_filter=models.Filter(must=[_match("label", "a")])) == 2
    assert filled.retrieve("docs", [1])[0].payload["text"] == "doc 1"  # merged, not replaced
    filled.delete_payload_keys("docs", ["label"])
    assert filled.count("docs", count_filter=models.Filter(must=[_match("label", "a")])) == 0
    filled.set_payload("docs", {"label": "b"}, [5, 6])
    filled.delete_payload_keys(
        "docs", ["label"], points_filter=models.Filter(must=[models.HasIdCondition(has_id=[5])])
    )
    assert filled.count("docs", count_filter=models.Filter(must=[_match("label", "b")])) == 1


def test_delete_points_by_ids_and_by_filter(filled: QdrantPort) -> None:
    filled.delete_points("docs", ids=[0, 1, 2])
    assert filled.count("docs") == 47
    filled.delete_points("docs", points_filter=models.Filter(must=[_match("group", "g1")]))
    assert filled.count("docs") == 47 - 16
    with pytest.raises(InvalidRequest, match="exactly one of ids or filter"):
        filled.delete_points("docs")


def test_scroll_keys_pages_like_scroll_with_only_the_named_keys(filled: QdrantPort) -> None:
    filled.set_payload("docs", {"extra": [1, 2]}, [4])
    selection = models.Filter(must_not=[_match("group", "g0")])
    ids: list[object] = []
    payloads: list[dict[str, object]] = []
    offset = None
    while True:
        page = filled.scroll_keys(
            "docs", keys=["n", "extra"], limit=7, offset=offset, scroll_filter=selection
        )
        assert len(page.ids) == len(page.payloads) <= 7
        ids += page.ids
        payloads += page.payloads
        offset = page.next_offset
        if offset is None:
            break
    scrolled, _ = filled.scroll("docs", limit=100, scroll_filter=selection, with_vectors=False)
    assert ids == [p.id for p in scrolled]
    assert payloads == [
        {"n": i, "extra": [1, 2]} if i == 4 else {"n": i} for i in ids if isinstance(i, int)
    ]
    with pytest.raises(CollectionNotFound, match="collection 'absent'"):
        filled.scroll_keys("absent", keys=["n"], limit=1)


def test_uuid_ids_and_keyword_index(port: QdrantPort) -> None:
    port.create_collection("docs", CollectionSpec(vector_size=4))
    ident = str(uuid.uuid4())
    port.upsert("docs", [PointRecord(id=ident, vector=[1.0, 0, 0, 0], payload={"k": "v"})])
    port.create_keyword_index("docs", "k")
    port.create_keyword_index("docs", "k")  # idempotent
    assert port.retrieve("docs", [ident])[0].id == ident
    assert port.scroll_keys("docs", keys=["k"], limit=10) == ([ident], [{"k": "v"}], None)
    assert port.count("docs", count_filter=models.Filter(must=[_match("k", "v")])) == 1


def test_upsert_overwrites_same_id(filled: QdrantPort) -> None:
    filled.upsert("docs", [PointRecord(id=4, vector=[1.0] + [0.0] * 7, payload={"text": "new"})])
    assert filled.count("docs") == 50
    assert filled.retrieve("docs", [4])[0].payload == {"text": "new"}


# ---------------------------------------------------------------- versioned writes


def _versioned(point_id: int, version: int, tag: str, size: int = 8) -> PointRecord:
    vector = [1.0] + [0.0] * (size - 1)
    return PointRecord(point_id, vector, {"librarian_version": version, "tag": tag})


def _older_than(version: int) -> models.Filter:
    return models.Filter(
        should=[
            models.FieldCondition(key="librarian_version", range=models.Range(lt=version)),
            models.IsEmptyCondition(is_empty=models.PayloadField(key="librarian_version")),
        ]
    )


def _tags(port: QdrantPort, ids: list[int]) -> dict[object, object]:
    return {r.id: r.payload.get("tag") for r in port.retrieve("docs", ids, with_vectors=False)}


def test_conditional_upsert_overwrites_older_inserts_missing_keeps_newer(port: QdrantPort) -> None:
    port.create_collection("docs", CollectionSpec(vector_size=8))
    big = 2**52 + 3  # versions are exact up to 2**53 in range filters
    port.upsert("docs", [_versioned(1, 5, "old"), _versioned(2, big, "newest")])
    port.upsert("docs", [PointRecord(3, [0.5] * 8, {"tag": "unversioned"})])
    port.upsert(
        "docs",
        [_versioned(i, big - 1, "write") for i in (1, 2, 3, 4)],
        update_filter=_older_than(big - 1),
    )
    assert _tags(port, [1, 2, 3, 4]) == {1: "write", 2: "newest", 3: "write", 4: "write"}
    port.upsert("docs", [_versioned(2, big + 1, "next")], update_filter=_older_than(big + 1))
    assert _tags(port, [2]) == {2: "next"}


def test_update_modes_insert_only_new_points_or_update_only_existing_ones(
    port: QdrantPort,
) -> None:
    port.create_collection("docs", CollectionSpec(vector_size=8))
    port.upsert("docs", [PointRecord(i, [0.5] * 8, {"tag": "first"}) for i in (1, 2)])
    written = [PointRecord(i, [0.25] * 8, {"tag": "insert"}) for i in (2, 3)]
    port.upsert("docs", written, update_mode=models.UpdateMode.INSERT_ONLY)
    assert _tags(port, [1, 2, 3]) == {1: "first", 2: "first", 3: "insert"}
    written = [PointRecord(i, [0.25] * 8, {"tag": "update"}) for i in (3, 4)]
    port.upsert("docs", written, update_mode=models.UpdateMode.UPDATE_ONLY)
    assert _tags(port, [1, 2, 3, 4]) == {1: "first", 2: "first", 3: "update"}


def test_conditional_vector_update_and_payload_operations(port: QdrantPort) -> None:
    port.create_collection("docs", CollectionSpec(vector_size=8))
    port.upsert("docs", [_versioned(1, 10, "a"), _versioned(2, 30, "b")])
    moved = [0.0, 1.0] + [0.0] * 6
    port.update_vectors(
        "docs", [PointRecord(1, moved), PointRecord(2, moved)], update_filter=_older_than(20)
    )
    vectors = {r.id: r.vector for r in port.retrieve("docs", [1, 2])}
    assert vectors[1] == pytest.approx(moved)
    assert vectors[2] == pytest.approx([1.0] + [0.0] * 7)
    port.set_payload("docs", {"extra": 1}, [1, 2], points_filter=_older_than(20))
    payloads = {r.id: r.payload for r in port.retrieve("docs", [1, 2], with_vectors=False)}
    assert payloads[1]["extra"] == 1
    assert "extra" not in payloads[2]
    port.set_payload("docs", {"inner": 2}, [1], key="nested")
    port.set_payload("docs", {"flag": True}, points_filter=models.Filter(must=[_match("tag", "b")]))
    port.overwrite_payload(
        "docs",
        {"librarian_version": 40, "only": True},
        points_filter=models.Filter(must=[models.HasIdCondition(has_id=[1, 2]), _older_than(40)]),
    )
    payloads = {r.id: r.payload for r in port.retrieve("docs", [1, 2], with_vectors=False)}
    assert payloads == {
        1: {"librarian_version": 40, "only": True},
        2: {"librarian_version": 40, "only": True},
    }
    assert port.retrieve("docs", [1], with_vectors=True)[0].vector == pytest.approx(moved)


def test_retrieve_named_payload_keys_and_tombstone_filters(port: QdrantPort) -> None:
    port.create_collection("docs", CollectionSpec(vector_size=8))
    port.upsert("docs", [_versioned(1, 7, "x"), _versioned(2, 8, "y")])
    port.set_payload("docs", {"nested": {"inner": 1}}, [1])
    port.set_payload("docs", {"librarian_deleted": True}, [2])
    [record] = port.retrieve("docs", [1], with_vectors=False, with_payload=["librarian_version"])
    assert record.payload == {"librarian_version": 7}
    live = models.Filter(
        must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="librarian_deleted"))]
    )
    assert port.count("docs", count_filter=live) == 1
    page, _ = port.scroll("docs", limit=10, scroll_filter=live, with_vectors=False)
    assert [p.id for p in page] == [1]
    keys = ["librarian_version", "librarian_deleted"]
    page, _ = port.scroll("docs", limit=10, with_vectors=False, with_payload=keys)
    assert {p.id: p.payload for p in page} == {
        1: {"librarian_version": 7},
        2: {"librarian_version": 8, "librarian_deleted": True},
    }
    assert all(p.vector is None for p in page)
    port.delete_points(
        "docs",
        points_filter=models.Filter(must=[models.HasIdCondition(has_id=[1, 2]), _older_than(8)]),
    )
    assert _tags(port, [1, 2]) == {2: "y"}


_EVERY_INDEX: dict[str, models.PayloadSchemaType | models.PayloadSchemaParams] = {
    "tag": models.PayloadSchemaType.KEYWORD,
    "n": models.PayloadSchemaType.INTEGER,
    "price": models.PayloadSchemaType.FLOAT,
    "flag": models.PayloadSchemaType.BOOL,
    "where": models.PayloadSchemaType.GEO,
    "at": models.PayloadSchemaType.DATETIME,
    "ref": models.PayloadSchemaType.UUID,
    "body": models.TextIndexParams(
        type=models.TextIndexType.TEXT,
        tokenizer=models.TokenizerType.WORD,
        min_token_len=2,
        max_token_len=20,
        lowercase=True,
    ),
    "tenant": models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
    "rank": models.IntegerIndexParams(
        type=models.IntegerIndexType.INTEGER, lookup=True, range=False
    ),
}


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_payload_indexes_of_every_schema_created_idempotently_and_deleted(
    filled: QdrantPort,
) -> None:
    for field_name, schema in _EVERY_INDEX.items():
        filled.create_payload_index("docs", field_name, schema)
        filled.create_payload_index("docs", field_name, schema)  # idempotent
    described = filled.describe_collection("docs")
    assert described.points_count == 50
    vectors = described.config.params.vectors
    assert isinstance(vectors, models.VectorParams)
    assert vectors.size == 8
    if described.payload_schema:  # qdrant-client's local mode keeps no payload index
        assert {k: v.data_type.value for k, v in described.payload_schema.items()} == {
            k: (s.value if isinstance(s, models.PayloadSchemaType) else str(s.type.value))
            for k, s in _EVERY_INDEX.items()
        }
        body = described.payload_schema["body"].params
        assert isinstance(body, models.TextIndexParams)
        assert (body.tokenizer, body.min_token_len, body.max_token_len, body.lowercase) == (
            models.TokenizerType.WORD,
            2,
            20,
            True,
        )
        rank = described.payload_schema["rank"].params
        assert isinstance(rank, models.IntegerIndexParams)
        assert (rank.lookup, rank.range) == (True, False)
    filled.delete_payload_index("docs", "tag")
    filled.delete_payload_index("docs", "tag")  # a missing index is not an error
    assert "tag" not in filled.describe_collection("docs").payload_schema
    # indexes change no answer
    assert filled.count("docs", count_filter=models.Filter(must=[_match("group", "g1")])) == len(
        [p for p in make_points(50) if p.payload.get("group") == "g1"]
    )
    with pytest.raises(CollectionNotFound):
        filled.create_payload_index("absent", "tag", models.PayloadSchemaType.KEYWORD)


def test_remote_payload_index_requests_carry_the_schema_as_given() -> None:
    from librarian.storage.remote import RemoteQdrant

    from .recording_server import qdrant_ok, recording_server

    answer = qdrant_ok({"operation_id": 1, "status": "completed"})
    with recording_server(lambda r, i: answer) as server:
        port = RemoteQdrant.connect("remote", server.url, retries=0)
        port.create_payload_index("docs", "body", _EVERY_INDEX["body"])
        port.create_payload_index("docs", "at", models.PayloadSchemaType.DATETIME)
        port.delete_payload_index("docs", "at")
        port.close()
    first, second, third = server.requests
    assert (first.method, first.path.split("?")[0]) == ("PUT", "/collections/docs/index")
    assert first.body == {
        "field_name": "body",
        "field_schema": {
            "type": "text",
            "tokenizer": "word",
            "min_token_len": 2,
            "max_token_len": 20,
            "lowercase": True,
        },
    }
    assert second.body == {"field_name": "at", "field_schema": "datetime"}
    assert (third.method, third.path.split("?")[0]) == ("DELETE", "/collections/docs/index/at")


def test_ordered_scroll_and_integer_index_give_the_newest_version(port: QdrantPort) -> None:
    """The newest value of an integer key, read the way the router reads a home's generation,
    agrees with every point's value; a page in id order goes on where it stopped."""
    port.create_collection("docs", CollectionSpec(vector_size=8))
    port.create_payload_index("docs", "stamp", models.PayloadSchemaType.INTEGER)
    stamps = np.random.default_rng(3).permutation(50) * 1000 + 7
    points = make_points(50)
    port.upsert(
        "docs",
        [
            PointRecord(p.id, p.vector, {"stamp": int(s)})
            for p, s in zip(points, stamps, strict=True)
        ],
    )
    port.upsert("docs", [PointRecord(1000, points[0].vector, {"other": 1})])  # no stamp
    newest = models.OrderBy(key="stamp", direction=models.Direction.DESC)
    records, next_offset = port.scroll_points(
        "docs",
        models.ScrollRequest(limit=3, order_by=newest, with_payload=["stamp"], with_vector=False),
    )
    assert [r.payload for r in records] == [{"stamp": int(s)} for s in sorted(stamps)[::-1][:3]]
    assert records[0].order_value == int(stamps.max())
    assert records[0].vector is None
    assert next_offset is None  # an ordered scroll has no next offset, as Qdrant answers
    first, offset = port.scroll_points("docs", models.ScrollRequest(limit=20, with_payload=False))
    rest, end = port.scroll_points("docs", models.ScrollRequest(limit=100, offset=offset))
    assert [r.id for r in first + rest] == [*sorted(p.id for p in points), 1000]
    assert end is None
    assert first[0].payload is None


# ----------------------------------------------------------------- every vector shape


def test_full_vectors_config_is_created_and_reported(port: QdrantPort) -> None:
    port.create_collection("shaped", SHAPED_SPEC)
    spec = port.collection_info("shaped").spec
    assert spec.layout() == SHAPED_SPEC.layout()
    assert spec.vector_size is None
    assert spec.named
    assert spec.vectors["colbert"].multivector == "max_sim"
    assert spec.vectors["image"].distance == "Dot"
    assert spec.sparse_vectors["keywords"].modifier == "idf"
    assert spec.default_vector() is None  # two plain dense vectors: the DomainMap must choose
    info = port.collection_info("shaped")
    assert (info.vector_size, info.distance) == (None, None)
    # an unnamed dense vector next to a sparse one
    port.create_collection(
        "hybrid",
        CollectionSpec(vector_size=5, distance="Euclid", sparse_vectors={"s": SparseVectorSpec()}),
    )
    hybrid = port.collection_info("hybrid")
    assert (hybrid.vector_size, hybrid.distance) == (5, "Euclid")
    assert set(hybrid.spec.sparse_vectors) == {"s"}
    with pytest.raises(InvalidRequest, match="immutable"):
        port.update_collection("shaped", CollectionSpec(vector_size=6))


def _reference() -> QdrantClient:
    client = QdrantClient(":memory:")
    reference_collection(client, "shaped")
    return client


def test_every_vector_shape_round_trips_like_local_mode(port: QdrantPort) -> None:
    points = shaped_points(40, seed=3)
    port.create_collection("shaped", SHAPED_SPEC)
    port.upsert("shaped", points)
    reference = _reference()
    reference.upsert("shaped", reference_points(points))
    ids = [p.id for p in points]
    expected = reference_vectors(reference, "shaped", ids)
    got = {r.id: r.vector for r in port.retrieve("shaped", ids)}
    assert got.keys() == expected.keys()
    for point_id in ids:
        assert vectors_equal(got[point_id], expected[point_id], atol=1e-5), point_id
    scrolled: dict[object, Any] = {}
    offset = None
    while True:
        page, offset = port.scroll("shaped", limit=9, offset=offset)
        scrolled.update({p.id: p.vector for p in page})
        if offset is None:
            break
    assert all(vectors_equal(scrolled[i], expected[i], atol=1e-5) for i in ids)
    lacking = [p.id for p in points if "text" not in (p.vector or {})]
    assert lacking
    assert all("text" not in got[i] for i in lacking)
    assert [r.dense("text") for r in port.retrieve("shaped", lacking)] == [None] * len(lacking)


def test_update_vectors_replaces_and_adds_named_vectors_like_local_mode(port: QdrantPort) -> None:
    points = shaped_points(12, seed=4)
    port.create_collection("shaped", SHAPED_SPEC)
    port.upsert("shaped", points)
    reference = _reference()
    reference.upsert("shaped", reference_points(points))
    updates = [
        PointRecord(8, {"text": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]}),  # adds the missing vector
        PointRecord(3, {"image": [0.5, 0.5, 0.5, 0.5], "colbert": [[1.0, 2.0, 3.0]]}),
        PointRecord(6, {"keywords": models.SparseVector(indices=[9, 2], values=[0.25, 0.75])}),
    ]
    port.update_vectors("shaped", updates)
    reference.update_vectors(
        "shaped",
        [models.PointVectors(id=u.id, vector=u.vector) for u in updates],  # type: ignore[arg-type]
    )
    ids = [p.id for p in points]
    expected = reference_vectors(reference, "shaped", ids)
    got = {r.id: r.vector for r in port.retrieve("shaped", ids)}
    for point_id in ids:
        assert vectors_equal(got[point_id], expected[point_id], atol=1e-5), point_id
    sparse = got[6]["keywords"]  # type: ignore[index]
    assert list(sparse.indices) == [2, 9]  # stored in index order, as Qdrant does


def test_query_on_a_named_dense_vector_ranks_like_local_mode(port: QdrantPort) -> None:
    points = shaped_points(60, seed=5)
    port.create_collection("shaped", SHAPED_SPEC)
    port.upsert("shaped", points)
    reference = _reference()
    reference.upsert("shaped", reference_points(points))
    rng = np.random.default_rng(9)
    for using, dim in (("text", 6), ("image", 4)):
        query = [float(x) for x in rng.standard_normal(dim)]
        hits = port.query("shaped", query, limit=10, using=using, exact=True)
        expected = reference.query_points("shaped", query=query, using=using, limit=10).points
        assert [h.id for h in hits] == [e.id for e in expected]
        assert [h.score for h in hits] == pytest.approx([e.score for e in expected], rel=1e-4)
    with pytest.raises(InvalidRequest):
        port.query("shaped", [0.0] * 6, limit=3, using="nope")


@pytest.mark.parametrize(
    ("vector", "words"),
    [
        ({"nope": [1.0] * 6}, "Not existing vector name"),
        ({"text": [1.0, 2.0]}, "dimension"),
        ({"text": [float("nan")] * 6}, "NaN"),
        ({"colbert": [1.0, 2.0, 3.0]}, "."),
        ({"keywords": [1.0, 2.0]}, "sparse"),
        ([1.0] * 6, "Unnamed vectors are not allowed"),
    ],
)
def test_malformed_vectors_are_refused(port: QdrantPort, vector: Any, words: str) -> None:
    port.create_collection("shaped", SHAPED_SPEC)
    with pytest.raises(InvalidRequest, match=words):
        port.upsert("shaped", [PointRecord(1, vector)])
    assert port.count("shaped") == 0


def test_delete_vectors_removes_only_the_named_ones_like_local_mode(port: QdrantPort) -> None:
    points = shaped_points(15, seed=6)
    port.create_collection("shaped", SHAPED_SPEC)
    port.upsert("shaped", points)
    reference = _reference()
    reference.upsert("shaped", reference_points(points))
    port.delete_vectors("shaped", ["image", "keywords"], ids=[0, 1, 2])
    reference.delete_vectors(
        "shaped", ["image", "keywords"], points=models.PointIdsList(points=[0, 1, 2])
    )
    by_group = models.Filter(must=[_match("group", "g1")])
    port.delete_vectors("shaped", ["colbert"], points_filter=by_group)
    reference.delete_vectors("shaped", ["colbert"], points=models.FilterSelector(filter=by_group))
    ids = [p.id for p in points]
    expected = reference_vectors(reference, "shaped", ids)
    got = {r.id: r.vector for r in port.retrieve("shaped", ids)}
    for point_id in ids:
        assert vectors_equal(got[point_id], expected[point_id], atol=1e-5), point_id
    assert port.count("shaped") == 15  # the points stay


def test_a_named_collection_is_tuned_in_place_and_keeps_its_vectors(port: QdrantPort) -> None:
    points = shaped_points(20, seed=8)
    port.create_collection("shaped", SHAPED_SPEC)
    port.upsert("shaped", points)
    tuned = with_source_vectors(
        CollectionSpec(
            vector_size=6,
            hnsw=HnswSpec(m=24, ef_construct=128),
            quantization=QuantizationSpec(kind="scalar", always_ram=True),
            optimizers=OptimizersSpec(indexing_threshold=1000),
        ),
        SHAPED_SPEC,
        "text",
    )
    assert apply_collection_config(port, "shaped", tuned).action == "updated"
    spec = port.collection_info("shaped").spec
    assert spec.layout() == SHAPED_SPEC.layout()
    if isinstance(port, EmbeddedQdrant):  # local mode takes index settings but keeps none
        assert spec.hnsw is not None
        assert spec.hnsw.m == 24
        assert spec.vectors["text"].quantization == QuantizationSpec(kind="scalar", always_ram=True)
    assert port.count("shaped") == 20
    before = {p.id: p.vector for p in points}
    after = {r.id: r.vector for r in port.retrieve("shaped", list(before))}
    reference = _reference()
    reference.upsert("shaped", reference_points(points))
    expected = reference_vectors(reference, "shaped", list(before))
    assert all(vectors_equal(after[i], expected[i], atol=1e-5) for i in before)
    grown = CollectionSpec(vectors={**SHAPED_SPEC.vectors, "extra": SHAPED_SPEC.vectors["text"]})
    assert apply_collection_config(port, "shaped", grown).action == "needs_migration"


def test_an_unnamed_multivector_is_created_reported_and_queried_like_local_mode(
    port: QdrantPort, tmp_path: Path
) -> None:
    """The unnamed vector may itself be a multivector (and of another datatype), as in
    Qdrant: its points are taken, the config reported and the query answered as local mode
    does, and an embedded engine still knows it after reopening."""
    params = models.VectorParams(
        size=3,
        distance=models.Distance.DOT,
        multivector_config=models.MultiVectorConfig(
            comparator=models.MultiVectorComparator.MAX_SIM
        ),
        datatype=models.Datatype.FLOAT16,
    )
    spec = spec_from_create(models.CreateCollection(vectors=params))
    rng = np.random.default_rng(11)
    matrices = [rng.random((int(rng.integers(1, 4)), 3)).round(2).tolist() for _ in range(30)]
    reference = QdrantClient(":memory:")
    reference.create_collection("multi", vectors_config=params)
    reference.upsert("multi", [models.PointStruct(id=i, vector=m) for i, m in enumerate(matrices)])
    port.create_collection("multi", spec)
    port.upsert("multi", [PointRecord(id=i, vector=m) for i, m in enumerate(matrices)])
    described = port.describe_collection("multi").config.params.vectors
    assert described == reference.get_collection("multi").config.params.vectors
    assert port.collection_info("multi").spec.routable_vectors() == []  # not routable
    query = models.QueryRequest(query=[[0.3, 0.1, 0.9], [0.5, 0.5, 0.2]], limit=7)
    got = port.query_points("multi", query)
    want = reference.query_points("multi", query=query.query, limit=7).points
    assert [p.id for p in got] == [p.id for p in want]
    assert np.allclose([p.score for p in got], [p.score for p in want], atol=1e-2)  # float16
    if isinstance(port, EmbeddedQdrant):
        port.close()
        reopened = EmbeddedQdrant("edge", tmp_path / "edge")
        try:
            assert reopened.collection_info("multi").spec.layout() == spec.layout()
        finally:
            reopened.close()


def test_a_collection_with_no_vector_holds_payloads_like_local_mode(
    port: QdrantPort, tmp_path: Path
) -> None:
    """Qdrant takes a collection with no vector at all (payloads only); so do both adapters,
    and nothing about it shows a vector it was not given, also after reopening."""
    reference = QdrantClient(":memory:")
    reference.create_collection("bare", vectors_config={})
    port.create_collection("bare", spec_from_create(models.CreateCollection(vectors={})))
    points = [PointRecord(i, {}, {"n": i % 3}) for i in range(6)]
    reference.upsert(
        "bare", [models.PointStruct(id=p.id, vector={}, payload=p.payload) for p in points]
    )
    port.upsert("bare", points)
    params = port.describe_collection("bare").config.params
    assert params.vectors == reference.get_collection("bare").config.params.vectors == {}
    assert not params.sparse_vectors
    ids = [p.id for p in points]
    got = sorted(port.retrieve("bare", ids), key=lambda r: str(r.id))
    want = sorted(reference.retrieve("bare", ids, with_vectors=True), key=lambda r: str(r.id))
    assert [(r.id, r.payload, r.vector or {}) for r in got] == [
        (r.id, r.payload, r.vector) for r in want
    ]
    assert port.count("bare") == 6
    with pytest.raises(ValueError, match="Not existing vector name error"):
        reference.upsert("bare", [models.PointStruct(id=9, vector=[0.1, 0.2])])
    with pytest.raises(InvalidRequest, match="Not existing vector name error"):
        port.upsert("bare", [PointRecord(9, [0.1, 0.2], {})])
    if isinstance(port, EmbeddedQdrant):
        port.close()
        reopened = EmbeddedQdrant("edge", tmp_path / "edge")
        try:
            spec = reopened.collection_info("bare").spec
            assert (spec.dense_vectors(), dict(spec.sparse_vectors)) == ({}, {})
        finally:
            reopened.close()


def test_a_vector_is_added_and_removed_like_local_mode(port: QdrantPort) -> None:
    port.create_collection("docs", spec_from_create(models.CreateCollection(vectors={})))
    reference = QdrantClient(":memory:")
    reference.create_collection("docs", vectors_config={})
    config = models.DenseVectorNameConfig(
        dense=models.DenseVectorConfig(size=2, distance=models.Distance.EUCLID)
    )
    port.create_vector_name("docs", "added", config)
    reference.create_vector_name("docs", "added", config)
    wanted = reference.get_collection("docs").config.params.vectors
    assert port.describe_collection("docs").config.params.vectors == wanted
    assert port.collection_info("docs").spec.vectors["added"].size == 2
    port.upsert("docs", [PointRecord(1, {"added": [3.0, 4.0]}, {})])
    assert port.retrieve("docs", [1])[0].dense("added") == [3.0, 4.0]
    port.delete_vector_name("docs", "added")
    assert port.describe_collection("docs").config.params.vectors == {}
    with pytest.raises(InvalidRequest, match="Not existing vector name error"):
        port.upsert("docs", [PointRecord(2, {"added": [3.0, 4.0]}, {})])
