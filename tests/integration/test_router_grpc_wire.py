"""The REST request a gRPC call becomes is the one the official client sends over REST.

Why this exists: the router answers a gRPC call by handing its REST form to
the REST application, so a field lost or changed on the way would give a
gRPC caller another answer than a REST caller. Here the official client
performs each operation twice, once over REST against a recording server
and once with ``prefer_grpc=True`` against the gRPC layer in front of a
recording REST handler; both recordings must be the same request (method,
path, query, JSON body), and the same scripted REST answer must come back
to the caller as the same result. This covers every served method,
including those whose REST endpoints other parts of the router serve.

Requests and results are compared modulo what Qdrant reads as the same:
float32 values (vectors and scores are float32 in the gRPC messages), a
``{"include": [...]}`` payload selector and its list, ``{"nearest": v}`` and
``v``, ``indexed_only: false`` and its absence, an empty payload and none.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import grpc
import numpy as np
import pytest
from aiohttp import web
from pydantic import TypeAdapter
from qdrant_client import QdrantClient, models
from qdrant_client import grpc as pb

from librarian.router import grpc_api
from librarian.router.grpc_api import PARTIAL_METADATA, SERVED, start_grpc_server

from .recording_server import Recorded, qdrant_error, qdrant_ok, recording_server

pytestmark = pytest.mark.timeout(120)

UUID = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
SCORED = [
    {
        "id": 3,
        "version": 2,
        "score": 0.75,
        "payload": {"a": 1, "nested": {"b": [1, "x", None, 2.5, True]}},
        "vector": [0.5, 0.25],
    },
    {"id": UUID, "version": 0, "score": 0.5, "payload": {}, "vector": {"named": [1.0, 0.0]}},
]
RECORDS = [
    {"id": 3, "payload": {"a": 1}, "vector": {"dense": [0.5, 0.25]}},
    {"id": UUID, "payload": {}, "vector": None},
]
UPDATE = {"operation_id": 7, "status": "completed"}
INFO = {
    "status": "green",
    "optimizer_status": "ok",
    "indexed_vectors_count": 10,
    "points_count": 12,
    "segments_count": 2,
    "config": {
        "params": {
            "vectors": {"size": 2, "distance": "Cosine"},
            "shard_number": 1,
            "replication_factor": 1,
            "write_consistency_factor": 1,
            "on_disk_payload": True,
        },
        "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
        "optimizer_config": {
            "deleted_threshold": 0.2,
            "vacuum_min_vector_number": 1000,
            "default_segment_number": 0,
            "flush_interval_sec": 5,
        },
        "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
    },
    "payload_schema": {"group": {"data_type": "keyword", "points": 12}},
}


def _result_for(method: str, path: str) -> Any:
    """The scripted REST result of each endpoint."""
    if (method in ("PUT", "DELETE", "PATCH") and path.count("/") == 2) or (
        path == "/collections/aliases"
    ):
        return True  # a collection created, deleted or updated, aliases changed
    answers: list[tuple[str, Any]] = [
        ("/points/query/batch", [{"points": SCORED}, {"points": []}]),
        ("/points/query/groups", {"groups": [{"id": "g1", "hits": SCORED}, {"id": 7, "hits": []}]}),
        ("/points/query", {"points": SCORED}),
        ("/points/search/batch", [SCORED, []]),
        ("/points/recommend/batch", [SCORED, []]),
        ("/points/discover/batch", [SCORED, []]),
        ("/points/search/groups", {"groups": [{"id": "g1", "hits": SCORED}]}),
        ("/points/recommend/groups", {"groups": [{"id": "g1", "hits": SCORED}]}),
        ("/points/search", SCORED),
        ("/points/recommend", SCORED),
        ("/points/discover", SCORED),
        ("/facet", {"hits": [{"value": "g1", "count": 3}, {"value": 5, "count": 1}]}),
        ("/points/scroll", {"points": RECORDS, "next_page_offset": 9}),
        ("/points/count", {"count": 42}),
        ("/points/batch", [UPDATE, UPDATE, UPDATE]),
        ("/exists", {"exists": True}),
        ("/search/matrix/pairs", {"pairs": [{"a": 1, "b": UUID, "score": 0.5}]}),
        (
            "/search/matrix/offsets",
            {"offsets_row": [0], "offsets_col": [1], "scores": [0.5], "ids": [1, UUID]},
        ),
        ("/aliases", {"aliases": [{"alias_name": "short", "collection_name": "lib"}]}),
    ]
    for suffix, result in answers:
        if path.endswith(suffix):
            return result
    if method == "POST" and path.endswith("/points"):
        return RECORDS
    if method == "GET" and path == "/collections":
        return {"collections": [{"name": "a"}, {"name": "b"}]}
    if method == "GET" and path.startswith("/collections/"):
        return INFO
    return UPDATE


def _canonical(value: Any) -> Any:
    """``value`` (JSON) written one way where Qdrant reads several ways as the same."""
    if isinstance(value, float):
        return float(np.float32(value))
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) in ({"include"}, {"nearest"}):
        return _canonical(next(iter(value.values())))
    return {
        k: _canonical(v)
        for k, v in value.items()
        if not (k == "indexed_only" and v is False) and not (k == "payload" and v in ({}, None))
    }


def _request_of(method: str, target: str, body: Any) -> tuple[str, str, dict[str, str], Any]:
    parts = urlsplit(target)
    query = {k: v for k, v in parse_qsl(parts.query) if k != "timeout"}
    return method, parts.path, query, _canonical(body)


def _result(value: Any) -> Any:
    return _canonical(TypeAdapter(Any).dump_python(value, mode="json"))


class _GrpcOverRecorder:
    """The gRPC layer in front of a REST handler that records each request and answers it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.headers: list[dict[str, str]] = []
        self.partial = ""
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(_request_of(request.method, str(request.rel_url), body))
        self.headers.append(dict(request.headers))
        headers = {"X-Librarian-Partial": self.partial} if self.partial else None
        status, answer = qdrant_ok(_result_for(request.method, request.path))
        return web.json_response(answer, status=status, headers=headers)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server, self.port = await start_grpc_server(
            self._handle, "127.0.0.1", 0, max_message_bytes=1 << 20
        )
        self._ready.set()
        await self._stop.wait()
        await server.stop(grace=None)

    def __enter__(self) -> _GrpcOverRecorder:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def over_grpc() -> Iterator[_GrpcOverRecorder]:
    with _GrpcOverRecorder() as served:
        yield served


