"""Collection endpoints, payload indexes and aliases through the router, with the official client.

Each answer is compared with an independent reference: qdrant-client's local
mode holding the same points in one collection (existence, aliases, counts,
vector configuration), or the engine itself holding the same indexes
(payload schema: local mode keeps no payload index). Pass-through to a remote
default cluster is checked byte for byte against a recording server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient
from qdrant_client.http import models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.contracts.payload import LABEL_KEY
from librarian.router import RouterState
from librarian.router.auth import RouterKeys
from librarian.router.library import CollectionHome
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import ClusterConfig, Fleet
from librarian.storage.port import CollectionSpec

from .recording_server import Recorded, recording_server
from .router_support import (
    DIM,
    Library,
    RouterThread,
    build_embedded_library,
    library_with_flaky_west,
    make_state,
)

ADMIN = "admin-key-for-tests"
READER = "reader-key-for-tests"
KEYS = RouterKeys(read_write=(ADMIN,), read_only=(READER,))

INDEXES: dict[str, models.PayloadSchemaType | models.PayloadSchemaParams] = {
    "group": models.PayloadSchemaType.KEYWORD,
    "n": models.PayloadSchemaType.INTEGER,
    "score": models.PayloadSchemaType.FLOAT,
    "flag": models.PayloadSchemaType.BOOL,
    "where": models.PayloadSchemaType.GEO,
    "at": models.PayloadSchemaType.DATETIME,
    "ref": models.PayloadSchemaType.UUID,
    "text": models.TextIndexParams(
        type=models.TextIndexType.TEXT,
        tokenizer=models.TokenizerType.WORD,
        min_token_len=2,
        lowercase=True,
    ),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    library = build_embedded_library(tmp_path_factory.mktemp("library"))
    library.definition = replace(library.definition, source=CollectionHome("east", "reference"))
    east = library.fleet.get("east")
    east.create_collection("plain", CollectionSpec(vector_size=DIM))
    east.upsert("plain", library.points[:10])
    east.create_collection("plain2", CollectionSpec(vector_size=DIM))
    east.upsert("plain2", library.points[10:20])
    yield library
    library.fleet.close()


@pytest.fixture(scope="module")
def router(built: Library) -> Iterator[RouterThread]:
    state = make_state(
        built, keys=KEYS, passthrough=frozenset({"plain", "plain2", "reference", "absent"})
    )
    with RouterThread(state) as running:
        yield running


@pytest.fixture(scope="module")
def reference(built: Library) -> QdrantClient:
    """Local mode: the library's points in one collection named like it, and ``plain``."""
    local = QdrantClient(":memory:")
    for name, points in (("library", built.points), ("plain", built.points[:10])):
        local.create_collection(
            name, models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
        local.upsert(
            name,
            [models.PointStruct(id=p.id, vector=p.vector or [], payload=p.payload) for p in points],
        )
    return local


def _client(router: RouterThread, key: str = ADMIN) -> QdrantClient:
    return QdrantClient(url=router.url, api_key=key, timeout=30, check_compatibility=False)


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "time"}, body
    return str(body["status"]["error"])


def test_collection_exists_and_listing_as_qdrant_answers(
    router: RouterThread, reference: QdrantClient
) -> None:
    client = _client(router)
    for name in ("library", "plain", "missing", "absent", "reference-not"):
        expected = reference.collection_exists(name)
        assert client.collection_exists(name) is expected, name
    # allowlisted but absent: not listed, does not exist; the product's own never listed
    listed = {c.name for c in client.get_collections().collections}
    assert listed == {"library", "plain", "plain2", "reference"}


def test_library_info_is_computed_from_the_homes(
    router: RouterThread, reference: QdrantClient, built: Library
) -> None:
    client = _client(router)
    info = client.get_collection("library")
    expected = reference.get_collection("library")
    assert info.points_count == expected.points_count == len(built.points)
    vectors = info.config.params.vectors
    assert isinstance(vectors, models.VectorParams)
    assert (vectors.size, vectors.distance) == (DIM, models.Distance.COSINE)
    engines = [
        built.fleet.get(r.cluster).describe_collection(r.collection)
        for r in built.definition.domains
    ]
    assert info.segments_count == sum(e.segments_count for e in engines)
    assert info.indexed_vectors_count == sum(e.indexed_vectors_count or 0 for e in engines)
    source = built.fleet.get("east").describe_collection("reference")
    assert info.config.hnsw_config == source.config.hnsw_config
    assert info.status == models.CollectionStatus.GREEN
    assert LABEL_KEY not in info.payload_schema


