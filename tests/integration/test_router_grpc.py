"""The official client with ``prefer_grpc=True`` gets from the router what one Qdrant collection gives.

The library's three domains live in collections on two embedded clusters;
the independent reference is qdrant-client's local mode (``:memory:``)
holding the same points in one collection. Every gRPC method the router
serves is called with the sync and the async client (raw stubs where the
client no longer has a method) and its answer compared with the reference:
ranked ids with scores, payloads, vectors, pages, counts. Where the REST
side refuses an operation, the gRPC call must be refused the same way (the
code Qdrant maps the HTTP status to, the same message): one semantics.
Then: credentials, read-only keys, oversized messages, a home down, hostile
input, concurrent clients, and the port switched off.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import numpy as np
import pytest
from click.testing import CliRunner
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client import grpc as pb
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.cli import main
from librarian.router.auth import RouterKeys
from librarian.router.grpc_api import PARTIAL_METADATA, grpc_code
from librarian.router.main import serve

from .router_support import (
    DIM,
    Library,
    RouterThread,
    build_embedded_library,
    library_points,
    library_with_flaky_west,
    make_state,
    near,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection"),
]

ADMIN = "grpc-admin-key-0123456789abcdef0123"
READER = "grpc-reader-key-0123456789abcdef012"
KEYS = RouterKeys(read_write=(ADMIN,), read_only=(READER,))
NO_CACHE = {"caching": {"enable_result_cache": False}}
KINDS = ["sync", "async"]

GROUP = models.Filter(
    must=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))]
)
RANGE = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=100, lt=400))])
FILTERS = [None, GROUP, RANGE]


# --------------------------------------------------------------------------- fixtures


def _reference() -> QdrantClient:
    """One collection in qdrant-client's local mode holding every point of the library."""
    points, _, _ = library_points()
    reference = QdrantClient(":memory:")
    reference.create_collection(
        "library", models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    reference.upsert(
        "library",
        [models.PointStruct(id=p.id, vector=list(p.vector), payload=p.payload) for p in points],
    )
    return reference


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    library = build_embedded_library(tmp_path_factory.mktemp("library"))
    yield library
    library.fleet.close()


@pytest.fixture(scope="module")
def router(built: Library) -> Iterator[RouterThread]:
    with RouterThread(make_state(built, keys=KEYS, settings=NO_CACHE), grpc=True) as server:
        yield server


@pytest.fixture(scope="module")
def reference() -> Iterator[QdrantClient]:
    client = _reference()
    yield client
    client.close()


def _grpc_client(router: RouterThread, key: str | None = ADMIN) -> QdrantClient:
    return QdrantClient(
        url=router.url,
        prefer_grpc=True,
        grpc_port=router.grpc_port,
        api_key=key,
        timeout=30,
        check_compatibility=False,
    )


def _rest_client(router: RouterThread, key: str | None = ADMIN) -> QdrantClient:
    return QdrantClient(url=router.url, api_key=key, timeout=30, check_compatibility=False)


def _run(
    kind: str, router: RouterThread, action: Callable[[Any], Any], key: str | None = ADMIN
) -> Any:
    """``action(client)`` with a fresh sync or async gRPC client (awaited for the async one)."""
    if kind == "sync":
        with closing(_grpc_client(router, key)) as client:
            return action(client)

    async def run_async() -> Any:
        client = AsyncQdrantClient(
            url=router.url,
            prefer_grpc=True,
            grpc_port=router.grpc_port,
            api_key=key,
            timeout=30,
            check_compatibility=False,
        )
        try:
            result = action(client)
            return await result if inspect.isawaitable(result) else result
        finally:
            await client.close()

    return asyncio.run(run_async())


# --------------------------------------------------------------------------- comparisons


def _same_ranking(got: list[models.ScoredPoint], want: list[models.ScoredPoint]) -> None:
    """Same scores in order (float tolerance), the same ids at each score (ties in any order),
    the same payloads."""
    assert len(got) == len(want), ([p.id for p in got], [p.id for p in want])
    assert np.allclose([p.score for p in got], [p.score for p in want], atol=1e-4)
    start = 0
    while start < len(want):
        end = start + 1
        while end < len(want) and abs(want[end].score - want[start].score) <= 1e-4:
            end += 1
        assert {p.id for p in got[start:end]} == {p.id for p in want[start:end]}
        start = end
    assert {p.id: p.payload for p in got} == {p.id: p.payload for p in want}


def _same_records(got: list[models.Record], want: list[models.Record]) -> None:
    assert [r.id for r in got] == [r.id for r in want]
    assert [r.payload for r in got] == [r.payload for r in want]
    for mine, theirs in zip(got, want, strict=True):
        if theirs.vector is None:
            assert mine.vector is None
        else:
            assert np.allclose(np.asarray(mine.vector), np.asarray(theirs.vector), atol=1e-5)


def _rest_answer(call: Callable[[], Any]) -> tuple[int, str]:
    """The REST side's status and error message for the same operation (200 and "" when served)."""
    try:
        call()
    except UnexpectedResponse as error:
        return error.status_code, json.loads(error.content)["status"]["error"]
    return 200, ""


def _http(router: RouterThread, path: str, body: Any) -> Callable[[], Any]:
    """A raw REST call (for the endpoints the client no longer has a method for)."""

    def call() -> Any:
        response = httpx.post(f"{router.url}{path}", json=body, headers={"api-key": ADMIN})
        if response.status_code != 200:
            raise UnexpectedResponse(
                response.status_code, response.reason_phrase, response.content, response.headers
            )
        return response.json()["result"]

    return call


def _agreeing(grpc_call: Callable[[], Any], rest_call: Callable[[], Any]) -> Any:
    """The gRPC answer; or, when gRPC refuses, the proof that REST refuses the same way (None)."""
    try:
        return grpc_call()
    except grpc.RpcError as error:
        refusal = (error.code(), error.details())
    status, message = _rest_answer(rest_call)
    assert status != 200, f"gRPC refused what REST serves: {refusal}"
    assert refusal == (grpc_code(status), message)
    return None


def _queries(n: int = 6, seed: int = 3) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, DIM))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return [[float(x) for x in row] for row in rows]


