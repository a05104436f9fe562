"""The write path: upserts land in the nearest domain, deletes reach every home.

Why this exists: a library must keep each point in exactly one domain, the
one labelling would assign it to (nearest centroid), so later queries routed
to that domain find it. An upsert writes each point to its domain's collection
(labelling it when the domain is still a slice of the source collection), then
removes the same ids from every other collection of the library: a point that
changed domain does not stay behind in its old one. Deletes go to every
collection the library's points live in, each once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY
from librarian.core.fusion import PointId
from librarian.router.library import View, combine_filters
from librarian.router.qdrant_api import ApiError, parse_point_id
from librarian.router.query import dense
from librarian.router.resilience import ResultCache
from librarian.router.upstream import Upstream
from librarian.storage.port import PointRecord, QdrantPort

__all__ = ["Writes", "records_of"]


def records_of(operations: Any, view: View) -> list[PointRecord]:
    """The points of an upsert body (a point list or a batch), validated against the view."""
    if isinstance(operations, models.PointsList):
        return [
            PointRecord(
                parse_point_id(p.id), dense(p.vector, view.vector_size), dict(p.payload or {})
            )
            for p in operations.points
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
        PointRecord(parse_point_id(i), dense(v, view.vector_size), dict(p or {}))
        for i, v, p in zip(batch.ids, vectors, payloads, strict=True)
    ]


def _upsert(collection: str, points: list[PointRecord]) -> Callable[[QdrantPort], None]:
    return lambda port: port.upsert(collection, points)


def _delete(
    collection: str, *, ids: list[PointId] | None = None, points_filter: models.Filter | None = None
) -> Callable[[QdrantPort], None]:
    return lambda port: port.delete_points(collection, ids=ids, points_filter=points_filter)


class Writes:
    """Upserts and deletes through the upstream layer; each write empties the result cache."""

    def __init__(self, upstream: Upstream, cache: ResultCache) -> None:
        self.upstream = upstream
        self.cache = cache

    def _placed(self, view: View, records: list[PointRecord]) -> dict[int, list[PointRecord]]:
        """The records grouped by the unit that is to hold them (labelled for a slice)."""
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
        return groups

    async def upsert(self, view: View, records: list[PointRecord], timeout: float) -> None:
        """Each record into its nearest domain, then out of every other collection."""
        if not records:
            return
        groups = self._placed(view, records)
        # Write first, then remove the ids from every other home: a crash in between leaves a
        # duplicate (deduplicated by id on reads and fixed by the client's retry), never a loss.
        for unit, points in groups.items():
            route = view.routes[unit]
            await self.upstream.call(
                route, _upsert(route.collection, points), timeout, domain=view.routed
            )
        homes = view.homes()
        for unit, points in groups.items():
            mine = view.routes[unit].home
            ids = [p.id for p in points]
            for home, route in homes.items():
                if home != mine:
                    await self.upstream.call(route, _delete(route.collection, ids=ids), timeout)
        self.cache.clear()

    async def delete(self, view: View, selector: Any, timeout: float) -> None:
        """Points by id from every collection of the view, or by filter from every domain."""
        if isinstance(selector, models.PointIdsList):
            ids = [parse_point_id(i) for i in selector.points]
            for route in view.homes().values():
                await self.upstream.call(route, _delete(route.collection, ids=ids), timeout)
        else:
            for route in view.routes:
                flt = combine_filters(selector.filter, route.slice_filter())
                await self.upstream.call(
                    route,
                    _delete(route.collection, points_filter=flt),
                    timeout,
                    domain=view.routed,
                )
        self.cache.clear()