def test_library_info_counts_each_live_point_once(router: RouterThread, built: Library) -> None:
    client = _client(router)
    client.delete("library", models.PointIdsList(points=[0, 1, 2]))
    try:
        assert client.get_collection("library").points_count == len(built.points) - 3
        assert client.count("library", exact=True).count == len(built.points) - 3
    finally:
        client.upsert(
            "library",
            [
                models.PointStruct(id=p.id, vector=p.vector or [], payload=p.payload)
                for p in built.points[:3]
            ],
        )
    assert client.get_collection("library").points_count == len(built.points)


def test_payload_indexes_fan_out_to_every_home_and_the_source(
    router: RouterThread, built: Library, tmp_path: Path
) -> None:
    client = _client(router)
    for field_name, schema in INDEXES.items():
        client.create_payload_index("library", field_name, schema)
    # the engine itself, holding the same indexes, is the reference for the schema
    engine = EmbeddedQdrant("reference", tmp_path / "engine")
    engine.create_collection("one", CollectionSpec(vector_size=DIM))
    engine.upsert("one", built.points)
    for field_name, schema in INDEXES.items():
        engine.create_payload_index("one", field_name, schema)
    expected = engine.describe_collection("one").payload_schema
    engine.close()
    shown = client.get_collection("library").payload_schema
    assert {k: (v.data_type, v.params) for k, v in shown.items()} == {
        k: (v.data_type, v.params) for k, v in expected.items()
    }
    assert {k: v.points for k, v in shown.items()} == {k: v.points for k, v in expected.items()}
    homes = [(r.cluster, r.collection) for r in built.definition.domains] + [("east", "reference")]
    for cluster, collection in homes:
        schema = built.fleet.get(cluster).describe_collection(collection).payload_schema
        assert set(INDEXES) <= set(schema), (cluster, collection)
    client.delete_payload_index("library", "score")
    for cluster, collection in homes:
        assert (
            "score" not in built.fleet.get(cluster).describe_collection(collection).payload_schema
        )
    assert "score" not in client.get_collection("library").payload_schema
    assert client.count(
        "library",
        count_filter=models.Filter(
            must=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))]
        ),
    ).count == len([p for p in built.points if p.payload["group"] == "g1"])


def test_index_on_a_reserved_key_and_library_changes_are_refused(router: RouterThread) -> None:
    headers = {"api-key": ADMIN}
    for field_name in (LABEL_KEY, f"{LABEL_KEY}.nested", "librarian_version"):
        response = httpx.put(
            f"{router.url}/collections/library/index",
            json={"field_name": field_name, "field_schema": "keyword"},
            headers=headers,
        )
        assert "reserves" in _error(response, 400)
    response = httpx.delete(f"{router.url}/collections/library/index/{LABEL_KEY}", headers=headers)
    assert "reserves" in _error(response, 400)
    created = httpx.put(
        f"{router.url}/collections/library",
        json={"vectors": {"size": DIM, "distance": "Cosine"}},
        headers=headers,
    )
    assert "already exists" in _error(created, 409)
    patched = httpx.patch(
        f"{router.url}/collections/library", json={"optimizers_config": {}}, headers=headers
    )
    assert "ClusterSpecialization" in _error(patched, 400)
    deleted = httpx.delete(f"{router.url}/collections/library", headers=headers)
    assert "DomainMap" in _error(deleted, 400)
    outside = httpx.put(
        f"{router.url}/collections/elsewhere",
        json={"vectors": {"size": DIM, "distance": "Cosine"}},
        headers=headers,
    )
    assert "allowlist" in _error(outside, 403)


