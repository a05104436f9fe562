"""Qdrant's grouped queries over a library: the best groups and their best points, exactly.

Why this exists: ``query_points_groups`` (and the legacy ``search/groups`` and
``recommend/groups``) rank groups by their best point and fill each with its
best ``group_size`` points. A group's points may be spread over several homes,
and a home's own best groups are not the library's, so neither the homes'
groups nor a merge of them is the answer. Two phases make it exact:

1. ranking: every home's best hits, asked deeper until the hits better than
   anything a home may still hold name at least ``limit`` groups (each hit the
   newest copy of its point, found by asking every home);
2. filling: for each of those groups, every home's best hits carrying its
   value, merged the same way, the first ``group_size`` kept.

Queries whose scores depend on the other candidates (prefetch, ``mmr``) are
refused: per home they would be scored against that home's candidates only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from qdrant_client.http import models
from qdrant_client.local.payload_value_extractor import value_by_key

from librarian.core.fusion import PointId
from librarian.router.copies import (
    checked_path,
    checked_size,
    every_home,
    higher_is_better,
    home_filter,
    is_newest,
    newest_copies,
    point_key,
    public,
    resolve_query,
)
from librarian.router.library import DomainRoute, View
from librarian.router.qdrant_api import ApiError, id_order_key, parse_point_id, record_json
from librarian.router.query import Querying
from librarian.router.state import RouterState
from librarian.storage.port import QdrantPort

__all__ = [
    "MAX_HITS_PER_HOME",
    "GroupedQueries",
    "RecommendGroupsRequest",
    "SearchGroupsRequest",
    "group_ids",
]

MAX_HITS_PER_HOME = 10_000
"""The deepest a home is asked for its ranked hits; a grouping that needs more is refused."""

GroupId = int | str


class SearchGroupsRequest(BaseModel):
    """Qdrant's legacy ``/points/search/groups`` body."""

    model_config = ConfigDict(extra="forbid")

    vector: Any
    filter: models.Filter | None = None
    params: models.SearchParams | None = None
    with_payload: models.WithPayloadInterface | None = None
    with_vector: models.WithVector | None = None
    score_threshold: float | None = None
    group_by: str
    group_size: int
    limit: int
    with_lookup: models.WithLookupInterface | None = None
    shard_key: Any = None


class RecommendGroupsRequest(BaseModel):
    """Qdrant's legacy ``/points/recommend/groups`` body."""

    model_config = ConfigDict(extra="forbid")

    positive: list[Any] | None = None
    negative: list[Any] | None = None
    strategy: models.RecommendStrategy | None = None
    filter: models.Filter | None = None
    params: models.SearchParams | None = None
    with_payload: models.WithPayloadInterface | None = None
    with_vector: models.WithVector | None = None
    score_threshold: float | None = None
    using: str | None = None
    lookup_from: models.LookupLocation | None = None
    group_by: str
    group_size: int
    limit: int
    with_lookup: models.WithLookupInterface | None = None
    shard_key: Any = None


def group_ids(payload: dict[str, Any] | None, group_by: str) -> list[GroupId]:
    """The groups a point is in, as Qdrant sees them: each distinct string or integer value at
    ``group_by`` (array values each once); none if any value there is of another type."""
    values = value_by_key(payload or {}, group_by)
    if not values or any(type(v) not in (int, str) for v in values):
        return []
    return list(dict.fromkeys(values))


def _from_search(body: SearchGroupsRequest) -> models.QueryGroupsRequest:
    vector, using = body.vector, None
    if isinstance(vector, dict) and "name" in vector and "vector" in vector:
        vector, using = vector["vector"], vector["name"]
    return models.QueryGroupsRequest(
        query=models.NearestQuery(nearest=vector),
        using=using,
        filter=body.filter,
        params=body.params,
        with_payload=body.with_payload,
        with_vector=body.with_vector,
        score_threshold=body.score_threshold,
        group_by=body.group_by,
        group_size=body.group_size,
        limit=body.limit,
        with_lookup=body.with_lookup,
    )


