"""What one request may cost the router: body size and read time, JSON shape, batch sizes, deadline.

Why this exists: without bounds, one client could make the router hold a huge
body, build millions of models, run thousands of upstream calls for a single
batch, or keep a socket open forever, and every other client would wait. Each
limit is a setting (``domain_library_orchestrator.limits``); a request beyond one
is refused early, in Qdrant's error format, before it costs more:

* the body is read within ``body_read_timeout`` (else 408) and is at most
  ``max_body_bytes`` (else 413: on its declared length before reading it, and by aiohttp's
  ``client_max_size`` while reading a body of undeclared length);
* the JSON is parsed once, checked without recursion (depth, list sizes,
  ``limit + offset``, the library's vector dimension), and only then turned
  into models by the handlers;
* a request has one deadline (``?timeout=``, at most ``timeout``) that bounds
  every upstream call it makes (see :data:`~librarian.router.upstream.REQUEST_DEADLINE`);
  a read is also cut off as a whole at it; the queries of a batch run a few at a time.

Header reads are bounded by the server's keep-alive timeout (see
:func:`server_options`): aiohttp closes a connection that has not sent a whole
request within it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeGuard, TypeVar

from aiohttp import web

from librarian.router.qdrant_api import PARSED_KEY, ApiError, request_timeout
from librarian.router.upstream import REQUEST_DEADLINE, Deadline, UpstreamTimeout
from librarian.settings import LimitsSettings

__all__ = [
    "PARSED_KEY",
    "Deadline",
    "bounded_gather",
    "check_json",
    "limits_middleware",
    "request_deadline",
    "server_options",
]

T = TypeVar("T")
Item = TypeVar("Item")

# Keys whose value, in a request on the library, is one dense vector (or, for ``vectors``, a list of them).
_VECTOR_KEYS = frozenset({"vector", "query", "nearest"})
_VECTOR_LIST_KEYS = frozenset({"vectors"})
_CAPPED_LISTS = frozenset({"searches", "operations", "ids", "points"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def server_options(limits: LimitsSettings) -> dict[str, Any]:
    """Keyword arguments of aiohttp's ``AppRunner`` that bound slow clients.

    aiohttp arms its keep-alive timer when a connection opens and closes the
    connection if no whole request arrived when it fires (data trickling in
    does not re-arm it): this is the header read timeout, and the idle time
    allowed between requests.
    """
    return {"keepalive_timeout": limits.header_read_timeout}


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_vector(key: str, value: Any, vector_size: int) -> None:
    if isinstance(value, list) and value and _is_number(value[0]) and len(value) != vector_size:
        raise ApiError(
            400,
            f"Wrong input: Vector dimension error: expected dim: {vector_size}, "
            f"got {len(value)} (in {key})",
        )


def check_json(
    data: Any, limits: LimitsSettings, vector_size: int | None = None, *, scroll: bool = False
) -> None:
    """Refuse (400) a parsed body beyond the limits, without recursion.

    ``vector_size`` is the library's dimension when the request addresses the
    library: a vector of another length is refused here, before any model is built.
    ``scroll``: the body is a scroll's, whose ``offset`` is a point id, not a count.
    """
    if scroll and isinstance(data, dict) and "offset" in data:
        data = {k: v for k, v in data.items() if k != "offset"}
    stack: list[tuple[Any, int, int | None]] = [(data, 1, vector_size)]
    while stack:
        value, depth, size = stack.pop()
        if depth > limits.max_json_depth:
            raise ApiError(
                400, f"Wrong input: JSON nested deeper than {limits.max_json_depth} levels"
            )
        if isinstance(value, dict):
            if _names_a_vector(value):
                size = None  # a named vector has a size of its own: the collection checks it
            _check_object(value, limits, size)
            children: Iterable[Any] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        stack.extend(
            (child, depth + 1, size) for child in children if isinstance(child, dict | list)
        )


def _names_a_vector(value: dict[str, Any]) -> bool:
    """Does this object address a named vector (``using``, or a legacy ``{name, vector}``)?"""
    using = value.get("using")
    return (isinstance(using, str) and using != "") or ("name" in value and "vector" in value)


def _check_object(value: dict[str, Any], limits: LimitsSettings, vector_size: int | None) -> None:
    """The limits on one JSON object's own keys."""
    _check_lists(value, limits)
    limit, offset = value.get("limit"), value.get("offset")
    if _is_number(limit):
        reach = limit + offset if _is_number(offset) else limit
        if reach > limits.max_limit_plus_offset:
            raise ApiError(
                400,
                f"Wrong input: limit + offset is {reach:g}; at most {limits.max_limit_plus_offset}",
            )
    if vector_size is None:
        return
    for key in _VECTOR_KEYS & value.keys():
        _check_vector(key, value[key], vector_size)
    for key in _VECTOR_LIST_KEYS & value.keys():
        vectors = value[key]
        if isinstance(vectors, list):
            for vector in vectors:
                _check_vector(key, vector, vector_size)