def test_create_and_delete_an_allowlisted_collection_on_the_embedded_default(
    router: RouterThread, built: Library
) -> None:
    client = _client(router)
    assert not client.collection_exists("absent")
    client.create_collection("absent", models.VectorParams(size=4, distance=models.Distance.DOT))
    assert built.fleet.get("east").collection_info("absent").vector_size == 4
    assert client.collection_exists("absent")
    named = httpx.put(
        f"{router.url}/collections/absent",
        json={"vectors": {"size": 4, "distance": "Dot"}},
        headers={"api-key": ADMIN},
    )
    assert "already exists" in _error(named, 409)
    alias = models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name="absent", alias_name="to-absent")
    )
    assert client.update_collection_aliases(change_aliases_operations=[alias])
    assert client.collection_exists("to-absent")
    client.delete_collection("absent")
    assert not built.fleet.get("east").collection_exists("absent")
    # its aliases went with it, as in Qdrant
    assert "to-absent" not in {a.alias_name for a in client.get_aliases().aliases}
    assert not client.collection_exists("to-absent")
    with pytest.raises(UnexpectedResponse) as refused:
        _client(router, READER).delete_collection("plain")
    assert refused.value.status_code == 403


def test_an_allowlisted_collection_on_the_embedded_default_takes_every_vector_kind(
    router: RouterThread, built: Library
) -> None:
    vectors = {
        "text": models.VectorParams(size=4, distance=models.Distance.COSINE),
        "colbert": models.VectorParams(
            size=3,
            distance=models.Distance.DOT,
            multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM
            ),
        ),
    }
    sparse = {"keywords": models.SparseVectorParams(modifier=models.Modifier.IDF)}
    client = _client(router)
    reference = QdrantClient(":memory:")
    for each in (client, reference):
        each.create_collection("absent", vectors_config=vectors, sparse_vectors_config=sparse)
    try:
        got = client.get_collection("absent").config.params
        expected = reference.get_collection("absent").config.params
        assert got.vectors == expected.vectors
        assert got.sparse_vectors == expected.sparse_vectors
        assert set(built.fleet.get("east").collection_info("absent").spec.vectors) == {
            "text",
            "colbert",
        }
    finally:
        client.delete_collection("absent")


def test_mmr_over_multi_vectors_of_an_allowlisted_collection_as_one_collection(
    router: RouterThread,
) -> None:
    """A plain collection's own index holds every candidate, so ``mmr`` on its multi-vectors
    is answered (as by Qdrant), ranked and scored as local mode does."""
    rng = np.random.default_rng(7)
    vectors = {
        "colbert": models.VectorParams(
            size=3,
            distance=models.Distance.COSINE,
            multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM
            ),
        )
    }
    sparse = {"keywords": models.SparseVectorParams()}

    def sparse_vector() -> models.SparseVector:
        indices = sorted(rng.choice(40, size=6, replace=False).tolist())
        return models.SparseVector(indices=indices, values=rng.random(6).round(3).tolist())

    points = [
        models.PointStruct(
            id=i,
            vector={"colbert": rng.random((3, 3)).round(3).tolist(), "keywords": sparse_vector()},
            payload={"n": i},
        )
        for i in range(60)
    ]
    client = _client(router)
    reference = QdrantClient(":memory:")
    for each in (client, reference):
        each.create_collection("absent", vectors_config=vectors, sparse_vectors_config=sparse)
        each.upsert("absent", points)
    queries = [
        ("colbert", rng.random((2, 3)).round(3).tolist(), models.Mmr()),
        (
            "colbert",
            rng.random((4, 3)).round(3).tolist(),
            models.Mmr(diversity=0.3, candidates_limit=30),
        ),
        ("colbert", rng.random((1, 3)).round(3).tolist(), models.Mmr(diversity=0.7)),
    ]
    try:
        # the engine has no mmr on sparse vectors: a clear refusal, never another answer
        refused = httpx.post(
            f"{router.url}/collections/absent/points/query",
            json={
                "query": {"nearest": sparse_vector().model_dump(), "mmr": {}},
                "using": "keywords",
            },
            headers={"api-key": ADMIN},
        )
        assert "sparse" in _error(refused, 400)
        for using, vector, mmr in queries:
            for offset in (0, 2):
                asked = {
                    "query": models.NearestQuery(nearest=vector, mmr=mmr),
                    "using": using,
                    "limit": 8,
                    "offset": offset,
                }
                got = client.query_points("absent", **asked).points  # type: ignore[arg-type]
                want = reference.query_points("absent", **asked).points  # type: ignore[arg-type]
                assert [p.id for p in got] == [p.id for p in want], (using, mmr, offset)
                assert np.allclose(
                    [p.score for p in got], [p.score for p in want], rtol=1e-4, atol=1e-5
                )
    finally:
        client.delete_collection("absent")


