"""The router's HTTP server (aiohttp): Qdrant's REST API over the library.

Why this exists: this is what applications talk to. The library's collection
name is served by routing to its domains and fusing; any other collection name
passes through to the default cluster, so an application can point its whole
Qdrant URL here. Calls to clusters run in worker threads with a per-request
timeout; a failing cluster's circuit opens; answers missing a domain are
flagged partial; results are cached; a share of queries is shadowed on every
domain to estimate recall; every call to a domain counts in its load (queries
per second, p95 latency), which ``/librarian/load`` reports for rebalancing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from aiohttp import web
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY
from librarian.core.fusion import FusionError, Hit, PointId, fuse, fusion_name
from librarian.core.routing import RoutingError
from librarian.router.library import (
    DomainRoute,
    Library,
    LibraryDefinition,
    build_library,
    combine_filters,
)
from librarian.router.load import LoadMeter
from librarian.router.metrics import RouterMetrics
from librarian.router.qdrant_api import (
    ApiError,
    SearchRequest,
    SearchRequestBatch,
    error_response,
    id_order_key,
    ok,
    parse_body,
    parse_point_id,
    point_json,
    record_json,
    wants_payload,
    wants_vector,
)
from librarian.router.quality import RecallEstimator
from librarian.router.resilience import CircuitBreaker, ResultCache
from librarian.settings import OrchestratorSettings
from librarian.storage.errors import (
    AuthenticationFailed,
    ClusterUnreachable,
    CollectionNotFound,
    InvalidRequest,
    QdrantError,
)
from librarian.storage.fleet import Fleet
from librarian.storage.port import PointRecord, QdrantPort

__all__ = ["RouterConfig", "RouterState", "create_app"]

log = logging.getLogger("librarian.router")
T = TypeVar("T")

_STRATEGY_ALIASES = {
    "nearest": "domain_affinity",
    "threshold": "domain_affinity",
    "all": "accuracy_first",
}
STATE_KEY: web.AppKey[RouterState] = web.AppKey("librarian_router_state")


def strategy_name(name: Any) -> str | None:
    """The routing strategy for a configured or requested name (seed aliases mapped)."""
    if name is None or name == "":
        return None
    return _STRATEGY_ALIASES.get(str(name), str(name))


Loader = Callable[[], Awaitable[LibraryDefinition | None]]


@dataclass
class RouterConfig:
    """What a router needs: the fleet, where the library definition comes from, settings."""

    fleet: Fleet
    default_cluster: str
    loader: Loader
    settings: OrchestratorSettings = field(default_factory=OrchestratorSettings)
    sample_budget: int = 20_000
    routing_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    load_window_s: float = 60.0  # sliding window of the per-domain load figures

    @property
    def strategy(self) -> str:
        name = self.settings.routing_strategy
        return strategy_name(name) or "hybrid"


@dataclass
class _Answer:
    hits: list[Hit]
    probed: list[int]
    failed: list[str]
    lists: list[list[Hit]]


class _View:
    """The units a request addresses: a library's domains, or one passthrough collection."""

    def __init__(
        self,
        routes: Sequence[DomainRoute],
        library: Library | None,
        vector_size: int,
        higher_is_better: bool,
    ) -> None:
        self.routes = list(routes)
        self.library = library
        self.vector_size = vector_size
        self.higher_is_better = higher_is_better

    @classmethod
    def of(cls, library: Library) -> _View:
        return cls(library.domains, library, library.vector_size, library.higher_is_better)

    @property
    def routed(self) -> bool:
        return self.library is not None


