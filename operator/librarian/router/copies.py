"""Reads that must see each point of a library once: its newest copy, never a tombstone.

Why this exists: a point of a library may have copies in several homes for a
while (it changed domain, a move is under way, a cleanup is pending), and a
delete leaves a tombstone that a read filter hides. An answer that counts or
ranks points (groups, facets, counts, distance matrices) must decide, for
every copy it uses, whether that copy is the library's point. This module asks
every home which version of some ids it holds, resolves the point ids a query
names into their vectors (as Qdrant does before searching), tells the order of
a query's scores, and runs one of Qdrant's own requests on every home with the
home's read filter added. Every helper needs every home: a home that does not
answer fails the request (an exact answer cannot be made without it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from qdrant_client.http import models
from qdrant_client.local.json_path_parser import parse_json_path

from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY, TOMBSTONE_KEY
from librarian.core.fusion import PointId
from librarian.router.library import DomainRoute, View, combine_filters
from librarian.router.qdrant_api import ApiError
from librarian.router.upstream import Upstream
from librarian.services.versioning import is_tombstone, user_payload, version_of
from librarian.storage.port import QdrantPort

__all__ = [
    "VERSION_KEYS",
    "Newest",
    "checked_path",
    "checked_size",
    "every_home",
    "higher_is_better",
    "home_filter",
    "is_newest",
    "newest_copies",
    "point_key",
    "public",
    "resolve_query",
    "validation_error",
]

T = TypeVar("T")

VERSION_KEYS = [POINT_VERSION_KEY, TOMBSTONE_KEY, LABEL_KEY]
"""The payload keys that tell a copy's version, deletion and domain."""

_RETRIEVE_BATCH = 1_000


def validation_error(field: str, message: str) -> ApiError:
    """Qdrant's answer to a request that parses but breaks a rule (HTTP 422)."""
    return ApiError(422, f"Validation error in JSON body: [{field}: {message}]")


def checked_size(field: str, value: int | None, default: int, minimum: int) -> int:
    """A size field as Qdrant checks it: a negative one does not parse (400), one below
    ``minimum`` breaks its rule (422)."""
    if value is None:
        return default
    if value < 0:
        raise ApiError(
            400,
            f"Format error in JSON body: {field}: invalid value: integer `{value}`, expected usize",
        )
    if value < minimum:
        raise validation_error(field, f"value {value} invalid, must be {minimum} or larger")
    return value


def checked_path(field: str, path: str) -> str:
    """A payload key path (``a.b``, ``a[].b``, ``a[0]``) as Qdrant parses it; a 400 otherwise."""
    try:
        parse_json_path(path)
    except ValueError:
        raise ApiError(
            400, f"Format error in JSON body: {field}: {path!r} is not a valid payload key path"
        ) from None
    return path


def point_key(point_id: Any) -> PointId:
    """A point id as the router compares them (UUIDs in their canonical form)."""
    if isinstance(point_id, int) and not isinstance(point_id, bool):
        return point_id
    return str(uuid.UUID(str(point_id)))


@dataclass(frozen=True)
class Newest:
    """The newest copy of a point among every home: its version and whether it is a delete."""

    version: int
    tombstone: bool


def is_newest(newest: dict[PointId, Newest], point_id: Any, payload: dict[str, Any] | None) -> bool:
    """Is this copy (its payload holds the version keys) the library's point?"""
    known = newest.get(point_key(point_id))
    if known is None or known.tombstone:
        return False
    return version_of(payload) >= known.version