def test_vectors_are_added_to_and_removed_from_an_allowlisted_collection_as_in_qdrant(
    built: Library,
) -> None:
    """``create_vector_name`` / ``delete_vector_name`` over REST and gRPC: the collection's
    config, and the points' vectors, as local mode has them; a library's are refused."""
    dense = models.DenseVectorNameConfig(
        dense=models.DenseVectorConfig(
            size=3,
            distance=models.Distance.COSINE,
            multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM
            ),
        )
    )
    sparse = models.SparseVectorNameConfig(
        sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF)
    )
    points = [
        models.PointStruct(
            id=i,
            vector={
                "text": [1.0, float(i)],
                "multi": [[1.0, 2.0, 3.0], [float(i), 1.0, 0.5]],
                "keywords": models.SparseVector(indices=[1, i + 2], values=[0.5, 0.25]),
            },
        )
        for i in range(5)
    ]
    state = make_state(built, keys=KEYS, passthrough=frozenset({"vectors"}))
    reference = QdrantClient(":memory:")
    with RouterThread(state, grpc=True) as router:
        rest = _client(router)
        over_grpc = QdrantClient(
            url=router.url,
            grpc_port=router.grpc_port,
            prefer_grpc=True,
            api_key=ADMIN,
            timeout=30,
            check_compatibility=False,
        )

        def params(client: QdrantClient) -> tuple[Any, Any]:
            got = client.get_collection("vectors").config.params
            return got.vectors, got.sparse_vectors or {}

        def vectors(client: QdrantClient) -> list[Any]:
            return [r.vector for r in client.retrieve("vectors", [1, 3], with_vectors=True)]

        text = {"text": models.VectorParams(size=2, distance=models.Distance.DOT)}
        for each in (rest, reference):
            each.create_collection("vectors", vectors_config=text)
        try:
            for client in (rest, over_grpc):
                for each in (client, reference):
                    each.create_vector_name("vectors", "multi", dense)
                    each.create_vector_name("vectors", "keywords", sparse)
                    each.upsert("vectors", points)
                assert params(client) == params(reference)
                got, want = vectors(client), vectors(reference)
                assert [v.keys() for v in got] == [v.keys() for v in want]
                for mine, theirs in zip(got, want, strict=True):
                    assert np.allclose(mine["multi"], theirs["multi"], atol=1e-6)
                    assert mine["keywords"].indices == theirs["keywords"].indices
                    assert np.allclose(mine["keywords"].values, theirs["keywords"].values)
                for each in (client, reference):
                    each.delete_vector_name("vectors", "multi")
                    each.delete_vector_name("vectors", "keywords")
                assert params(client) == params(reference)
                assert vectors(client) == vectors(reference)  # only "text" is left
            refused = httpx.put(
                f"{router.url}/collections/library/vectors/more",
                json={"sparse": {}},
                headers={"api-key": ADMIN},
            )
            assert "source collection" in _error(refused, 400)
            with pytest.raises(UnexpectedResponse) as unknown:
                rest.delete_vector_name("vectors", "never-made")
            assert unknown.value.status_code == 400
        finally:
            rest.delete_collection("vectors")
            over_grpc.close()


def _alias_pairs(aliases: models.CollectionsAliasesResponse) -> set[tuple[str, str]]:
    return {(a.alias_name, a.collection_name) for a in aliases.aliases}