def _list_cap(key: str, items: list[Any], limits: LimitsSettings) -> tuple[int, str]:
    """How many items ``key`` may hold in one request, and what they are called."""
    if key == "searches":
        return limits.max_batch_queries, "searches in one batch"
    if key == "operations":
        return limits.max_batch_queries, "operations in one batch"
    if items and isinstance(items[0], dict):  # point structs, as an upsert sends
        return limits.max_points_per_upsert, "points in one call"
    return limits.max_ids_per_call, "ids in one call"


def _check_lists(value: dict[str, Any], limits: LimitsSettings) -> None:
    for key in _CAPPED_LISTS & value.keys():
        items = value[key]
        if not isinstance(items, list):
            continue
        cap, what = _list_cap(key, items, limits)
        if len(items) > cap:
            raise ApiError(400, f"Wrong input: {len(items)} {what}; at most {cap}")


def limits_middleware(
    limits_of: Callable[[], LimitsSettings],
    vector_size_of: Callable[[web.Request], int | None],
    timeout_of: Callable[[], float],
) -> Any:
    """The middleware that sets a request's deadline, and reads, parses and checks every JSON
    body before its handler runs.

    ``vector_size_of`` gives the library's dimension when the request addresses the
    library (``None`` otherwise); ``timeout_of`` the longest a request may ask for.
    The parsed body is left in ``request[PARSED_KEY]``; the deadline (``?timeout=``,
    at most ``timeout_of()``) in :data:`~librarian.router.upstream.REQUEST_DEADLINE`.
    """

    @web.middleware
    async def limited(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        REQUEST_DEADLINE.set(Deadline(request_timeout(request, timeout_of())))
        if request.method not in _BODY_METHODS:
            return await handler(request)
        limits = limits_of()
        declared = request.content_length
        if declared is not None and declared > limits.max_body_bytes:
            # Refused on its declared length, before reading a byte of it.
            raise ApiError(
                413,
                f"Payload too large: the body is {declared} bytes, over the limit of "
                f"{limits.max_body_bytes} bytes (limits.max_body_bytes)",
            )
        try:
            async with asyncio.timeout(limits.body_read_timeout):
                raw = await request.read()
        except TimeoutError:
            raise ApiError(
                408,
                f"Request timeout: the body did not arrive within {limits.body_read_timeout:g}s",
            ) from None
        try:
            data = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, f"Format error in JSON body: {error}") from None
        except RecursionError:
            raise ApiError(
                400, f"Wrong input: JSON nested deeper than {limits.max_json_depth} levels"
            ) from None
        check_json(
            data, limits, vector_size_of(request), scroll=request.path.endswith("/points/scroll")
        )
        request[PARSED_KEY] = data
        return await handler(request)

    return limited


@asynccontextmanager
async def request_deadline(seconds: float) -> AsyncIterator[Deadline]:
    """One deadline over everything inside (batches, fan-outs, retries): a 504 when it passes.

    Calls made with :meth:`Deadline.remaining` time out on their own first (so a
    fan-out can still answer with the domains that did answer); the deadline
    itself fires a little later, as the bound on everything else.
    """
    deadline = Deadline(seconds)
    try:
        async with asyncio.timeout(seconds * 1.1 + 0.05):
            yield deadline
    except TimeoutError:
        raise UpstreamTimeout(f"the request's deadline of {seconds:g}s passed") from None


async def bounded_gather(
    concurrency: int, items: Iterable[Item], run: Callable[[Item], Awaitable[T]]
) -> list[T]:
    """``run`` of each item, at most ``concurrency`` at once; the results in the items' order.

    A batch runs a few queries at a time so that it queues behind (and not in front
    of) other clients' requests on the clusters.
    """
    gate = asyncio.Semaphore(concurrency)

    async def gated(item: Item) -> T:
        async with gate:
            return await run(item)

    return list(await asyncio.gather(*(gated(item) for item in items)))