def public(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """A payload as a client may see it: without the library's reserved keys."""
    return None if payload is None else user_payload(payload)


async def every_home(
    upstream: Upstream,
    view: View,
    operation: Callable[[DomainRoute], Callable[[QdrantPort], T]],
    timeout: float,
    what: str,
) -> list[tuple[DomainRoute, T]]:
    """``operation`` on every unit of the view, each with its route; fails unless all answer."""
    units = list(range(len(view.routes)))
    result = await upstream.fan_out(view, units, operation, timeout)
    answers = result.complete(what)
    return [
        (view.routes[u], answer) for (u, _), answer in zip(result.answered, answers, strict=True)
    ]


def home_filter(route: DomainRoute, user: models.Filter | None) -> models.Filter | None:
    """The client's filter AND what every read of this unit adds (its slice, no tombstones)."""
    return combine_filters(user, route.read_filter())


async def newest_copies(
    upstream: Upstream, view: View, ids: Iterable[Any], timeout: float
) -> dict[PointId, Newest]:
    """The newest copy of each id over every home (tombstones included); absent ids left out."""
    wanted = list(dict.fromkeys(point_key(i) for i in ids))
    if not wanted:
        return {}
    if not view.routed:  # a plain collection: one copy of each point, no versions
        return {i: Newest(0, False) for i in wanted}

    def operation(route: DomainRoute) -> Callable[[QdrantPort], list[tuple[PointId, Newest]]]:
        def run(port: QdrantPort) -> list[tuple[PointId, Newest]]:
            found: list[tuple[PointId, Newest]] = []
            for start in range(0, len(wanted), _RETRIEVE_BATCH):
                batch = wanted[start : start + _RETRIEVE_BATCH]
                for record in port.retrieve(
                    route.collection, batch, with_vectors=False, with_payload=VERSION_KEYS
                ):
                    if not route.holds_label(record.payload.get(LABEL_KEY)):
                        continue
                    copy = Newest(version_of(record.payload), is_tombstone(record.payload))
                    found.append((point_key(record.id), copy))
            return found

        return run

    newest: dict[PointId, Newest] = {}
    for _, found in await every_home(upstream, view, operation, timeout, "an exact read"):
        for point_id, copy in found:
            held = newest.get(point_id)
            if (
                held is None
                or copy.version > held.version
                or (copy.version == held.version and held.tombstone and not copy.tombstone)
            ):
                newest[point_id] = copy
    return newest


# ---------------------------------------------------------------------- queries naming points


def _is_point_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, uuid.UUID):
        return True
    if isinstance(value, str):
        try:
            uuid.UUID(value)
        except ValueError:
            return False
        return True
    return False


def _ids_in(query: Any) -> list[Any]:
    """The point ids a query names as examples (they are looked up, then left out of results)."""
    if _is_point_id(query):
        return [query]
    if isinstance(query, models.NearestQuery):
        return _ids_in(query.nearest)
    if isinstance(query, models.RecommendQuery):
        examples = [*(query.recommend.positive or []), *(query.recommend.negative or [])]
        return [e for e in examples if _is_point_id(e)]
    if isinstance(query, models.ContextPair):
        return [e for e in (query.positive, query.negative) if _is_point_id(e)]
    if isinstance(query, models.ContextQuery):
        pairs = query.context if isinstance(query.context, list) else [query.context]
        return [i for pair in pairs for i in _ids_in(pair)]
    if isinstance(query, models.DiscoverQuery):
        context = query.discover.context
        discover_pairs = context if isinstance(context, list) else [context]
        target = [query.discover.target] if _is_point_id(query.discover.target) else []
        return target + [i for pair in discover_pairs for i in _ids_in(pair)]
    return []


def _substituted(query: Any, vectors: dict[PointId, Any]) -> Any:
    """The query with every example id replaced by that point's vector."""

    def sub(value: Any) -> Any:
        return vectors[point_key(value)] if _is_point_id(value) else value

    if _is_point_id(query):
        return models.NearestQuery(nearest=sub(query))
    if isinstance(query, models.NearestQuery):
        return query.model_copy(update={"nearest": sub(query.nearest)})
    if isinstance(query, models.RecommendQuery):
        given = query.recommend
        return models.RecommendQuery(
            recommend=given.model_copy(
                update={
                    "positive": [sub(e) for e in given.positive or []] or None,
                    "negative": [sub(e) for e in given.negative or []] or None,
                }
            )
        )

    def pair(p: models.ContextPair) -> models.ContextPair:
        return models.ContextPair(positive=sub(p.positive), negative=sub(p.negative))

    if isinstance(query, models.ContextQuery):
        pairs = query.context if isinstance(query.context, list) else [query.context]
        return models.ContextQuery(context=[pair(p) for p in pairs])
    if isinstance(query, models.DiscoverQuery):
        context = query.discover.context
        given_pairs = context if isinstance(context, list) else [context]
        return models.DiscoverQuery(
            discover=models.DiscoverInput(
                target=sub(query.discover.target), context=[pair(p) for p in given_pairs]
            )
        )
    return query