def test_aliases_like_qdrant_and_every_endpoint_answers_under_them(
    router: RouterThread, reference: QdrantClient, built: Library
) -> None:
    client = _client(router)
    actions: list[Any] = [
        models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="library", alias_name="books")
        ),
        models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="plain", alias_name="flat")
        ),
    ]
    for target in (client, reference):
        assert target.update_collection_aliases(change_aliases_operations=actions)
    assert _alias_pairs(client.get_aliases()) == _alias_pairs(reference.get_aliases())
    assert _alias_pairs(client.get_collection_aliases("library")) == _alias_pairs(
        reference.get_collection_aliases("library")
    )
    assert client.collection_exists("books")
    assert client.collection_exists("flat")
    query = built.points[5].vector or []
    under_alias = client.query_points("books", query=query, limit=5).points
    expected = reference.query_points("library", query=query, limit=5).points
    assert [p.id for p in under_alias] == [p.id for p in expected]
    for got, want in zip(under_alias, expected, strict=True):
        assert got.score == pytest.approx(want.score, abs=1e-4)
    assert client.count("flat").count == reference.count("plain").count
    assert client.get_collection("books").points_count == len(built.points)
    rename = [
        models.RenameAliasOperation(
            rename_alias=models.RenameAlias(old_alias_name="books", new_alias_name="shelf")
        )
    ]
    for target in (client, reference):
        assert target.update_collection_aliases(change_aliases_operations=rename)
    assert _alias_pairs(client.get_aliases()) == _alias_pairs(reference.get_aliases())
    assert not client.collection_exists("books")  # never served after its deletion
    response = httpx.post(
        f"{router.url}/collections/books/points/count", json={}, headers={"api-key": ADMIN}
    )
    _error(response, 404)
    # a second replica on the same storage sees them (and so does a restart)
    with RouterThread(make_state(built, keys=KEYS, passthrough=frozenset({"plain"}))) as other:
        assert _alias_pairs(_client(other).get_aliases()) == _alias_pairs(reference.get_aliases())
        assert _client(other).count("shelf").count == len(built.points)
    drop = [
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=a))
        for a in ("shelf", "flat")
    ]
    for target in (client, reference):
        assert target.update_collection_aliases(change_aliases_operations=drop)
    assert client.get_aliases().aliases == reference.get_aliases().aliases == []


def _change(
    router: RouterThread, actions: list[dict[str, Any]], key: str = ADMIN
) -> httpx.Response:
    return httpx.post(
        f"{router.url}/collections/aliases", json={"actions": actions}, headers={"api-key": key}
    )


def test_hostile_aliases_are_refused(router: RouterThread) -> None:
    create = {"create_alias": {"collection_name": "library", "alias_name": "loop-a"}}
    assert _change(router, [create]).status_code == 200
    try:
        # an alias of an alias (a loop in the making): aliases name collections only
        to_alias = {"create_alias": {"collection_name": "loop-a", "alias_name": "loop-b"}}
        assert "doesn't exist" in _error(_change(router, [to_alias]), 404)
        named_like_library = {"create_alias": {"collection_name": "plain", "alias_name": "library"}}
        assert "already exists" in _error(_change(router, [named_like_library]), 409)
        named_like_collection = {
            "create_alias": {"collection_name": "library", "alias_name": "plain"}
        }
        assert "already exists" in _error(_change(router, [named_like_collection]), 409)
        reserved = {"create_alias": {"collection_name": "library", "alias_name": "librarian-x"}}
        assert "reserves" in _error(_change(router, [reserved]), 400)
        product = {"create_alias": {"collection_name": "librarian-aliases", "alias_name": "peek"}}
        _error(_change(router, [product]), 404)
        not_allowed = {"create_alias": {"collection_name": "library-d0", "alias_name": "peek"}}
        _error(_change(router, [not_allowed]), 404)
        missing = {"rename_alias": {"old_alias_name": "nope", "new_alias_name": "x"}}
        _error(_change(router, [missing]), 404)
        assert "management" in _error(_change(router, [create], key=READER), 403)
        # a refused batch changes nothing
        batch = [{"delete_alias": {"alias_name": "loop-a"}}, named_like_library]
        _error(_change(router, [*batch]), 409)
        listed = httpx.get(f"{router.url}/aliases", headers={"api-key": READER}).json()
        assert listed["result"]["aliases"] == [
            {"alias_name": "loop-a", "collection_name": "library"}
        ]
    finally:
        _change(router, [{"delete_alias": {"alias_name": "loop-a"}}])


