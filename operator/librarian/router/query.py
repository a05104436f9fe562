"""Query semantics: what a query, search, scroll, count or retrieve means over a library.

Why this exists: a library is several collections pretending to be one. This
module validates what a request asks for (dense vectors of the right size,
bounded limits and offsets, the query forms the router serves), plans which
domains a nearest-neighbour search goes to, asks them through the upstream
layer, fuses their answers and applies offsets, limits and score thresholds as
one collection would. Reads that need every domain (scroll, count, retrieve)
merge by point id in Qdrant's id order. Results are cached under a key made of
the endpoint, the library version and the validated request in a canonical
form, with the write generations of the homes they read
(:mod:`librarian.router.generation`); a share of routed queries is shadowed on
every domain to estimate recall.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from pydantic import BaseModel
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY
from librarian.core.fusion import FusionError, Hit, PointId, fuse, fusion_name
from librarian.router.exact import (
    ExactQueries,
    home_query,
    scored_json,
    top_level_selector,
    validate_page,
)
from librarian.router.generation import HomeGeneration
from librarian.router.library import (
    CollectionHome,
    DomainRoute,
    Library,
    View,
    combine_filters,
)
from librarian.router.qdrant_api import (
    ApiError,
    SearchRequest,
    parse_point_id,
    point_json,
    wants_payload,
    wants_vector,
)
from librarian.router.resilience import CachedAnswer
from librarian.router.state import RouterState, strategy_name
from librarian.router.upstream import READ_WATCH, FanOut, UpstreamError
from librarian.services.placement import Placement
from librarian.services.versioning import is_tombstone, user_payload, version_of
from librarian.storage.port import PointRecord, QdrantPort

__all__ = [
    "MAX_COUNT",
    "Answer",
    "CrossClusterQuery",
    "Querying",
    "Search",
    "bounded",
    "cache_key",
    "canonical_request",
    "dense",
    "home_requests",
    "parse_cross_cluster",
    "partial_headers",
    "search_of",
    "shared_home_request",
]

log = logging.getLogger("librarian.router")

MAX_COUNT = 1_000_000  # far above any sane page; keeps engines from allocating for absurd values
CacheKey = tuple[str, str, bytes]  # endpoint, what it addresses, digest of the request


@dataclass(frozen=True)
class Search:
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

    @property
    def depth(self) -> int:
        """How many fused hits the page needs (offset included)."""
        return self.offset + self.limit


@dataclass
class Answer:
    """A search's page, the units asked, those that failed, and each unit's own list."""

    hits: list[Hit]
    probed: list[int]
    failed: list[str]
    lists: list[list[Hit]]


# ---------------------------------------------------------------------- validation


def bounded(value: int, name: str) -> int:
    """``value`` if it is a sane count (0..MAX_COUNT); a 400 otherwise."""
    if not 0 <= value <= MAX_COUNT:
        raise ApiError(400, f"Wrong input: {name} must be between 0 and {MAX_COUNT:,}, got {value}")
    return value


def dense(vector: Any, vector_size: int) -> list[float]:
    """The unnamed dense vector of ``vector_size`` finite floats a library serves; a 400 otherwise."""
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
    if len(vector) != vector_size:
        raise ApiError(
            400,
            f"Wrong input: Vector dimension error: expected dim: {vector_size}, got {len(vector)}",
        )
    numbers = [float(x) for x in vector]
    # finite unless the sum is not (a NaN or an infinity makes it so; an overflow of finite
    # numbers is told apart number by number)
    if not math.isfinite(sum(numbers)) and not all(math.isfinite(x) for x in numbers):
        raise ApiError(400, "Wrong input: vector contains NaN or infinite values")
    return numbers


def _hnsw_ef(params: models.SearchParams | None) -> int | None:
    return bounded(params.hnsw_ef, "hnsw_ef") if params and params.hnsw_ef else None


def search_of(body: SearchRequest, view: View) -> Search:
    """A classic ``/points/search`` body as a search."""
    params = body.params
    return Search(
        vector=dense(body.vector, view.vector_size),
        limit=bounded(body.limit, "limit"),
        offset=bounded(body.offset or 0, "offset"),
        query_filter=body.filter,
        with_payload=body.with_payload,
        with_vector=body.with_vector,
        score_threshold=body.score_threshold,
        hnsw_ef=_hnsw_ef(params),
        exact=bool(params and params.exact),
    )


def _page(body: models.QueryRequest) -> tuple[int, int]:
    """A universal query's (limit, offset), validated."""
    return (
        bounded(body.limit if body.limit is not None else 10, "limit"),
        bounded(body.offset or 0, "offset"),
    )


