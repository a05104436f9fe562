"""Qdrant's REST wire format: request parsing, response envelopes, errors.

Why this exists: applications talk to the router with the official clients, so
every body is parsed with ``qdrant_client.http.models`` (the same validation
Qdrant's OpenAPI describes) and every answer, errors included, has Qdrant's
envelope: ``{"result": ..., "status": "ok", "time": seconds}`` or
``{"status": {"error": message}, "time": seconds}`` with the right HTTP code.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from qdrant_client.http import models

from librarian.core.collection_spec import CollectionSpec
from librarian.core.fusion import Hit, PointId
from librarian.router.filter_keys import ReservedKeyInFilter, reserved_filter_keys
from librarian.storage.remote import vectors_config
from librarian.storage.vectors import Vectors, select_vectors, vectors_json

__all__ = [
    "LIBRARY_CHECK_KEY",
    "PARSED_KEY",
    "VALIDATED_KEY",
    "ApiError",
    "SearchRequest",
    "SearchRequestBatch",
    "error_response",
    "id_order_key",
    "json_object",
    "ok",
    "parse_body",
    "parse_point_id",
    "point_json",
    "record_json",
    "request_timeout",
    "select_payload",
    "vectors_config_json",
    "wants_payload",
    "wants_vector",
]


PARSED_KEY: web.RequestKey[Any] = web.RequestKey("librarian_parsed_json", object)
"""Where a request's JSON body is left once parsed and checked (see :mod:`librarian.router.limits`)."""

VALIDATED_KEY: web.RequestKey[Any] = web.RequestKey("librarian_validated_body", object)
# Whether a collection name addresses the library (alias resolved), for checks that apply to
# it and not to pass-through collections.
LIBRARY_CHECK_KEY: web.AppKey[Callable[[str], Awaitable[bool]]] = web.AppKey(
    "librarian_library_check"
)
"""Where a request's body is left once validated as its model (what the result cache keys by)."""


class SearchRequest(BaseModel):
    """Qdrant's ``/points/search`` body (the classic search API newer clients no longer model)."""

    model_config = ConfigDict(extra="forbid")

    vector: Any
    filter: models.Filter | None = None
    params: models.SearchParams | None = None
    limit: int = Field(ge=1)
    offset: int | None = Field(default=None, ge=0)
    with_payload: models.WithPayloadInterface | None = None
    with_vector: models.WithVector | None = None
    score_threshold: float | None = None
    shard_key: Any = None


class SearchRequestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    searches: list[SearchRequest]


class ApiError(Exception):
    """An error answered in Qdrant's format with ``status`` as the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def ok(
    result: Any, started: float, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.Response:
    body = {"result": result, "status": "ok", "time": time.perf_counter() - started, **extra}
    return web.json_response(body, headers=headers, dumps=_dumps)


def error_response(status: int, message: str, started: float) -> web.Response:
    return web.json_response(
        {"status": {"error": message}, "time": time.perf_counter() - started},
        status=status,
        dumps=_dumps,
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


async def _parsed(request: web.Request) -> Any:
    """The JSON body: as the limits middleware left it, else parsed here."""
    if PARSED_KEY in request:
        return request[PARSED_KEY]
    raw = await request.read()
    try:
        return json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"Format error in JSON body: {error}") from None


async def _addresses_the_library(request: web.Request) -> bool:
    """Whether the request's collection is the library (not a pass-through collection served
    by the same handlers); the application tells (:data:`LIBRARY_CHECK_KEY`), by default yes."""
    check = request.config_dict.get(LIBRARY_CHECK_KEY)
    return True if check is None else await check(request.match_info["name"])


async def parse_body(request: web.Request, model: Any) -> Any:
    """The request body validated as ``model`` (a model or a union); a 400 in Qdrant's words.

    A body sent to a collection the router serves itself (pass-through collections never get
    here) may not filter on the library's reserved keys (see :mod:`librarian.router.filter_keys`).
    """
    data = await _parsed(request)
    try:
        validated = _adapter(model).validate_python(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors()[:5]
        )
        raise ApiError(400, f"Format error in JSON body: {problems}") from None
    if "name" in request.match_info:
        reserved = reserved_filter_keys(validated)
        if reserved and await _addresses_the_library(request):
            raise ApiError(400, str(ReservedKeyInFilter(reserved)))
    request[VALIDATED_KEY] = validated
    return validated


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is ``{}``); a 400 otherwise."""
    data = await _parsed(request)
    if not isinstance(data, dict):
        raise ApiError(400, "Format error in JSON body: expected an object")
    return data


