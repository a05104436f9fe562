"""Exact answers to Qdrant's universal query over every home of a library.

Why this exists: a library is one logical collection whose points live in
several homes (domain collections on several clusters), with copies that carry
a version and tombstones. Only a nearest search on the routing vector may be
approximate (routed to a few domains); every other query (named, sparse and
multi vectors, recommend, discover, context, order_by, formula, fusion,
sample, prefetch) must answer what one collection holding the newest copy of
every point would answer. This module does it by the standard exact
distributed top-k:

- each home is asked for the first ``offset + limit`` results (offset 0), its
  read filter added, the library's reserved keys added to the payload asked;
- copies are reduced to the newest one (a version check across every home
  drops a copy a newer copy or tombstone supersedes), the merged list is
  ordered as the query orders (distance direction, ``order_by``, score) and
  paged; a home whose list was cut short while dropped copies left places is
  asked deeper until the page is exact;
- example ids (recommend, discover, context, nearest by id, ``lookup_from``)
  are resolved into vectors across the library first, and excluded from the
  results as Qdrant excludes them;
- a query whose scores depend on other candidates (prefetch with fusion,
  formula or rescoring) runs in two phases: every prefetch's global candidates
  first (recursively), then the outer query over exactly those candidates
  (fusion at the router with Qdrant's formulas; a formula on each home over
  prefetches pinned to the candidates with their global scores).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY, RESERVED_KEYS, TOMBSTONE_KEY
from librarian.core.fusion import Hit
from librarian.core.query_fusion import distribution_based_score_fusion, reciprocal_rank_fusion
from librarian.router.copies import checked_size
from librarian.router.library import DomainRoute, View, combine_filters
from librarian.router.mmr import detect_distance, mmr_order
from librarian.router.qdrant_api import ApiError, id_order_key, parse_point_id
from librarian.router.upstream import FanOut, Upstream, UpstreamError, UpstreamUnavailable
from librarian.services.versioning import is_tombstone, user_payload, version_of
from librarian.storage.port import PointId, QdrantPort

__all__ = [
    "MAX_COUNT",
    "ExactQueries",
    "Ranked",
    "augmented_payload",
    "public_payload",
    "record_json",
    "scored_json",
    "top_level_selector",
    "validate_page",
]

_SAMPLE_ROUNDS = 8  # draws again for places superseded copies took, at most this often
MAX_COUNT = 1_000_000  # far above any sane page; keeps engines from allocating for absurd values
_RESERVED = list(RESERVED_KEYS)
_VERSION_KEYS = [POINT_VERSION_KEY, TOMBSTONE_KEY, LABEL_KEY]
_POINT_LOCAL = (
    models.NearestQuery,
    models.RecommendQuery,
    models.DiscoverQuery,
    models.ContextQuery,
    models.RelevanceFeedbackQuery,
    models.OrderByQuery,
    models.SampleQuery,
)
_QUERY_KINDS = (
    *_POINT_LOCAL,
    models.FusionQuery,
    models.RrfQuery,
    models.FormulaQuery,
    models.TextQuery,
)
SortKey = tuple[Any, ...]


@dataclass(frozen=True)
class Ranked:
    """One result: the point as the client sees it, the unit its kept copy came from."""

    point: models.ScoredPoint
    unit: int
    version: int


# ---------------------------------------------------------------------- validation and wire


def validate_page(limit: int | None, offset: int | None, *, what: str = "limit") -> tuple[int, int]:
    """A query's (limit, offset) as Qdrant checks them: a negative one does not parse (400), a
    limit below 1 breaks its rule (422); beyond :data:`MAX_COUNT` is refused (400)."""
    limit = checked_size(what, limit, 10, 1)
    offset = checked_size("offset", offset, 0, 0)
    for name, value in ((what, limit), ("offset", offset)):
        if value > MAX_COUNT:
            raise ApiError(400, f"Wrong input: {name} must be at most {MAX_COUNT:,}, got {value}")
    return limit, offset


def augmented_payload(selector: Any) -> Any:
    """The payload selector a home is asked with: the client's, plus the reserved keys that
    tell copies and tombstones apart (stripped again by :func:`public_payload`)."""
    if selector is None or selector is False:
        return models.PayloadSelectorInclude(include=list(_RESERVED))
    if selector is True:
        return True
    if isinstance(selector, list):
        return [*selector, *_RESERVED]
    if isinstance(selector, models.PayloadSelectorInclude):
        return models.PayloadSelectorInclude(include=[*selector.include, *_RESERVED])
    if isinstance(selector, models.PayloadSelectorExclude):
        return models.PayloadSelectorExclude(
            exclude=[k for k in selector.exclude if k not in RESERVED_KEYS]
        )
    return selector


def wants_any_payload(selector: Any) -> bool:
    return not (selector is None or selector is False)


def public_payload(
    payload: dict[str, Any] | None, selector: Any, versioned: bool
) -> dict[str, Any] | None:
    """The payload a client sees: none unless asked, never the library's reserved keys."""
    if not wants_any_payload(selector):
        return None
    if payload is None:
        return None
    return user_payload(payload) if versioned else payload


def scored_json(point: models.ScoredPoint | models.Record) -> dict[str, Any]:
    """A scored point or a record as Qdrant renders it (``shard_key`` / ``order_value`` only
    when set)."""
    data = point.model_dump(mode="json")
    for optional in ("shard_key", "order_value"):
        if data.get(optional) is None:
            data.pop(optional, None)
    return data


def record_json(record: models.Record) -> dict[str, Any]:
    """A retrieved or scrolled point as Qdrant renders it."""
    return scored_json(record)


def _id_of(value: Any) -> PointId:
    return value if isinstance(value, int) else str(value)


# ---------------------------------------------------------------------- a home's answer


