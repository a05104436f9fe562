"""The router's HTTP application (aiohttp): Qdrant's REST API over the library.

Why this exists: this is what applications talk to. The library's collection
name is served by routing to its domains and fusing; another collection of the
default cluster passes through only when it is allowlisted (and is never one
of the product's own). This module holds the route table (each route with the
right it needs, read by :mod:`~librarian.router.auth`), the thin handlers that
parse a request and render the answer of :mod:`~librarian.router.query`,
:mod:`~librarian.router.writes` or :mod:`~librarian.router.status`, and the
middleware that renders every failure in Qdrant's JSON error format, its HTTP
code chosen by the failure's type.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiohttp import web
from qdrant_client.http import models

from librarian.core.fusion import FusionError
from librarian.core.routing import RoutingError
from librarian.router.aggregate_endpoints import AggregateEndpoints
from librarian.router.auth import Need, authentication, erases_everything, require_manage
from librarian.router.collections import CollectionEndpoints, forget_aliases_of
from librarian.router.conditional import condition_of
from librarian.router.deciding import BlasThreadBound
from librarian.router.exact import record_json
from librarian.router.legacy import (
    DiscoverRequest,
    DiscoverRequestBatch,
    RecommendRequest,
    RecommendRequestBatch,
    discover_query,
    plain_search,
    recommend_query,
    search_query,
)
from librarian.router.library import View
from librarian.router.limits import (
    Deadline,
    bounded_gather,
    limits_middleware,
    request_deadline,
)
from librarian.router.metrics import RouterMetrics
from librarian.router.passthrough import passthrough_middleware
from librarian.router.qdrant_api import (
    LIBRARY_CHECK_KEY,
    VALIDATED_KEY,
    ApiError,
    SearchRequest,
    SearchRequestBatch,
    error_response,
    json_object,
    ok,
    parse_body,
    parse_point_id,
    point_json,
    request_timeout,
)
from librarian.router.query import (
    Querying,
    cache_key,
    dense,
    parse_cross_cluster,
    partial_headers,
    search_of,
)
from librarian.router.state import RouterState, strategy_name
from librarian.router.status import StatusEndpoints
from librarian.router.upstream import UpstreamError, UpstreamTimeout
from librarian.router.writes import Writes, records_of
from librarian.storage.errors import (
    AuthenticationFailed,
    ClusterUnreachable,
    CollectionNotFound,
    InvalidRequest,
    QdrantError,
)

__all__ = ["STATE_KEY", "api_error", "create_app", "create_metrics_app", "route_table"]

log = logging.getLogger("librarian.router")
T = TypeVar("T")
Item = TypeVar("Item")

STATE_KEY: web.AppKey[RouterState] = web.AppKey("librarian_router_state")

# Failure type -> HTTP code and the words Qdrant starts its message with; the first match wins.
_ANSWERS: tuple[tuple[type[Exception], int, str], ...] = (
    (UpstreamTimeout, 504, "Service unavailable"),
    (UpstreamError, 502, "Service unavailable"),
    (CollectionNotFound, 404, "Not found"),
    (InvalidRequest, 400, "Bad request"),
    (AuthenticationFailed, 502, "Bad gateway"),
    (ClusterUnreachable, 502, "Service unavailable"),
    (RoutingError, 400, "Wrong input"),
    (FusionError, 400, "Wrong input"),
)


def api_error(error: Exception) -> ApiError:
    """How a failure is answered: its HTTP code and message, decided by its type."""
    if isinstance(error, ApiError):
        return error
    for kind, status, words in _ANSWERS:
        if isinstance(error, kind):
            return ApiError(status, f"{words}: {error}")
    return ApiError(500, f"Service internal error: {type(error).__name__}: {error}")


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    metrics: RouterMetrics = request.app[STATE_KEY].metrics
    endpoint = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    try:
        response = await handler(request)
    except web.HTTPException as error:
        response = error_response(
            error.status, f"{error.reason}: {request.method} {request.path}", started
        )
    except (ApiError, UpstreamError, QdrantError, RoutingError, FusionError) as error:
        answer = api_error(error)
        response = error_response(answer.status, answer.message, started)
    except Exception as error:  # the contract: never an unformatted 500
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, f"Service internal error: {type(error).__name__}", started)
    metrics.requests.labels(endpoint, str(response.status)).inc()
    return response


def _guard_erasing(request: web.Request, view: View, selectors: list[Any]) -> None:
    """A delete of every point of the library needs management rights (a 403 otherwise)."""
    if view.library is None:
        return
    for selector in selectors:
        if isinstance(selector, models.FilterSelector) and erases_everything(selector.filter):
            require_manage(request, "deleting by an empty filter")


Compute = Callable[[], Awaitable[tuple[Any, dict[str, str]]]]


class PointEndpoints:
    """aiohttp handlers of the points endpoints and of the library's own query API."""

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.querying = Querying(state)
        self.aggregates = AggregateEndpoints(state)
        self.writes = Writes(
            state.upstream,
            state.cache,
            state.clock,
            state.homes,
            settle_timeout=state.config.settle_timeout_s,
        )

    @property
    def _max_timeout(self) -> float:
        return self.state.config.settings.timeout

    def _timeout(self, request: web.Request) -> float:
        return request_timeout(request, self._max_timeout)

    async def _cached(self, request: web.Request, view: View, compute: Compute) -> web.Response:
        started = time.perf_counter()
        body = request.get(VALIDATED_KEY)
        # The key digests the whole request (its vector's JSON is most of a search's cost on
        # the event loop): made only for an answer that may be cached, a library's with the
        # cache on.
        cacheable = body is not None and view.routed and self.state.cache.enabled
        key = cache_key(request.path, view, body, request.query) if cacheable else None
        timeout = self._timeout(request)
        async with request_deadline(timeout):
            result, headers = await self.querying.cached(key, view, compute, timeout)
        return ok(result, started, headers=headers)

    def _batched(
        self, items: Iterable[Item], run: Callable[[Item, float], Awaitable[T]], timeout: float
    ) -> Awaitable[list[T]]:
        """``run(item, seconds)`` for each item, a few at a time, all within one deadline."""
        deadline = Deadline(timeout)
        return bounded_gather(
            self.state.config.settings.limits.batch_concurrency,
            items,
            lambda item: run(item, deadline.remaining()),
        )

    # ------------------------------------------------------------ searching

    async def points_query(self, request: web.Request) -> web.Response:
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.QueryRequest)
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            points, failed = await self.querying.query(view, body, timeout)
            return {"points": points}, partial_headers(failed)

        return await self._cached(request, view, compute)

    async def points_query_batch(self, request: web.Request) -> web.Response:
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.QueryRequestBatch)
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            answers = await self._batched(
                body.searches, functools.partial(self.querying.query, view), timeout
            )
            result = [{"points": points} for points, _ in answers]
            return result, partial_headers([key for _, missing in answers for key in missing])

        return await self._cached(request, view, compute)

    async def _legacy(
        self, request: web.Request, model: Any, as_query: Callable[[Any], models.QueryRequest]
    ) -> web.Response:
        """A legacy endpoint (recommend, discover, search by a named vector) answered by the
        universal query it stands for, in its own shape (a list of points)."""
        view = await self.state.view(request.match_info["name"])
        body = as_query(await parse_body(request, model))
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            points, failed = await self.querying.query(view, body, timeout)
            return points, partial_headers(failed)

        return await self._cached(request, view, compute)

    async def _legacy_batch(
        self, request: web.Request, model: Any, as_query: Callable[[Any], models.QueryRequest]
    ) -> web.Response:
        view = await self.state.view(request.match_info["name"])
        queries = [as_query(one) for one in (await parse_body(request, model)).searches]
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            answers = await self._batched(
                queries, functools.partial(self.querying.query, view), timeout
            )
            missing = [key for _, failed in answers for key in failed]
            return [points for points, _ in answers], partial_headers(missing)

        return await self._cached(request, view, compute)

    async def points_recommend(self, request: web.Request) -> web.Response:
        return await self._legacy(request, RecommendRequest, recommend_query)

    async def points_recommend_batch(self, request: web.Request) -> web.Response:
        return await self._legacy_batch(request, RecommendRequestBatch, recommend_query)

    async def points_discover(self, request: web.Request) -> web.Response:
        return await self._legacy(request, DiscoverRequest, discover_query)

    async def points_discover_batch(self, request: web.Request) -> web.Response:
        return await self._legacy_batch(request, DiscoverRequestBatch, discover_query)

    async def points_search(self, request: web.Request) -> web.Response:
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, SearchRequest)
        if not plain_search(body):
            return await self._legacy(request, SearchRequest, search_query)
        search = search_of(body, view)
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            answer = await self.querying.search(view, search, timeout)
            points = [point_json(h, body.with_payload, body.with_vector) for h in answer.hits]
            return points, partial_headers(answer.failed)

        return await self._cached(request, view, compute)

    async def points_search_batch(self, request: web.Request) -> web.Response:
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, SearchRequestBatch)
        if not all(plain_search(s) for s in body.searches):
            return await self._legacy_batch(request, SearchRequestBatch, search_query)
        searches = [search_of(s, view) for s in body.searches]
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            answers = await self._batched(
                searches, functools.partial(self.querying.search, view), timeout
            )
            result = [
                [point_json(h, s.with_payload, s.with_vector) for h in answer.hits]
                for s, answer in zip(body.searches, answers, strict=True)
            ]
            return result, partial_headers([k for a in answers for k in a.failed])

        return await self._cached(request, view, compute)

    # ------------------------------------------------------------ reading

    async def points_scroll(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.ScrollRequest)
        async with request_deadline(self._timeout(request)):
            page = await self.querying.scroll(view, body, self._timeout(request))
        return ok(page, started)

    async def points_retrieve(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.PointRequest)
        ids = [parse_point_id(i) for i in body.ids]
        selector = body.with_payload if body.with_payload is not None else True
        async with request_deadline(self._timeout(request)):
            records = await self.querying.exact.retrieve(
                view, ids, selector, body.with_vector or False, self._timeout(request)
            )
        return ok([record_json(r) for r in records], started)

    # ------------------------------------------------------------ writing

    async def points_upsert(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self._writable_view(request)
        body = await parse_body(request, models.PointInsertOperations)
        operations = body.root if hasattr(body, "root") else body
        condition = condition_of(operations, routed=view.routed)
        records = records_of(operations, view)
        async with self.state.writing(view):
            await self.writes.upsert(view, records, self._timeout(request), condition)
        return ok({"operation_id": 0, "status": "completed"}, started)

    async def points_delete(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self._writable_view(request)
        body = await parse_body(request, models.PointsSelector)
        selector = body.root if hasattr(body, "root") else body
        _guard_erasing(request, view, [selector])
        async with self.state.writing(view):
            await self.writes.delete(view, selector, self._timeout(request))
        return ok({"operation_id": 0, "status": "completed"}, started)

    async def _writable_view(self, request: web.Request) -> View:
        """The view a write addresses; a 503 while this replica may not write."""
        view = await self.state.view(request.match_info["name"])
        refusal = self.state.write_refusal() if view.routed else None
        if refusal:
            raise ApiError(503, f"Service unavailable: {refusal}")
        return view

    async def _write(
        self,
        request: web.Request,
        model: Any,
        action: Callable[[View, Any, float], Awaitable[None]],
    ) -> web.Response:
        started = time.perf_counter()
        view = await self._writable_view(request)
        body = await parse_body(request, model)
        async with self.state.writing(view):
            await action(view, getattr(body, "root", body), self._timeout(request))
        return ok({"operation_id": 0, "status": "completed"}, started)

    async def payload_set(self, request: web.Request) -> web.Response:
        return await self._write(request, models.SetPayload, self.writes.set_payload)

    async def payload_overwrite(self, request: web.Request) -> web.Response:
        async def overwrite(view: View, body: Any, timeout: float) -> None:
            await self.writes.set_payload(view, body, timeout, overwrite=True)

        return await self._write(request, models.SetPayload, overwrite)

    async def payload_delete(self, request: web.Request) -> web.Response:
        return await self._write(request, models.DeletePayload, self.writes.delete_payload)

    async def payload_clear(self, request: web.Request) -> web.Response:
        return await self._write(request, models.PointsSelector, self.writes.clear_payload)

    async def vectors_update(self, request: web.Request) -> web.Response:
        return await self._write(request, models.UpdateVectors, self.writes.update_vectors)

    async def vectors_delete(self, request: web.Request) -> web.Response:
        return await self._write(request, models.DeleteVectors, self.writes.delete_vectors)

    async def points_batch(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self._writable_view(request)
        body = await parse_body(request, models.UpdateOperations)
        _guard_erasing(
            request,
            view,
            [o.delete for o in body.operations if isinstance(o, models.DeleteOperation)],
        )
        async with self.state.writing(view):
            await self.writes.batch(view, body, self._timeout(request))
        return ok([{"operation_id": 0, "status": "completed"}] * len(body.operations), started)

    # ------------------------------------------------------------ the library's own API

    async def predict(self, request: web.Request) -> web.Response:
        """PredictOptimalClusters: which domains (and clusters) a vector would be sent to."""
        started = time.perf_counter()
        library = self.state.require_library()
        data = await json_object(request)
        vector = dense(data.get("vector"), library.vector_size)
        strategy = strategy_name(data.get("strategy"))
        return ok(await self.querying.predict(library, vector, strategy), started)

    async def cross_cluster_query(self, request: web.Request) -> web.Response:
        """ExecuteCrossClusterQuery: vector, max results, target clusters, timeout, fusion, preferences."""
        started = time.perf_counter()
        library = self.state.require_library()
        data = await json_object(request)
        vector = dense(data.get("vector"), library.vector_size)
        query = parse_cross_cluster(data, vector, self._max_timeout)
        return ok(await self.querying.cross_cluster(library, query), started)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MANAGED = frozenset({"PUT", "PATCH", "DELETE"})  # of a collection itself: management rights


async def _passthrough_target(state: RouterState, request: web.Request) -> str | None:
    """The pass-through collection a request addresses (alias resolved), or ``None``: the
    library, a name that is not served, or the router's own alias endpoints."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    if canonical.endswith("/aliases"):
        return None  # aliases are the router's own, whatever they name
    try:
        target = await state.target(request.match_info["name"])
    except ApiError:
        return None  # the handler answers (a 404, or the library's refusal)
    library = state.library
    if library is not None and target == library.name:
        return None
    if canonical == "/collections/{name}" and request.method in _MANAGED:
        require_manage(request, f"{request.method} of a collection")
    return target


def route_table(
    s: StatusEndpoints, p: PointEndpoints, c: CollectionEndpoints
) -> tuple[tuple[str, str, Need, Handler], ...]:
    """Every route the router serves: method, path, the right it needs, its handler.

    The one place a route is added: the app registers these and the
    authentication middleware reads their needs, so a route without a
    decision about who may call it cannot exist.
    """
    collection = "/collections/{name}"
    points = f"{collection}/points"
    return (
        ("GET", "/", Need.OPEN, s.root),
        ("GET", "/healthz", Need.OPEN, s.healthz),
        ("GET", "/livez", Need.OPEN, s.healthz),
        ("GET", "/readyz", Need.OPEN, s.readyz),
        ("GET", "/librarian/status", Need.READ_ANY, s.status),
        ("GET", "/librarian/load", Need.READ_ANY, s.load),
        ("POST", "/librarian/predict", Need.READ_ANY, p.predict),
        ("POST", "/librarian/query", Need.READ_ANY, p.cross_cluster_query),
        ("GET", "/collections", Need.READ_ANY, c.collections),
        ("POST", "/collections/aliases", Need.READ_ANY, c.change_aliases),
        ("GET", "/aliases", Need.READ_ANY, c.aliases),
        ("GET", collection, Need.READ, c.info),
        ("PUT", collection, Need.WRITE, c.create),
        ("PATCH", collection, Need.WRITE, c.update),
        ("DELETE", collection, Need.WRITE, c.delete),
        ("GET", f"{collection}/exists", Need.READ, c.exists),
        ("GET", f"{collection}/aliases", Need.READ, c.collection_aliases),
        ("PUT", f"{collection}/index", Need.WRITE, c.create_index),
        ("DELETE", f"{collection}/index/{{field_name}}", Need.WRITE, c.delete_index),
        ("PUT", f"{collection}/vectors/{{vector_name}}", Need.WRITE, c.create_vector_name),
        ("DELETE", f"{collection}/vectors/{{vector_name}}", Need.WRITE, c.delete_vector_name),
        ("POST", f"{points}/query", Need.READ, p.points_query),
        ("POST", f"{points}/query/batch", Need.READ, p.points_query_batch),
        ("POST", f"{points}/search", Need.READ, p.points_search),
        ("POST", f"{points}/search/batch", Need.READ, p.points_search_batch),
        ("POST", f"{points}/recommend", Need.READ, p.points_recommend),
        ("POST", f"{points}/recommend/batch", Need.READ, p.points_recommend_batch),
        ("POST", f"{points}/discover", Need.READ, p.points_discover),
        ("POST", f"{points}/discover/batch", Need.READ, p.points_discover_batch),
        ("POST", f"{points}/scroll", Need.READ, p.points_scroll),
        ("POST", f"{points}/count", Need.READ, p.aggregates.count),
        ("POST", f"{points}/query/groups", Need.READ, p.aggregates.query_groups),
        ("POST", f"{points}/search/groups", Need.READ, p.aggregates.search_groups),
        ("POST", f"{points}/recommend/groups", Need.READ, p.aggregates.recommend_groups),
        ("POST", f"{collection}/facet", Need.READ, p.aggregates.facet),
        ("POST", f"{points}/search/matrix/pairs", Need.READ, p.aggregates.matrix_pairs),
        ("POST", f"{points}/search/matrix/offsets", Need.READ, p.aggregates.matrix_offsets),
        ("POST", points, Need.READ, p.points_retrieve),
        ("PUT", points, Need.WRITE, p.points_upsert),
        ("POST", f"{points}/delete", Need.WRITE, p.points_delete),
        ("POST", f"{points}/payload", Need.WRITE, p.payload_set),
        ("PUT", f"{points}/payload", Need.WRITE, p.payload_overwrite),
        ("POST", f"{points}/payload/delete", Need.WRITE, p.payload_delete),
        ("POST", f"{points}/payload/clear", Need.WRITE, p.payload_clear),
        ("PUT", f"{points}/vectors", Need.WRITE, p.vectors_update),
        ("POST", f"{points}/vectors/delete", Need.WRITE, p.vectors_delete),
        ("POST", f"{points}/batch", Need.WRITE, p.points_batch),
    )


def create_app(state: RouterState, *, reload_in_background: bool = True) -> web.Application:
    """The aiohttp application; loads the library on startup and reloads it periodically.

    Callers authenticate with the keys of ``state.config.keys`` (none: open) before
    anything reads their body; then the request's limits apply. ``/metrics`` is served
    apart, by :func:`create_metrics_app`.
    """
    limits = state.config.settings.limits

    def library_dimension(request: web.Request) -> int | None:
        library = state.library
        named = request.match_info.get("name")
        return library.vector_size if library is not None and named == library.name else None

    s = StatusEndpoints(state)
    p = PointEndpoints(state)
    routes = route_table(s, p, CollectionEndpoints(state))
    needs = {(method, path): need for method, path, need, _ in routes}
    app = web.Application(
        middlewares=[
            _errors,
            authentication(state.config.keys, needs),
            limits_middleware(
                lambda: limits, library_dimension, lambda: state.config.settings.timeout
            ),
            passthrough_middleware(
                state.proxy,
                functools.partial(_passthrough_target, state),
                lambda request: request_timeout(request, state.config.settings.timeout),
                functools.partial(forget_aliases_of, state),
            ),
        ],
        client_max_size=limits.max_body_bytes,
    )
    app[STATE_KEY] = state

    async def addresses_the_library(name: str) -> bool:
        try:
            return state.library is not None and await state.target(name) == state.library.name
        except ApiError:
            return False  # not served: the handler answers its 404

    app[LIBRARY_CHECK_KEY] = addresses_the_library
    for method, path, _, handler in routes:
        app.router.add_route(method, path, handler)

    async def lifecycle(app: web.Application) -> Any:
        blas = BlasThreadBound(limits.routing_blas_threads)  # process-wide, while serving
        await state.reload()
        tasks = (
            [
                asyncio.ensure_future(state.reload_forever()),
                asyncio.ensure_future(state.maintain_forever()),
                asyncio.ensure_future(state.register_forever()),
            ]
            if reload_in_background
            else []
        )
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await state.drain()
        await state.close_proxy()
        state.close()
        blas.release()

    app.cleanup_ctx.append(lifecycle)
    return app


def create_metrics_app(state: RouterState) -> web.Application:
    """Prometheus' ``/metrics``, on a listener of its own (kept off the API port)."""
    app = web.Application()
    app.router.add_get("/metrics", StatusEndpoints(state).metrics)
    return app