def _query_search(
    body: models.QueryRequest,
    vector: list[float],
    exclude: PointId | None,
    query_filter: models.Filter | None,
) -> Search:
    """A universal ``/points/query`` body's nearest search (its vector already resolved)."""
    params = body.params
    limit, offset = _page(body)
    return Search(
        vector=vector,
        limit=limit,
        offset=offset,
        query_filter=query_filter,
        with_payload=body.with_payload,
        with_vector=body.with_vector,
        score_threshold=body.score_threshold,
        hnsw_ef=_hnsw_ef(params),
        exact=bool(params and params.exact),
        exclude_id=exclude,
    )


def _with_threshold(hits: list[Hit], threshold: float | None, higher_is_better: bool) -> list[Hit]:
    if threshold is None:
        return hits
    return [h for h in hits if (h.score >= threshold if higher_is_better else h.score <= threshold)]


def partial_headers(failed: Sequence[str]) -> dict[str, str]:
    """The header naming the domains missing from an answer (none when complete)."""
    return {"X-Librarian-Partial": ",".join(sorted(set(failed)))} if failed else {}


def canonical_request(body: Any, query: Mapping[str, str] | None = None) -> bytes:
    """A validated request in one canonical form: its model's JSON with sorted keys and no
    spaces (key order and whitespace of the body do not matter, every field does), and the
    query-string parameters but the timeout (which changes no answer)."""
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    params = sorted((k, v) for k, v in (query or {}).items() if k != "timeout")
    return json.dumps([data, params], sort_keys=True, separators=(",", ":"), default=str).encode()


def cache_key(path: str, view: View, body: Any, query: Mapping[str, str] | None = None) -> CacheKey:
    """A result's cache key: the endpoint, what it was computed on (the library's version, or
    the collection a pass-through name addresses: an alias may name another one later), and
    a digest of the request in its canonical form (:func:`canonical_request`), so that a key
    costs a few bytes however large the request."""
    if view.library is not None:
        addressed = f"{view.library.name}@{view.library.definition.version}"
    else:
        addressed = "/".join(f"{r.cluster}/{r.collection}" for r in view.routes)
    return (path, addressed, hashlib.sha256(canonical_request(body, query)).digest())


@dataclass(frozen=True)
class CrossClusterQuery:
    """An ``ExecuteCrossClusterQuery`` (``POST /librarian/query``) request, validated."""

    search: Search
    timeout: float
    strategy: str | None = None
    fusion: str | None = None
    clusters: list[str] | None = None
    preferences: dict[str, float] | None = None