def top_level_selector(selector: Any) -> bool:
    """Does this payload selector name top-level keys only (so that the router can apply it
    to a whole payload the way Qdrant does)?"""
    if isinstance(selector, bool | None):
        return True
    keys = selector if isinstance(selector, list) else None
    if isinstance(selector, models.PayloadSelectorInclude):
        keys = selector.include
    elif isinstance(selector, models.PayloadSelectorExclude):
        keys = selector.exclude
    return keys is not None and not any("." in k or "[" in k for k in keys)


def home_query(
    port: QdrantPort, collection: str, request: models.QueryRequest
) -> list[models.ScoredPoint]:
    """Ask one home Qdrant's universal query (its read filter already in ``request``)."""
    return port.query_points(collection, request)


# ---------------------------------------------------------------------- orders


@dataclass(frozen=True)
class _Order:
    """How merged results are ordered: a sort key (smaller first) and its primary part."""

    kind: str  # "higher", "lower", "asc", "desc", "id", "random"; "learn": from the answers

    def key(self, point: models.ScoredPoint) -> SortKey:
        ident = id_order_key(_id_of(point.id))
        if self.kind == "higher":
            return (-point.score, ident)
        if self.kind == "lower":
            return (point.score, ident)
        if self.kind in ("asc", "desc"):
            value = _order_value(point)
            return (value if self.kind == "asc" else -value, ident)
        return (0, ident)

    def primary(self, point: models.ScoredPoint) -> Any:
        """The part of the key a home's own order follows (the whole key in id order)."""
        key = self.key(point)
        return key if self.kind == "id" else key[0]


def _order_value(point: models.ScoredPoint) -> float:
    value = point.order_value
    if value is None:
        return float(point.score)
    if isinstance(value, int | float):
        return float(value)
    return float(value)


# ---------------------------------------------------------------------- the engine