class RouterState:
    """The live router: current library snapshot, cache, breakers, quality estimate, metrics."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        settings = config.settings
        self.library: Library | None = None
        self.load_error: str | None = None
        self.last_reload: float | None = None
        self.cache = ResultCache(
            ttl_s=settings.caching.cache_ttl,
            max_entries=settings.caching.max_entries,
            enabled=settings.caching.enable_result_cache,
        )
        self.breaker = CircuitBreaker(
            settings.circuit_breaker.failure_threshold, settings.circuit_breaker.reset_timeout
        )
        self.estimator = RecallEstimator(fraction=settings.shadow_fraction, seed=config.seed)
        self.metrics = RouterMetrics()
        self.load = LoadMeter(window_s=config.load_window_s)
        self.touched_share: float | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()

    # ------------------------------------------------------------------ library

    async def reload(self) -> bool:
        """Re-read the library definition; rebuild the routing model when it changed."""
        async with self._reload_lock:
            try:
                definition = await self.config.loader()
                if definition is None:
                    self.load_error = "no library definition yet (is the DomainMap analysed?)"
                    return False
                if (
                    self.library is not None
                    and self.library.definition.version == definition.version
                ):
                    self.load_error = None
                    return False
                library = await asyncio.to_thread(
                    build_library,
                    definition,
                    self.config.fleet,
                    sample_budget=self.config.sample_budget,
                    strategy=self.config.strategy,
                    target_recall=self.config.settings.target_recall,
                    seed=self.config.seed,
                    **self.config.routing_options,
                )
            except Exception as error:  # keep serving the previous snapshot
                self.load_error = f"{type(error).__name__}: {error}"
                self.metrics.reloads.labels("failed").inc()
                log.warning("library reload failed: %s", self.load_error)
                return False
            self.library = library
            self.load_error = None
            self.last_reload = time.time()
            self.cache.clear()
            self.metrics.reloads.labels("changed").inc()
            self.metrics.library_domains.set(len(definition.domains))
            self.load.track({r.domain_id: r.cluster for r in library.domains})
            log.info(
                "library %s loaded: %d domains (version %s)",
                definition.name,
                len(definition.domains),
                definition.version,
            )
            return True

    async def reload_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.settings.reload_interval)
            await self.reload()

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background work (shadow queries); used by tests and shutdown."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # ------------------------------------------------------------------ views

    async def view(self, collection: str) -> _View:
        library = self.library
        if library is not None and collection == library.name:
            return _View.of(library)
        if not self.config.default_cluster:
            raise ApiError(
                503, f"Service unavailable: library not loaded ({self.load_error or 'starting'})"
            )
        port = self.config.fleet.get(self.config.default_cluster)
        try:
            info = await asyncio.to_thread(port.collection_info, collection)
        except CollectionNotFound:
            raise ApiError(404, f"Not found: Collection `{collection}` doesn't exist!") from None
        except QdrantError as error:
            raise _upstream_error(error) from None
        route = DomainRoute(
            collection, collection, self.config.default_cluster, collection, (), info.points_count
        )
        return _View([route], None, info.vector_size, info.distance not in ("Euclid", "Manhattan"))

    # ------------------------------------------------------------------ upstream calls

    async def call(
        self,
        route: DomainRoute,
        operation: Callable[[QdrantPort], T],
        timeout: float,
        unit: int | None = None,
        *,
        domain: bool = False,
    ) -> T:
        """Run ``operation`` on the route's cluster in a thread, with timeout, breaker and metrics.

        ``domain`` says the route is one of the library's domains: the call then counts
        in that domain's load (a failure as an error).
        """
        cluster = route.cluster
        if not self.breaker.allow(cluster):
            if domain:
                self._record_domain(route, 0.0, ok=False)
            raise ClusterUnreachable(
                cluster, f"circuit open after repeated failures of cluster {cluster!r}"
            )
        port = self.config.fleet.get(cluster)
        started = time.perf_counter()
        try:
            result = await self._maybe_hedged(lambda: operation(port), timeout, unit)
        except Exception as error:
            if domain:
                self._record_domain(route, time.perf_counter() - started, ok=False)
            if not isinstance(error, (TimeoutError, ClusterUnreachable)):
                raise
            self.breaker.failure(cluster)
            self.metrics.upstream_errors.labels(cluster).inc()
            self.metrics.circuit_open.labels(cluster).set(
                1 if self.breaker.state(cluster) == "open" else 0
            )
            if isinstance(error, TimeoutError):
                raise ClusterUnreachable(
                    cluster, f"cluster {cluster!r} did not answer within {timeout:g}s"
                ) from None
            raise
        elapsed = time.perf_counter() - started
        self.breaker.success(cluster)
        self.metrics.circuit_open.labels(cluster).set(0)
        self.metrics.upstream_latency.labels(cluster).observe(elapsed)
        if domain:
            self._record_domain(route, elapsed, ok=True)
        if unit is not None and self.library is not None and unit < self.library.router.unit_count:
            self.library.router.record_latency(unit, elapsed)
        return result

    def _record_domain(self, route: DomainRoute, elapsed_s: float, *, ok: bool) -> None:
        self.load.record(route.domain_id, route.cluster, elapsed_s, ok)
        self.metrics.domain_queries.labels(route.domain_id, route.cluster).inc()
        if ok:
            self.metrics.domain_latency.labels(route.domain_id).observe(elapsed_s)

    async def _maybe_hedged(self, blocking: Callable[[], T], timeout: float, unit: int | None) -> T:
        library = self.library
        hedge = None
        if unit is not None and library is not None and self.config.strategy == "latency_optimized":
            hedge = library.router.hedge_after(unit)
        first = asyncio.ensure_future(asyncio.to_thread(blocking))
        if hedge is None or hedge >= timeout:
            return await asyncio.wait_for(first, timeout)
        done, _ = await asyncio.wait({first}, timeout=hedge)
        if done:
            return first.result()
        second = asyncio.ensure_future(asyncio.to_thread(blocking))
        done, pending = await asyncio.wait(
            {first, second}, timeout=timeout - hedge, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        if not done:
            raise TimeoutError
        return done.pop().result()

    async def fan_out(
        self,
        view: _View,
        units: Sequence[int],
        operation: Callable[[DomainRoute], Callable[[QdrantPort], T]],
        timeout: float,
    ) -> tuple[list[tuple[int, T]], list[str]]:
        """Run one operation per unit concurrently; results of those that answered, and who failed."""
        routes = [view.routes[u] for u in units]
        outcomes = await asyncio.gather(
            *(
                self.call(
                    route,
                    operation(route),
                    timeout,
                    unit if view.routed else None,
                    domain=view.routed,
                )
                for route, unit in zip(routes, units, strict=True)
            ),
            return_exceptions=True,
        )
        answered: list[tuple[int, T]] = []
        failed: list[str] = []
        errors: list[BaseException] = []
        for unit, route, outcome in zip(units, routes, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(
                    outcome, (InvalidRequest, CollectionNotFound, AuthenticationFailed)
                ) or not isinstance(outcome, QdrantError):
                    errors.append(outcome)
                failed.append(route.key)
                log.warning("unit %s failed: %s", route.key, outcome)
            else:
                answered.append((unit, outcome))
        if errors and not answered:
            raise errors[0]
        if not answered and units:
            raise ApiError(
                504
                if any("did not answer" in str(o) for o in outcomes if isinstance(o, BaseException))
                else 502,
                f"Service unavailable: no cluster answered ({', '.join(failed)})",
            )
        if failed:
            self.metrics.partial_results.inc()
        return answered, failed


def _upstream_error(error: Exception) -> ApiError:
    if isinstance(error, ApiError):
        return error
    if isinstance(error, CollectionNotFound):
        return ApiError(404, f"Not found: {error}")
    if isinstance(error, InvalidRequest):
        return ApiError(400, f"Bad request: {error}")
    if isinstance(error, AuthenticationFailed):
        return ApiError(502, f"Bad gateway: {error}")
    if isinstance(error, ClusterUnreachable):
        return ApiError(
            504 if "did not answer" in str(error) else 502, f"Service unavailable: {error}"
        )
    if isinstance(error, (RoutingError, FusionError)):
        return ApiError(400, f"Wrong input: {error}")
    return ApiError(500, f"Service internal error: {type(error).__name__}: {error}")


# ---------------------------------------------------------------------- queries


@dataclass(frozen=True)
class _Search:
    """One nearest-neighbour search, whatever endpoint it came from."""

    vector: list[float]
    limit: int
    offset: int = 0
    query_filter: models.Filter | None = None
    with_payload: Any = None
    with_vector: Any = None
    score_threshold: float | None = None
    hnsw_ef: int | None = None
    exact: bool = False
    exclude_id: PointId | None = None


def _dense(vector: Any, view: _View) -> list[float]:
    if isinstance(vector, dict):
        raise ApiError(
            400,
            "Wrong input: named or sparse vectors are not served by the library router; "
            "use the unnamed dense vector",
        )
    if not isinstance(vector, list):
        raise ApiError(
            400, f"Wrong input: only dense vectors are supported, got {type(vector).__name__}"
        )
    if vector and isinstance(vector[0], list):
        raise ApiError(400, "Wrong input: multivectors are not served by the library router")
    if len(vector) != view.vector_size:
        raise ApiError(
            400,
            f"Wrong input: Vector dimension error: expected dim: {view.vector_size}, got {len(vector)}",
        )
    if not all(np.isfinite(vector)):
        raise ApiError(400, "Wrong input: vector contains NaN or infinite values")
    return [float(x) for x in vector]


class Handlers:
    """aiohttp handlers; one instance per app."""

    def __init__(self, state: RouterState) -> None:
        self.state = state

    @property
    def timeout(self) -> float:
        return self.state.config.settings.timeout

    def _timeout(self, request: web.Request) -> float:
        raw = request.query.get("timeout")
        if raw is None:
            return self.timeout
        try:
            value = float(raw)
        except ValueError:
            raise ApiError(
                400, f"Wrong input: timeout {raw!r} must be a number of seconds"
            ) from None
        if value <= 0:
            raise ApiError(400, "Wrong input: timeout must be > 0")
        return min(value, self.timeout)

    # -------------------------------------------------------------- searching

    def _units(
        self,
        view: _View,
        vector: list[float],
        strategy: str | None = None,
        clusters: Sequence[str] | None = None,
    ) -> list[int]:
        if not view.routed:
            return [0]
        assert view.library is not None
        decision = view.library.router.decide(vector, strategy=strategy)
        units = decision.units
        if clusters:
            units = [u for u in units if view.routes[u].cluster in clusters]
        return units

    async def search(
        self,
        view: _View,
        search: _Search,
        timeout: float,
        *,
        strategy: str | None = None,
        fusion: str | None = None,
        clusters: Sequence[str] | None = None,
        weights: dict[str, float] | None = None,
        shadow: bool = True,
    ) -> _Answer:
        units = self._units(view, search.vector, strategy, clusters)
        if not units:
            raise ApiError(
                400, "Wrong input: none of the requested clusters holds a domain of this library"
            )
        return await self._search_units(
            view, search, units, timeout, fusion=fusion, weights=weights, shadow=shadow
        )

    async def _search_units(
        self,
        view: _View,
        search: _Search,
        units: Sequence[int],
        timeout: float,
        *,
        fusion: str | None = None,
        weights: dict[str, float] | None = None,
        shadow: bool = True,
    ) -> _Answer:
        state = self.state
        fetch = search.offset + search.limit + (1 if search.exclude_id is not None else 0)
        payload = wants_payload(search.with_payload)
        vectors = wants_vector(search.with_vector)

        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[Hit]]:
            def run(port: QdrantPort) -> list[Hit]:
                hits = port.query(
                    route.collection,
                    search.vector,
                    limit=fetch,
                    query_filter=combine_filters(search.query_filter, route.slice_filter()),
                    with_payload=payload,
                    with_vectors=vectors,
                    hnsw_ef=search.hnsw_ef,
                    exact=search.exact,
                )
                return [
                    Hit(h.id, h.score, route.key, h.payload if payload else None, h.vector)
                    for h in hits
                ]

            return run

        answered, failed = await state.fan_out(view, units, operation, timeout)
        lists = [hits for _, hits in answered]
        if search.exclude_id is not None:
            lists = [[h for h in hits if h.id != search.exclude_id] for hits in lists]
        fusion_choice = fusion or state.config.settings.fusion_algorithm
        fused = self._fuse(
            view,
            fusion_choice,
            lists,
            search.offset + search.limit,
            weights,
            [view.routes[u] for u, _ in answered],
        )
        if search.score_threshold is not None:
            threshold = search.score_threshold
            fused = [
                h
                for h in fused
                if (h.score >= threshold if view.higher_is_better else h.score <= threshold)
            ]
        hits = fused[search.offset : search.offset + search.limit]
        if view.routed and shadow:
            self._account(view, units, search, hits, lists, timeout)
        return _Answer(hits, list(units), failed, lists)

    def _fuse(
        self,
        view: _View,
        name: str,
        lists: list[list[Hit]],
        limit: int,
        weights: dict[str, float] | None,
        routes: Sequence[DomainRoute],
    ) -> list[Hit]:
        if len(lists) == 1:
            return list(lists[0][:limit])
        try:
            canonical = fusion_name(name)
        except FusionError as error:
            raise ApiError(400, f"Wrong input: {error}") from None
        model = self.state.estimator.model
        if canonical == "ml_based" and (model is None or not model.fitted):
            canonical = "semantic_merge"  # until shadow traffic has trained the model
        list_weights = (
            [float((weights or {}).get(route.cluster, 1.0)) for route in routes]
            if weights
            else None
        )
        return fuse(
            canonical,
            lists,
            limit=limit,
            higher_is_better=view.higher_is_better,
            weights=list_weights,
            model=model,
        )

    def _account(
        self,
        view: _View,
        units: Sequence[int],
        search: _Search,
        hits: list[Hit],
        lists: list[list[Hit]],
        timeout: float,
    ) -> None:
        state = self.state
        library = view.library
        assert library is not None
        metrics = state.metrics
        metrics.queries.labels(state.config.strategy).inc()
        metrics.domains_probed.observe(len(units))
        clusters = {view.routes[u].cluster for u in units}
        if len(clusters) > 1:
            metrics.cross_cluster_queries.inc()
        sizes = library.router.sizes
        share = float(sizes[list(units)].sum()) / max(float(sizes.sum()), 1.0)
        state.touched_share = (
            share if state.touched_share is None else 0.95 * state.touched_share + 0.05 * share
        )
        metrics.routing_efficiency.set(1.0 - state.touched_share)
        if len(units) < len(view.routes) and state.estimator.should_shadow():
            state.spawn(self._shadow(view, units, search, [h.id for h in hits], lists, timeout))

    async def _shadow(
        self,
        view: _View,
        units: Sequence[int],
        search: _Search,
        routed: list[PointId],
        lists: list[list[Hit]],
        timeout: float,
    ) -> None:
        everything = [u for u in range(len(view.routes)) if u not in set(units)]
        try:
            rest = await self._search_units(view, search, everything, timeout, shadow=False)
        except Exception as error:
            log.info("shadow query failed: %s", error)
            return
        assert view.library is not None
        merged = self._fuse(
            view, "semantic_merge", [*lists, *rest.lists], search.offset + search.limit, None, []
        )
        exhaustive = [h.id for h in merged[search.offset : search.offset + search.limit]]
        estimator = self.state.estimator
        estimator.record(routed, exhaustive, lists)
        if estimator.estimate is not None:
            self.state.metrics.estimated_recall.set(estimator.estimate)
        if (
            self.state.config.settings.fusion_algorithm == "learned"
            and estimator.compared % 25 == 0
        ):
            await asyncio.to_thread(estimator.fit_model, view.higher_is_better)

    async def _cached(
        self,
        request: web.Request,
        view: _View,
        body: bytes,
        compute: Callable[[], Awaitable[tuple[Any, dict[str, str]]]],
    ) -> web.Response:
        started = time.perf_counter()
        state = self.state
        version = view.library.definition.version if view.library else "-"
        key = (request.path, version, body)
        cached = state.cache.get(key)
        if cached is not None:
            state.metrics.cache_hits.inc()
            state.metrics.cache_hit_rate.set(state.cache.hit_rate)
            return ok(cached, started, headers={"X-Librarian-Cache": "hit"})
        state.metrics.cache_misses.inc()
        state.metrics.cache_hit_rate.set(state.cache.hit_rate)
        result, headers = await compute()
        if not headers.get("X-Librarian-Partial"):
            state.cache.put(key, result)
        state.metrics.request_latency.observe(time.perf_counter() - started)
        return ok(result, started, headers=headers)

    async def _resolve_query(
        self, view: _View, query: Any, timeout: float
    ) -> tuple[list[float] | None, PointId | None, Any]:
        """A QueryRequest's ``query`` as (vector, id to exclude, fusion)."""
        if query is None:
            return None, None, None
        if isinstance(query, models.FusionQuery):
            return None, None, query.fusion
        if isinstance(query, models.NearestQuery):
            query = query.nearest
        if isinstance(query, (int, str)) and not isinstance(query, bool):
            point_id = parse_point_id(query)
            records = await self._retrieve(view, [point_id], True, True, timeout)
            if not records:
                raise ApiError(404, f"Not found: No point with id {point_id} found")
            return _dense(records[0].vector, view), point_id, None
        if isinstance(query, list):
            return _dense(query, view), None, None
        raise ApiError(
            400,
            f"Wrong input: the library router serves nearest, id and fusion queries, not {type(query).__name__}",
        )

    async def _query(
        self, view: _View, body: models.QueryRequest, timeout: float
    ) -> tuple[list[Hit], list[str]]:
        if body.using not in (None, ""):
            raise ApiError(
                400,
                f"Wrong input: named vector {body.using!r} is not served; the library has one unnamed vector",
            )
        vector, exclude, fusion = await self._resolve_query(view, body.query, timeout)
        limit = _bounded(body.limit if body.limit is not None else 10, "limit")
        offset = _bounded(body.offset or 0, "offset")
        params = body.params
        prefetches = (
            body.prefetch
            if isinstance(body.prefetch, list)
            else [body.prefetch]
            if body.prefetch
            else []
        )
        failed: list[str] = []
        if prefetches:
            candidates: list[list[Hit]] = []
            for prefetch in prefetches:
                hits, missing = await self._query(view, _as_query(prefetch, body.filter), timeout)
                candidates.append(hits)
                failed += missing
            if vector is None:
                if fusion is not None:
                    name = "ranked_fusion" if fusion == models.Fusion.RRF else "weighted_score"
                    fused = fuse(
                        name,
                        candidates,
                        limit=offset + limit,
                        higher_is_better=view.higher_is_better,
                    )
                else:
                    fused = candidates[0][: offset + limit]
                return _with_threshold(fused, body.score_threshold, view)[
                    offset : offset + limit
                ], failed
            ids = list(dict.fromkeys(h.id for hits in candidates for h in hits))
            restrict = models.Filter(must=[models.HasIdCondition(has_id=ids)])
            query_filter = combine_filters(body.filter, restrict) if ids else body.filter
            if not ids:
                return [], failed
        else:
            if vector is None:
                raise ApiError(
                    400,
                    "Wrong input: a fusion query needs prefetch; a query needs a vector or a point id",
                )
            query_filter = body.filter
        search = _Search(
            vector=vector,
            limit=limit,
            offset=offset,
            query_filter=query_filter,
            with_payload=body.with_payload,
            with_vector=body.with_vector,
            score_threshold=body.score_threshold,
            hnsw_ef=_bounded(params.hnsw_ef, "hnsw_ef") if params and params.hnsw_ef else None,
            exact=bool(params and params.exact),
            exclude_id=exclude,
        )
        answer = await self.search(view, search, timeout)
        return answer.hits, failed + answer.failed

    async def points_query(self, request: web.Request) -> web.Response:
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.QueryRequest)
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            hits, failed = await self._query(view, body, timeout)
            return {
                "points": [point_json(h, body.with_payload, body.with_vector) for h in hits]
            }, _partial(failed)

        return await self._cached(request, view, await request.read(), compute)

    async def points_query_batch(self, request: web.Request) -> web.Response:
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.QueryRequestBatch)
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            answers = await asyncio.gather(*(self._query(view, q, timeout) for q in body.searches))
            failed = [key for _, missing in answers for key in missing]
            result = [
                {"points": [point_json(h, q.with_payload, q.with_vector) for h in hits]}
                for q, (hits, _) in zip(body.searches, answers, strict=True)
            ]
            return result, _partial(failed)

        return await self._cached(request, view, await request.read(), compute)

    def _search_of(self, view: _View, body: SearchRequest) -> _Search:
        params = body.params
        return _Search(
            vector=_dense(body.vector, view),
            limit=_bounded(body.limit, "limit"),
            offset=_bounded(body.offset or 0, "offset"),
            query_filter=body.filter,
            with_payload=body.with_payload,
            with_vector=body.with_vector,
            score_threshold=body.score_threshold,
            hnsw_ef=_bounded(params.hnsw_ef, "hnsw_ef") if params and params.hnsw_ef else None,
            exact=bool(params and params.exact),
        )

    async def points_search(self, request: web.Request) -> web.Response:
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, SearchRequest)
        search = self._search_of(view, body)
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            answer = await self.search(view, search, timeout)
            return [
                point_json(h, body.with_payload, body.with_vector) for h in answer.hits
            ], _partial(answer.failed)

        return await self._cached(request, view, await request.read(), compute)

    async def points_search_batch(self, request: web.Request) -> web.Response:
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, SearchRequestBatch)
        searches = [self._search_of(view, s) for s in body.searches]
        timeout = self._timeout(request)

        async def compute() -> tuple[Any, dict[str, str]]:
            answers = await asyncio.gather(*(self.search(view, s, timeout) for s in searches))
            result = [
                [point_json(h, s.with_payload, s.with_vector) for h in answer.hits]
                for s, answer in zip(body.searches, answers, strict=True)
            ]
            return result, _partial([k for a in answers for k in a.failed])

        return await self._cached(request, view, await request.read(), compute)

    # -------------------------------------------------------------- reading

    async def points_scroll(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.ScrollRequest)
        if body.order_by is not None:
            raise ApiError(
                400, "Wrong input: order_by is not served by the library router; scroll in id order"
            )
        limit = _bounded(body.limit if body.limit is not None else 10, "limit")
        offset = parse_point_id(body.offset) if body.offset is not None else None
        payload, vectors = (
            wants_payload(body.with_payload if body.with_payload is not None else True),
            wants_vector(body.with_vector),
        )
        timeout = self._timeout(request)

        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[PointRecord]]:
            def run(port: QdrantPort) -> list[PointRecord]:
                records, _ = port.scroll(
                    route.collection,
                    limit=limit + 1,
                    offset=offset,
                    scroll_filter=combine_filters(body.filter, route.slice_filter()),
                    with_vectors=vectors,
                    with_payload=payload,
                )
                return records

            return run

        answered, failed = await self.state.fan_out(
            view, list(range(len(view.routes))), operation, timeout
        )
        if failed:
            raise ApiError(
                502,
                f"Service unavailable: scroll needs every domain; no answer from {', '.join(failed)}",
            )
        merged: dict[PointId, PointRecord] = {}
        for _, records in answered:
            for record in records:
                merged.setdefault(record.id, record)
        ordered = sorted(merged.values(), key=lambda r: id_order_key(r.id))
        page, rest = ordered[:limit], ordered[limit:]
        selector = body.with_payload if body.with_payload is not None else True
        points = [record_json(r.id, r.payload, r.vector, selector, body.with_vector) for r in page]
        return ok({"points": points, "next_page_offset": rest[0].id if rest else None}, started)

    async def points_count(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.CountRequest)

        def operation(route: DomainRoute) -> Callable[[QdrantPort], int]:
            return lambda port: port.count(
                route.collection, count_filter=combine_filters(body.filter, route.slice_filter())
            )

        answered, failed = await self.state.fan_out(
            view, list(range(len(view.routes))), operation, self._timeout(request)
        )
        if failed:
            raise ApiError(
                502,
                f"Service unavailable: count needs every domain; no answer from {', '.join(failed)}",
            )
        return ok({"count": sum(n for _, n in answered)}, started)

    async def _retrieve(
        self, view: _View, ids: list[PointId], payload: bool, vectors: bool, timeout: float
    ) -> list[PointRecord]:
        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[PointRecord]]:
            def run(port: QdrantPort) -> list[PointRecord]:
                if not route.labelled_slice:
                    return port.retrieve(
                        route.collection, ids, with_vectors=vectors, with_payload=payload
                    )
                records = port.retrieve(
                    route.collection, ids, with_vectors=vectors, with_payload=True
                )
                return [r for r in records if r.payload.get(LABEL_KEY) == route.domain_id]

            return run

        answered, failed = await self.state.fan_out(
            view, list(range(len(view.routes))), operation, timeout
        )
        if failed:
            raise ApiError(502, f"Service unavailable: no answer from {', '.join(failed)}")
        found: dict[PointId, PointRecord] = {}
        for _, records in answered:
            for record in records:
                found.setdefault(record.id, record)
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    async def points_retrieve(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.PointRequest)
        ids = [parse_point_id(i) for i in body.ids]
        selector = body.with_payload if body.with_payload is not None else True
        records = await self._retrieve(
            view,
            ids,
            wants_payload(selector),
            wants_vector(body.with_vector),
            self._timeout(request),
        )
        return ok(
            [record_json(r.id, r.payload, r.vector, selector, body.with_vector) for r in records],
            started,
        )

    # -------------------------------------------------------------- writing

    async def points_upsert(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.PointInsertOperations)
        operations = body.root if hasattr(body, "root") else body
        records = _records(operations, view)
        timeout = self._timeout(request)
        if not records:
            return ok({"operation_id": 0, "status": "completed"}, started)
        targets = (
            view.library.nearest_domain([r.vector or [] for r in records])
            if view.library
            else [0] * len(records)
        )
        groups: dict[int, list[PointRecord]] = {}
        for record, unit in zip(records, targets, strict=True):
            route = view.routes[unit]
            if route.labelled_slice:
                record = PointRecord(
                    record.id, record.vector, {**record.payload, LABEL_KEY: route.domain_id}
                )
            groups.setdefault(unit, []).append(record)
        # Write first, then remove the ids from every other home: a crash in between leaves a
        # duplicate (deduplicated by id on reads and fixed by the client's retry), never a loss.
        for unit, points in groups.items():
            route = view.routes[unit]
            await self.state.call(
                route, _upsert(route.collection, points), timeout, domain=view.routed
            )
        homes = {route.key.split("#")[0]: route for route in view.routes}
        for unit, points in groups.items():
            mine = view.routes[unit].key.split("#")[0]
            ids = [p.id for p in points]
            for key, route in homes.items():
                if key != mine:
                    await self.state.call(route, _delete(route.collection, ids=ids), timeout)
        self.state.cache.clear()
        return ok({"operation_id": 0, "status": "completed"}, started)

    async def points_delete(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, models.PointsSelector)
        selector = body.root if hasattr(body, "root") else body
        timeout = self._timeout(request)
        if isinstance(selector, models.PointIdsList):
            ids = [parse_point_id(i) for i in selector.points]
            homes = {route.key.split("#")[0]: route for route in view.routes}
            for route in homes.values():
                await self.state.call(route, _delete(route.collection, ids=ids), timeout)
        else:
            for route in view.routes:
                flt = combine_filters(selector.filter, route.slice_filter())
                await self.state.call(
                    route,
                    _delete(route.collection, points_filter=flt),
                    timeout,
                    domain=view.routed,
                )
        self.state.cache.clear()
        return ok({"operation_id": 0, "status": "completed"}, started)

    # -------------------------------------------------------------- collections & service

    async def root(self, request: web.Request) -> web.Response:
        client = importlib.metadata.version("qdrant-client").split(".")
        return web.json_response(
            {
                "title": "qdrant-librarian router",
                "version": f"{client[0]}.{client[1]}.0",
                "librarian_version": importlib.metadata.version("qdrant-librarian"),
            }
        )

    async def collections(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        names: list[str] = []
        if self.state.library is not None:
            names.append(self.state.library.name)
        port = self.state.config.fleet.get(self.state.config.default_cluster)
        lister = getattr(port, "list_collections", None)
        if lister is not None:
            names += [n for n in await asyncio.to_thread(lister) if n not in names]
        return ok({"collections": [{"name": n} for n in names]}, started)

    async def collection(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])

        def operation(route: DomainRoute) -> Callable[[QdrantPort], int]:
            if route.labelled_slice:
                return lambda port: port.count(route.collection, count_filter=route.slice_filter())
            return lambda port: port.collection_info(route.collection).points_count

        answered, failed = await self.state.fan_out(
            view, list(range(len(view.routes))), operation, self._timeout(request)
        )
        points = sum(n for _, n in answered)
        library = view.library
        distance = library.distance if library else "Cosine"
        if not library:
            info = await asyncio.to_thread(
                self.state.config.fleet.get(view.routes[0].cluster).collection_info,
                view.routes[0].collection,
            )
            distance = info.distance
        info_json = {
            "status": "green" if not failed else "yellow",
            "optimizer_status": "ok",
            "points_count": points,
            "indexed_vectors_count": points,
            "segments_count": len(view.routes),
            "config": {
                "params": {
                    "vectors": {"size": view.vector_size, "distance": distance},
                    "shard_number": len(view.routes),
                },
                "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
                "optimizer_config": {"default_segment_number": 0, "flush_interval_sec": 5},
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
            },
            "payload_schema": {},
        }
        return ok(info_json, started)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="healthz check passed")

    async def readyz(self, request: web.Request) -> web.Response:
        if self.state.library is None:
            return web.Response(
                status=503, text=f"not ready: {self.state.load_error or 'library not loaded yet'}"
            )
        return web.Response(text="all shards are ready")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.state.metrics.render(), content_type="text/plain", charset="utf-8"
        )

    async def status(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        state = self.state
        library = state.library
        result: dict[str, Any] = {
            "ready": library is not None,
            "loadError": state.load_error,
            "cache": {
                "entries": len(state.cache),
                "hitRate": round(state.cache.hit_rate, 4),
                "enabled": state.cache.enabled,
            },
            "circuits": state.breaker.states(),
            "quality": {
                "estimatedRecall": state.estimator.estimate,
                "shadowQueries": state.estimator.compared,
                "shadowFraction": state.estimator.fraction,
                "learnedFusionFitted": bool(state.estimator.model and state.estimator.model.fitted),
            },
            "routingEfficiency": None
            if state.touched_share is None
            else round(1 - state.touched_share, 4),
            "fusion": state.config.settings.fusion_algorithm,
            "load": state.load.snapshot(),
        }
        if library is not None:
            result["library"] = {
                "name": library.name,
                "version": library.definition.version,
                "vectorSize": library.vector_size,
                "distance": library.distance,
                "routing": library.router.describe(),
                "domains": [
                    {
                        "id": r.domain_id,
                        "name": r.name,
                        "cluster": r.cluster,
                        "collection": r.collection,
                        "points": r.size,
                        "specialized": r.specialized,
                        "circuit": state.breaker.state(r.cluster),
                    }
                    for r in library.domains
                ],
            }
        return ok(result, started)

    async def load(self, request: web.Request) -> web.Response:
        """Per-domain and per-cluster query load seen by this router (what rebalancing reads)."""
        started = time.perf_counter()
        return ok(self.state.load.snapshot(), started)

    async def predict(self, request: web.Request) -> web.Response:
        """PredictOptimalClusters: which domains (and clusters) a vector would be sent to."""
        started = time.perf_counter()
        library, data, vector = await self._library_request(request)
        strategy = strategy_name(data.get("strategy"))
        try:
            decision = library.router.decide(vector, strategy=strategy or None)
        except RoutingError as error:
            raise ApiError(400, f"Wrong input: {error}") from None
        domains = [
            {
                "index": u,
                "id": library.domains[u].domain_id,
                "name": library.domains[u].name,
                "cluster": library.domains[u].cluster,
                "collection": library.domains[u].collection,
                "share": round(float(decision.scores[u]), 4),
            }
            for u in decision.units
        ]
        clusters = list(dict.fromkeys(d["cluster"] for d in domains))
        return ok(
            {
                "domains": domains,
                "clusters": clusters,
                "estimatedRecall": round(decision.estimated_recall, 4),
            },
            started,
        )

    async def cross_cluster_query(self, request: web.Request) -> web.Response:
        """ExecuteCrossClusterQuery: vector, max results, target clusters, timeout, fusion, preferences."""
        started = time.perf_counter()
        library, data, vector = await self._library_request(request)
        view = _View.of(library)
        limit = data.get("maxResults", data.get("limit", 10))
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ApiError(400, "Wrong input: maxResults must be a positive integer")
        timeout = data.get("timeout", self.timeout)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ApiError(400, "Wrong input: timeout must be a positive number of seconds")
        clusters = data.get("clusters")
        if clusters is not None and (
            not isinstance(clusters, list) or not all(isinstance(c, str) for c in clusters)
        ):
            raise ApiError(400, "Wrong input: clusters must be a list of cluster names")
        preferences = data.get("preferences") or {}
        if not isinstance(preferences, dict) or not all(
            isinstance(v, int | float) for v in preferences.values()
        ):
            raise ApiError(400, "Wrong input: preferences must map cluster names to weights")
        fusion = data.get("fusion")
        strategy = data.get("strategy")
        if strategy is not None and not isinstance(strategy, str):
            raise ApiError(400, "Wrong input: strategy must be a string")
        query_filter = None
        if data.get("filter") is not None:
            try:
                query_filter = models.Filter.model_validate(data["filter"])
            except Exception as error:
                raise ApiError(400, f"Wrong input: filter: {error}") from None
        search = _Search(
            vector=vector,
            limit=limit,
            query_filter=query_filter,
            with_payload=bool(data.get("withPayload", True)),
        )
        try:
            answer = await self.search(
                view,
                search,
                min(float(timeout), self.timeout),
                strategy=strategy_name(strategy),
                fusion=fusion,
                clusters=clusters,
                weights=preferences or None,
            )
        except RoutingError as error:
            raise ApiError(400, f"Wrong input: {error}") from None
        return ok(
            {
                "points": [
                    point_json(h, search.with_payload, False) | {"domain": h.source}
                    for h in answer.hits
                ],
                "domains": [library.domains[u].domain_id for u in answer.probed],
                "clusters": list(dict.fromkeys(library.domains[u].cluster for u in answer.probed)),
                "partial": bool(answer.failed),
                "failed": answer.failed,
                "fusion": fusion or self.state.config.settings.fusion_algorithm,
            },
            started,
        )

    async def _library_request(
        self, request: web.Request
    ) -> tuple[Library, dict[str, Any], list[float]]:
        """The loaded library, the JSON body and its validated ``vector``."""
        library = self._library()
        data = await _json_object(request)
        return library, data, _dense(data.get("vector"), _View.of(library))

    def _library(self) -> Library:
        if self.state.library is None:
            raise ApiError(
                503,
                f"Service unavailable: library not loaded ({self.state.load_error or 'starting'})",
            )
        return self.state.library


_MAX_COUNT = 1_000_000  # far above any sane page; keeps engines from allocating for absurd values


def _bounded(value: int, name: str) -> int:
    if not 0 <= value <= _MAX_COUNT:
        raise ApiError(
            400, f"Wrong input: {name} must be between 0 and {_MAX_COUNT:,}, got {value}"
        )
    return value


def _upsert(collection: str, points: list[PointRecord]) -> Callable[[QdrantPort], None]:
    return lambda port: port.upsert(collection, points)


def _delete(
    collection: str, *, ids: list[PointId] | None = None, points_filter: models.Filter | None = None
) -> Callable[[QdrantPort], None]:
    return lambda port: port.delete_points(collection, ids=ids, points_filter=points_filter)


def _partial(failed: list[str]) -> dict[str, str]:
    return {"X-Librarian-Partial": ",".join(sorted(set(failed)))} if failed else {}


def _with_threshold(hits: list[Hit], threshold: float | None, view: _View) -> list[Hit]:
    if threshold is None:
        return hits
    return [
        h for h in hits if (h.score >= threshold if view.higher_is_better else h.score <= threshold)
    ]


def _as_query(prefetch: models.Prefetch, outer_filter: models.Filter | None) -> models.QueryRequest:
    if prefetch.using not in (None, ""):
        raise ApiError(400, f"Wrong input: named vector {prefetch.using!r} is not served")
    return models.QueryRequest(
        prefetch=prefetch.prefetch,
        query=prefetch.query,
        filter=combine_filters(outer_filter, prefetch.filter),
        params=prefetch.params,
        score_threshold=prefetch.score_threshold,
        limit=prefetch.limit,
        with_payload=True,
        with_vector=False,
    )


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"Format error in JSON body: {error}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Format error in JSON body: expected an object")
    return data