def _vector_of(record: models.Record, using: str) -> Any:
    vector = record.vector
    if isinstance(vector, dict):
        return vector.get(using)
    return vector if using == "" else None


async def resolve_query(
    upstream: Upstream,
    view: View,
    query: Any,
    using: str | None,
    timeout: float,
    *,
    lookup_view: View | None = None,
    lookup_vector: str | None = None,
) -> tuple[Any, list[PointId]]:
    """The query with the points it names replaced by their vectors (looked up in the library,
    or in ``lookup_view`` under ``lookup_vector`` for Qdrant's ``lookup_from``), and the ids to
    leave out of the results (a query's examples are never among its answers)."""
    named = [point_key(i) for i in _ids_in(query)]
    if not named:
        return query, []
    source = lookup_view or view
    vector_name = (lookup_vector if lookup_view is not None else using) or ""
    request = models.ScrollRequest(
        filter=models.Filter(must=[models.HasIdCondition(has_id=list(named))]),
        limit=len(named),
        with_payload=VERSION_KEYS,
        with_vector=[vector_name] if vector_name else True,
    )

    def operation(route: DomainRoute) -> Callable[[QdrantPort], list[models.Record]]:
        def run(port: QdrantPort) -> list[models.Record]:
            scoped = request.model_copy(update={"filter": home_filter(route, request.filter)})
            return port.scroll_points(route.collection, scoped)[0]

        return run

    found = await every_home(upstream, source, operation, timeout, "a query by point id")
    records = [record for _, page in found for record in page]
    newest = await newest_copies(upstream, source, (r.id for r in records), timeout)
    vectors: dict[PointId, Any] = {}
    for record in records:
        if is_newest(newest, record.id, record.payload):
            vector = _vector_of(record, vector_name)
            if vector is not None:
                vectors[point_key(record.id)] = vector
    for point_id in named:
        if point_id not in vectors:
            raise ApiError(404, f"Not found: No point with id {point_id} found")
    excluded = named if lookup_view is None else []
    return _substituted(query, vectors), excluded


# ---------------------------------------------------------------------- score order


async def higher_is_better(
    upstream: Upstream,
    view: View,
    query: Any,
    using: str | None,
    answers: Sequence[Sequence[float]],
    timeout: float,
) -> bool:
    """Whether a query's better answers have higher values.

    ``order_by`` says so by its direction; otherwise the homes' own ranked
    scores tell (they come best first); failing that (no home returned two
    different scores), the distance configured for the queried vector does:
    a distance (Euclid, Manhattan) ranks lower first, a similarity higher.
    """
    if isinstance(query, models.OrderByQuery):
        order = query.order_by
        return isinstance(order, models.OrderBy) and order.direction == models.Direction.DESC
    for scores in answers:
        distinct = [s for i, s in enumerate(scores) if i == 0 or s != scores[i - 1]]
        if len(distinct) >= 2:
            return distinct[0] > distinct[1]
    if using in (None, ""):
        return view.higher_is_better
    first = view.routes[0]
    info = await upstream.call(
        first, lambda port: port.describe_collection(first.collection), timeout
    )
    vectors = info.config.params.vectors
    params = vectors.get(using) if isinstance(vectors, dict) else None
    if params is None:  # a sparse vector: a dot product
        return True
    return params.distance not in (models.Distance.EUCLID, models.Distance.MANHATTAN)