def test_async_client_sees_the_same(
    router: RouterThread, reference: QdrantClient, built: Library
) -> None:
    alias = [
        models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="library", alias_name="async-books")
        )
    ]

    async def run() -> tuple[bool, bool, int | None, set[tuple[str, str]], int]:
        client = AsyncQdrantClient(
            url=router.url, api_key=ADMIN, timeout=30, check_compatibility=False
        )
        try:
            exists = await client.collection_exists("library")
            missing = await client.collection_exists("missing")
            info = await client.get_collection("library")
            await client.update_collection_aliases(change_aliases_operations=alias)
            aliases = _alias_pairs(await client.get_aliases())
            await client.create_payload_index("async-books", "text", INDEXES["text"])
            counted = await client.count("async-books", exact=True)
            await client.update_collection_aliases(
                change_aliases_operations=[
                    models.DeleteAliasOperation(
                        delete_alias=models.DeleteAlias(alias_name="async-books")
                    )
                ]
            )
            return exists, missing, info.points_count, aliases, counted.count
        finally:
            await client.close()

    exists, missing, points, aliases, counted = asyncio.run(run())
    assert (exists, missing) == (
        reference.collection_exists("library"),
        reference.collection_exists("missing"),
    )
    assert points == reference.get_collection("library").points_count
    reference.update_collection_aliases(change_aliases_operations=alias)
    try:
        assert aliases == _alias_pairs(reference.get_aliases())
    finally:
        reference.update_collection_aliases(
            change_aliases_operations=[
                models.DeleteAliasOperation(
                    delete_alias=models.DeleteAlias(alias_name="async-books")
                )
            ]
        )
    assert counted == reference.count("library", exact=True).count
    for route in built.definition.domains:
        schema = built.fleet.get(route.cluster).describe_collection(route.collection)
        assert schema.payload_schema["text"].params == INDEXES["text"]


# ------------------------------------------------------------------ pass-through proxy

UPSTREAM_KEY = "cluster-secret-key"


def test_passthrough_is_a_byte_for_byte_proxy(built: Library) -> None:
    answers = [
        (200, b'{"result":{"points":[]},"status":"ok","time":0.25}  '),
        (404, b'{"status":{"error":"Not found: Collection `plain` doesn\'t exist!"},"time":0.0}'),
        (200, b'{"result":{"exists":true},"status":"ok","time":0.1}'),
    ]

    def answer(request: Recorded, index: int) -> tuple[int, bytes]:
        return answers[index]

    with recording_server(answer, raw=True) as upstream:
        fleet_with_library = Fleet.of_ports(
            {"east": built.fleet.get("east"), "west": built.fleet.get("west")},
            [ClusterConfig("upstream", url=upstream.url, api_key=UPSTREAM_KEY)],
        )
        state = RouterState(
            replace(
                make_state(built, keys=KEYS).config,
                fleet=fleet_with_library,
                default_cluster="upstream",
                passthrough=frozenset({"plain"}),
                aliases_cluster="east",
            )
        )
        with RouterThread(state) as router:
            body = b'{"query":  [0.1, 0.2],\n "limit": 3, "with_payload": ["a.b"]}'
            first = httpx.post(
                f"{router.url}/collections/plain/points/query?timeout=5&consistency=all",
                content=body,
                headers={"api-key": ADMIN, "Content-Type": "application/json"},
            )
            second = httpx.post(
                f"{router.url}/collections/plain/points/scroll",
                content=b"{}",
                headers={"api-key": ADMIN, "Content-Type": "application/json"},
            )
            third = httpx.get(f"{router.url}/collections/plain/exists", headers={"api-key": READER})
    assert (first.status_code, first.content) == answers[0]
    assert (second.status_code, second.content) == answers[1]
    assert (third.status_code, third.content) == answers[2]
    sent = upstream.requests
    assert sent[0].method == "POST"
    assert sent[0].path == "/collections/plain/points/query?timeout=5&consistency=all"
    assert sent[0].raw == body
    assert sent[0].headers["Content-Type"] == "application/json"
    assert sent[2].method == "GET"
    assert sent[2].raw == b""
    for request in sent:
        assert request.headers.get("api-key") == UPSTREAM_KEY  # the client's key replaced
        assert ADMIN not in json.dumps(request.headers)
        assert READER not in json.dumps(request.headers)
    for response in (first, second, third):
        assert UPSTREAM_KEY not in response.text
        assert UPSTREAM_KEY not in json.dumps(dict(response.headers))