def _from_recommend(body: RecommendGroupsRequest) -> models.QueryGroupsRequest:
    return models.QueryGroupsRequest(
        query=models.RecommendQuery(
            recommend=models.RecommendInput(
                positive=body.positive, negative=body.negative, strategy=body.strategy
            )
        ),
        using=body.using,
        lookup_from=body.lookup_from,
        filter=body.filter,
        params=body.params,
        with_payload=body.with_payload,
        with_vector=body.with_vector,
        score_threshold=body.score_threshold,
        group_by=body.group_by,
        group_size=body.group_size,
        limit=body.limit,
        with_lookup=body.with_lookup,
    )


@dataclass(frozen=True)
class _Hit:
    """A ranked copy of a point: where it is, its score and what the grouping needs of it."""

    point: models.ScoredPoint
    route: DomainRoute

    @property
    def key(self) -> PointId:
        return point_key(self.point.id)


@dataclass(frozen=True)
class _Ranked:
    """The hits better than anything a home may still hold (each point once, newest copy)."""

    hits: list[_Hit]
    complete: bool  # no home holds any further hit


def _validated(body: models.QueryGroupsRequest) -> tuple[int, int]:
    limit = checked_size("limit", body.limit, 10, 1)
    group_size = checked_size("group_size", body.group_size, 3, 1)
    checked_path("group_by", body.group_by)
    if body.prefetch:
        raise ApiError(
            400,
            "Bad request: prefetch in a grouped query is not served over a library: each home "
            "would fuse or rescore only its own candidates; query the groups without prefetch",
        )
    query = body.query
    if isinstance(query, models.NearestQuery) and query.mmr is not None:
        raise ApiError(
            400,
            "Bad request: mmr in a grouped query is not served over a library: its diversity "
            "depends on every candidate; query the groups without mmr",
        )
    if isinstance(query, models.FusionQuery | models.RrfQuery):
        raise ApiError(400, "Bad request: a fusion query needs prefetch")
    if query is None:
        raise ApiError(400, "Bad request: a grouped query needs a query")
    return limit, group_size