def _scored(points: Any) -> list[models.ScoredPoint]:
    return [GrpcToRest.convert_scored_point(p) for p in points]


# --------------------------------------------------------------------------- reads


@pytest.mark.parametrize("kind", KINDS)
def test_query_points_equals_one_collection(
    kind: str, router: RouterThread, reference: QdrantClient
) -> None:
    for vector in _queries():
        for query_filter in FILTERS:
            for extra in ({}, {"offset": 3}, {"score_threshold": 0.3}):
                asked = dict(
                    query=vector, query_filter=query_filter, limit=7, with_payload=True, **extra
                )
                got = _run(kind, router, lambda c, a=asked: c.query_points("library", **a))
                want = reference.query_points("library", **asked)
                _same_ranking(got.points, want.points)


@pytest.mark.parametrize("kind", KINDS)
def test_query_batch_equals_one_collection(
    kind: str, router: RouterThread, reference: QdrantClient
) -> None:
    requests = [
        models.QueryRequest(query=v, filter=f, limit=5, with_payload=["n", "group"])
        for v, f in zip(_queries(3), FILTERS, strict=True)
    ]
    got = _run(kind, router, lambda c: c.query_batch_points("library", requests))
    want = reference.query_batch_points("library", requests)
    assert len(got) == len(want) == 3
    for mine, theirs in zip(got, want, strict=True):
        _same_ranking(mine.points, theirs.points)


@pytest.mark.parametrize("kind", KINDS)
def test_search_and_search_batch_equal_one_collection(
    kind: str, router: RouterThread, reference: QdrantClient
) -> None:
    vectors = _queries(3, seed=11)
    searches = [
        pb.SearchPoints(
            collection_name="library",
            vector=v,
            limit=6,
            with_payload=pb.WithPayloadSelector(enable=True),
            **({"filter": RestToGrpc.convert_filter(f)} if f is not None else {}),
        )
        for v, f in zip(vectors, FILTERS, strict=True)
    ]
    single = _run(kind, router, lambda c: c.grpc_points.Search(searches[1], timeout=30))
    batch = _run(
        kind,
        router,
        lambda c: c.grpc_points.SearchBatch(
            pb.SearchBatchPoints(collection_name="library", search_points=searches), timeout=30
        ),
    )
    wants = [
        reference.query_points("library", query=v, query_filter=f, limit=6, with_payload=True)
        for v, f in zip(vectors, FILTERS, strict=True)
    ]
    _same_ranking(_scored(single.result), wants[1].points)
    assert len(batch.result) == 3
    for answer, want in zip(batch.result, wants, strict=True):
        _same_ranking(_scored(answer.result), want.points)