class ExactQueries:
    """Qdrant's universal query over every unit of a view, exactly."""

    def __init__(
        self,
        upstream: Upstream,
        view_of: Callable[[str], Awaitable[View]],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.upstream = upstream
        self.view_of = view_of
        self.rng = rng or random.Random()
        self._directions: dict[tuple[str, str], bool] = {}  # (view, vector) -> higher is better
        self._corpus_weighted: dict[tuple[str, str, str], bool] = {}  # sparse vector uses IDF

    # ------------------------------------------------------------ entry point

    async def query(
        self, view: View, request: models.QueryRequest, timeout: float
    ) -> tuple[list[Ranked], list[str]]:
        """The page of ``request`` over every unit of ``view``, and the units that failed."""
        limit, offset = validate_page(request.limit, request.offset)
        if isinstance(request.query, models.TextQuery) and len(view.routes) > 1:
            raise ApiError(
                400,
                "Wrong input: a text (BM25) query scores by statistics of the whole collection, "
                "which the library's homes do not share; query one collection or use a vector",
            )
        request, excluded = await self._resolved(view, request, timeout)
        if excluded:
            request = request.model_copy(update={"filter": _without_ids(request.filter, excluded)})
        await self._refuse_corpus_weighting(view, request, timeout)
        prefetches = _prefetches(request)
        if prefetches:
            return await self._with_prefetch(view, request, prefetches, limit, offset, timeout)
        if isinstance(request.query, models.NearestQuery) and request.query.mmr is not None:
            return await self._mmr(view, request, limit, offset, timeout)
        if isinstance(request.query, models.SampleQuery):
            return await self._sample(view, request, limit, offset, timeout, None)
        units = list(range(len(view.routes)))
        order = self._order(view, request)
        return await self._exact(view, request, units, order, limit, offset, timeout)

    async def _refuse_corpus_weighting(
        self, view: View, request: models.QueryRequest, timeout: float
    ) -> None:
        """A sparse vector with Qdrant's IDF modifier scores by document frequencies of the
        whole collection, which each home computes over its own points only: refused over
        several homes. Told (once per library version and vector) by whether a home's score
        is the plain dot product of the query and the point's vector."""
        query = request.query
        sparse = query.nearest if isinstance(query, models.NearestQuery) else None
        if not isinstance(sparse, models.SparseVector) or len(view.routes) < 2:
            return
        key = (*self._direction_key(view, request), "idf")
        if key not in self._corpus_weighted:
            self._corpus_weighted[key] = await self._weighted(view, request, sparse, timeout)
        if self._corpus_weighted[key]:
            raise ApiError(
                400,
                f"Wrong input: sparse vector {request.using!r} is weighted by IDF, computed by "
                "each home over its own points only, so scores would differ from one "
                "collection's; query it without the IDF modifier or on one collection",
            )

    async def _weighted(
        self, view: View, request: models.QueryRequest, sparse: models.SparseVector, timeout: float
    ) -> bool:
        probe = models.QueryRequest(
            query=models.NearestQuery(nearest=sparse),
            using=request.using,
            limit=1,
            with_payload=False,
            with_vector=[str(request.using)],
        )
        answers = await self._ask(view, dict.fromkeys(range(len(view.routes)), probe), timeout)
        for _, points in answers.answered:
            for point in points:
                stored = (
                    point.vector.get(str(request.using)) if isinstance(point.vector, dict) else None
                )
                if isinstance(stored, models.SparseVector):
                    mine = dict(zip(sparse.indices, sparse.values, strict=True))
                    dot = sum(
                        mine.get(i, 0.0) * v
                        for i, v in zip(stored.indices, stored.values, strict=True)
                    )
                    return not np.isclose(dot, point.score, rtol=1e-3, atol=1e-5)
        return False  # no point scored: nothing to tell apart

    # ------------------------------------------------------------ resolving ids

    async def _resolved(
        self, view: View, request: models.QueryRequest, timeout: float
    ) -> tuple[models.QueryRequest, list[PointId]]:
        """``request`` with every example id turned into its vector, the ids to exclude."""
        query = request.query
        lookup = request.lookup_from
        source = view
        vector_name = request.using or ""
        if lookup is not None:
            source = await self.view_of(lookup.collection)
            vector_name = lookup.vector or vector_name
        if query is not None and not isinstance(query, _QUERY_KINDS):
            query = models.NearestQuery(nearest=query)  # a bare vector or id is a nearest query
        ids = _example_ids(query)
        if not ids:
            return request.model_copy(update={"query": query, "lookup_from": None}), []
        vectors = await self.vectors_of(source, ids, vector_name, timeout)
        missing = [i for i in ids if i not in vectors]
        if missing:
            raise ApiError(404, f"Not found: No point with id {missing[0]} found")
        resolved = _replace_ids(query, vectors)
        same = lookup is None or lookup.collection == _collection_name(view)
        excluded = ids if same else []  # examples from elsewhere are not this one's points
        return request.model_copy(update={"query": resolved, "lookup_from": None}), excluded

    async def vectors_of(
        self, view: View, ids: Sequence[PointId], vector_name: str, timeout: float
    ) -> dict[PointId, Any]:
        """The ``vector_name`` vector of the newest live copy of each of ``ids`` in ``view``."""
        wanted = list(dict.fromkeys(ids))
        selector: Any = True if vector_name == "" else [vector_name]
        records = await self._records(view, wanted, selector, timeout)
        found: dict[PointId, Any] = {}
        for point_id, record in records.items():
            vector: Any = record.vector
            if isinstance(vector, dict):
                vector = vector.get(vector_name)
            elif vector_name != "":
                vector = None
            if vector is None:
                raise ApiError(
                    400,
                    f"Wrong input: point {point_id} has no vector {vector_name or '(default)'!r}",
                )
            found[point_id] = vector
        return found

    async def _records(
        self, view: View, ids: list[PointId], with_vector: Any, timeout: float
    ) -> dict[PointId, models.Record]:
        """The newest live copy of each id across every unit, with ``with_vector``."""
        found = await self.retrieve(view, ids, False, with_vector, timeout, "resolving examples")
        return {_id_of(r.id): r for r in found}

    async def retrieve(
        self,
        view: View,
        ids: Sequence[PointId],
        selector: Any,
        with_vector: Any,
        timeout: float,
        what: str = "retrieve",
    ) -> list[models.Record]:
        """The newest copy of each of ``ids`` across every unit, in the order asked, each once
        (a tombstone hides older copies; missing ids left out); Qdrant's selectors."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        scroll = models.ScrollRequest(
            limit=len(wanted),
            filter=models.Filter(must=[models.HasIdCondition(has_id=list(wanted))]),
            with_payload=augmented_payload(selector) if view.routed else selector,
            with_vector=with_vector,
        )

        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[models.Record]]:
            request = scroll.model_copy(
                update={"filter": combine_filters(scroll.filter, route.slice_filter())}
            )
            return lambda port: home_scroll(port, route.collection, request)

        result = await self.upstream.fan_out(
            view, list(range(len(view.routes))), operation, timeout
        )
        newest: dict[PointId, models.Record] = {}
        for records in result.complete(what):
            for record in records:
                point_id = _id_of(record.id)
                held = newest.get(point_id)
                if held is None or _newer(record.payload, held.payload):
                    newest[point_id] = record
        return [
            newest[i].model_copy(
                update={"payload": public_payload(newest[i].payload, selector, view.routed)}
            )
            for i in wanted
            if i in newest and not (view.routed and is_tombstone(newest[i].payload))
        ]

    # ------------------------------------------------------------ the order of a query

    def _order(self, view: View, request: models.QueryRequest) -> _Order:
        """How the query's results are ordered (a named vector's direction may be learnt
        from the first answers)."""
        query = request.query
        if query is None:
            return _Order("id")
        if isinstance(query, models.OrderByQuery):
            order_by = query.order_by
            direction = (
                order_by.direction if isinstance(order_by, models.OrderBy) else None
            ) or models.Direction.ASC
            return _Order("desc" if direction == models.Direction.DESC else "asc")
        if isinstance(query, models.SampleQuery):
            return _Order("random")
        if isinstance(query, models.NearestQuery):
            vector = query.nearest
            if isinstance(vector, models.SparseVector):
                return _Order("higher")
            if (request.using or "") == view.vector:
                return _Order("higher" if view.higher_is_better else "lower")
            return self._known_direction(view, request)
        if isinstance(query, models.RecommendQuery) and query.recommend.strategy in (
            None,
            models.RecommendStrategy.AVERAGE_VECTOR,
        ):  # a nearest search of the examples' average: the vector's own order
            if (request.using or "") == view.vector:
                return _Order("higher" if view.higher_is_better else "lower")
            return self._known_direction(view, request)
        return _Order("higher")  # recommend by scores, discover, context, feedback, formula

    def _direction_key(self, view: View, request: models.QueryRequest) -> tuple[str, str]:
        version = view.library.definition.version if view.library else view.routes[0].key
        return version, str(request.using)

    def _known_direction(self, view: View, request: models.QueryRequest) -> _Order:
        """The order of a named vector's scores if already learnt; else to be learnt from the
        first answers."""
        known = self._directions.get(self._direction_key(view, request))
        if known is None:
            return _Order("learn")
        return _Order("higher" if known else "lower")

    async def _learned(
        self,
        view: View,
        request: models.QueryRequest,
        answers: dict[int, list[models.ScoredPoint]],
        timeout: float,
    ) -> _Order:
        """The order of a named vector's scores, learnt from the homes' own ranked answers: a
        list of two different scores shows it; else one home is asked with another's score as
        threshold (Qdrant's threshold keeps the better side)."""
        key = self._direction_key(view, request)
        heads: list[tuple[int, float]] = []
        for unit, points in sorted(answers.items()):
            scores = [p.score for p in points]
            change = next(((a, b) for a, b in itertools.pairwise(scores) if a != b), None)
            if change is not None:
                self._directions[key] = change[0] > change[1]
                return self._known_direction(view, request)
            if scores:
                heads.append((unit, scores[0]))
        if len({score for _, score in heads}) < 2:
            return _Order("higher")  # nothing to order: any direction gives the same page
        (unit, mine), other = heads[0], next(s for _, s in heads if s != heads[0][1])
        probe = request.model_copy(
            update={
                "limit": 1,
                "offset": None,
                "score_threshold": other,
                "with_payload": False,
                "with_vector": False,
                "prefetch": None,
            }
        )
        again = await self._ask(view, {unit: probe}, timeout)
        kept = bool(again.answered and again.answered[0][1])
        self._directions[key] = kept == (mine > other)
        return self._known_direction(view, request)

    # ------------------------------------------------------------ asking the homes

    async def _ask(
        self, view: View, requests: dict[int, models.QueryRequest], timeout: float
    ) -> FanOut[list[models.ScoredPoint]]:
        """Each unit's own request, its read filter added; the units' answers."""
        by_key = {view.routes[u].key: request for u, request in requests.items()}

        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[models.ScoredPoint]]:
            request = by_key[route.key]
            request = request.model_copy(
                update={"filter": combine_filters(request.filter, route.read_filter())}
            )
            return lambda port: home_query(port, route.collection, request)

        return await self.upstream.fan_out(view, list(requests), operation, timeout)

    async def _exact(
        self,
        view: View,
        request: models.QueryRequest,
        units: Sequence[int],
        order: _Order,
        limit: int,
        offset: int,
        timeout: float,
        *,
        pinned: dict[int, models.QueryRequest] | None = None,
    ) -> tuple[list[Ranked], list[str]]:
        """The exact page: every unit asked for ``offset + limit``, deeper where dropped copies
        left places a unit's unseen results could take. ``pinned`` gives some units a request
        of their own (the outer query over their share of the prefetch candidates)."""
        depth = offset + limit
        home_fields = {
            "offset": None,
            "lookup_from": None,
            "with_payload": augmented_payload(request.with_payload)
            if view.routed
            else request.with_payload,
        }
        base = request.model_copy(update=home_fields)
        own = {u: r.model_copy(update=home_fields) for u, r in (pinned or {}).items()}

        def ask(todo: dict[int, int]) -> Awaitable[FanOut[list[models.ScoredPoint]]]:
            requests = {
                u: own.get(u, base).model_copy(update={"limit": n}) for u, n in todo.items()
            }
            return self._ask(view, requests, timeout)

        async def learn(answers: dict[int, list[models.ScoredPoint]]) -> _Order:
            return await self._learned(view, request, answers, timeout)

        return await self.paged(
            view, units, order, depth, offset, request.with_payload, ask, timeout, learn=learn
        )

    async def paged(
        self,
        view: View,
        units: Sequence[int],
        order: _Order,
        depth: int,
        offset: int,
        selector: Any,
        ask: Callable[[dict[int, int]], Awaitable[FanOut[list[models.ScoredPoint]]]],
        timeout: float,
        *,
        learn: Callable[[dict[int, list[models.ScoredPoint]]], Awaitable[_Order]] | None = None,
    ) -> tuple[list[Ranked], list[str]]:
        """The exact ``depth`` first results over ``units`` (``ask`` gets how many each unit
        is to give), the first ``offset`` left out: deeper where superseded copies took places
        a unit's unseen results could take."""
        asked: dict[int, int] = {}
        answers: dict[int, list[models.ScoredPoint]] = {}
        failed: list[str] = []
        superseded: dict[PointId, int] = {}
        checked: set[Any] = set()
        todo = {u: depth for u in units}
        while True:
            if todo:
                try:
                    result = await ask(todo)
                except UpstreamError:
                    if not answers:
                        raise
                    # out of time while asking deeper: the page so far, flagged as partial
                    failed += [view.routes[u].key for u in todo]
                    units, todo = [u for u in units if u not in todo], {}
                    continue
                for unit, points in result.answered:
                    answers[unit] = points
                    asked[unit] = todo[unit]
                todo = {}
                failed += result.failed
                units = [u for u in units if u in answers]
            if order.kind == "learn":
                if learn is None:
                    raise ValueError("an order to learn needs a way to learn it")
                order = await learn(answers)
            merged = _merge(answers, superseded, order, view.routed, selector)
            if view.routed and len(view.routes) > 1:
                page_ids = [r.point.id for r in merged[:depth] if r.point.id not in checked]
                if page_ids:
                    newest = await self.newest_versions(
                        view, [_id_of(i) for i in page_ids], timeout
                    )
                    checked.update(page_ids)
                    stale = {
                        i: v
                        for i, v in newest.items()
                        if any(_id_of(r.point.id) == i and r.version < v for r in merged[:depth])
                    }
                    if stale:
                        superseded.update(stale)
                        continue
            todo = _deeper(units, answers, asked, merged, depth, order)
            if not todo or order.kind == "random":
                return merged[offset:depth], failed

    async def newest_versions(
        self,
        view: View,
        ids: list[PointId],
        timeout: float,
        routes: Sequence[DomainRoute] | None = None,
    ) -> dict[PointId, int]:
        """The newest version of each id in any home of the view (tombstones and the homes of
        moves in flight included), or in the homes of ``routes`` only. A home that does not
        answer is left out: the answer it would have completed is already partial."""

        def versions(port: QdrantPort, collection: str) -> list[tuple[PointId, int]]:
            records = port.retrieve(
                collection, ids, with_vectors=False, with_payload=list(_VERSION_KEYS)
            )
            return [(r.id, version_of(r.payload)) for r in records]

        homes = (
            list(view.homes().values())
            if routes is None
            else list({route.home: route for route in routes}.values())
        )
        answers = await asyncio.gather(
            *(
                self.upstream.call(
                    route, functools.partial(_call_with, versions, route.collection), timeout
                )
                for route in homes
            ),
            return_exceptions=True,
        )
        newest: dict[PointId, int] = {}
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                continue
            for point_id, version in answer:
                newest[point_id] = max(newest.get(point_id, 0), version)
        return newest

    # ------------------------------------------------------------ scroll

    async def scroll(
        self, view: View, body: models.ScrollRequest, timeout: float
    ) -> tuple[list[Ranked], PointId | None, list[str]]:
        """One scroll page over every unit: id order (and the next page's offset), or the
        ``order_by`` value's order merged across units (ties by id; no next offset, as Qdrant
        answers), each point's newest copy, with Qdrant's payload and vector selectors."""
        limit, _ = validate_page(body.limit, 0)
        if body.offset is not None:  # a bad id is the request's fault, refused before any call
            body = body.model_copy(update={"offset": parse_point_id(body.offset)})
        order_by = body.order_by
        if order_by is None:
            order = _Order("id")
        else:
            direction = (
                order_by.direction if isinstance(order_by, models.OrderBy) else None
            ) or models.Direction.ASC
            order = _Order("desc" if direction == models.Direction.DESC else "asc")
        selector = body.with_payload if body.with_payload is not None else True
        asked_with = augmented_payload(selector) if view.routed else selector
        depth = limit + (1 if order_by is None else 0)  # one more: the next page's offset
        by_key: dict[str, int] = {}

        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[models.ScoredPoint]]:
            request = body.model_copy(
                update={
                    "limit": by_key[route.key],
                    "filter": combine_filters(body.filter, route.read_filter()),
                    "with_payload": asked_with,
                }
            )
            return lambda port: [_scored(r) for r in home_scroll(port, route.collection, request)]

        def ask(todo: dict[int, int]) -> Awaitable[FanOut[list[models.ScoredPoint]]]:
            by_key.update({view.routes[u].key: n for u, n in todo.items()})
            return self.upstream.fan_out(view, list(todo), operation, timeout)

        units = list(range(len(view.routes)))
        page, failed = await self.paged(view, units, order, depth, 0, selector, ask, timeout)
        if failed:
            raise UpstreamUnavailable(
                f"scroll needs every domain; no answer from {', '.join(failed)}"
            )
        following = page[limit].point.id if order_by is None and len(page) > limit else None
        return page[:limit], (None if following is None else _id_of(following)), failed

    # ------------------------------------------------------------ sampling

    async def _sample(
        self,
        view: View,
        request: models.QueryRequest,
        limit: int,
        offset: int,
        timeout: float,
        pinned: dict[int, models.QueryRequest] | None,
    ) -> tuple[list[Ranked], list[str]]:
        """A uniform random sample of the library's matching points: how many come from each
        unit is drawn in proportion to its matching points (without replacement), then each
        unit samples its share at random. A drawn copy that a newer one supersedes is left
        out and its place drawn again (from what is left). As in Qdrant, ``offset`` does not
        apply to a random sample: skipping the first points of a random draw only shortens it."""
        units = list(pinned) if pinned is not None else list(range(len(view.routes)))
        requests = pinned or {u: request for u in units}
        drawn: dict[int, list[PointId]] = {u: [] for u in units}  # copies drawn, per unit
        kept: dict[PointId, Ranked] = {}
        failed: list[str] = []
        del offset  # a random sample has no order to skip into
        wanted = limit
        for _ in range(_SAMPLE_ROUNDS):
            need = wanted - len(kept)
            if need <= 0:
                break
            narrowed = {
                u: r.model_copy(update={"filter": _without_ids(r.filter, drawn[u])})
                if drawn[u]
                else r
                for u, r in requests.items()
            }
            got, missing = await self._sample_round(view, narrowed, need, request, timeout)
            failed += missing
            if not got:
                break
            for ranked in got:
                drawn[ranked.unit].append(_id_of(ranked.point.id))
            if view.routed and len(view.routes) > 1:
                newest = await self.newest_versions(
                    view, [_id_of(r.point.id) for r in got], timeout
                )
                got = [r for r in got if r.version >= newest.get(_id_of(r.point.id), 0)]
            for ranked in got:
                kept.setdefault(_id_of(ranked.point.id), ranked)
        sample = list(kept.values())
        self.rng.shuffle(sample)
        return sample[:wanted], failed

    async def _sample_round(
        self,
        view: View,
        requests: dict[int, models.QueryRequest],
        need: int,
        client: models.QueryRequest,
        timeout: float,
    ) -> tuple[list[Ranked], list[str]]:
        """``need`` points drawn at random among the units' matching points."""
        by_key = {view.routes[u].key: r for u, r in requests.items()}

        def counting(route: DomainRoute) -> Callable[[QdrantPort], int]:
            wanted = by_key[route.key].filter
            return lambda port: port.count(
                route.collection, count_filter=combine_filters(wanted, route.read_filter())
            )

        counted = await self.upstream.fan_out(view, list(requests), counting, timeout)
        counts = dict(counted.answered)
        present = [u for u in requests if counts.get(u, 0) > 0]
        total = sum(counts[u] for u in present)
        if total == 0:
            return [], counted.failed
        draw = np.random.default_rng(self.rng.randrange(2**32)).multivariate_hypergeometric(
            [counts[u] for u in present], min(need, total)
        )
        payload = augmented_payload(client.with_payload) if view.routed else client.with_payload
        asks = {
            u: requests[u].model_copy(
                update={"limit": int(n), "offset": None, "with_payload": payload}
            )
            for u, n in zip(present, draw, strict=True)
            if n > 0
        }
        result = await self._ask(view, asks, timeout)
        got = [
            Ranked(
                p.model_copy(
                    update={"payload": public_payload(p.payload, client.with_payload, view.routed)}
                ),
                unit,
                version_of(p.payload) if view.routed else 0,
            )
            for unit, points in result.answered
            for p in points
            if not (view.routed and is_tombstone(p.payload))
        ]
        return got, counted.failed + result.failed

    # ------------------------------------------------------------ mmr

    async def _mmr(
        self, view: View, request: models.QueryRequest, limit: int, offset: int, timeout: float
    ) -> tuple[list[Ranked], list[str]]:
        """Maximal marginal relevance: the query's exact global nearest candidates (with the
        vector it names), then Qdrant's diversity pick among them at the router."""
        query = request.query
        assert isinstance(query, models.NearestQuery)
        assert query.mmr is not None
        vector = query.nearest
        if not (isinstance(vector, list) and vector and isinstance(vector[0], int | float)):
            if _one_collection(view):  # its own index holds every candidate: it answers
                return await self._in_one_collection(view, request, limit, offset, timeout)
            raise ApiError(
                400,
                "Wrong input: mmr over a library is served for dense vectors; sparse and "
                "multi-vector candidates need the whole collection's index",
            )
        name = request.using or ""
        diversity = query.mmr.diversity if query.mmr.diversity is not None else 0.5
        if not 0.0 <= diversity <= 1.0:
            raise ApiError(400, "Wrong input: mmr diversity must be between 0 and 1")
        pool = query.mmr.candidates_limit if query.mmr.candidates_limit is not None else limit
        candidates_request = request.model_copy(
            update={
                "query": models.NearestQuery(nearest=vector),
                "limit": pool,
                "offset": None,
                "with_vector": True,
            }
        )
        candidates, failed = await self.query(view, candidates_request, timeout)
        if not candidates:
            return [], failed
        rows = [_named_vector(r.point.vector, name) for r in candidates]
        vectors = np.asarray(rows, dtype=np.float64)
        distance = (
            str(view.library.distance)
            if view.library is not None and name == view.vector
            else detect_distance(vector, vectors, [r.point.score for r in candidates])
        )
        if distance is None:
            raise ApiError(
                400,
                f"Wrong input: the distance of vector {name!r} could not be told from its scores",
            )
        picked = mmr_order(vector, vectors, distance, diversity, offset + limit)[offset:]
        return [_with_vectors(candidates[i], request.with_vector) for i in picked], failed

    async def _in_one_collection(
        self, view: View, request: models.QueryRequest, limit: int, offset: int, timeout: float
    ) -> tuple[list[Ranked], list[str]]:
        """The whole query (offset included) asked of the one collection a plain view names."""
        whole = request.model_copy(
            update={"limit": limit, "offset": offset or None, "lookup_from": None}
        )
        answers = await self._ask(view, {0: whole}, timeout)
        return [Ranked(p, unit, 0) for unit, points in answers.answered for p in points], (
            answers.failed
        )

    # ------------------------------------------------------------ prefetch

    async def _with_prefetch(
        self,
        view: View,
        request: models.QueryRequest,
        prefetches: list[models.Prefetch],
        limit: int,
        offset: int,
        timeout: float,
    ) -> tuple[list[Ranked], list[str]]:
        """Two phases: each prefetch's global candidates, then the outer query over them."""
        failed: list[str] = []
        candidates: list[list[Ranked]] = []
        resolved: list[models.QueryRequest] = []
        for prefetch in prefetches:
            inner = _as_request(prefetch, request)
            inner, excluded = await self._resolved(view, inner, timeout)
            if excluded:
                inner = inner.model_copy(update={"filter": _without_ids(inner.filter, excluded)})
            hits, missing = await self.query(view, inner, timeout)
            candidates.append(hits)
            resolved.append(inner)
            failed += missing
        query = request.query
        depth = offset + limit
        if query is None or isinstance(query, models.FusionQuery | models.RrfQuery):
            fused = _fused(candidates, query, depth)
            if request.score_threshold is not None:
                fused = [r for r in fused if r.point.score >= request.score_threshold]
            return fused[offset:depth], failed
        if isinstance(query, models.NearestQuery) and query.mmr is not None:
            return await self._mmr(view, request, limit, offset, timeout)
        held = _held_by_unit(candidates)
        if not held:
            return [], failed
        outer = request.model_copy(update={"prefetch": None})
        if isinstance(query, models.FormulaQuery):
            pinned = {
                unit: outer.model_copy(
                    update={"prefetch": _pinned_prefetches(resolved, candidates, unit)}
                )
                for unit in held
            }
            order = _Order("higher")
        elif isinstance(query, _POINT_LOCAL):
            pinned = {
                unit: outer.model_copy(update={"filter": _with_ids(outer.filter, ids)})
                for unit, ids in held.items()
            }
            if isinstance(query, models.SampleQuery):
                page, missing = await self._sample(view, outer, limit, offset, timeout, pinned)
                return page, failed + missing
            order = self._order(view, outer)
        else:
            raise ApiError(400, f"Wrong input: query {type(query).__name__} is not served")
        page, missing = await self._exact(
            view, outer, list(held), order, limit, offset, timeout, pinned=pinned
        )
        return page, failed + missing