def _positive_int(value: Any, message: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiError(400, f"Wrong input: {message}")
    return value


def _positive_number(value: Any, message: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ApiError(400, f"Wrong input: {message}")
    return float(value)


def _cluster_names(value: Any) -> list[str] | None:
    if value is not None and (
        not isinstance(value, list) or not all(isinstance(c, str) for c in value)
    ):
        raise ApiError(400, "Wrong input: clusters must be a list of cluster names")
    return value


def _weights(value: Any) -> dict[str, float] | None:
    preferences = value or {}
    if not isinstance(preferences, dict) or not all(
        isinstance(v, int | float) for v in preferences.values()
    ):
        raise ApiError(400, "Wrong input: preferences must map cluster names to weights")
    return {str(k): float(v) for k, v in preferences.items()} or None


def _filter(value: Any) -> models.Filter | None:
    if value is None:
        return None
    try:
        return models.Filter.model_validate(value)
    except ValueError as error:  # pydantic's ValidationError
        raise ApiError(400, f"Wrong input: filter: {error}") from None


def parse_cross_cluster(
    data: dict[str, Any], vector: list[float], max_timeout: float
) -> CrossClusterQuery:
    """Vector, max results, target clusters, timeout, fusion, preferences, filter, strategy."""
    limit = _positive_int(
        data.get("maxResults", data.get("limit", 10)), "maxResults must be a positive integer"
    )
    timeout = _positive_number(
        data.get("timeout", max_timeout), "timeout must be a positive number of seconds"
    )
    clusters = _cluster_names(data.get("clusters"))
    preferences = _weights(data.get("preferences"))
    strategy = data.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        raise ApiError(400, "Wrong input: strategy must be a string")
    search = Search(
        vector=vector,
        limit=limit,
        query_filter=_filter(data.get("filter")),
        with_payload=bool(data.get("withPayload", True)),
    )
    return CrossClusterQuery(
        search=search,
        timeout=min(timeout, max_timeout),
        strategy=strategy_name(strategy),
        fusion=data.get("fusion"),
        clusters=clusters,
        preferences=preferences,
    )


# ---------------------------------------------------------------------- execution


def shared_home_request(
    search: Search, fetch: int, *, using: str, routed: bool
) -> models.QueryRequest:
    """The nearest-neighbour request every home a search asks gets, before its own filter and
    shard keys: ``fetch`` hits, the search's ``hnsw_ef`` and ``exact``, the payload when the
    client wants it or the library is versioned (each copy's version picks the newest)."""
    vectors = wants_vector(search.with_vector)
    return models.QueryRequest(
        query=search.vector,
        params=models.SearchParams(hnsw_ef=search.hnsw_ef, exact=search.exact),
        limit=fetch,
        with_payload=wants_payload(search.with_payload) or routed,
        with_vector=search.with_vector if vectors else False,
        using=using or None,
    )


def home_requests(
    shared: models.QueryRequest,
    query_filter: models.Filter | None,
    route: DomainRoute,
    placement: Placement | None,
    chosen: Sequence[str],
) -> tuple[models.QueryRequest, models.QueryRequest | None]:
    """What one home is asked for a search: ``shared`` with the client's filter AND the home's
    read filter, keeping only the ``chosen`` partitions (a condition on the partition field of
    a home placed by field, the shard keys of a home sharded by partition; the whole home when
    none is chosen); and, on a versioned home, the request asked first, without the filter
    that leaves tombstones out (``None`` elsewhere)."""
    by_field = placement is not None and placement.by_field
    read, slice_only = route.read_filter(), route.slice_filter()
    if by_field and chosen:  # the chosen partitions' condition joins the read filter
        assert placement is not None
        partitions = placement.read_filter(chosen)
        read = combine_filters(read, partitions)
        slice_only = combine_filters(slice_only, partitions)
    shard_key = None if by_field else list(chosen) or None
    request = shared.model_copy(
        update={"filter": combine_filters(query_filter, read), "shard_key": shard_key}
    )
    # A versioned home is first asked without the filter that leaves its tombstones out:
    # that filter reads every candidate's payload, and when none of the nearest points is a
    # tombstone the nearest live points are those same points. Only a page holding a
    # tombstone is asked again, filtered.
    if not (route.versioned and shared.with_payload is True):
        return request, None
    first = shared.model_copy(
        update={"filter": combine_filters(query_filter, slice_only), "shard_key": shard_key}
    )
    return request, first


class Querying:
    """Runs the reads of one router: plan, fan out, fuse, page; cache and shadow."""

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.exact = ExactQueries(state.upstream, state.view)

    @property
    def _fusion(self) -> str:
        return self.state.config.settings.fusion_algorithm

    # ------------------------------------------------------------ nearest search

    async def plan(
        self,
        view: View,
        vector: list[float],
        strategy: str | None = None,
        clusters: Sequence[str] | None = None,
    ) -> list[int]:
        """The units a search for ``vector`` goes to (only those on ``clusters`` if given)."""
        if view.library is None:
            return [0]
        decision = await self.state.decisions.decide(view.library.router, vector, strategy)
        units = decision.units
        if clusters:
            units = [u for u in units if view.routes[u].cluster in clusters]
        return units

    async def plan_partitions(
        self,
        view: View,
        vector: list[float],
        strategy: str | None = None,
        clusters: Sequence[str] | None = None,
    ) -> tuple[list[int], dict[int, tuple[str, ...]]]:
        """The domains a search for ``vector`` goes to, and in each whose home is sharded by
        partition the ids of the partitions chosen (the routing units are partitions;
        a domain that is not sharded so is one unit, searched whole)."""
        library = view.library
        partitions = library.partition_routing if library is not None else None
        if partitions is None:
            return await self.plan(view, vector, strategy, clusters), {}
        decision = await self.state.decisions.decide(partitions.router, vector, strategy)
        units, keys = partitions.selection(decision.units)
        if clusters:
            units = [u for u in units if view.routes[u].cluster in clusters]
        return units, {u: k for u, k in keys.items() if u in units}

    async def search(
        self,
        view: View,
        search: Search,
        timeout: float,
        *,
        strategy: str | None = None,
        fusion: str | None = None,
        clusters: Sequence[str] | None = None,
        weights: dict[str, float] | None = None,
    ) -> Answer:
        """A routed search: planned units only (the chosen partitions of each domain's home),
        fused, paged; shadowed now and then."""
        units, keys = await self.plan_partitions(view, search.vector, strategy, clusters)
        if not units:
            raise ApiError(
                400, "Wrong input: none of the requested clusters holds a domain of this library"
            )
        answer = await self._search_units(view, search, units, timeout, fusion, weights, keys)
        if view.routed and not clusters:
            asked = len(units)
            units, answer = await self._probe_further(
                view, search, list(units), answer, timeout, strategy, fusion, weights
            )
            if len(units) != asked:
                keys = {}  # a widened search asked whole domains
        if view.routed:
            self._account(view, units, search, answer, timeout, keys)
        return answer

    async def _probe_further(
        self,
        view: View,
        search: Search,
        units: list[int],
        answer: Answer,
        timeout: float,
        strategy: str | None,
        fusion: str | None,
        weights: dict[str, float] | None,
    ) -> tuple[list[int], Answer]:
        """A routed page that came back short (a selective filter, a deep offset, a score
        threshold) asks further domains, in routing order, twice as many each time, until the
        page is full or every domain has answered (then it is exact)."""
        library = view.library
        assert library is not None
        if len(answer.hits) >= search.limit or answer.failed:
            return units, answer  # a full page (the common case) needs no ranking of the rest
        decision = await self.state.decisions.decide(library.router, search.vector)
        ranking = [int(u) for u in np.argsort(-decision.scores)]
        rest = [u for u in ranking if u not in units]
        while len(answer.hits) < search.limit and rest and not answer.failed:
            batch, rest = rest[: max(1, len(units))], rest[max(1, len(units)) :]
            try:
                wider = await self._search_units(
                    view, search, units + batch, timeout, fusion, weights
                )
            except UpstreamError:  # out of time: the page so far, flagged as partial
                return units, replace(answer, failed=[view.routes[u].key for u in batch])
            units, answer = units + batch, wider
        return units, answer

    async def _search_units(
        self,
        view: View,
        search: Search,
        units: Sequence[int],
        timeout: float,
        fusion: str | None = None,
        weights: dict[str, float] | None = None,
        keys: Mapping[int, tuple[str, ...]] | None = None,
    ) -> Answer:
        """Search ``units`` (each home once: only ``keys``' partitions of a domain that has them,
        by a condition on the partition field or a shard key selector, the whole domain
        otherwise)."""
        fetch = search.depth + (1 if search.exclude_id is not None else 0)
        chosen = {view.routes[u].key: k for u, k in (keys or {}).items()}
        while True:
            lists, result, full = await self._unit_lists(
                view, search, units, fetch, timeout, chosen
            )
            if not full:
                break
            fetch *= 2  # superseded copies left places a unit's next hits may take
        if search.exclude_id is not None:
            lists = [[h for h in hits if h.id != search.exclude_id] for hits in lists]
        routes = [view.routes[u] for u, _ in result.answered]
        fused = self._fuse(view, fusion or self._fusion, lists, search.depth, weights, routes)
        fused = _with_threshold(fused, search.score_threshold, view.higher_is_better)
        return Answer(fused[search.offset : search.depth], list(units), result.failed, lists)

    async def _unit_lists(
        self,
        view: View,
        search: Search,
        units: Sequence[int],
        fetch: int,
        timeout: float,
        keys: Mapping[str, tuple[str, ...]] | None = None,
    ) -> tuple[list[list[Hit]], FanOut[list[Hit]], bool]:
        """Each unit's ``fetch`` nearest hits without copies a newer copy (or tombstone) in any
        home supersedes; and whether a unit that had more lost some of them so."""
        payload = wants_payload(search.with_payload)
        # Validated once (the vector is most of it); each home's copy only differs in its
        # filter and shard keys.
        shared = shared_home_request(search, fetch, using=view.vector, routed=view.routed)
        placements = view.library.placements if view.library is not None else {}

        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[Hit]]:
            request, unfiltered = home_requests(
                shared,
                search.query_filter,
                route,
                placements.get(route.home),
                (keys or {}).get(route.key, ()),
            )

            def run(port: QdrantPort) -> list[Hit]:
                hits = None
                if unfiltered is not None:
                    hits = home_query(port, route.collection, unfiltered)
                    if any(is_tombstone(h.payload) for h in hits):
                        hits = None
                if hits is None:
                    hits = home_query(port, route.collection, request)
                return [
                    Hit(_point_id(h.id), h.score, route.key, h.payload or {}, _jsonable(h.vector))
                    for h in hits
                ]

            return run

        result = await self.state.upstream.fan_out(view, units, operation, timeout)
        lists = _newest_hits(result.results)
        cut = False
        # the homes this search asked (a routed search is approximate: homes it skipped are
        # not asked for newer copies either, as the consistency model says); one home holds
        # one copy of a point
        asked = [view.routes[u] for u, _ in result.answered]
        if view.routed and len({route.home for route in asked}) > 1:
            ids = list(dict.fromkeys(h.id for hits in lists for h in hits))
            newest = await self.exact.newest_versions(view, ids, timeout, asked) if ids else {}
            kept = [
                [h for h in hits if version_of(h.payload) >= newest.get(h.id, 0)] for hits in lists
            ]
            cut = any(
                len(raw) >= fetch and len(mine) < len(raw)
                for raw, mine in zip(result.results, kept, strict=True)
            )
            lists = kept
        return _public_hits(lists, payload, versioned=view.routed), result, cut

    def _fuse(
        self,
        view: View,
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
        list_weights = [float(weights.get(r.cluster, 1.0)) for r in routes] if weights else None
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
        view: View,
        units: Sequence[int],
        search: Search,
        answer: Answer,
        timeout: float,
        keys: Mapping[int, tuple[str, ...]] | None = None,
    ) -> None:
        """Metrics of a routed search (the points it touched: its whole domains and its chosen
        partitions); maybe a shadow search of everything it skipped."""
        state = self.state
        library = view.library
        assert library is not None
        metrics = state.metrics
        metrics.queries.labels(state.config.strategy).inc()
        metrics.domains_probed.observe(len(units))
        if len({view.routes[u].cluster for u in units}) > 1:
            metrics.cross_cluster_queries.inc()
        keys = keys or {}
        partitions = library.partition_routing
        if partitions is not None:
            sizes = partitions.router.sizes
            touched = [
                i
                for i, (domain, key) in enumerate(partitions.units)
                if domain in units and (domain not in keys or key in keys[domain])
            ]
        else:
            sizes, touched = library.router.sizes, list(units)
        share = float(sizes[touched].sum()) / max(float(sizes.sum()), 1.0)
        state.touched_share = (
            share if state.touched_share is None else 0.95 * state.touched_share + 0.05 * share
        )
        metrics.routing_efficiency.set(1.0 - state.touched_share)
        if (len(units) < len(view.routes) or keys) and state.estimator.should_shadow():
            state.spawn(self._shadow(view, units, search, answer, timeout, keys))

    async def _shadow(
        self,
        view: View,
        units: Sequence[int],
        search: Search,
        answer: Answer,
        timeout: float,
        keys: Mapping[int, tuple[str, ...]] | None = None,
    ) -> None:
        """Ask what the routed search skipped (whole domains, and the other partitions of the
        domains it searched in part); compare the answers (recall estimate)."""
        skipped = set(units)
        everything = [u for u in range(len(view.routes)) if u not in skipped]
        rest_keys: dict[int, tuple[str, ...]] = {}
        for unit, chosen in (keys or {}).items():
            others = tuple(p.id for p in view.routes[unit].partitions if p.id not in chosen)
            placement = (
                view.library.placements.get(view.routes[unit].home) if view.library else None
            )
            held = set(placement.keys) if placement is not None else set()
            others = tuple(k for k in others if k in held)
            if others:
                everything.append(unit)
                rest_keys[unit] = others
        if not everything:
            return
        try:
            rest = await self._search_units(
                view, search, everything, timeout, keys=rest_keys or None
            )
        except Exception as error:  # noqa: BLE001 - a shadow query must never fail a request
            log.info("shadow query failed: %s", error)
            return
        merged = self._fuse(
            view, "semantic_merge", [*answer.lists, *rest.lists], search.depth, None, []
        )
        merged = _with_threshold(merged, search.score_threshold, view.higher_is_better)
        exhaustive = [h.id for h in merged[search.offset : search.depth]]
        estimator = self.state.estimator
        estimator.record([h.id for h in answer.hits], exhaustive, answer.lists)
        self.state.metrics.shadow_queries.inc()
        if estimator.estimate is not None:
            self.state.metrics.estimated_recall.set(estimator.estimate)
        if self._fusion == "learned" and estimator.compared % 25 == 0:
            await asyncio.to_thread(estimator.fit_model, view.higher_is_better)

    # ------------------------------------------------------------ universal query

    def _routable(self, view: View, body: models.QueryRequest) -> bool:
        """Is this a nearest search on the library's routing vector (the one query routed to a
        few domains)? Everything else asks every home and is exact."""
        query = body.query
        if isinstance(query, models.NearestQuery):
            if query.mmr is not None:
                return False
            query = query.nearest
        vector_or_id = (
            isinstance(query, list) and bool(query) and isinstance(query[0], int | float)
        ) or (isinstance(query, int | str) and not isinstance(query, bool))
        params = body.params
        return (
            view.routed
            and vector_or_id
            and (body.using or "") == view.vector
            and body.prefetch is None
            and body.lookup_from is None
            and top_level_selector(body.with_payload)
            and isinstance(body.with_vector, bool | None)
            and not (params and (params.quantization is not None or params.indexed_only))
        )

    async def query(
        self, view: View, body: models.QueryRequest, timeout: float
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """A universal query: the page's points (Qdrant's JSON) and the units missing from it."""
        if not self._routable(view, body):
            ranked, failed = await self.exact.query(view, body, timeout)
            return [scored_json(r.point) for r in ranked], failed
        query = body.query.nearest if isinstance(body.query, models.NearestQuery) else body.query
        exclude: PointId | None = None
        if isinstance(query, int | str):
            exclude = parse_point_id(query)
            records = await self.retrieve(view, [exclude], True, True, timeout)
            if not records:
                raise ApiError(404, f"Not found: No point with id {exclude} found")
            vector = dense(records[0].dense(view.vector), view.vector_size)
        else:
            vector = dense(query, view.vector_size)
        validate_page(body.limit, body.offset)  # Qdrant's 400 / 422 before any home is asked
        answer = await self.search(view, _query_search(body, vector, exclude, body.filter), timeout)
        return [
            point_json(h, body.with_payload, body.with_vector) for h in answer.hits
        ], answer.failed

    # ------------------------------------------------------------ reads of every domain

    def _every(self, view: View) -> list[int]:
        return list(range(len(view.routes)))

    async def scroll(
        self, view: View, body: models.ScrollRequest, timeout: float
    ) -> dict[str, Any]:
        """One page of every domain's points in Qdrant's id order (and the next page's offset),
        or by an ``order_by`` value; each point's newest copy."""
        page, following, _ = await self.exact.scroll(view, body, timeout)
        points = []
        for ranked in page:
            record = scored_json(ranked.point)
            record.pop("score", None)
            record.pop("version", None)
            points.append(record)
        return {"points": points, "next_page_offset": following}

    async def count(self, view: View, body: models.CountRequest, timeout: float) -> int:
        """Points matching the filter in every domain."""

        def operation(route: DomainRoute) -> Callable[[QdrantPort], int]:
            return lambda port: port.count(
                route.collection, count_filter=combine_filters(body.filter, route.read_filter())
            )

        result = await self.state.upstream.fan_out(view, self._every(view), operation, timeout)
        return sum(result.complete("count"))

    async def retrieve(
        self, view: View, ids: list[PointId], payload: bool, vectors: bool, timeout: float
    ) -> list[PointRecord]:
        """The points with these ids, in the order asked (each once; missing ones left out)."""

        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[PointRecord]]:
            def run(port: QdrantPort) -> list[PointRecord]:
                if not view.routed:
                    return port.retrieve(
                        route.collection, ids, with_vectors=vectors, with_payload=payload
                    )
                records = port.retrieve(
                    route.collection, ids, with_vectors=vectors, with_payload=True
                )
                return [  # tombstones kept: a newer one hides an older live copy elsewhere
                    r for r in records if route.holds_label(r.payload.get(LABEL_KEY))
                ]

            return run

        result = await self.state.upstream.fan_out(view, self._every(view), operation, timeout)
        found = _by_id(result.complete(), versioned=view.routed)
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    # ------------------------------------------------------------ the library's own API

    async def predict(
        self, library: Library, vector: list[float], strategy: str | None
    ) -> dict[str, Any]:
        """PredictOptimalClusters: which domains (and clusters) a vector would be sent to, and
        in each domain whose home is placed by partition, which partitions; a
        domain searched whole has ``partitions: null``."""
        partitioned = library.partition_routing
        if partitioned is None:
            decision = await self.state.decisions.decide(library.router, vector, strategy or None)
            units, keys = list(decision.units), dict[int, tuple[str, ...]]()
            shares = {u: float(decision.scores[u]) for u in units}
        else:
            decision = await self.state.decisions.decide(
                partitioned.router, vector, strategy or None
            )
            units, keys = partitioned.selection(decision.units)
            shares = {}
            for unit in decision.units:
                domain = partitioned.units[unit][0]
                shares[domain] = shares.get(domain, 0.0) + float(decision.scores[unit])
        domains = [
            {
                "index": u,
                "id": library.domains[u].domain_id,
                "name": library.domains[u].name,
                "cluster": library.domains[u].cluster,
                "collection": library.domains[u].collection,
                "share": round(shares[u], 4),
                "partitions": list(keys[u]) if u in keys else None,
            }
            for u in units
        ]
        return {
            "domains": domains,
            "clusters": list(dict.fromkeys(d["cluster"] for d in domains)),
            "estimatedRecall": round(decision.estimated_recall, 4),
        }

    async def cross_cluster(self, library: Library, request: CrossClusterQuery) -> dict[str, Any]:
        """ExecuteCrossClusterQuery: a routed search, limited to some clusters, weighted by them."""
        answer = await self.search(
            View.of(library),
            request.search,
            request.timeout,
            strategy=request.strategy,
            fusion=request.fusion,
            clusters=request.clusters,
            weights=request.preferences,
        )
        return {
            "points": [
                point_json(h, request.search.with_payload, False) | {"domain": h.source}
                for h in answer.hits
            ],
            "domains": [library.domains[u].domain_id for u in answer.probed],
            "clusters": list(dict.fromkeys(library.domains[u].cluster for u in answer.probed)),
            "partial": bool(answer.failed),
            "failed": answer.failed,
            "fusion": request.fusion or self._fusion,
        }

    # ------------------------------------------------------------ cache

    async def cached(
        self,
        key: CacheKey | None,
        view: View,
        compute: Callable[[], Awaitable[tuple[Any, dict[str, str]]]],
        timeout: float,
    ) -> tuple[Any, dict[str, str]]:
        """A result from the cache while the homes it read are at the generation it was
        computed at; otherwise computed, and cached when it may be; with its headers.

        Only a library's answers are cached (a plain collection's writes carry no
        version: its generation cannot be known), never a partial one, and only when
        every home it read gave its generation before it was computed.
        """
        started = time.perf_counter()
        state = self.state
        cache, metrics = state.cache, state.metrics
        if key is None or not view.routed or not cache.enabled:
            metrics.cache_uncached.labels("not cacheable").inc()
            return await compute()
        entry = cache.peek(key)
        if isinstance(entry, CachedAnswer):
            depends = cast(Mapping[CollectionHome, HomeGeneration], entry.depends)
            now = await state.generations.read(depends, timeout)
            if now is not None and state.generations.unchanged(depends, now):
                cache.record(hit=True)
                metrics.cache_hits.inc()
                metrics.cache_hit_rate.set(cache.hit_rate)
                return entry.result, {"X-Librarian-Cache": "hit"}
            cache.discard(key)
            if now is not None:
                metrics.cache_stale.inc()
        cache.record(hit=False)
        metrics.cache_misses.inc()
        metrics.cache_hit_rate.set(cache.hit_rate)
        watch = state.generations.watch()
        token = READ_WATCH.set(watch)
        try:
            result, headers = await compute()
        finally:
            READ_WATCH.reset(token)
        generations = watch.generations()
        reason = self._uncacheable(generations, headers)
        if reason is None and generations is not None:
            cache.put(key, CachedAnswer.of(result, generations))
        elif reason is not None:
            metrics.cache_uncached.labels(reason).inc()
        metrics.request_latency.observe(time.perf_counter() - started)
        return result, headers

    def _uncacheable(
        self, generations: dict[CollectionHome, HomeGeneration] | None, headers: dict[str, str]
    ) -> str | None:
        """Why an answer just computed may not be cached (None: it may)."""
        if headers.get("X-Librarian-Partial"):
            return "partial"
        if not generations:
            return "generation unknown"
        if not self.state.generations.settled(generations.values()):
            return "not settled"
        return None


def _by_id(
    pages: Sequence[Sequence[PointRecord]], *, versioned: bool = False
) -> dict[PointId, PointRecord]:
    """Records of several domains, each id once: the newest copy (the library's keys left out),
    or the first seen for a plain collection."""
    merged: dict[PointId, PointRecord] = {}
    for records in pages:
        for record in records:
            held = merged.get(record.id)
            if held is None or (versioned and _newer(record.payload, held.payload)):
                merged[record.id] = record
    if not versioned:
        return merged
    return {
        i: PointRecord(r.id, r.vector, user_payload(r.payload))
        for i, r in merged.items()
        if not is_tombstone(r.payload)  # the newest copy is a delete
    }


def _newer(payload: dict[str, Any], than: dict[str, Any]) -> bool:
    """Is this copy the one to keep? The newer version; at one version a live copy wins over a
    tombstone (left in a moving domain's homes by the write that took the point elsewhere)."""
    mine, theirs = version_of(payload), version_of(than)
    return mine > theirs or (mine == theirs and is_tombstone(than) and not is_tombstone(payload))


def _newest_hits(lists: list[list[Hit]]) -> list[list[Hit]]:
    """The lists without copies of a point older than its newest copy in any list."""
    newest: dict[PointId, int] = {}
    for hits in lists:
        for hit in hits:
            newest[hit.id] = max(newest.get(hit.id, 0), version_of(hit.payload))
    return [[h for h in hits if version_of(h.payload) >= newest[h.id]] for hits in lists]


def _public_hits(lists: list[list[Hit]], payload: bool, *, versioned: bool) -> list[list[Hit]]:
    """Hits as a client sees them: no payload unless asked, never the library's own keys."""
    if not versioned:
        return lists
    return [
        [replace(h, payload=user_payload(h.payload) if payload else None) for h in hits]
        for hits in lists
    ]


def _point_id(value: Any) -> PointId:
    return value if isinstance(value, int) else str(value)


def _jsonable(vector: Any) -> Any:
    """A point's vector(s) as JSON values (sparse vectors as their indices and values)."""
    if isinstance(vector, dict):
        return {name: _jsonable(value) for name, value in vector.items()}
    if isinstance(vector, models.SparseVector):
        return vector.model_dump(mode="json")
    return vector