def _answer(request: Recorded, index: int) -> tuple[int, dict[str, Any]]:
    return qdrant_ok(_result_for(request.method, urlsplit(request.path).path))


GROUP = models.Filter(
    must=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))],
    should=[
        models.FieldCondition(key="n", range=models.Range(gte=1, lt=9.5)),
        models.HasIdCondition(has_id=[1, UUID]),
    ],
    must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key="tags"))],
    min_should=models.MinShould(
        conditions=[
            models.FieldCondition(key="tags", match=models.MatchAny(any=["a", "b"])),
            models.NestedCondition(
                nested=models.Nested(
                    key="parts",
                    filter=models.Filter(
                        must=[models.FieldCondition(key="w", match=models.MatchValue(value=2))]
                    ),
                )
            ),
        ],
        min_count=1,
    ),
)

OPERATIONS: dict[str, Callable[[QdrantClient], Any]] = {
    "query nearest": lambda c: c.query_points(
        "lib",
        query=[0.5, 0.25],
        query_filter=GROUP,
        limit=4,
        offset=2,
        score_threshold=0.1,
        with_payload=["a", "nested.b"],
        with_vectors=["named"],
        search_params=models.SearchParams(hnsw_ef=64, exact=True),
    ),
    "query fusion": lambda c: c.query_points(
        "lib",
        prefetch=[
            models.Prefetch(query=[0.5, 0.25], using="named", limit=20),
            models.Prefetch(
                query=models.SparseVector(indices=[1, 7], values=[0.5, 0.5]),
                using="sparse",
                limit=20,
                filter=GROUP,
            ),
        ],
        query=models.FusionQuery(fusion=models.Fusion.RRF),
        limit=5,
        with_payload=models.PayloadSelectorExclude(exclude=["nested"]),
    ),
    "query recommend": lambda c: c.query_points(
        "lib",
        query=models.RecommendQuery(
            recommend=models.RecommendInput(
                positive=[3, UUID],
                negative=[[0.1, 0.2]],
                strategy=models.RecommendStrategy.BEST_SCORE,
            )
        ),
        using="named",
        lookup_from=models.LookupLocation(collection="other", vector="v"),
        limit=3,
    ),
    "query order_by": lambda c: c.query_points(
        "lib",
        query=models.OrderByQuery(order_by=models.OrderBy(key="n", direction="desc")),
        limit=3,
    ),
    "query batch": lambda c: c.query_batch_points(
        "lib",
        [
            models.QueryRequest(query=[0.5, 0.25], limit=2, with_payload=True),
            models.QueryRequest(query=3, filter=GROUP, limit=2),
        ],
    ),
    "query groups": lambda c: c.query_points_groups(
        "lib",
        "group",
        query=[0.5, 0.25],
        limit=2,
        group_size=3,
        with_payload=True,
        with_lookup=models.WithLookup(collection="docs", with_payload=["title"]),
    ),
    "facet": lambda c: c.facet("lib", "group", facet_filter=GROUP, limit=5, exact=True),
    "scroll": lambda c: c.scroll(
        "lib", scroll_filter=GROUP, limit=3, offset=UUID, with_payload=True, with_vectors=True
    ),
    "scroll order_by": lambda c: c.scroll(
        "lib",
        limit=3,
        order_by=models.OrderBy(key="n", direction="asc", start_from=5),
        with_payload=False,
    ),
    "count": lambda c: c.count("lib", count_filter=GROUP, exact=False),
    "retrieve": lambda c: c.retrieve(
        "lib",
        [3, UUID],
        with_payload=models.PayloadSelectorInclude(include=["a"]),
        with_vectors=["dense"],
    ),
    "upsert": lambda c: c.upsert(
        "lib",
        [
            models.PointStruct(
                id=1,
                vector={
                    "dense": [0.5, 0.25],
                    "sparse": models.SparseVector(indices=[2], values=[1.0]),
                },
                payload={"a": None, "b": [1, {"c": "d"}], "e": 1.5},
            ),
            models.PointStruct(id=UUID, vector={"dense": [0.0, 1.0]}, payload={}),
        ],
    ),
    "delete ids": lambda c: c.delete("lib", models.PointIdsList(points=[1, UUID])),
    "delete filter": lambda c: c.delete("lib", models.FilterSelector(filter=GROUP)),
    "set payload": lambda c: c.set_payload("lib", {"x": {"y": 1}}, points=[1], key="meta"),
    "set payload by filter": lambda c: c.set_payload("lib", {"x": 2}, points=GROUP),
    "overwrite payload": lambda c: c.overwrite_payload("lib", {"only": True}, points=[1, 2]),
    "delete payload": lambda c: c.delete_payload("lib", ["a", "b"], points=GROUP),
    "clear payload": lambda c: c.clear_payload("lib", models.PointIdsList(points=[5])),
    "update vectors": lambda c: c.update_vectors(
        "lib", [models.PointVectors(id=2, vector={"dense": [1.0, 0.0]})]
    ),
    "delete vectors": lambda c: c.delete_vectors("lib", ["dense", "sparse"], points=[2, 3]),
    "batch": lambda c: c.batch_update_points(
        "lib",
        [
            models.UpsertOperation(
                upsert=models.PointsList(points=[models.PointStruct(id=4, vector=[0.5, 0.5])])
            ),
            models.DeletePayloadOperation(
                delete_payload=models.DeletePayload(keys=["a"], points=[4])
            ),
            models.DeleteOperation(delete=models.FilterSelector(filter=GROUP)),
        ],
    ),
    "search matrix pairs": lambda c: c.search_matrix_pairs(
        "lib", query_filter=GROUP, limit=2, sample=10, using="named"
    ),
    "search matrix offsets": lambda c: c.search_matrix_offsets("lib", limit=2, sample=10),
    "create keyword index": lambda c: c.create_payload_index(
        "lib", "group", models.PayloadSchemaType.KEYWORD
    ),
    "create text index": lambda c: c.create_payload_index(
        "lib",
        "text",
        models.TextIndexParams(
            type=models.TextIndexType.TEXT,
            tokenizer=models.TokenizerType.WORD,
            min_token_len=2,
            lowercase=True,
        ),
    ),
    "delete index": lambda c: c.delete_payload_index("lib", "group"),
    "create collection": lambda c: c.create_collection(
        "new",
        vectors_config={
            "dense": models.VectorParams(size=4, distance=models.Distance.DOT, on_disk=True),
            "multi": models.VectorParams(
                size=2,
                distance=models.Distance.COSINE,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM
                ),
            ),
        },
        sparse_vectors_config={"sparse": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        shard_number=2,
        hnsw_config=models.HnswConfigDiff(m=32),
        quantization_config=models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
        ),
        metadata={"team": "search"},
    ),
    "update collection": lambda c: c.update_collection(
        "lib", optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1000)
    ),
    "delete collection": lambda c: c.delete_collection("other"),
    "update aliases": lambda c: c.update_collection_aliases(
        [
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name="lib", alias_name="short")
            ),
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="old")),
        ]
    ),
    "aliases": lambda c: c.get_aliases(),
    "collection aliases": lambda c: c.get_collection_aliases("lib"),
    "collections": lambda c: c.get_collections(),
    "collection info": lambda c: c.get_collection("lib"),
    "collection exists": lambda c: c.collection_exists("lib"),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_the_grpc_call_becomes_the_rest_request_and_gets_the_rest_answer(
    operation: str, over_grpc: _GrpcOverRecorder
) -> None:
    action = OPERATIONS[operation]
    with recording_server(_answer) as recorder:
        with closing(QdrantClient(url=recorder.url, check_compatibility=False)) as rest:
            rest_result = action(rest)
        rest_requests = [_request_of(r.method, r.path, r.body) for r in recorder.requests]
    before = len(over_grpc.requests)
    with closing(
        QdrantClient(
            url="http://127.0.0.1:1",
            prefer_grpc=True,
            grpc_port=over_grpc.port,
            timeout=30,
            check_compatibility=False,
        )
    ) as client:
        grpc_result = action(client)
    assert over_grpc.requests[before:] == rest_requests
    assert _result(grpc_result) == _result(rest_result)