# ---------------------------------------------------------------------- helpers


def _one_collection(view: View) -> bool:
    """Does the view name one plain collection (no library, no copies, no move in flight)?"""
    return not view.routed and len(view.routes) == 1 and len(view.homes()) == 1


def _prefetches(request: models.QueryRequest | models.Prefetch) -> list[models.Prefetch]:
    prefetch = request.prefetch
    if prefetch is None:
        return []
    return list(prefetch) if isinstance(prefetch, list) else [prefetch]


def _as_request(prefetch: models.Prefetch, outer: models.QueryRequest) -> models.QueryRequest:
    """A prefetch as a query of its own: the outer filter applies to it too (as in Qdrant)."""
    return models.QueryRequest(
        prefetch=prefetch.prefetch,
        query=prefetch.query,
        using=prefetch.using,
        filter=combine_filters(outer.filter, prefetch.filter),
        params=prefetch.params,
        score_threshold=prefetch.score_threshold,
        limit=prefetch.limit if prefetch.limit is not None else 10,
        with_payload=outer.with_payload,
        with_vector=outer.with_vector,
        lookup_from=prefetch.lookup_from,
    )


def _examples(query: Any) -> list[Any]:
    """Every example a query names (vectors or ids), in order."""
    if isinstance(query, models.NearestQuery):
        return [query.nearest]
    if isinstance(query, models.RecommendQuery):
        return [*(query.recommend.positive or []), *(query.recommend.negative or [])]
    pairs: list[models.ContextPair] = []
    head: list[Any] = []
    if isinstance(query, models.DiscoverQuery):
        head, pairs = [query.discover.target], _pairs(query.discover.context)
    elif isinstance(query, models.ContextQuery):
        pairs = _pairs(query.context)
    elif isinstance(query, models.RelevanceFeedbackQuery):
        feedback = query.relevance_feedback
        head = [feedback.target, *(item.example for item in feedback.feedback)]
    return [*head, *(v for p in pairs for v in (p.positive, p.negative))]