class GroupedQueries:
    """Runs grouped queries over a view: rank groups, fill them, look them up."""

    def __init__(self, state: RouterState) -> None:
        self.state = state

    async def search_groups(self, view: View, body: SearchGroupsRequest, timeout: float) -> Any:
        return await self.query_groups(view, _from_search(body), timeout)

    async def recommend_groups(
        self, view: View, body: RecommendGroupsRequest, timeout: float
    ) -> Any:
        return await self.query_groups(view, _from_recommend(body), timeout)

    async def query_groups(
        self, view: View, body: models.QueryGroupsRequest, timeout: float
    ) -> dict[str, Any]:
        """The ``{"groups": [...]}`` result of a grouped query, as Qdrant answers it."""
        limit, group_size = _validated(body)
        upstream = self.state.upstream
        query: Any = body.query
        if isinstance(query, list):
            query = models.NearestQuery(nearest=query)
        lookup_view = None
        if body.lookup_from is not None:
            lookup_view = await self.state.view(body.lookup_from.collection)
        query, excluded = await resolve_query(
            upstream,
            view,
            query,
            body.using,
            timeout,
            lookup_view=lookup_view,
            lookup_vector=body.lookup_from.vector if body.lookup_from else None,
        )
        base = models.QueryRequest(
            query=query,
            using=body.using,
            filter=_excluding(body.filter, excluded),
            params=body.params,
            score_threshold=body.score_threshold,
            with_payload=True,
            with_vector=False,
        )
        group_by = body.group_by
        chosen = (await self._ranked_groups(view, base, group_by, limit, timeout))[:limit]
        members = await asyncio.gather(
            *(self._members(view, base, group_by, group, group_size, timeout) for group in chosen)
        )
        shown = await self._shown(view, [h for hits in members for h in hits], body, timeout)
        groups = [
            {"id": group, "hits": [shown[(h.route.key, h.key)] for h in hits]}
            for group, hits in zip(chosen, members, strict=True)
        ]
        if body.with_lookup is not None:
            await self._look_up(groups, body.with_lookup, timeout)
        return {"groups": groups}

    # ------------------------------------------------------------ ranking

    async def _ranked(
        self, view: View, base: models.QueryRequest, depth: dict[str, int], timeout: float
    ) -> _Ranked:
        """Every home's best ``depth`` hits merged: those better than what a home may still hold
        (each point once, its newest copy), and whether that is all there is."""

        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[models.ScoredPoint]]:
            request = base.model_copy(
                update={"filter": home_filter(route, base.filter), "limit": depth[route.key]}
            )
            return lambda port: port.query_points(route.collection, request)

        answers = await every_home(self.state.upstream, view, operation, timeout, "a grouped query")
        by_order = isinstance(base.query, models.OrderByQuery)

        def rank(point: models.ScoredPoint) -> float:
            """What the query orders by: the score, or the ordered value of ``order_by``."""
            value = point.order_value if by_order else point.score
            return float(value) if value is not None else 0.0

        higher = await higher_is_better(
            self.state.upstream,
            view,
            base.query,
            base.using,
            [[rank(p) for p in points] for _, points in answers],
            timeout,
        )
        truncated = [
            rank(points[-1]) for route, points in answers if len(points) >= depth[route.key]
        ]
        bound = (max if higher else min)(truncated) if truncated else None

        def settled(value: float) -> bool:  # better than any hit a truncated home still holds
            return bound is None or (value > bound if higher else value < bound)

        hits = [_Hit(p, route) for route, points in answers for p in points if settled(rank(p))]
        hits.sort(
            key=lambda h: (
                -rank(h.point) if higher else rank(h.point),
                id_order_key(point_key(h.point.id)) if by_order else (0, 0, ""),
            )
        )
        newest = await newest_copies(self.state.upstream, view, (h.key for h in hits), timeout)
        seen: set[PointId] = set()
        kept = []
        for hit in hits:
            if hit.key not in seen and is_newest(newest, hit.point.id, hit.point.payload):
                seen.add(hit.key)
                kept.append(hit)
        return _Ranked(kept, complete=not truncated)

    async def _ranked_groups(
        self, view: View, base: models.QueryRequest, group_by: str, limit: int, timeout: float
    ) -> list[GroupId]:
        """The groups in order of their best point: at least ``limit`` of them (or all there
        are), each placed by a hit no home can still beat."""
        depth = min(max(4 * limit, 32), MAX_HITS_PER_HOME)
        while True:
            ranked = await self._ranked(view, base, {r.key: depth for r in view.routes}, timeout)
            groups: dict[GroupId, None] = {}  # in the order of their best hit
            for hit in ranked.hits:
                groups.update(dict.fromkeys(group_ids(hit.point.payload, group_by)))
            if ranked.complete or len(groups) >= limit:
                return list(groups)
            if depth >= MAX_HITS_PER_HOME:
                raise ApiError(
                    400,
                    f"Bad request: finding the best {limit} groups by {group_by!r} exactly needs "
                    f"more than {MAX_HITS_PER_HOME:,} hits from a home of the library; narrow "
                    "the filter, set a score_threshold or ask for fewer groups",
                )
            depth = min(depth * 4, MAX_HITS_PER_HOME)

    async def _members(
        self,
        view: View,
        base: models.QueryRequest,
        group_by: str,
        group: GroupId,
        group_size: int,
        timeout: float,
    ) -> list[_Hit]:
        """The group's best ``group_size`` points over every home."""
        in_group = models.FieldCondition(key=group_by, match=models.MatchValue(value=group))
        scoped = base.model_copy(
            update={"filter": models.Filter(must=[f for f in (base.filter, in_group) if f])}
        )
        depth = min(group_size + 4, MAX_HITS_PER_HOME)
        while True:
            ranked = await self._ranked(view, scoped, {r.key: depth for r in view.routes}, timeout)
            members = [h for h in ranked.hits if group in group_ids(h.point.payload, group_by)]
            if ranked.complete or len(members) >= group_size:
                return members[:group_size]
            if depth >= MAX_HITS_PER_HOME:
                raise ApiError(
                    400,
                    f"Bad request: filling group {group!r} exactly needs more than "
                    f"{MAX_HITS_PER_HOME:,} hits from a home of the library; narrow the filter "
                    "or ask for a smaller group_size",
                )
            depth = min(depth * 4, MAX_HITS_PER_HOME)

    # ------------------------------------------------------------ rendering

    async def _shown(
        self, view: View, hits: Sequence[_Hit], body: models.QueryGroupsRequest, timeout: float
    ) -> dict[tuple[str, PointId], dict[str, Any]]:
        """Each hit as Qdrant shows it: the client's payload and vector selectors applied by the
        home holding the copy (reserved keys removed)."""
        by_route: dict[str, list[_Hit]] = {}
        for hit in hits:
            by_route.setdefault(hit.route.key, []).append(hit)
        payload = body.with_payload if body.with_payload is not None else False
        vector = body.with_vector if body.with_vector is not None else False
        fetch_needed = payload is not False or vector is not False

        def operation(route: DomainRoute) -> Callable[[QdrantPort], dict[PointId, models.Record]]:
            wanted = [h.point.id for h in by_route.get(route.key, [])]

            def run(port: QdrantPort) -> dict[PointId, models.Record]:
                if not wanted or not fetch_needed:
                    return {}
                request = models.ScrollRequest(
                    filter=models.Filter(must=[models.HasIdCondition(has_id=wanted)]),
                    limit=len(wanted),
                    with_payload=payload,
                    with_vector=vector,
                )
                records, _ = port.scroll_points(route.collection, request)
                return {point_key(r.id): r for r in records}

            return run

        fetched = dict(
            (route.key, records)
            for route, records in await every_home(
                self.state.upstream, view, operation, timeout, "a grouped query"
            )
        )
        shown: dict[tuple[str, PointId], dict[str, Any]] = {}
        for hit in hits:
            record = fetched.get(hit.route.key, {}).get(hit.key)
            data = record.model_dump(mode="json") if record is not None else {}
            shown[(hit.route.key, hit.key)] = {
                "id": hit.point.id,
                "version": hit.point.version,
                "score": hit.point.score,
                "order_value": hit.point.order_value,
                "payload": public(data.get("payload")) if payload is not False else None,
                "vector": data.get("vector") if vector is not False else None,
            }
        return shown

    async def _look_up(self, groups: list[dict[str, Any]], lookup: Any, timeout: float) -> None:
        """Each group's ``lookup``: the point of the lookup collection whose id is the group's."""
        if isinstance(lookup, str):
            lookup = models.WithLookup(collection=lookup)
        view = await self.state.view(lookup.collection)
        payload = lookup.with_payload if lookup.with_payload is not None else True
        vector = lookup.with_vectors if lookup.with_vectors is not None else False
        ids: dict[GroupId, PointId] = {}
        for group in groups:
            try:
                ids[group["id"]] = parse_point_id(group["id"])
            except ApiError:
                continue  # a group value that cannot be a point id has nothing to look up
        records = await Querying(self.state).retrieve(
            view,
            list(dict.fromkeys(ids.values())),
            payload is not False,
            vector is not False,
            timeout,
        )
        found = {point_key(r.id): r for r in records}
        for group in groups:
            point_id = ids.get(group["id"])
            record = found.get(point_key(point_id)) if point_id is not None else None
            group["lookup"] = (
                record_json(record.id, record.payload, record.vector, payload, vector)
                if record is not None
                else None
            )


def _excluding(user: models.Filter | None, ids: list[PointId]) -> models.Filter | None:
    if not ids:
        return user
    exclusion = models.Filter(must_not=[models.HasIdCondition(has_id=list(ids))])
    return exclusion if user is None else models.Filter(must=[user, exclusion])
