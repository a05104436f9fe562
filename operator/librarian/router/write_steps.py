"""The steps every write of a library collection shares: look, call, queue, select.

Why this exists: upserts and deletes (:mod:`librarian.router.writes`) and changes
in place (:mod:`librarian.router.changes`) take the same steps around their own
logic: look at which homes hold which versions of the ids, call a cluster,
carry out cleanups or queue them in the outbox, and turn a points selector
(ids, or a filter evaluated per domain) into pages of ids. They live here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qdrant_client.http import models

from librarian.contracts.payload import RESERVED_KEYS
from librarian.core.fusion import PointId
from librarian.core.hlc import HybridLogicalClock
from librarian.router.cleanup import Copy, Homes
from librarian.router.library import (
    CollectionHome,
    DomainRoute,
    View,
    combine_filters,
)
from librarian.router.outbox import Cleanup, CleanupKind, OutboxFull
from librarian.router.qdrant_api import ApiError, parse_point_id
from librarian.router.query import dense
from librarian.router.resilience import ResultCache
from librarian.router.upstream import Upstream
from librarian.services.versioning import reserved_in
from librarian.storage.port import PointRecord, QdrantPort
from librarian.storage.vectors import VectorError, Vectors, checked_vectors

__all__ = ["IN_PLACE_TRIES", "Looked", "WriteSteps", "cleanup_of", "no_reserved", "point_vectors"]

_ID_PAGE = 1000  # ids handled per step when a filter selects the points
IN_PLACE_TRIES = 4  # a change overtaken by newer changes in place is made again, at most so often


def no_reserved(payload: Any, what: str = "payload") -> dict[str, Any]:
    """``payload`` as a dict; a 400 if it uses keys the library reserves."""
    value = dict(payload or {})
    reserved = reserved_in(value)
    if reserved:
        raise ApiError(
            400,
            f"Wrong input: {what} keys {', '.join(reserved)} are reserved by the library "
            f"(reserved: {', '.join(RESERVED_KEYS)}); rename them",
        )
    return value


def point_vectors(vectors: Any, view: View) -> Vectors:
    """A point's vectors (any shape: unnamed, named dense, sparse, multivector) checked against
    the collection's vectors as Qdrant checks them; a 400 in Qdrant's words otherwise."""
    if view.spec is None:  # only a collection whose configuration is unknown: the dense check
        return dense(vectors, view.vector_size)
    try:
        return checked_vectors(vectors, view.spec)
    except VectorError as error:
        raise ApiError(400, str(error)) from None


@dataclass
class Looked:
    """What a look at the homes found: copies by home, homes not reached, highest version."""

    found: dict[CollectionHome, dict[PointId, Copy]]
    unreached: list[CollectionHome]
    homes: dict[CollectionHome, DomainRoute] = field(default_factory=dict)

    @property
    def highest(self) -> int:
        return max(
            (c.version for copies in self.found.values() for c in copies.values()), default=0
        )

    def live(self) -> dict[CollectionHome, list[PointId]]:
        """The ids each reached home holds a live copy of."""
        return {
            home: [i for i, c in copies.items() if not c.tombstone]
            for home, copies in self.found.items()
        }


class WriteSteps:
    """The shared state and steps of the write path (upstream, cache, clock, homes)."""

    def __init__(
        self,
        upstream: Upstream,
        cache: ResultCache,
        clock: HybridLogicalClock,
        homes: Homes,
        *,
        settle_timeout: float = 2.0,
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.clock = clock
        self.homes = homes
        self.settle_timeout = settle_timeout

    def _settle_timeout(self, timeout: float) -> float:
        return min(timeout, self.settle_timeout)

    async def _look(self, view: View, ids: Sequence[PointId], timeout: float) -> Looked:
        homes = view.homes()
        found, unreached = await self.homes.look(list(homes), ids, self._settle_timeout(timeout))
        return Looked(found, unreached, homes)

    async def _queue_or_apply(self, cleanups: list[Cleanup], timeout: float) -> None:
        try:
            await self.homes.apply_or_queue(cleanups, self._settle_timeout(timeout))
        except OutboxFull:
            raise self._outbox_full() from None

    async def _drop_kept(self, kept: list[Cleanup], timeout: float) -> None:
        """Remove the copies a write kept while it was made again (older than what overtook
        them; a no-op where it was made again over them). Best effort: such a copy is older
        than the point's newest one, so no read serves it, and a later write removes it."""
        if not kept:
            return
        with contextlib.suppress(Exception):
            await self.homes.apply_or_queue(kept, self._settle_timeout(timeout))

    async def _call(
        self, route: DomainRoute, operation: Callable[[QdrantPort], None], timeout: float
    ) -> None:
        await self.upstream.call(route, operation, timeout, domain=bool(route.domain_id))

    def _outbox_full(self) -> ApiError:
        return ApiError(
            503,
            f"Service unavailable: the write path's outbox is full "
            f"({self.homes.outbox.max_entries} pending cleanups for clusters that do not "
            "answer); bring them back or remove them from the library",
        )

    async def _selected(self, view: View, selector: Any, timeout: float) -> Any:
        """The ids a points selector names, a page at a time (a filter is evaluated per domain)."""
        if isinstance(selector, models.PointIdsList):
            ids = list(dict.fromkeys(parse_point_id(i) for i in selector.points))
            for start in range(0, len(ids), _ID_PAGE):
                yield ids[start : start + _ID_PAGE]
            return
        flt = selector.filter if isinstance(selector, models.FilterSelector) else selector
        for route in view.routes:
            scope = combine_filters(flt, route.read_filter())
            async for page in self._matching(route, scope, timeout):
                yield page

    async def _matching(
        self, route: DomainRoute, scope: models.Filter | None, timeout: float
    ) -> Any:
        offset: PointId | None = None
        while True:
            page, offset = await self.upstream.call(
                route, _ids_page(route.collection, scope, offset), timeout
            )
            if page:
                yield [p.id for p in page]
            if offset is None:
                return


def _ids_page(
    collection: str, scope: models.Filter | None, offset: PointId | None
) -> Callable[[QdrantPort], tuple[list[PointRecord], PointId | None]]:
    return lambda port: port.scroll(
        collection,
        limit=_ID_PAGE,
        offset=offset,
        scroll_filter=scope,
        with_vectors=False,
        with_payload=False,
    )


def cleanup_of(
    home: CollectionHome, kind: CleanupKind, ids: Iterable[PointId], version: int
) -> Cleanup:
    return Cleanup(home.cluster, home.collection, kind, tuple(ids), version)