def _example_ids(query: Any) -> list[PointId]:
    """Every point id a query names as an example (in order, each once)."""
    found = [
        parse_point_id(value if isinstance(value, int) else str(value))
        for value in _examples(query)
        if isinstance(value, int | str | uuid.UUID) and not isinstance(value, bool)
    ]
    return list(dict.fromkeys(found))


def _scored(record: models.Record) -> models.ScoredPoint:
    """A scroll record as a scored point (score 0), so one merge serves both."""
    return models.ScoredPoint(
        id=record.id,
        version=0,
        score=0.0,
        payload=record.payload,
        vector=record.vector,
        order_value=record.order_value,
    )


def home_scroll(
    port: QdrantPort, collection: str, request: models.ScrollRequest
) -> list[models.Record]:
    """One home's scroll page by Qdrant's own scroll."""
    return port.scroll_points(collection, request)[0]


def _pairs(context: Any) -> list[models.ContextPair]:
    if context is None:
        return []
    return list(context) if isinstance(context, list) else [context]


def _replace_ids(query: Any, vectors: dict[PointId, Any]) -> Any:
    """``query`` with each example id replaced by its vector."""

    def swap(value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | str | uuid.UUID):
            return vectors[parse_point_id(value if isinstance(value, int) else str(value))]
        return value

    def pair(p: models.ContextPair) -> models.ContextPair:
        return models.ContextPair(positive=swap(p.positive), negative=swap(p.negative))

    if isinstance(query, models.NearestQuery):
        return query.model_copy(update={"nearest": swap(query.nearest)})
    if isinstance(query, models.RecommendQuery):
        given = query.recommend
        return models.RecommendQuery(
            recommend=models.RecommendInput(
                positive=[swap(v) for v in given.positive] if given.positive is not None else None,
                negative=[swap(v) for v in given.negative] if given.negative is not None else None,
                strategy=given.strategy,
            )
        )
    if isinstance(query, models.DiscoverQuery):
        return models.DiscoverQuery(
            discover=models.DiscoverInput(
                target=swap(query.discover.target),
                context=[pair(p) for p in _pairs(query.discover.context)],
            )
        )
    if isinstance(query, models.ContextQuery):
        return models.ContextQuery(context=[pair(p) for p in _pairs(query.context)])
    if isinstance(query, models.RelevanceFeedbackQuery):
        given_feedback = query.relevance_feedback
        return models.RelevanceFeedbackQuery(
            relevance_feedback=models.RelevanceFeedbackInput(
                target=swap(given_feedback.target),
                feedback=[
                    item.model_copy(update={"example": swap(item.example)})
                    for item in given_feedback.feedback
                ],
                strategy=given_feedback.strategy,
            )
        )
    return query