def test_search_recommend_and_discover_become_qdrant_s_rest_bodies(
    over_grpc: _GrpcOverRecorder,
) -> None:
    """The methods newer clients no longer have: their documented REST bodies."""
    point = pb.PointId
    example = pb.VectorExample
    calls = [
        (
            "Search",
            pb.SearchPoints(
                collection_name="lib",
                vector=[0.5, 0.25],
                vector_name="named",
                limit=3,
                offset=1,
                score_threshold=0.2,
                with_payload=pb.WithPayloadSelector(enable=True),
            ),
            {
                "vector": {"name": "named", "vector": [0.5, 0.25]},
                "limit": 3,
                "offset": 1,
                "score_threshold": 0.2,
                "with_payload": True,
            },
            "/collections/lib/points/search",
        ),
        (
            "Search",
            pb.SearchPoints(
                collection_name="lib",
                vector=[0.5, 0.25],
                vector_name="sparse",
                sparse_indices=pb.SparseIndices(data=[3, 9]),
                limit=2,
            ),
            {
                "vector": {"name": "sparse", "vector": {"indices": [3, 9], "values": [0.5, 0.25]}},
                "limit": 2,
            },
            "/collections/lib/points/search",
        ),
        (
            "Recommend",
            pb.RecommendPoints(
                collection_name="lib",
                positive=[point(num=3)],
                negative=[point(uuid=UUID)],
                positive_vectors=[pb.Vector(dense=pb.DenseVector(data=[0.5, 0.25]))],
                strategy=pb.RecommendStrategy.BestScore,
                using="named",
                limit=4,
            ),
            {
                "positive": [3, [0.5, 0.25]],
                "negative": [UUID],
                "strategy": "best_score",
                "using": "named",
                "limit": 4,
            },
            "/collections/lib/points/recommend",
        ),
        (
            "Discover",
            pb.DiscoverPoints(
                collection_name="lib",
                target=pb.TargetVector(single=example(id=point(num=21))),
                context=[
                    pb.ContextExamplePair(
                        positive=example(id=point(num=40)),
                        negative=example(vector=pb.Vector(dense=pb.DenseVector(data=[1.0, 0.0]))),
                    )
                ],
                limit=5,
            ),
            {"target": 21, "context": [{"positive": 40, "negative": [1.0, 0.0]}], "limit": 5},
            "/collections/lib/points/discover",
        ),
    ]
    (
        (_, search, search_body, _),
        _,
        (_, recommend, recommend_body, _),
        (_, discover, discover_body, _),
    ) = calls
    grouped = {"group_by": "group", "group_size": 2, "limit": 3}
    without_offset = {k: v for k, v in search_body.items() if k != "offset"}
    batches = [
        (
            "SearchBatch",
            pb.SearchBatchPoints(collection_name="lib", search_points=[search, search]),
            {"searches": [search_body, search_body]},
            "/collections/lib/points/search/batch",
        ),
        (
            "RecommendBatch",
            pb.RecommendBatchPoints(collection_name="lib", recommend_points=[recommend]),
            {"searches": [recommend_body]},
            "/collections/lib/points/recommend/batch",
        ),
        (
            "DiscoverBatch",
            pb.DiscoverBatchPoints(collection_name="lib", discover_points=[discover]),
            {"searches": [discover_body]},
            "/collections/lib/points/discover/batch",
        ),
    ]
    groups = [
        (
            "SearchGroups",
            pb.SearchPointGroups(
                collection_name="lib",
                vector=[0.5, 0.25],
                vector_name="named",
                score_threshold=0.2,
                with_payload=pb.WithPayloadSelector(enable=True),
                **grouped,
            ),
            {**without_offset, **grouped},
            "/collections/lib/points/search/groups",
        ),
        (
            "RecommendGroups",
            pb.RecommendPointGroups(
                collection_name="lib",
                positive=[point(num=3)],
                negative=[point(uuid=UUID)],
                positive_vectors=[pb.Vector(dense=pb.DenseVector(data=[0.5, 0.25]))],
                strategy=pb.RecommendStrategy.BestScore,
                using="named",
                **grouped,
            ),
            {**recommend_body, **grouped},
            "/collections/lib/points/recommend/groups",
        ),
    ]
    channel = grpc.insecure_channel(f"127.0.0.1:{over_grpc.port}")
    try:
        stub = pb.PointsStub(channel)
        for kind, sent in (("single", calls), ("batch", batches), ("groups", groups)):
            for method, message, body, path in sent:
                before = len(over_grpc.requests)
                answer = getattr(stub, method)(message, timeout=30)
                assert over_grpc.requests[before:] == [("POST", path, {}, _canonical(body))]
                points = {
                    "single": lambda a: a.result,
                    "batch": lambda a: a.result[0].result,
                    "groups": lambda a: a.result.groups[0].hits,
                }[kind](answer)
                assert [p.score for p in points] == [0.75, 0.5]
                assert points[1].id.uuid == UUID
    finally:
        channel.close()