def _records(operations: Any, view: _View) -> list[PointRecord]:
    if isinstance(operations, models.PointsList):
        points = operations.points
        return [
            PointRecord(parse_point_id(p.id), _dense(p.vector, view), dict(p.payload or {}))
            for p in points
        ]
    batch = operations.batch
    vectors = batch.vectors
    if not isinstance(vectors, list):
        raise ApiError(400, "Wrong input: named vectors are not served by the library router")
    payloads = batch.payloads or [None] * len(batch.ids)
    if len(vectors) != len(batch.ids) or len(payloads) != len(batch.ids):
        raise ApiError(
            400, "Wrong input: batch ids, vectors and payloads must have the same length"
        )
    return [
        PointRecord(parse_point_id(i), _dense(v, view), dict(p or {}))
        for i, v, p in zip(batch.ids, vectors, payloads, strict=True)
    ]


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
    except ApiError as error:
        response = error_response(error.status, error.message, started)
    except web.HTTPException as error:
        response = error_response(
            error.status, f"{error.reason}: {request.method} {request.path}", started
        )
    except (QdrantError, RoutingError, FusionError) as error:
        api_error = _upstream_error(error)
        response = error_response(api_error.status, api_error.message, started)
    except Exception as error:  # the contract: never an unformatted 500
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, f"Service internal error: {type(error).__name__}", started)
    metrics.requests.labels(endpoint, str(response.status)).inc()
    return response