def _without_ids(query_filter: models.Filter | None, ids: Sequence[PointId]) -> models.Filter:
    """``query_filter`` and none of ``ids`` (the examples a query names are not results)."""
    exclusion = models.Filter(must_not=[models.HasIdCondition(has_id=list(ids))])
    return combine_filters(query_filter, exclusion) or exclusion


def _with_ids(query_filter: models.Filter | None, ids: Sequence[PointId]) -> models.Filter:
    only = models.Filter(must=[models.HasIdCondition(has_id=list(ids))])
    return combine_filters(query_filter, only) or only


def _merge(
    answers: dict[int, list[models.ScoredPoint]],
    superseded: dict[PointId, int],
    order: _Order,
    versioned: bool,
    selector: Any,
) -> list[Ranked]:
    """The units' answers as one ordered list: each id's newest live copy. A copy appears
    once, or once per value when ordered by a field holding several (as Qdrant's
    ``order_by`` answers), all from the unit that holds the kept copy."""
    best: dict[PointId, tuple[int, int]] = {}  # the kept copy's (version, unit), by id
    entries: list[tuple[int, models.ScoredPoint, int]] = []
    for unit in sorted(answers):
        for point in answers[unit]:
            point_id = _id_of(point.id)
            version = version_of(point.payload) if versioned else 0
            if versioned and (
                is_tombstone(point.payload) or superseded.get(point_id, -1) > version
            ):
                continue
            held = best.get(point_id)
            if held is None or version > held[0]:
                best[point_id] = (version, unit)
            entries.append((unit, point, version))
    kept = [
        Ranked(
            point.model_copy(
                update={"payload": public_payload(point.payload, selector, versioned)}
            ),
            unit,
            version,
        )
        for unit, point, version in entries
        if best[_id_of(point.id)] == (version, unit)
    ]
    return sorted(kept, key=lambda r: order.key(r.point))