def test_a_home_down_is_an_error_never_a_wrong_info_or_a_partial_index(tmp_path: Path) -> None:
    with (
        library_with_flaky_west(tmp_path) as (built, west),
        RouterThread(make_state(built, keys=KEYS)) as router,
    ):
        headers = {"api-key": ADMIN}
        west.mode = "down"
        info = httpx.get(f"{router.url}/collections/library", headers=headers)
        assert info.status_code in (502, 503), info.text
        _error(info, info.status_code)
        index = httpx.put(
            f"{router.url}/collections/library/index",
            json={"field_name": "group", "field_schema": "keyword"},
            headers=headers,
        )
        message = _error(index, 502)
        assert "west/library-d2" in message
        assert "repeat the request" in message
        west.mode = "ok"
        router.state.breaker.success("west")  # the circuit closes as after a good probe
        index = httpx.put(
            f"{router.url}/collections/library/index",
            json={"field_name": "group", "field_schema": "keyword"},
            headers=headers,
        )
        assert index.status_code == 200, index.text
        for route in built.definition.domains:
            schema = built.fleet.get(route.cluster).describe_collection(route.collection)
            assert "group" in schema.payload_schema
        info = httpx.get(f"{router.url}/collections/library", headers=headers)
        assert info.json()["result"]["points_count"] == len(built.points)


def test_concurrent_alias_changes_all_land(router: RouterThread) -> None:
    names = [f"concurrent-{i}" for i in range(8)]

    def create(alias: str) -> int:
        action = {"create_alias": {"collection_name": "library", "alias_name": alias}}
        return _change(router, [action]).status_code

    with ThreadPoolExecutor(len(names)) as pool:
        assert list(pool.map(create, names)) == [200] * len(names)
    listed = {a.alias_name for a in _client(router).get_aliases().aliases}
    assert set(names) <= listed
    _change(router, [{"delete_alias": {"alias_name": a}} for a in names])
    assert not set(names) & {a.alias_name for a in _client(router).get_aliases().aliases}


def test_passthrough_limits_apply_and_a_hung_or_absent_upstream_is_a_clear_error(
    built: Library,
) -> None:
    release = threading.Event()

    def answer(request: Recorded, index: int) -> tuple[int, bytes]:
        if request.path.startswith("/collections/plain/points/count"):
            release.wait(30)
        return 200, b'{"result":{"count":1},"status":"ok","time":0.0}'

    with recording_server(answer, raw=True) as upstream:
        fleet = Fleet.of_ports(
            {"east": built.fleet.get("east"), "west": built.fleet.get("west")},
            [ClusterConfig("upstream", url=upstream.url, api_key=UPSTREAM_KEY)],
        )
        config = replace(
            make_state(built, keys=KEYS).config,
            fleet=fleet,
            default_cluster="upstream",
            passthrough=frozenset({"plain"}),
            aliases_cluster="east",
        )
        with RouterThread(RouterState(config)) as router:
            headers = {"api-key": ADMIN}
            deep = "[" * 200 + "]" * 200
            refused = httpx.post(
                f"{router.url}/collections/plain/points/scroll",
                content=f'{{"filter": {deep}}}'.encode(),
                headers={**headers, "Content-Type": "application/json"},
            )
            assert refused.status_code == 400, refused.text
            assert upstream.requests == []  # refused before anything was forwarded
            started = time.monotonic()
            try:
                hung = httpx.post(
                    f"{router.url}/collections/plain/points/count?timeout=1",
                    json={},
                    headers=headers,
                    timeout=30,
                )
            finally:
                release.set()
            assert "did not answer within 1s" in _error(hung, 504)
            assert time.monotonic() - started < 10
        upstream_url = upstream.url
    config = replace(
        config,
        fleet=Fleet.of_ports(
            {"east": built.fleet.get("east"), "west": built.fleet.get("west")},
            [ClusterConfig("upstream", url=upstream_url, api_key=UPSTREAM_KEY)],
        ),
    )
    with RouterThread(RouterState(config)) as router:  # the upstream server is gone
        gone = httpx.post(
            f"{router.url}/collections/plain/points/count", json={}, headers={"api-key": ADMIN}
        )
        message = _error(gone, 502)
        assert "could not be reached" in message
        assert UPSTREAM_KEY not in message