def create_app(state: RouterState, *, reload_in_background: bool = True) -> web.Application:
    """The aiohttp application; loads the library on startup and reloads it periodically."""
    app = web.Application(middlewares=[_errors], client_max_size=256 * 1024 * 1024)
    app[STATE_KEY] = state
    h = Handlers(state)
    app.router.add_get("/", h.root)
    app.router.add_get("/healthz", h.healthz)
    app.router.add_get("/livez", h.healthz)
    app.router.add_get("/readyz", h.readyz)
    app.router.add_get("/metrics", h.metrics)
    app.router.add_get("/librarian/status", h.status)
    app.router.add_get("/librarian/load", h.load)
    app.router.add_post("/librarian/predict", h.predict)
    app.router.add_post("/librarian/query", h.cross_cluster_query)
    app.router.add_get("/collections", h.collections)
    app.router.add_get("/collections/{name}", h.collection)
    app.router.add_post("/collections/{name}/points/query", h.points_query)
    app.router.add_post("/collections/{name}/points/query/batch", h.points_query_batch)
    app.router.add_post("/collections/{name}/points/search", h.points_search)
    app.router.add_post("/collections/{name}/points/search/batch", h.points_search_batch)
    app.router.add_post("/collections/{name}/points/scroll", h.points_scroll)
    app.router.add_post("/collections/{name}/points/count", h.points_count)
    app.router.add_post("/collections/{name}/points", h.points_retrieve)
    app.router.add_put("/collections/{name}/points", h.points_upsert)
    app.router.add_post("/collections/{name}/points/delete", h.points_delete)

    async def lifecycle(app: web.Application) -> Any:
        await state.reload()
        task = asyncio.ensure_future(state.reload_forever()) if reload_in_background else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await state.drain()

    app.cleanup_ctx.append(lifecycle)
    return app