def test_credentials_reach_rest_and_the_partial_flag_comes_back(
    over_grpc: _GrpcOverRecorder,
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{over_grpc.port}")
    over_grpc.partial = "west/lib-d2"
    try:
        stub = pb.PointsStub(channel)
        answer, call = stub.Count.with_call(
            pb.CountPoints(collection_name="lib"),
            metadata=(("api-key", "the-key"), ("authorization", "Bearer t"), ("x-other", "no")),
            timeout=30,
        )
        assert answer.result.count == 42
        assert dict(call.trailing_metadata())[PARTIAL_METADATA] == "west/lib-d2"
        headers = {k.lower(): v for k, v in over_grpc.headers[-1].items()}
        assert (headers["api-key"], headers["authorization"]) == ("the-key", "Bearer t")
        assert "x-other" not in headers
    finally:
        over_grpc.partial = ""
        channel.close()


def test_a_rest_refusal_is_the_grpc_status_qdrant_answers_with() -> None:
    async def refusing(request: web.Request) -> web.StreamResponse:
        code = int(request.headers["api-key"])  # the test names the status it wants
        status, body = qdrant_error(code, f"refused with {code}")
        return web.json_response(body, status=status)

    async def run() -> list[tuple[grpc.StatusCode, str]]:
        server, port = await start_grpc_server(refusing, "127.0.0.1", 0, max_message_bytes=1 << 20)
        seen = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb.PointsStub(channel)
                for code in (400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504):
                    try:
                        await stub.Count(
                            pb.CountPoints(collection_name="lib"),
                            metadata=(("api-key", str(code)),),
                            timeout=30,
                        )
                    except grpc.aio.AioRpcError as error:
                        seen.append((error.code(), error.details()))
        finally:
            await server.stop(grace=None)
        return seen

    codes = grpc.StatusCode
    assert asyncio.run(run()) == [
        (codes.INVALID_ARGUMENT, "refused with 400"),
        (codes.UNAUTHENTICATED, "refused with 401"),
        (codes.PERMISSION_DENIED, "refused with 403"),
        (codes.NOT_FOUND, "refused with 404"),
        (codes.ALREADY_EXISTS, "refused with 409"),
        (codes.RESOURCE_EXHAUSTED, "refused with 413"),
        (codes.INVALID_ARGUMENT, "refused with 422"),
        (codes.RESOURCE_EXHAUSTED, "refused with 429"),
        (codes.INTERNAL, "refused with 500"),
        (codes.UNAVAILABLE, "refused with 502"),
        (codes.UNAVAILABLE, "refused with 503"),
        (codes.DEADLINE_EXCEEDED, "refused with 504"),
    ]


def test_every_field_of_every_served_request_is_carried_to_rest() -> None:
    """A field a newer client sends that the conversion does not know is refused, never
    dropped: the list of carried fields is exactly the messages' fields today."""
    requests = {
        method.input_type.name
        for module in (pb.points_service_pb2, pb.collections_service_pb2, pb.qdrant_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if method.name in SERVED.get(service.full_name, {})
    }
    assert requests <= set(grpc_api._CARRIED)
    for name in requests:
        assert grpc_api._CARRIED[name] == set(getattr(pb, name).DESCRIPTOR.fields_by_name), name


def test_a_field_the_conversion_does_not_carry_is_refused_by_name(
    over_grpc: _GrpcOverRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    carried = dict(grpc_api._CARRIED)
    carried["CountPoints"] = carried["CountPoints"] - {"exact"}
    monkeypatch.setattr(grpc_api, "_CARRIED", carried)
    channel = grpc.insecure_channel(f"127.0.0.1:{over_grpc.port}")
    before = len(over_grpc.requests)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            pb.PointsStub(channel).Count(
                pb.CountPoints(collection_name="lib", exact=True), timeout=30
            )
    finally:
        channel.close()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exact of CountPoints not supported" in raised.value.details()
    assert len(over_grpc.requests) == before  # nothing reached REST
