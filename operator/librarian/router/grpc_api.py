"""Qdrant's gRPC API, served by the router from the very code that serves its REST API.

Why this exists: many applications call Qdrant with ``prefer_grpc=True``; they
must be able to switch to the library by changing the address only. Each gRPC
call is converted to the REST request Qdrant documents for the same operation
(``GrpcToRest`` of qdrant-client for every part of the message), handed to the
router's aiohttp application *in-process*, and its REST answer is converted
back (``RestToGrpc``). So there is one semantics for both protocols:

* why the aiohttp application and not a dispatcher of our own: the route
  table, the authentication middleware (``api-key`` metadata and
  ``authorization: Bearer`` become the same headers: keys, read-only keys,
  JWTs), the limits middleware (JSON shape, batch sizes, vector dimension,
  the deadline) and the error rendering run unchanged for gRPC callers; an
  endpoint added to the REST side is served over gRPC without a change here;
* why in-process and not over a socket: no second HTTP hop (an aiohttp
  loopback round trip costs about five times what building the request in
  memory does), and a gRPC call that is cancelled or whose deadline passes
  cancels the REST handler doing its work. The request is a real
  ``aiohttp.web.Request`` over a body already in memory, handed to the
  server's own request handler (routing, then the middlewares).

A REST status maps to the gRPC code Qdrant answers with (400 -> INVALID_ARGUMENT,
401 -> UNAUTHENTICATED, 403 -> PERMISSION_DENIED, 404 -> NOT_FOUND, 429 and
413 -> RESOURCE_EXHAUSTED, 502/503 -> UNAVAILABLE, 504 -> DEADLINE_EXCEEDED...)
with the same message. The gRPC deadline becomes the REST ``?timeout=`` (the
smaller of it and the message's own ``timeout``); a message larger than the
REST body limit is refused by gRPC itself (RESOURCE_EXHAUSTED). A partial
answer (``X-Librarian-Partial``) reaches the caller as trailing metadata of
the same name, in lower case. A field of a request message that is not carried to REST is
refused by name (INVALID_ARGUMENT), never dropped; a method not listed in
:data:`SERVED` answers UNIMPLEMENTED naming it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote

import grpc
from aiohttp import web
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel, ValidationError
from qdrant_client import grpc as pb
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc
from qdrant_client.grpc import (
    collections_service_pb2,
    points_service_pb2,
    qdrant_pb2,
    snapshots_service_pb2,
)
from qdrant_client.http import models
from yarl import URL

__all__ = [
    "PARTIAL_METADATA",
    "SERVED",
    "GrpcApi",
    "HttpAnswer",
    "InProcessHttp",
    "grpc_code",
    "start_grpc_server",
]

log = logging.getLogger("librarian.router.grpc")

PARTIAL_METADATA = "x-librarian-partial"
"""The trailing metadata naming the domains missing from an answer (the REST header's twin)."""

_FORWARDED_METADATA = ("api-key", "authorization")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- status codes

_CODES: Mapping[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(http_status: int) -> grpc.StatusCode:
    """The gRPC code Qdrant answers with where its REST API answers ``http_status``."""
    if http_status in _CODES:
        return _CODES[http_status]
    return grpc.StatusCode.INVALID_ARGUMENT if http_status < 500 else grpc.StatusCode.INTERNAL


# --------------------------------------------------------------------------- in-process HTTP


@dataclass(frozen=True)
class HttpAnswer:
    """A REST answer: its status, headers (case-insensitive) and JSON body (``None`` when not JSON)."""

    status: int
    headers: Mapping[str, str]
    body: Any
    text: str


class _Connection:
    """What an aiohttp request asks of the connection it came on, for a request that came on none."""

    ssl_context = None
    peername = None
    sockname = None
    transport = None
    writer = None

    def pause_reading(self) -> None:
        """The body is in memory already: nothing to pause."""

    def resume_reading(self, resume_parser: bool = True) -> None:
        """The body is in memory already: nothing to resume."""


class InProcessHttp:
    """Hands REST requests to an aiohttp application's request handler, without a socket.

    ``handler`` is what aiohttp's server calls for each request it parsed
    (``AppRunner.server.request_handler``): routing, middlewares, the handler.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._connection = _Connection()

    async def call(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> HttpAnswer:
        loop = asyncio.get_running_loop()
        all_headers: CIMultiDict[str] = CIMultiDict(headers)
        all_headers.setdefault("Host", "localhost")  # no socket to name it otherwise
        if body is not None:
            all_headers["Content-Type"] = "application/json"
            all_headers["Content-Length"] = str(len(body))
        frozen = CIMultiDictProxy(all_headers)
        target = str(url)
        message = RawRequestMessage(
            method,
            target,
            HttpVersion11,
            frozen,
            tuple((k.encode(), v.encode()) for k, v in frozen.items()),
            False,  # should_close
            None,  # compression
            False,  # upgrade
            False,  # chunked
            url,
        )
        connection = cast(Any, self._connection)
        payload = StreamReader(connection, 2**16, loop=loop)
        if body:
            payload.feed_data(body)
        payload.feed_eof()
        request = web.Request(
            message,
            payload,
            connection,
            connection,
            cast("asyncio.Task[None]", asyncio.current_task()),
            loop,
            # The gRPC message was bounded already; its JSON form is a few times larger.
            client_max_size=max(len(body or b""), 1) + 1,
        )
        response = await self.handler(request)
        raw = response.body if isinstance(response, web.Response) else None
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = None
        return HttpAnswer(
            response.status, CIMultiDictProxy(CIMultiDict(response.headers)), data, text
        )


# --------------------------------------------------------------------------- conversions

_g2r = GrpcToRest
_r2g = RestToGrpc


class _Refused(Exception):
    """A gRPC request the router cannot carry to REST unchanged (INVALID_ARGUMENT)."""


_CLAUSES = ("must", "should", "must_not")


def _plain(value: Any) -> Any:
    """A value as JSON: models dumped the way the REST API reads them (unset fields left out)."""
    if isinstance(value, BaseModel):
        _drop_empty_clauses(value)
        return value.model_dump(mode="json", exclude_none=True, by_alias=True)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "value") and hasattr(value, "name"):  # an enum
        return value.value
    return value


def _drop_empty_clauses(model: BaseModel) -> None:
    """Leave out every empty clause of every filter in ``model`` (a model just converted).

    In Qdrant's gRPC API an empty repeated clause is an absent one, while REST
    would read ``"should": []`` as a clause no point satisfies.
    """
    stack: list[Any] = [model]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, BaseModel):
            if isinstance(item, models.Filter):
                for clause in _CLAUSES:
                    if getattr(item, clause) == []:
                        setattr(item, clause, None)
            stack.extend(getattr(item, name) for name in type(item).model_fields)


@dataclass(frozen=True)
class HttpCall:
    """The REST request a gRPC call becomes (``path`` percent-encoded)."""

    method: str
    path: str
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)


def _collection(message: Any) -> str:
    return f"/collections/{quote(message.collection_name, safe='')}"


def _points(message: Any, suffix: str = "") -> str:
    return f"{_collection(message)}/points{suffix}"


def _optional(message: Any, name: str, convert: Callable[[Any], Any] | None = None) -> Any:
    """A field's value (converted), or ``None`` when it is not set or the message has none."""
    if name not in message.DESCRIPTOR.fields_by_name or not message.HasField(name):
        return None
    value = getattr(message, name)
    return convert(value) if convert is not None else value


def _body(**fields: Any) -> dict[str, Any]:
    """A REST body of the fields that are set."""
    return {k: _plain(v) for k, v in fields.items() if v is not None}


def _read_params(message: Any) -> dict[str, str]:
    params: dict[str, str] = {}
    if message.HasField("timeout"):
        params["timeout"] = str(message.timeout)
    if message.HasField("read_consistency"):
        params["consistency"] = str(_plain(_g2r.convert_read_consistency(message.read_consistency)))
    return params


def _write_params(message: Any) -> dict[str, str]:
    params: dict[str, str] = {}
    if message.HasField("wait"):
        params["wait"] = "true" if message.wait else "false"
    if message.HasField("ordering"):
        params["ordering"] = str(_plain(_g2r.convert_write_ordering(message.ordering)))
    if message.HasField("timeout"):
        params["timeout"] = str(message.timeout)
    return params


def _shard_key(message: Any) -> Any:
    return _optional(message, "shard_key_selector", _g2r.convert_shard_key_selector)


def _selector_fields(selector: Any) -> dict[str, Any]:
    """A PointsSelector as the ``points`` / ``filter`` fields of a payload or vectors body."""
    converted = _g2r.convert_points_selector(selector)
    if isinstance(converted, models.PointIdsList):
        return {"points": converted.points}
    return {"filter": converted.filter}


def _search_vector(message: Any) -> Any:
    vector = list(message.vector)
    if message.HasField("sparse_indices"):
        sparse = {"indices": list(message.sparse_indices.data), "values": vector}
        return {
            "name": message.vector_name if message.HasField("vector_name") else "",
            "vector": sparse,
        }
    if message.HasField("vector_name"):
        return {"name": message.vector_name, "vector": vector}
    return vector


def _search_body(message: Any) -> dict[str, Any]:
    return _body(
        vector=_search_vector(message),
        filter=_optional(message, "filter", _g2r.convert_filter),
        params=_optional(message, "params", _g2r.convert_search_params),
        limit=message.limit,
        offset=_optional(message, "offset"),
        with_payload=_optional(message, "with_payload", _g2r.convert_with_payload_interface),
        with_vector=_optional(message, "with_vectors", _g2r.convert_with_vectors_selector),
        score_threshold=_optional(message, "score_threshold"),
        shard_key=_shard_key(message),
    )


def _example(example: Any) -> Any:
    """A VectorExample: a point id or a vector."""
    which = example.WhichOneof("example")
    if which == "id":
        return _g2r.convert_point_id(example.id)
    if which == "vector":
        return _g2r.convert_vector(example.vector)
    raise _Refused("an example without an id or a vector")


def _recommend_body(message: Any) -> dict[str, Any]:
    positive: list[Any] = [_g2r.convert_point_id(i) for i in message.positive]
    positive += [_g2r.convert_vector(v) for v in message.positive_vectors]
    negative: list[Any] = [_g2r.convert_point_id(i) for i in message.negative]
    negative += [_g2r.convert_vector(v) for v in message.negative_vectors]
    return _body(
        positive=positive,
        negative=negative,
        strategy=_optional(message, "strategy", _g2r.convert_recommend_strategy),
        filter=_optional(message, "filter", _g2r.convert_filter),
        params=_optional(message, "params", _g2r.convert_search_params),
        limit=message.limit,
        offset=_optional(message, "offset"),
        with_payload=_optional(message, "with_payload", _g2r.convert_with_payload_interface),
        with_vector=_optional(message, "with_vectors", _g2r.convert_with_vectors_selector),
        score_threshold=_optional(message, "score_threshold"),
        using=_optional(message, "using"),
        lookup_from=_optional(message, "lookup_from", _g2r.convert_lookup_location),
        shard_key=_shard_key(message),
    )


def _discover_body(message: Any) -> dict[str, Any]:
    target = None
    if message.HasField("target"):
        if message.target.WhichOneof("target") != "single":
            raise _Refused("a discover target without an example")
        target = _example(message.target.single)
    context = [
        {"positive": _example(pair.positive), "negative": _example(pair.negative)}
        for pair in message.context
    ]
    return _body(
        target=target,
        context=context,
        filter=_optional(message, "filter", _g2r.convert_filter),
        params=_optional(message, "params", _g2r.convert_search_params),
        limit=message.limit,
        offset=_optional(message, "offset"),
        with_payload=_optional(message, "with_payload", _g2r.convert_with_payload_interface),
        with_vector=_optional(message, "with_vectors", _g2r.convert_with_vectors_selector),
        using=_optional(message, "using"),
        lookup_from=_optional(message, "lookup_from", _g2r.convert_lookup_location),
        shard_key=_shard_key(message),
    )


def _groups_fields(message: Any) -> dict[str, Any]:
    return {
        "group_by": message.group_by,
        "group_size": message.group_size if _present(message, "group_size") else None,
        "limit": message.limit if _present(message, "limit") else None,
        "with_lookup": _optional(message, "with_lookup", _g2r.convert_with_lookup),
    }


def _present(message: Any, name: str) -> bool:
    """Whether a field is set: ``HasField`` where it has presence, non-zero otherwise."""
    descriptor = message.DESCRIPTOR.fields_by_name[name]
    if descriptor.has_presence:
        return bool(message.HasField(name))
    return bool(getattr(message, name))


def _query_groups_body(message: Any) -> dict[str, Any]:
    return _body(
        prefetch=[_g2r.convert_prefetch_query(p) for p in message.prefetch] or None,
        query=_optional(message, "query", _g2r.convert_query),
        using=_optional(message, "using"),
        filter=_optional(message, "filter", _g2r.convert_filter),
        params=_optional(message, "params", _g2r.convert_search_params),
        score_threshold=_optional(message, "score_threshold"),
        with_payload=_optional(message, "with_payload", _g2r.convert_with_payload_interface),
        with_vector=_optional(message, "with_vectors", _g2r.convert_with_vectors_selector),
        lookup_from=_optional(message, "lookup_from", _g2r.convert_lookup_location),
        shard_key=_shard_key(message),
        **_groups_fields(message),
    )


def _search_groups_body(message: Any) -> dict[str, Any]:
    body = _search_body(message)
    body.pop("offset", None)
    return {**body, **_body(**_groups_fields(message))}


def _recommend_groups_body(message: Any) -> dict[str, Any]:
    return {**_recommend_body(message), **_body(**_groups_fields(message))}


# ------------------------------------------------------------- answers (REST result -> gRPC)


def _scored(result: Any) -> list[Any]:
    return [_r2g.convert_scored_point(models.ScoredPoint.model_validate(p)) for p in result]


def _records(result: Any) -> list[Any]:
    return [_r2g.convert_record(models.Record.model_validate(r)) for r in result]


def _update(result: Any) -> Any:
    return _r2g.convert_update_result(models.UpdateResult.model_validate(result))


def _groups(result: Any) -> Any:
    return _r2g.convert_groups_result(models.GroupsResult.model_validate(result))


def _scroll_answer(result: Any, time: float) -> Any:
    page = models.ScrollResult.model_validate(result)
    answer = pb.ScrollResponse(result=[_r2g.convert_record(r) for r in page.points], time=time)
    if page.next_page_offset is not None:
        answer.next_page_offset.CopyFrom(_r2g.convert_extended_point_id(page.next_page_offset))
    return answer


def _health_answer(result: Any, time: float) -> Any:
    reply = pb.HealthCheckReply(
        title=str(result.get("title", "")), version=str(result.get("version", ""))
    )
    if result.get("commit"):
        reply.commit = str(result["commit"])
    return reply


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Served:
    """How one gRPC method is served: the REST call it becomes and how its answer comes back.

    ``enveloped``: the REST answer is Qdrant's ``{"result": ..., "time": ...}``
    (the service root answers its fields bare).
    """

    to_http: Callable[[Any], HttpCall]
    answer: Callable[[Any, float], Any]
    enveloped: bool = True


def _served_points() -> dict[str, Served]:
    read = _read_params
    return {
        "Search": Served(
            lambda m: HttpCall("POST", _points(m, "/search"), _search_body(m), read(m)),
            lambda r, t: pb.SearchResponse(result=_scored(r), time=t),
        ),
        "SearchBatch": Served(
            lambda m: HttpCall(
                "POST",
                _points(m, "/search/batch"),
                {"searches": [_search_body(s) for s in _same_collection(m, m.search_points)]},
                read(m),
            ),
            lambda r, t: pb.SearchBatchResponse(
                result=[pb.BatchResult(result=_scored(points)) for points in r], time=t
            ),
        ),
        "SearchGroups": Served(
            lambda m: HttpCall(
                "POST", _points(m, "/search/groups"), _search_groups_body(m), read(m)
            ),
            lambda r, t: pb.SearchGroupsResponse(result=_groups(r), time=t),
        ),
        "Recommend": Served(
            lambda m: HttpCall("POST", _points(m, "/recommend"), _recommend_body(m), read(m)),
            lambda r, t: pb.RecommendResponse(result=_scored(r), time=t),
        ),
        "RecommendBatch": Served(
            lambda m: HttpCall(
                "POST",
                _points(m, "/recommend/batch"),
                {"searches": [_recommend_body(s) for s in _same_collection(m, m.recommend_points)]},
                read(m),
            ),
            lambda r, t: pb.RecommendBatchResponse(
                result=[pb.BatchResult(result=_scored(points)) for points in r], time=t
            ),
        ),
        "RecommendGroups": Served(
            lambda m: HttpCall(
                "POST", _points(m, "/recommend/groups"), _recommend_groups_body(m), read(m)
            ),
            lambda r, t: pb.RecommendGroupsResponse(result=_groups(r), time=t),
        ),
        "Discover": Served(
            lambda m: HttpCall("POST", _points(m, "/discover"), _discover_body(m), read(m)),
            lambda r, t: pb.DiscoverResponse(result=_scored(r), time=t),
        ),
        "DiscoverBatch": Served(
            lambda m: HttpCall(
                "POST",
                _points(m, "/discover/batch"),
                {"searches": [_discover_body(s) for s in _same_collection(m, m.discover_points)]},
                read(m),
            ),
            lambda r, t: pb.DiscoverBatchResponse(
                result=[pb.BatchResult(result=_scored(points)) for points in r], time=t
            ),
        ),
        "Query": Served(
            lambda m: HttpCall(
                "POST", _points(m, "/query"), _plain(_g2r.convert_query_points(m)), read(m)
            ),
            lambda r, t: pb.QueryResponse(result=_scored(r["points"]), time=t),
        ),
        "QueryBatch": Served(
            lambda m: HttpCall(
                "POST",
                _points(m, "/query/batch"),
                {
                    "searches": [
                        _plain(_g2r.convert_query_points(q))
                        for q in _same_collection(m, m.query_points)
                    ]
                },
                read(m),
            ),
            lambda r, t: pb.QueryBatchResponse(
                result=[pb.BatchResult(result=_scored(answer["points"])) for answer in r], time=t
            ),
        ),
        "QueryGroups": Served(
            lambda m: HttpCall("POST", _points(m, "/query/groups"), _query_groups_body(m), read(m)),
            lambda r, t: pb.QueryGroupsResponse(result=_groups(r), time=t),
        ),
        "Facet": Served(
            lambda m: HttpCall(
                "POST",
                f"{_collection(m)}/facet",
                _body(
                    key=m.key,
                    filter=_optional(m, "filter", _g2r.convert_filter),
                    limit=_optional(m, "limit"),
                    exact=_optional(m, "exact"),
                    shard_key=_shard_key(m),
                ),
                read(m),
            ),
            lambda r, t: pb.FacetResponse(
                hits=[
                    _r2g.convert_facet_value_hit(models.FacetValueHit.model_validate(h))
                    for h in r["hits"]
                ],
                time=t,
            ),
        ),
        "Scroll": Served(
            lambda m: HttpCall(
                "POST",
                _points(m, "/scroll"),
                _body(
                    offset=_optional(m, "offset", _g2r.convert_point_id),
                    limit=_optional(m, "limit"),
                    filter=_optional(m, "filter", _g2r.convert_filter),
                    with_payload=_optional(m, "with_payload", _g2r.convert_with_payload_interface),
                    with_vector=_optional(m, "with_vectors", _g2r.convert_with_vectors_selector),
                    order_by=_optional(m, "order_by", _g2r.convert_order_by),
                    shard_key=_shard_key(m),
                ),
                read(m),
            ),
            _scroll_answer,
        ),
        "Count": Served(
            lambda m: HttpCall(
                "POST",
                _points(m, "/count"),
                _body(
                    filter=_optional(m, "filter", _g2r.convert_filter),
                    exact=_optional(m, "exact"),
                    shard_key=_shard_key(m),
                ),
                read(m),
            ),
            lambda r, t: pb.CountResponse(result=pb.CountResult(count=int(r["count"])), time=t),
        ),
        "Get": Served(
            lambda m: HttpCall(
                "POST",
                _points(m),
                _body(
                    ids=[_g2r.convert_point_id(i) for i in m.ids],
                    with_payload=_optional(m, "with_payload", _g2r.convert_with_payload_interface),
                    with_vector=_optional(m, "with_vectors", _g2r.convert_with_vectors_selector),
                    shard_key=_shard_key(m),
                ),
                read(m),
            ),
            lambda r, t: pb.GetResponse(result=_records(r), time=t),
        ),
        "SearchMatrixPairs": Served(
            lambda m: HttpCall(
                "POST", _points(m, "/search/matrix/pairs"), _matrix_body(m), read(m)
            ),
            lambda r, t: pb.SearchMatrixPairsResponse(
                result=_r2g.convert_search_matrix_pairs(
                    models.SearchMatrixPairsResponse.model_validate(r)
                ),
                time=t,
            ),
        ),
        "SearchMatrixOffsets": Served(
            lambda m: HttpCall(
                "POST", _points(m, "/search/matrix/offsets"), _matrix_body(m), read(m)
            ),
            lambda r, t: pb.SearchMatrixOffsetsResponse(
                result=_r2g.convert_search_matrix_offsets(
                    models.SearchMatrixOffsetsResponse.model_validate(r)
                ),
                time=t,
            ),
        ),
        **_served_writes(),
    }


def _matrix_body(message: Any) -> dict[str, Any]:
    return _body(
        filter=_optional(message, "filter", _g2r.convert_filter),
        sample=_optional(message, "sample"),
        limit=_optional(message, "limit"),
        using=_optional(message, "using"),
        shard_key=_shard_key(message),
    )


def _field_schema(message: Any) -> Any:
    """The schema of a CreateFieldIndexCollection: its index params, else its field type."""
    if message.HasField("field_index_params"):
        return _g2r.convert_payload_schema_params(message.field_index_params)
    if message.HasField("field_type"):
        name = pb.FieldType.Name(message.field_type).removeprefix("FieldType").lower()
        return models.PayloadSchemaType(name)
    raise _Refused("field_type or field_index_params is required")


def _vector_name_config(message: Any) -> dict[str, Any]:
    """A CreateVectorNameRequest's vector as the REST body of
    ``PUT /collections/{name}/vectors/{vector_name}``."""
    if message.HasField("dense_config"):
        dense = message.dense_config
        return {
            "dense": _body(
                size=dense.size,
                distance=_g2r.convert_distance(dense.distance),
                multivector_config=_optional(
                    dense, "multivector_config", _g2r.convert_multivector_config
                ),
                datatype=_optional(dense, "datatype", _g2r.convert_datatype),
            )
        }
    if message.HasField("sparse_config"):
        sparse = message.sparse_config
        return {
            "sparse": _body(
                modifier=_optional(sparse, "modifier", _g2r.convert_modifier),
                datatype=_optional(sparse, "datatype", _g2r.convert_datatype),
            )
        }
    raise _Refused("dense_config or sparse_config is required")


def _vector_name_path(message: Any) -> str:
    return f"{_collection(message)}/vectors/{quote(message.vector_name, safe='')}"


def _served_writes() -> dict[str, Served]:
    write = _write_params

    def operation(
        method: str, suffix: str, body: Callable[[Any], Any]
    ) -> Callable[[Any], HttpCall]:
        return lambda m: HttpCall(method, _points(m, suffix), body(m), write(m))

    def answered(result: Any, time: float) -> Any:
        return pb.PointsOperationResponse(result=_update(result), time=time)

    def set_payload(m: Any) -> Any:
        return _body(
            payload=_g2r.convert_payload(m.payload),
            key=_optional(m, "key"),
            shard_key=_shard_key(m),
            **(_selector_fields(m.points_selector) if m.HasField("points_selector") else {}),
        )

    return {
        "Upsert": Served(
            operation(
                "PUT",
                "",
                lambda m: _body(
                    points=[_g2r.convert_point_struct(p) for p in m.points],
                    shard_key=_shard_key(m),
                    update_filter=_optional(m, "update_filter", _g2r.convert_filter),
                    update_mode=_optional(m, "update_mode", _g2r.convert_update_mode),
                ),
            ),
            answered,
        ),
        "Delete": Served(
            operation(
                "POST",
                "/delete",
                lambda m: {
                    **_body(shard_key=_shard_key(m)),
                    **_plain(_selector_fields(_required(m, "points"))),
                },
            ),
            answered,
        ),
        "SetPayload": Served(operation("POST", "/payload", set_payload), answered),
        "OverwritePayload": Served(operation("PUT", "/payload", set_payload), answered),
        "DeletePayload": Served(
            operation(
                "POST",
                "/payload/delete",
                lambda m: _body(
                    keys=list(m.keys),
                    shard_key=_shard_key(m),
                    **(
                        _selector_fields(m.points_selector) if m.HasField("points_selector") else {}
                    ),
                ),
            ),
            answered,
        ),
        "ClearPayload": Served(
            operation(
                "POST",
                "/payload/clear",
                lambda m: {
                    **_body(shard_key=_shard_key(m)),
                    **_plain(_selector_fields(_required(m, "points"))),
                },
            ),
            answered,
        ),
        "UpdateVectors": Served(
            operation(
                "PUT",
                "/vectors",
                lambda m: _body(
                    points=[_g2r.convert_point_vectors(p) for p in m.points],
                    shard_key=_shard_key(m),
                    update_filter=_optional(m, "update_filter", _g2r.convert_filter),
                ),
            ),
            answered,
        ),
        "DeleteVectors": Served(
            operation(
                "POST",
                "/vectors/delete",
                lambda m: _body(
                    vector=list(m.vectors.names) if m.HasField("vectors") else [],
                    shard_key=_shard_key(m),
                    **_selector_fields(_required(m, "points_selector")),
                ),
            ),
            answered,
        ),
        "CreateFieldIndex": Served(
            lambda m: HttpCall(
                "PUT",
                f"{_collection(m)}/index",
                _body(field_name=m.field_name, field_schema=_field_schema(m)),
                write(m),
            ),
            answered,
        ),
        "CreateVectorName": Served(
            lambda m: HttpCall("PUT", _vector_name_path(m), _vector_name_config(m), write(m)),
            answered,
        ),
        "DeleteVectorName": Served(
            lambda m: HttpCall("DELETE", _vector_name_path(m), None, write(m)),
            answered,
        ),
        "DeleteFieldIndex": Served(
            lambda m: HttpCall(
                "DELETE", f"{_collection(m)}/index/{quote(m.field_name, safe='')}", None, write(m)
            ),
            answered,
        ),
        "UpdateBatch": Served(
            operation(
                "POST",
                "/batch",
                lambda m: _body(
                    operations=[_g2r.convert_points_update_operation(o) for o in m.operations]
                ),
            ),
            lambda r, t: pb.UpdateBatchResponse(result=[_update(u) for u in r], time=t),
        ),
    }


def _served_collections() -> dict[str, Served]:
    def info(result: Any, time: float) -> Any:
        converted = _r2g.convert_collection_info(models.CollectionInfo.model_validate(result))
        return pb.GetCollectionInfoResponse(result=converted, time=time)

    def timeout(m: Any) -> dict[str, str]:
        return {"timeout": str(m.timeout)} if m.HasField("timeout") else {}

    def done(result: Any, time: float) -> Any:
        return pb.CollectionOperationResponse(result=bool(result), time=time)

    def aliases(result: Any, time: float) -> Any:
        listed = models.CollectionsAliasesResponse.model_validate(result)
        return pb.ListAliasesResponse(
            aliases=[_r2g.convert_alias_description(a) for a in listed.aliases], time=time
        )

    return {
        "Get": Served(lambda m: HttpCall("GET", _collection(m)), info),
        "Create": Served(
            lambda m: HttpCall("PUT", _collection(m), _create_body(m), timeout(m)), done
        ),
        "Update": Served(
            lambda m: HttpCall(
                "PATCH", _collection(m), _plain(_g2r.convert_update_collection(m)), timeout(m)
            ),
            done,
        ),
        "Delete": Served(lambda m: HttpCall("DELETE", _collection(m), None, timeout(m)), done),
        "UpdateAliases": Served(
            lambda m: HttpCall(
                "POST",
                "/collections/aliases",
                {"actions": [_plain(_g2r.convert_alias_operations(a)) for a in m.actions]},
                timeout(m),
            ),
            done,
        ),
        "ListAliases": Served(lambda m: HttpCall("GET", "/aliases"), aliases),
        "ListCollectionAliases": Served(
            lambda m: HttpCall("GET", f"{_collection(m)}/aliases"), aliases
        ),
        "List": Served(
            lambda m: HttpCall("GET", "/collections"),
            lambda r, t: pb.ListCollectionsResponse(
                collections=[pb.CollectionDescription(name=c["name"]) for c in r["collections"]],
                time=t,
            ),
        ),
        "CollectionExists": Served(
            lambda m: HttpCall("GET", f"{_collection(m)}/exists"),
            lambda r, t: pb.CollectionExistsResponse(
                result=pb.CollectionExists(exists=bool(r["exists"])), time=t
            ),
        ),
    }


_READ = "collection_name read_consistency timeout shard_key_selector"
_WRITE = "collection_name wait ordering timeout shard_key_selector"
_SELECT = "filter params score_threshold with_payload with_vectors"
_CARRIED_TEXT: Mapping[str, str] = {
    "SearchPoints": f"{_READ} {_SELECT} vector vector_name sparse_indices limit offset",
    "SearchBatchPoints": "collection_name read_consistency timeout search_points",
    "SearchPointGroups": f"{_READ} {_SELECT} vector vector_name sparse_indices limit "
    "group_by group_size with_lookup",
    "RecommendPoints": f"{_READ} {_SELECT} positive negative positive_vectors negative_vectors "
    "strategy limit offset using lookup_from",
    "RecommendBatchPoints": "collection_name read_consistency timeout recommend_points",
    "RecommendPointGroups": f"{_READ} {_SELECT} positive negative positive_vectors "
    "negative_vectors strategy limit using lookup_from group_by group_size with_lookup",
    "DiscoverPoints": f"{_READ} filter params with_payload with_vectors target context limit "
    "offset using lookup_from",
    "DiscoverBatchPoints": "collection_name read_consistency timeout discover_points",
    "QueryPoints": f"{_READ} {_SELECT} prefetch query using limit offset lookup_from",
    "QueryBatchPoints": "collection_name read_consistency timeout query_points",
    "QueryPointGroups": f"{_READ} {_SELECT} prefetch query using limit lookup_from "
    "group_by group_size with_lookup",
    "FacetCounts": f"{_READ} key filter limit exact",
    "ScrollPoints": f"{_READ} filter offset limit with_payload with_vectors order_by",
    "CountPoints": f"{_READ} filter exact",
    "GetPoints": f"{_READ} ids with_payload with_vectors",
    "UpsertPoints": f"{_WRITE} points update_filter update_mode",
    "DeletePoints": f"{_WRITE} points",
    "SetPayloadPoints": f"{_WRITE} payload points_selector key",
    "DeletePayloadPoints": f"{_WRITE} keys points_selector",
    "ClearPayloadPoints": f"{_WRITE} points",
    "UpdatePointVectors": f"{_WRITE} points update_filter",
    "DeletePointVectors": f"{_WRITE} points_selector vectors",
    "UpdateBatchPoints": "collection_name wait ordering timeout operations",
    "SearchMatrixPoints": f"{_READ} filter sample limit using",
    "CreateFieldIndexCollection": "collection_name wait ordering timeout field_name field_type "
    "field_index_params",
    "DeleteFieldIndexCollection": "collection_name wait ordering timeout field_name",
    "CreateVectorNameRequest": "collection_name wait ordering timeout vector_name dense_config "
    "sparse_config",
    "DeleteVectorNameRequest": "collection_name wait ordering timeout vector_name",
    "UpdateCollection": "collection_name timeout optimizers_config params hnsw_config "
    "vectors_config quantization_config sparse_vectors_config strict_mode_config metadata",
    "DeleteCollection": "collection_name timeout",
    "CreateCollection": "collection_name timeout hnsw_config wal_config optimizers_config "
    "shard_number on_disk_payload vectors_config replication_factor write_consistency_factor "
    "quantization_config sharding_method sparse_vectors_config strict_mode_config metadata "
    "payload id_tracker",
    "ChangeAliases": "actions timeout",
    "ListAliasesRequest": "",
    "ListCollectionAliasesRequest": "collection_name",
    "GetCollectionInfoRequest": "collection_name",
    "ListCollectionsRequest": "",
    "CollectionExistsRequest": "collection_name",
    "HealthCheckRequest": "",
}
_CARRIED: Mapping[str, frozenset[str]] = {
    name: frozenset(text.split()) for name, text in _CARRIED_TEXT.items()
}
"""The fields of each request message the conversions carry to REST (any other one is refused)."""


def _check_carried(message: Any) -> None:
    """Refuse a message with a field the conversion would not carry (a newer client's field)."""
    carried = _CARRIED.get(message.DESCRIPTOR.name, frozenset())
    unknown = sorted({f.name for f, _ in message.ListFields()} - carried)
    if unknown:
        raise _Refused(f"{', '.join(unknown)} of {message.DESCRIPTOR.name} not supported")


def _create_body(message: Any) -> dict[str, Any]:
    """A CreateCollection as the REST body of ``PUT /collections/{name}``."""
    return _body(
        vectors=_optional(message, "vectors_config", _g2r.convert_vectors_config),
        shard_number=_optional(message, "shard_number"),
        replication_factor=_optional(message, "replication_factor"),
        write_consistency_factor=_optional(message, "write_consistency_factor"),
        on_disk_payload=_optional(message, "on_disk_payload"),
        hnsw_config=_optional(message, "hnsw_config", _g2r.convert_hnsw_config_diff),
        optimizers_config=_optional(
            message, "optimizers_config", _g2r.convert_optimizers_config_diff
        ),
        wal_config=_optional(message, "wal_config", _g2r.convert_wal_config_diff),
        quantization_config=_optional(
            message, "quantization_config", _g2r.convert_quantization_config
        ),
        sparse_vectors=_optional(
            message, "sparse_vectors_config", _g2r.convert_sparse_vector_config
        ),
        sharding_method=_optional(message, "sharding_method", _g2r.convert_sharding_method),
        strict_mode_config=_optional(
            message, "strict_mode_config", _g2r.convert_strict_mode_config
        ),
        metadata=_g2r.convert_payload(message.metadata) if len(message.metadata) else None,
        payload=_optional(message, "payload", _g2r.convert_payload_storage_params),
        id_tracker=_optional(message, "id_tracker", _g2r.convert_id_tracker_params),
    )


def _required(message: Any, name: str) -> Any:
    if not message.HasField(name):
        raise _Refused(f"{name} is required")
    return getattr(message, name)


def _same_collection(batch: Any, items: Iterable[Any]) -> list[Any]:
    """A batch's items, each naming the batch's collection (Qdrant reads the batch's)."""
    items = list(items)
    for item in items:
        _check_carried(item)
        if item.collection_name and item.collection_name != batch.collection_name:
            raise _Refused(
                f"an item names collection {item.collection_name!r}, the batch "
                f"{batch.collection_name!r}: a batch addresses one collection"
            )
        for name in ("read_consistency", "timeout"):
            if item.HasField(name):
                raise _Refused(f"{name} is set on an item: set it on the batch")
    return items


SERVED: Mapping[str, Mapping[str, Served]] = {
    "qdrant.Points": _served_points(),
    "qdrant.Collections": _served_collections(),
    "qdrant.Qdrant": {
        "HealthCheck": Served(lambda m: HttpCall("GET", "/"), _health_answer, enveloped=False),
    },
}
"""Every gRPC method the router serves, by service: the REST call it becomes."""

_SERVICE_MODULES = (points_service_pb2, collections_service_pb2, qdrant_pb2, snapshots_service_pb2)


# --------------------------------------------------------------------------- the server


class GrpcApi:
    """The gRPC handlers: each call converted, dispatched to the REST application, answered."""

    def __init__(self, http: InProcessHttp) -> None:
        self.http = http

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """A handler per service of Qdrant's gRPC API; every method of each is answered."""
        generic = []
        for module in _SERVICE_MODULES:
            for service in module.DESCRIPTOR.services_by_name.values():
                served = SERVED.get(service.full_name, {})
                methods = {
                    method.name: self._method(service.full_name, method, served.get(method.name))
                    for method in service.methods
                }
                generic.append(grpc.method_handlers_generic_handler(service.full_name, methods))
        return generic

    def _method(self, service: str, method: Any, served: Served | None) -> grpc.RpcMethodHandler:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        name = f"{service}/{method.name}"

        async def unimplemented(message: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, f"{name} is not served by the router"
            )

        async def serve(message: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            assert served is not None
            return await self._serve(name, served, message, context)

        return grpc.unary_unary_rpc_method_handler(
            serve if served is not None else unimplemented,
            request_deserializer=request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )

    async def _serve(
        self, name: str, served: Served, message: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        try:
            _check_carried(message)
            call = served.to_http(message)
            body = (
                json.dumps(call.body, separators=(",", ":"), allow_nan=False).encode()
                if call.body is not None
                else None
            )
        except (_Refused, ValueError, TypeError, KeyError, ValidationError) as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Wrong input: {name}: {error}")
        params = dict(call.params)
        remaining = context.time_remaining()
        if remaining is not None:
            if remaining <= 0:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded")
            given = float(params["timeout"]) if "timeout" in params else math.inf
            params["timeout"] = f"{min(given, remaining):.6g}"
        answer = await self.http.call(
            call.method,
            URL(call.path, encoded=True).with_query(params),
            _forwarded(context.invocation_metadata() or ()),
            body,
        )
        partial = answer.headers.get("X-Librarian-Partial")
        if partial:
            context.set_trailing_metadata(((PARTIAL_METADATA, partial),))
        if answer.status != 200:
            await context.abort(grpc_code(answer.status), _error_message(answer))
        if not isinstance(answer.body, dict):
            await context.abort(grpc.StatusCode.INTERNAL, f"{name}: the answer is not JSON")
        result = answer.body.get("result") if served.enveloped else answer.body
        elapsed = float(answer.body.get("time", 0.0)) if served.enveloped else 0.0
        try:
            return served.answer(result, elapsed)
        except (ValueError, TypeError, KeyError, AttributeError, ValidationError) as error:
            log.exception("%s: the REST answer does not convert to gRPC", name)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"Service internal error: {name}: {error}"
            )


def _forwarded(metadata: Iterable[Any]) -> dict[str, str]:
    """The credentials of the call as the REST application reads them."""
    headers: dict[str, str] = {}
    for key, value in metadata:
        if key in _FORWARDED_METADATA and isinstance(value, str):
            headers[key] = value
    return headers


def _error_message(answer: HttpAnswer) -> str:
    body = answer.body
    if isinstance(body, dict):
        status = body.get("status")
        if isinstance(status, dict) and isinstance(status.get("error"), str):
            return str(status["error"])
    return answer.text or f"HTTP {answer.status}"


async def start_grpc_server(
    handler: Handler, host: str, port: int, *, max_message_bytes: int
) -> tuple[grpc.aio.Server, int]:
    """Serve Qdrant's gRPC API on ``host:port`` (0: any free port) from the REST ``handler``.

    Returns the started server and the port it listens on. A message larger than
    ``max_message_bytes`` (the REST body limit) is refused by gRPC itself.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    server.add_generic_rpc_handlers(tuple(GrpcApi(InProcessHttp(handler)).handlers()))
    bound = server.add_insecure_port(f"{_host(host)}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    return server, bound


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