@pytest.mark.parametrize("kind", KINDS)
def test_scroll_pages_equal_one_collection(
    kind: str, router: RouterThread, reference: QdrantClient
) -> None:
    for scroll_filter in FILTERS:
        offset: Any = None
        while True:
            asked = dict(scroll_filter=scroll_filter, limit=128, offset=offset, with_payload=True)
            got, got_next = _run(kind, router, lambda c, a=asked: c.scroll("library", **a))
            want, want_next = reference.scroll("library", **asked)
            _same_records(got, want)
            assert got_next == want_next
            if want_next is None:
                break
            offset = want_next


@pytest.mark.parametrize("kind", KINDS)
def test_count_and_retrieve_equal_one_collection(
    kind: str, router: RouterThread, reference: QdrantClient
) -> None:
    for count_filter in FILTERS:
        got = _run(kind, router, lambda c, f=count_filter: c.count("library", f, exact=True))
        assert got.count == reference.count("library", count_filter, exact=True).count
    ids = [0, 5, 17, 450, 899, 12345]  # the last one is not stored
    for selector in ({"with_payload": True}, {"with_payload": ["n"], "with_vectors": True}):
        got_records = _run(kind, router, lambda c, s=selector: c.retrieve("library", ids, **s))
        _same_records(
            sorted(got_records, key=lambda r: r.id),
            sorted(reference.retrieve("library", ids, **selector), key=lambda r: r.id),
        )


@pytest.mark.parametrize("kind", KINDS)
def test_collections_listed_described_and_checked(
    kind: str, router: RouterThread, reference: QdrantClient
) -> None:
    names = _run(kind, router, lambda c: c.get_collections())
    assert "library" in {c.name for c in names.collections}
    info = _run(kind, router, lambda c: c.get_collection("library"))
    want = reference.get_collection("library")
    assert info.points_count == want.points_count
    vectors = info.config.params.vectors
    assert isinstance(vectors, models.VectorParams)
    assert (vectors.size, vectors.distance) == (DIM, models.Distance.COSINE)
    with closing(_rest_client(router)) as rest:
        for name, exists in (("library", True), ("no-such-collection", False)):
            answer = _agreeing(
                lambda n=name: _run(kind, router, lambda c: c.collection_exists(n)),
                lambda n=name: rest.collection_exists(n),
            )
            assert answer in (exists, None)
        missing = _agreeing(
            lambda: _run(kind, router, lambda c: c.get_collection("no-such-collection")),
            lambda: rest.get_collection("no-such-collection"),
        )
        assert missing is None  # refused the REST way (NOT_FOUND, the same message)


@pytest.mark.parametrize("kind", KINDS)
def test_health_check_answers_the_service_root(kind: str, router: RouterThread) -> None:
    info = _run(kind, router, lambda c: c.info(), key=None)  # open, as Qdrant's
    root = httpx.get(f"{router.url}/").json()
    assert (info.title, info.version) == (root["title"], root["version"])
    with closing(QdrantClient(":memory:")) as local:
        assert info.title == local.info().title  # a client identifies Qdrant by its title


@pytest.mark.parametrize("kind", KINDS)
def test_query_groups_and_facet_equal_one_collection_or_are_refused_as_rest(
    kind: str, router: RouterThread, reference: QdrantClient
) -> None:
    vector = _queries(1, seed=5)[0]
    with closing(_rest_client(router)) as rest:
        groups = _agreeing(
            lambda: _run(
                kind,
                router,
                lambda c: c.query_points_groups(
                    "library", "group", query=vector, limit=3, group_size=2, with_payload=True
                ),
            ),
            lambda: rest.query_points_groups(
                "library", "group", query=vector, limit=3, group_size=2, with_payload=True
            ),
        )
        if groups is not None:
            want = reference.query_points_groups(
                "library", "group", query=vector, limit=3, group_size=2, with_payload=True
            )
            assert [g.id for g in groups.groups] == [g.id for g in want.groups]
            for mine, theirs in zip(groups.groups, want.groups, strict=True):
                _same_ranking(mine.hits, theirs.hits)
        facet = _agreeing(
            lambda: _run(kind, router, lambda c: c.facet("library", "group", limit=10, exact=True)),
            lambda: rest.facet("library", "group", limit=10, exact=True),
        )
        if facet is not None:
            want_facet = reference.facet("library", "group", limit=10, exact=True)
            assert [(h.value, h.count) for h in facet.hits] == [
                (h.value, h.count) for h in want_facet.hits
            ]