def _held_by_unit(candidates: list[list[Ranked]]) -> dict[int, list[PointId]]:
    """The prefetch candidates by the unit holding the copy kept for each."""
    held: dict[int, list[PointId]] = {}
    for hits in candidates:
        for ranked in hits:
            ids = held.setdefault(ranked.unit, [])
            point_id = _id_of(ranked.point.id)
            if point_id not in ids:
                ids.append(point_id)
    return held


def _pinned_prefetches(
    resolved: list[models.QueryRequest], candidates: list[list[Ranked]], unit: int
) -> list[models.Prefetch]:
    """Per prefetch, one that gives on ``unit`` exactly its share of the global candidates,
    with their global scores: the same query restricted to those ids. A prefetch whose
    scores depend on other candidates cannot be pinned so: refused."""
    pinned = []
    for inner, hits in zip(resolved, candidates, strict=True):
        point_local = inner.query is None or isinstance(inner.query, _POINT_LOCAL)
        if inner.prefetch is not None or not point_local:  # no query: points by id, unscored
            raise ApiError(
                400,
                "Wrong input: a formula over a prefetch that is itself fused or re-scored "
                "needs every candidate's score at once, which the library's homes cannot "
                "compute apart; use a formula over plain prefetches",
            )
        ids = [_id_of(r.point.id) for r in hits if r.unit == unit]
        pinned.append(
            models.Prefetch(
                query=inner.query,
                using=inner.using,
                filter=_with_ids(inner.filter, ids),  # none held here: matches nothing
                params=inner.params,
                limit=max(1, len(ids)),
            )
        )
    return pinned