def test_an_alias_moved_to_another_collection_never_serves_the_old_ones_answer(
    router: RouterThread, built: Library
) -> None:
    client = _client(router)
    query = built.points[3].vector or []

    def point_to(collection: str) -> None:
        actions: list[Any] = [
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="moving")),
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name="moving")
            ),
        ]
        assert client.update_collection_aliases(change_aliases_operations=actions)

    try:
        for collection, points in (
            ("plain", built.points[:10]),
            ("plain2", built.points[10:20]),
            ("library", built.points),
        ):
            point_to(collection)
            for _ in range(2):  # the second one may come from the cache
                got = client.query_points("moving", query=query, limit=3).points
                nearest = sorted(
                    points,
                    key=lambda p: -float(np.dot(p.vector or [], query)),
                )[:3]
                assert [p.id for p in got] == [p.id for p in nearest], collection
    finally:
        _change(router, [{"delete_alias": {"alias_name": "moving"}}])


def test_an_alias_of_a_proxied_collection_is_forwarded_under_the_collections_name(
    built: Library,
) -> None:
    def answer(request: Recorded, index: int) -> tuple[int, bytes]:
        if request.path.startswith("/collections/plain/exists"):
            return 200, b'{"result":{"exists":true},"status":"ok","time":0.0}'
        if request.path.startswith("/collections/shadow/exists"):
            return 200, b'{"result":{"exists":false},"status":"ok","time":0.0}'
        return 200, b'{"result":{"count":7},"status":"ok","time":0.0}'

    with recording_server(answer, raw=True) as upstream:
        fleet = Fleet.of_ports(
            {"east": built.fleet.get("east"), "west": built.fleet.get("west")},
            [ClusterConfig("upstream", url=upstream.url, api_key=UPSTREAM_KEY)],
        )
        config = replace(
            make_state(built, keys=KEYS).config,
            fleet=fleet,
            default_cluster="upstream",
            passthrough=frozenset({"plain"}),
            aliases_cluster="east",
        )
        with RouterThread(RouterState(config)) as router:
            action = {"create_alias": {"collection_name": "plain", "alias_name": "shadow"}}
            try:
                assert _change(router, [action]).status_code == 200
                counted = httpx.post(
                    f"{router.url}/collections/shadow/points/count?exact=true",
                    content=b'{"exact": true}',
                    headers={"api-key": ADMIN, "Content-Type": "application/json"},
                )
                listed = httpx.get(
                    f"{router.url}/collections/shadow/aliases", headers={"api-key": ADMIN}
                )
                dropped = httpx.delete(
                    f"{router.url}/collections/plain", headers={"api-key": ADMIN}
                )
                assert dropped.status_code == 200
                after = httpx.get(f"{router.url}/aliases", headers={"api-key": ADMIN})
                assert after.json()["result"]["aliases"] == []  # gone with the collection
            finally:
                _change(router, [{"delete_alias": {"alias_name": "shadow"}}])
    assert counted.content == b'{"result":{"count":7},"status":"ok","time":0.0}'
    forwarded = [r for r in upstream.requests if "/points/" in r.path]
    assert ("DELETE", "/collections/plain") in [(r.method, r.path) for r in upstream.requests]
    assert [(r.method, r.path, r.raw) for r in forwarded] == [
        ("POST", "/collections/plain/points/count?exact=true", b'{"exact": true}')
    ]
    # the router's own aliases, not the cluster's: never forwarded
    assert listed.json()["result"]["aliases"] == [
        {"alias_name": "shadow", "collection_name": "plain"}
    ]
    assert not [r for r in upstream.requests if r.path.endswith("/aliases")]