@pytest.mark.parametrize("kind", KINDS)
def test_recommend_and_discover_equal_one_collection_or_are_refused_as_rest(
    kind: str, router: RouterThread, reference: QdrantClient
) -> None:
    point = pb.PointId
    recommend = pb.RecommendPoints(
        collection_name="library",
        positive=[point(num=3), point(num=7)],
        negative=[point(num=11)],
        limit=5,
        with_payload=pb.WithPayloadSelector(enable=True),
    )
    got = _agreeing(
        lambda: _run(kind, router, lambda c: c.grpc_points.Recommend(recommend, timeout=30)),
        _http(
            router,
            "/collections/library/points/recommend",
            {"positive": [3, 7], "negative": [11], "limit": 5, "with_payload": True},
        ),
    )
    if got is not None:
        want = reference.query_points(
            "library",
            query=models.RecommendQuery(
                recommend=models.RecommendInput(positive=[3, 7], negative=[11])
            ),
            limit=5,
            with_payload=True,
        )
        _same_ranking(_scored(got.result), want.points)

    example = pb.VectorExample
    discover = pb.DiscoverPoints(
        collection_name="library",
        target=pb.TargetVector(single=example(id=point(num=21))),
        context=[
            pb.ContextExamplePair(
                positive=example(id=point(num=40)), negative=example(id=point(num=2))
            )
        ],
        limit=5,
        with_payload=pb.WithPayloadSelector(enable=True),
    )
    got = _agreeing(
        lambda: _run(kind, router, lambda c: c.grpc_points.Discover(discover, timeout=30)),
        _http(
            router,
            "/collections/library/points/discover",
            {
                "target": 21,
                "context": [{"positive": 40, "negative": 2}],
                "limit": 5,
                "with_payload": True,
            },
        ),
    )
    if got is not None:
        want = reference.query_points(
            "library",
            query=models.DiscoverQuery(
                discover=models.DiscoverInput(
                    target=21, context=[models.ContextPair(positive=40, negative=2)]
                )
            ),
            limit=5,
            with_payload=True,
        )
        _same_ranking(_scored(got.result), want.points)


# --------------------------------------------------------------------------- writes


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[RouterThread, QdrantClient, Library]]:
    """A library of its own (writes change it), its router, and a reference of its own."""
    library = build_embedded_library(tmp_path)
    reference = _reference()
    try:
        with RouterThread(make_state(library, keys=KEYS, settings=NO_CACHE), grpc=True) as server:
            yield server, reference, library
    finally:
        reference.close()
        library.fleet.close()


def _new_points(seed: int, ids: list[int]) -> list[models.PointStruct]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(len(ids), DIM))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return [
        models.PointStruct(id=i, vector=[float(x) for x in row], payload={"n": i, "group": "new"})
        for i, row in zip(ids, rows, strict=True)
    ]


def _unit(seed: int) -> list[float]:
    row = np.random.default_rng(seed).normal(size=DIM)
    return [float(x) for x in row / np.linalg.norm(row)]