def _fused(candidates: list[list[Ranked]], query: Any, depth: int) -> list[Ranked]:
    """Prefetch results fused as Qdrant fuses them (RRF, DBSF), or the only prefetch's."""
    if query is None:
        return candidates[0][:depth]
    by_id: dict[PointId, Ranked] = {}
    lists: list[list[Hit]] = []
    for hits in candidates:
        lists.append([Hit(_id_of(r.point.id), r.point.score) for r in hits])
        for r in hits:
            by_id.setdefault(_id_of(r.point.id), r)
    if isinstance(query, models.RrfQuery):
        try:
            fused = reciprocal_rank_fusion(
                lists, limit=depth, k=query.rrf.k, weights=query.rrf.weights
            )
        except ValueError as error:
            raise ApiError(400, f"Wrong input: {error}") from None
    elif query.fusion == models.Fusion.RRF:
        fused = reciprocal_rank_fusion(lists, limit=depth)
    elif query.fusion == models.Fusion.DBSF:
        fused = distribution_based_score_fusion(lists, limit=depth)
    else:
        raise ApiError(400, f"Wrong input: fusion {query.fusion!r} is not one of rrf, dbsf")
    result = []
    for hit in fused:
        held = by_id[hit.id]
        result.append(
            Ranked(held.point.model_copy(update={"score": hit.score}), held.unit, held.version)
        )
    return result


def _collection_name(view: View) -> str:
    return view.library.name if view.library is not None else view.routes[0].collection


def _call_with(
    action: Callable[[QdrantPort, str], list[tuple[PointId, int]]],
    collection: str,
    port: QdrantPort,
) -> list[tuple[PointId, int]]:
    return action(port, collection)


def _newer(payload: dict[str, Any] | None, than: dict[str, Any] | None) -> bool:
    """Is this copy the one to keep? The newer version; at one version a live copy wins over
    a tombstone (left in a moving domain's homes by the write that took the point elsewhere)."""
    mine, theirs = version_of(payload), version_of(than)
    return mine > theirs or (mine == theirs and is_tombstone(than) and not is_tombstone(payload))


def _named_vector(vector: Any, name: str) -> list[float]:
    """The dense vector ``name`` of a point's vectors (a list is the unnamed one)."""
    value = vector.get(name) if isinstance(vector, dict) else vector
    if not isinstance(value, list):
        raise ApiError(400, f"Wrong input: the candidates have no dense vector {name!r}")
    return [float(x) for x in value]


def _with_vectors(ranked: Ranked, selector: Any) -> Ranked:
    """A result with only the vectors the client asked for."""
    vector = ranked.point.vector
    if selector is None or selector is False:
        vector = None
    elif isinstance(selector, list) and isinstance(vector, dict):
        vector = {k: v for k, v in vector.items() if k in selector}
    return Ranked(ranked.point.model_copy(update={"vector": vector}), ranked.unit, ranked.version)


def _deeper(
    units: Sequence[int],
    answers: dict[int, list[models.ScoredPoint]],
    asked: dict[int, int],
    merged: list[Ranked],
    depth: int,
    order: _Order,
) -> dict[int, int]:
    """The units to ask again, twice as deep: those that had more to give and whose next
    results could still rank within the page (dropped copies left places for them)."""
    todo: dict[int, int] = {}
    for unit in units:
        points = answers[unit]
        if len(points) < asked[unit]:
            continue  # the unit has nothing more
        boundary = order.primary(points[-1])
        if len(merged) < depth or order.primary(merged[depth - 1].point) > boundary:
            todo[unit] = asked[unit] * 2
    return todo