def request_timeout(request: web.Request, ceiling: float) -> float:
    """The ``?timeout=`` seconds a request asks for, at most ``ceiling`` (the default)."""
    raw = request.query.get("timeout")
    if raw is None:
        return ceiling
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"Wrong input: timeout {raw!r} must be a number of seconds") from None
    if not value > 0:  # NaN included
        raise ApiError(400, "Wrong input: timeout must be > 0")
    return min(value, ceiling)


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def parse_point_id(value: Any) -> PointId:
    if isinstance(value, bool):
        raise ApiError(
            400, f"Wrong input: point id {value!r} must be an unsigned integer or a UUID"
        )
    if isinstance(value, int):
        if not 0 <= value < 2**64:
            raise ApiError(
                400, f"Wrong input: point id {value} must be an unsigned integer or a UUID"
            )
        return value
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ApiError(
            400, f"Wrong input: point id {value!r} must be an unsigned integer or a UUID"
        ) from None


def id_order_key(point_id: PointId) -> tuple[int, int, str]:
    """Qdrant's id order: integer ids first (numerically), then UUIDs."""
    return (0, point_id, "") if isinstance(point_id, int) else (1, 0, str(point_id))


def wants_payload(selector: Any) -> bool:
    if selector is None:
        return False
    if isinstance(selector, bool):
        return selector
    return True


def wants_vector(selector: Any) -> bool:
    return not (selector is None or selector is False)


def select_payload(payload: Mapping[str, Any] | None, selector: Any) -> dict[str, Any] | None:
    """Apply Qdrant's ``with_payload`` selector (bool, key list, include/exclude)."""
    if payload is None or not wants_payload(selector):
        return None
    if selector is True:
        return dict(payload)
    if isinstance(selector, list):
        return {k: v for k, v in payload.items() if k in set(selector)}
    if isinstance(selector, models.PayloadSelectorInclude):
        return {k: v for k, v in payload.items() if k in set(selector.include)}
    if isinstance(selector, models.PayloadSelectorExclude):
        return {k: v for k, v in payload.items() if k not in set(selector.exclude)}
    return dict(payload)


def point_json(hit: Hit, payload_selector: Any, vector_selector: Any) -> dict[str, Any]:
    return {
        "id": hit.id,
        "version": hit.version,
        "score": hit.score,
        "payload": select_payload(hit.payload, payload_selector),
        "vector": vectors_json(select_vectors(hit.vector, vector_selector)),
    }


def record_json(
    point_id: PointId,
    payload: Mapping[str, Any] | None,
    vector: Vectors | None,
    payload_selector: Any,
    vector_selector: Any,
) -> dict[str, Any]:
    return {
        "id": point_id,
        "payload": select_payload(payload, payload_selector),
        "vector": vectors_json(select_vectors(vector, vector_selector)),
    }


def vectors_config_json(spec: CollectionSpec) -> dict[str, Any]:
    """A collection's ``vectors`` and ``sparse_vectors`` parameters as Qdrant renders them."""
    dense, sparse = vectors_config(spec)
    rendered: dict[str, Any] = {
        "vectors": dense.model_dump(mode="json", exclude_none=True)
        if isinstance(dense, models.VectorParams)
        else {n: v.model_dump(mode="json", exclude_none=True) for n, v in dense.items()}
    }
    if sparse:
        rendered["sparse_vectors"] = {
            n: v.model_dump(mode="json", exclude_none=True) for n, v in sparse.items()
        }
    return rendered