TOUCHED = [1, 2, 3, 4, 5, 6, 7, 8, 100, 101, 5000, 5001]
WRITES: dict[str, Callable[[Any], Any]] = {
    "upsert": lambda c: c.upsert("library", _new_points(1, [1, 2, 5000, 5001])),
    "delete ids": lambda c: c.delete("library", models.PointIdsList(points=[3, 4, 100])),
    "delete filter": lambda c: c.delete("library", models.FilterSelector(filter=GROUP)),
    "set payload": lambda c: c.set_payload("library", {"colour": "red", "n": -1}, points=[5, 6]),
    "overwrite payload": lambda c: c.overwrite_payload("library", {"only": True}, points=[7]),
    "delete payload": lambda c: c.delete_payload("library", ["group"], points=[8, 100]),
    "clear payload": lambda c: c.clear_payload("library", models.PointIdsList(points=[101])),
    "update vectors": lambda c: c.update_vectors(
        "library", [models.PointVectors(id=2, vector=_unit(9))]
    ),
    "delete vectors": lambda c: c.delete_vectors("library", [""], points=[3]),
    "batch": lambda c: c.batch_update_points(
        "library",
        [
            models.UpsertOperation(upsert=models.PointsList(points=_new_points(2, [5000]))),
            models.SetPayloadOperation(
                set_payload=models.SetPayload(payload={"tag": "b"}, points=[1, 5000])
            ),
            models.DeleteOperation(delete=models.PointIdsList(points=[2])),
        ],
    ),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("write", list(WRITES))
def test_writes_leave_the_points_one_collection_would_hold(
    write: str, kind: str, fresh: tuple[RouterThread, QdrantClient, Library]
) -> None:
    router, reference, _ = fresh
    action = WRITES[write]
    with closing(_rest_client(router)) as rest:
        answer = _agreeing(lambda: _run(kind, router, action), lambda: action(rest))
    if answer is None:
        return  # refused exactly as REST refuses it (checked by _agreeing)
    action(reference)
    got = _run(kind, router, lambda c: c.retrieve("library", TOUCHED, with_vectors=True))
    want = reference.retrieve("library", TOUCHED, with_vectors=True)
    _same_records(sorted(got, key=lambda r: r.id), sorted(want, key=lambda r: r.id))
    assert (
        _run(kind, router, lambda c: c.count("library", exact=True)).count
        == reference.count("library", exact=True).count
    )
    vector = _unit(4)
    _same_ranking(
        _run(kind, router, lambda c: c.query_points("library", query=vector, limit=10)).points,
        reference.query_points("library", query=vector, limit=10).points,
    )


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_or_wrong_key_is_unauthenticated(kind: str, router: RouterThread) -> None:
    for key in (None, "wrong-key-0123456789abcdef0123456789"):
        with pytest.raises(grpc.RpcError) as raised:
            _run(kind, router, lambda c: c.count("library"), key=key)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        status, message = _rest_answer(lambda k=key: _rest_client(router, k).count("library"))
        assert (status, raised.value.details()) == (401, message)


@pytest.mark.parametrize("kind", KINDS)
def test_the_read_only_key_reads_and_its_writes_are_permission_denied(
    kind: str, router: RouterThread, reference: QdrantClient
) -> None:
    assert (
        _run(kind, router, lambda c: c.count("library", exact=True), key=READER).count
        == reference.count("library", exact=True).count
    )
    with pytest.raises(grpc.RpcError) as raised:
        _run(kind, router, lambda c: c.upsert("library", _new_points(3, [7000])), key=READER)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "write" in (raised.value.details() or "")
    assert _run(kind, router, lambda c: c.retrieve("library", [7000])) == []


def test_bearer_tokens_and_jwts_in_the_metadata_are_checked_as_rest(
    router: RouterThread,
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{router.grpc_port}")
    stub = pb.PointsStub(channel)
    request = pb.CountPoints(collection_name="library", exact=True)
    try:
        answer = stub.Count(request, metadata=(("authorization", f"Bearer {READER}"),), timeout=30)
        assert answer.result.count == 900
        with pytest.raises(grpc.RpcError) as raised:
            stub.Count(request, metadata=(("authorization", "Bearer forged"),), timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reader = jwt.encode({"access": "r"}, ADMIN, algorithm="HS256")
        bearer = (("authorization", f"Bearer {reader}"),)
        assert stub.Count(request, metadata=bearer, timeout=30).result.count == 900
        point = RestToGrpc.convert_point_struct(models.PointStruct(id=7001, vector=[0.1] * DIM))
        with pytest.raises(grpc.RpcError) as raised:
            stub.Upsert(
                pb.UpsertPoints(collection_name="library", points=[point]),
                metadata=bearer,
                timeout=30,
            )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        expired = jwt.encode({"access": "m", "exp": 1}, ADMIN, algorithm="HS256")
        with pytest.raises(grpc.RpcError) as raised:
            stub.Count(request, metadata=(("api-key", expired),), timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in (raised.value.details() or "")
    finally:
        channel.close()


# --------------------------------------------------------------------------- limits and input


def test_an_oversized_message_is_refused_and_a_small_one_served(built: Library) -> None:
    settings = {**NO_CACHE, "limits": {"max_body_bytes": 16 * 1024}}
    with (
        RouterThread(make_state(built, settings=settings), grpc=True) as server,
        closing(_grpc_client(server, None)) as client,
    ):
        with pytest.raises(grpc.RpcError) as raised:
            client.upsert("library", _new_points(5, list(range(9000, 9400))))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.retrieve("library", [9000]) == []
        assert client.count("library", exact=True).count == 900


@pytest.mark.parametrize(
    ("name", "grpc_call", "rest_call"),
    [
        (
            "a vector of the wrong dimension",
            lambda c: c.query_points("library", query=[0.1] * (DIM + 1), limit=3),
            lambda c: c.query_points("library", query=[0.1] * (DIM + 1), limit=3),
        ),
        (
            "limit + offset beyond the limit",
            lambda c: c.query_points("library", query=[0.1] * DIM, limit=9_000, offset=9_000),
            lambda c: c.query_points("library", query=[0.1] * DIM, limit=9_000, offset=9_000),
        ),
        (
            "an unknown collection",
            lambda c: c.count("no-such-collection"),
            lambda c: c.count("no-such-collection"),
        ),
        (
            "a collection name with a slash",
            lambda c: c.count("library/../x"),
            lambda c: c.count("library/../x"),
        ),
    ],
)
def test_hostile_input_is_refused_as_rest_refuses_it(
    name: str,
    grpc_call: Callable[[Any], Any],
    rest_call: Callable[[Any], Any],
    router: RouterThread,
) -> None:
    with closing(_grpc_client(router)) as client, pytest.raises(grpc.RpcError) as raised:
        grpc_call(client)
    with closing(_rest_client(router)) as rest:
        status, message = _rest_answer(lambda: rest_call(rest))
    assert status >= 400, name
    assert (raised.value.code(), raised.value.details()) == (grpc_code(status), message)


def test_what_cannot_be_carried_to_rest_is_refused_by_name(router: RouterThread) -> None:
    with closing(_grpc_client(router)) as client:
        with pytest.raises(grpc.RpcError) as raised:  # NaN is not JSON: never sent on
            client.grpc_points.Search(
                pb.SearchPoints(collection_name="library", vector=[float("nan")] * DIM, limit=3)
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        search = pb.SearchPoints(collection_name="library", vector=[0.1] * DIM, limit=3, timeout=5)
        with pytest.raises(grpc.RpcError) as raised:
            client.grpc_points.SearchBatch(
                pb.SearchBatchPoints(collection_name="library", search_points=[search])
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "timeout" in (raised.value.details() or "")
        other = pb.SearchPoints(collection_name="other", vector=[0.1] * DIM, limit=3)
        with pytest.raises(grpc.RpcError) as raised:
            client.grpc_points.SearchBatch(
                pb.SearchBatchPoints(collection_name="library", search_points=[other])
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "one collection" in (raised.value.details() or "")


def test_a_method_not_served_is_unimplemented_by_name(router: RouterThread) -> None:
    with closing(_grpc_client(router)) as client:
        with pytest.raises(grpc.RpcError) as raised:
            client.collection_cluster_info("library")
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "qdrant.Collections/CollectionClusterInfo" in (raised.value.details() or "")
        with pytest.raises(grpc.RpcError) as raised:
            client.create_snapshot("library")
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "qdrant.Snapshots/Create" in (raised.value.details() or "")


def test_concurrent_clients_each_get_their_own_answer(
    router: RouterThread, reference: QdrantClient
) -> None:
    vectors = _queries(16, seed=21)
    wants = [reference.query_points("library", query=v, limit=5).points for v in vectors]

    def query(index: int) -> Any:
        return _run(
            "sync" if index % 2 else "async",
            router,
            lambda c: c.query_points("library", query=vectors[index], limit=5),
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(query, range(len(vectors))))
    for index, want in enumerate(wants):
        _same_ranking(results[index].points, want)


# --------------------------------------------------------------------------- a home down


def test_a_home_down_is_partial_or_unavailable_as_over_rest(tmp_path: Path) -> None:
    with library_with_flaky_west(tmp_path) as (library, west):
        state = make_state(library, settings=NO_CACHE)
        with RouterThread(state, grpc=True) as server:
            west.mode = "down"
            vector = near(library, 2)
            rest = httpx.post(
                f"{server.url}/collections/library/points/query",
                json={"query": vector, "limit": 5, "with_payload": True},
            )
            channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
            try:
                stub = pb.PointsStub(channel)
                request = RestToGrpc.convert_query_points(
                    models.QueryRequest(query=vector, limit=5, with_payload=True), "library"
                )
                if rest.status_code == 200:
                    answer, call = stub.Query.with_call(request, timeout=30)
                    trailing = dict(call.trailing_metadata() or ())
                    assert trailing.get(PARTIAL_METADATA) == rest.headers["X-Librarian-Partial"]
                    assert [p.id.num for p in answer.result] == [
                        p["id"] for p in rest.json()["result"]["points"]
                    ]
                else:
                    with pytest.raises(grpc.RpcError) as raised:
                        stub.Query(request, timeout=30)
                    assert raised.value.code() == grpc_code(rest.status_code)
                upsert = RestToGrpc.convert_point_struct(
                    models.PointStruct(id=8000, vector=vector, payload={"n": 8000})
                )
                rest_write = httpx.put(
                    f"{server.url}/collections/library/points",
                    json={"points": [{"id": 8001, "vector": vector}]},
                )
                assert rest_write.status_code >= 500
                with pytest.raises(grpc.RpcError) as raised:
                    stub.Upsert(
                        pb.UpsertPoints(collection_name="library", points=[upsert]), timeout=30
                    )
                assert raised.value.code() == grpc_code(rest_write.status_code)
                assert raised.value.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            finally:
                channel.close()
            west.mode = "ok"


def test_the_grpc_deadline_and_the_message_timeout_bound_the_request(tmp_path: Path) -> None:
    """A hung home: the message's ``timeout`` becomes the REST one (answered as REST answers it,
    long before the call's own deadline); a short deadline ends the call in time."""
    with (
        library_with_flaky_west(tmp_path) as (library, west),
        RouterThread(make_state(library, settings=NO_CACHE), grpc=True) as server,
        closing(_grpc_client(server, None)) as client,
    ):
        west.mode = "hung"
        try:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                client.grpc_points.Count(
                    pb.CountPoints(collection_name="library", exact=True, timeout=1), timeout=60
                )
            assert time.monotonic() - started < 20
            rest = httpx.post(
                f"{server.url}/collections/library/points/count?timeout=1", json={"exact": True}
            )
            assert rest.status_code >= 500
            assert raised.value.code() == grpc_code(rest.status_code)
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                client.grpc_points.Count(
                    pb.CountPoints(collection_name="library", exact=True), timeout=1.0
                )
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 20
        finally:
            west.release()
            assert west.wait_idle(30)


# --------------------------------------------------------------------------- the port


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def _health(port: int) -> grpc.StatusCode:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        pb.QdrantStub(channel).HealthCheck(pb.HealthCheckRequest(), timeout=3)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    finally:
        channel.close()


@pytest.mark.parametrize("grpc_port", ["free", "off"])
def test_serve_listens_for_grpc_unless_its_port_is_zero(grpc_port: str, tmp_path: Path) -> None:
    port, wanted = _free_port(), _free_port()
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    state = make_state(build_embedded_library(tmp_path), settings=NO_CACHE)  # serve closes it
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(
            serve(
                state,
                "127.0.0.1",
                port,
                stop,
                grpc_port=wanted if grpc_port == "free" else 0,
            ),
        ),
        daemon=True,
    )
    thread.start()
    try:
        # serve() starts gRPC (when on) before the REST port answers.
        _wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 30)
        status = _health(wanted)
        expected = grpc.StatusCode.OK if grpc_port == "free" else grpc.StatusCode.UNAVAILABLE
        assert status == expected
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def test_the_router_command_passes_its_grpc_port(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_serve(state: Any, host: str, port: int, **options: Any) -> None:
        seen.update(options)

    async def fake_prepare(*args: Any, **kwargs: Any) -> Any:
        return object()

    monkeypatch.setattr("librarian.router.main.serve", fake_serve)
    monkeypatch.setattr("librarian.router.main.prepare_router", fake_prepare)
    base = ["router", "--host", "127.0.0.1", "--cluster", "a=embedded:/x", "--source", "a/s"]
    base += ["--catalog", "a/c"]
    assert CliRunner().invoke(main, base).exit_code == 0
    assert seen["grpc_port"] == 6334
    assert CliRunner().invoke(main, [*base, "--grpc-port", "0"]).exit_code == 0
    assert seen["grpc_port"] == 0
