"""The write path: every write is versioned, lands in its domain, and converges under concurrency.

Why this exists: a library keeps each point in one domain (the nearest, as
labelling assigns it) while clients write concurrently, points change domain
and clusters fail. Every write through the router gets a version from the
router's hybrid logical clock, greater than any version of the ids it touches
(so a write made after another is newer, whichever router made it), and
follows the same steps:

1. **look** at every home for the ids (their versions, concurrently);
2. **write** the new home conditionally: only where the stored version is older
   (a newer write that got there first wins; a tombstone blocks an older write);
3. **settle** the other homes: remove copies older than this write; if another
   home holds a *newer* version (a concurrent write or delete that won), remove
   this write's own copy instead. Every writer looks after it writes, so of two
   concurrent writers at least the later one sees the other: they converge on
   the highest version, in one home.

Deletes leave tombstones (the point's payload replaced by its label, version
and the tombstone flag) so that an older write or copy cannot bring the point
back; payload and vector updates are versioned the same way. The write is
acknowledged once its new home holds it; a home that cannot be reached for the
settling step gets an outbox entry instead of failing the write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, MERGED_KEY, POINT_VERSION_KEY, RESERVED_KEYS
from librarian.core.fusion import PointId
from librarian.core.hlc import HybridLogicalClock
from librarian.router.cleanup import Copy, Homes, delete_where, unreachable
from librarian.router.library import (
    CollectionHome,
    DomainRoute,
    View,
    combine_filters,
    home_route,
)
from librarian.router.outbox import Cleanup, CleanupKind, OutboxFull
from librarian.router.qdrant_api import ApiError, parse_point_id
from librarian.router.query import dense
from librarian.router.resilience import ResultCache
from librarian.router.upstream import Upstream, UpstreamTimeout, UpstreamUnavailable
from librarian.services.versioning import (
    and_filters,
    ids_filter,
    is_tombstone,
    live_filter,
    older_than,
    reserved_in,
    stamped,
    tombstone_payload,
    version_at_most,
    version_is,
    version_of,
)
from librarian.storage.port import PointRecord, QdrantPort

__all__ = ["Writes", "records_of"]

_ID_PAGE = 1000  # ids handled per step when a filter selects the points


def _no_reserved(payload: Any, what: str = "payload") -> dict[str, Any]:
    value = dict(payload or {})
    reserved = reserved_in(value)
    if reserved:
        raise ApiError(
            400,
            f"Wrong input: {what} keys {', '.join(reserved)} are reserved by the library "
            f"(reserved: {', '.join(RESERVED_KEYS)}); rename them",
        )
    return value


def _refuse_conditional(operations: Any) -> None:
    if getattr(operations, "update_filter", None) is not None or (
        getattr(operations, "update_mode", None) not in (None, models.UpdateMode.UPSERT)
    ):
        raise ApiError(
            400,
            "Wrong input: update_filter and update_mode are not served on a library collection "
            "yet; the library makes every write conditional on its own versions",
        )


def records_of(operations: Any, view: View) -> list[PointRecord]:
    """The points of an upsert body (a point list or a batch), validated against the view."""
    _refuse_conditional(operations)
    if isinstance(operations, models.PointsList):
        return [
            PointRecord(
                parse_point_id(p.id),
                dense(p.vector, view.vector_size),
                _no_reserved(p.payload) if view.routed else dict(p.payload or {}),
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
        PointRecord(
            parse_point_id(i),
            dense(v, view.vector_size),
            _no_reserved(p) if view.routed else dict(p or {}),
        )
        for i, v, p in zip(batch.ids, vectors, payloads, strict=True)
    ]


def _last_wins(records: Sequence[PointRecord]) -> list[PointRecord]:
    """One record per id, the last one given (as one upsert of a repeated id ends in Qdrant)."""
    return list({r.id: r for r in records}.values())


@dataclass
class _Looked:
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


class Writes:
    """Every write operation of a library collection (and plain forwarding for the others)."""

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

    # ------------------------------------------------------------ common steps

    def _settle_timeout(self, timeout: float) -> float:
        return min(timeout, self.settle_timeout)

    async def _look(self, view: View, ids: Sequence[PointId], timeout: float) -> _Looked:
        homes = view.homes()
        found, unreached = await self.homes.look(list(homes), ids, self._settle_timeout(timeout))
        return _Looked(found, unreached, homes)

    async def _queue_or_apply(self, cleanups: list[Cleanup], timeout: float) -> None:
        try:
            await self.homes.apply_or_queue(cleanups, self._settle_timeout(timeout))
        except OutboxFull:
            raise self._outbox_full() from None

    async def _call(
        self, route: DomainRoute, operation: Callable[[QdrantPort], None], timeout: float
    ) -> None:
        await self.upstream.call(route, operation, timeout, domain=bool(route.domain_id))

    def _placed(self, view: View, records: Sequence[PointRecord]) -> dict[int, list[PointRecord]]:
        """The records grouped by the unit (domain) that is to hold them."""
        assert view.library is not None
        targets = view.library.nearest_domain([r.vector or [] for r in records])
        groups: dict[int, list[PointRecord]] = {}
        for record, unit in zip(records, targets, strict=True):
            groups.setdefault(unit, []).append(record)
        return groups

    # ------------------------------------------------------------ upsert

    async def upsert(self, view: View, records: list[PointRecord], timeout: float) -> None:
        """Each record into its nearest domain at a new version; older copies elsewhere removed."""
        if not records:
            return
        if not view.routed:
            route = view.routes[0]
            await self._call(route, lambda port: port.upsert(route.collection, records), timeout)
            self.cache.clear()
            return
        pending = _last_wins(records)
        for _ in range(_IN_PLACE_TRIES):
            try:
                overtaken = await self._upsert_once(view, pending, timeout)
            finally:
                self.cache.clear()
            if not overtaken:
                return
            pending = [r for r in pending if r.id in overtaken]  # written again, after them
        raise ApiError(
            503,
            f"Service unavailable: the write of {len(pending)} point(s) kept being overtaken by "
            "concurrent updates of the same points; retry it",
        )

    async def _upsert_once(
        self, view: View, records: list[PointRecord], timeout: float
    ) -> set[PointId]:
        """One versioned write of ``records``; the ids a newer change in place overtook."""
        looked = await self._look(view, [r.id for r in records], timeout)
        if looked.unreached and self.homes.outbox.full():
            raise self._outbox_full()
        version = self.clock.tick(looked.highest)
        groups = self._placed(view, records)
        await self._write_homes(view, groups, version, timeout)
        self.cache.clear()
        new_home = {
            p.id: view.write_homes(view.routes[u]) for u, points in groups.items() for p in points
        }
        try:
            return await self._settle(view, new_home, version, timeout)
        except OutboxFull:  # not acknowledged: take this write back rather than leave two copies
            await self._take_back(new_home, version, timeout)
            raise self._outbox_full() from None

    def _outbox_full(self) -> ApiError:
        return ApiError(
            503,
            f"Service unavailable: the write path's outbox is full "
            f"({self.homes.outbox.max_entries} pending cleanups for clusters that do not "
            "answer); bring them back or remove them from the library",
        )

    async def _take_back(
        self, new_home: dict[PointId, tuple[CollectionHome, ...]], version: int, timeout: float
    ) -> None:
        """Remove this write's own copies (only where they are still this version)."""
        by_home: dict[CollectionHome, list[PointId]] = {}
        for point_id, homes in new_home.items():
            for home in homes:
                by_home.setdefault(home, []).append(point_id)
        for home, ids in by_home.items():
            flt = and_filters(ids_filter(ids), version_is(version))
            await self.upstream.call(home_route(home), delete_where(home.collection, flt), timeout)

    async def _write_homes(
        self, view: View, groups: dict[int, list[PointRecord]], version: int, timeout: float
    ) -> None:
        """Each group into its domain's write homes, labelled and versioned, where the stored
        version is older; one call per cluster (its collections written one after the other).

        A domain's own home must take the write. During a move the other home is second:
        if its cluster fails, a copy from the first home waits in the outbox (the write is
        still acknowledged), so the two homes converge when it is back.
        """
        writes: dict[str, list[_Batch]] = {}
        first: dict[str, DomainRoute] = {}
        for unit, points in groups.items():
            route = view.routes[unit]
            stamped_points = [
                PointRecord(
                    p.id, p.vector, stamped(p.payload, version=version, label=route.domain_id)
                )
                for p in points
            ]
            for home in view.write_homes(route):
                primary = None if home == route.home else route.home
                writes.setdefault(home.cluster, []).append(
                    _Batch(home.collection, stamped_points, primary)
                )
                first.setdefault(home.cluster, route if home == route.home else home_route(home))
        condition = older_than(version)

        def write_all(batches: list[_Batch]) -> Callable[[QdrantPort], None]:
            def run(port: QdrantPort) -> None:
                for batch in batches:
                    port.upsert(batch.collection, batch.points, update_filter=condition)

            return run

        clusters = list(writes)
        outcomes = await asyncio.gather(
            *(self._call(first[c], write_all(writes[c]), timeout) for c in clusters),
            return_exceptions=True,
        )
        failed = [
            (c, o) for c, o in zip(clusters, outcomes, strict=True) if isinstance(o, BaseException)
        ]
        if failed:
            await self._after_failed_writes(writes, failed, version)

    async def _after_failed_writes(
        self,
        writes: dict[str, list[_Batch]],
        failed: list[tuple[str, BaseException]],
        version: int,
    ) -> None:
        """Queue what makes a failed write converge; raise unless only second homes failed."""
        queued: list[Cleanup] = []
        fatal: BaseException | None = None
        down = {cluster for cluster, _ in failed}
        # second homes that took the write while their domain's own home did not
        taken = {
            (batch.copy_from, CollectionHome(cluster, batch.collection))
            for cluster, batches in writes.items()
            if cluster not in down
            for batch in batches
            if batch.copy_from is not None
        }
        for cluster, error in failed:
            for batch in writes[cluster]:
                ids = tuple(p.id for p in batch.points)
                own = CollectionHome(cluster, batch.collection)
                for first, second in taken:
                    if first == own and unreachable(error):
                        # not acknowledged, but one home of the move has it: the other
                        # gets it too when it is back, so the two converge
                        queued.append(
                            Cleanup(
                                cluster,
                                batch.collection,
                                CleanupKind.COPY,
                                ids,
                                version,
                                source=(second.cluster, second.collection),
                            )
                        )
                if batch.copy_from is not None and unreachable(error):
                    queued.append(
                        Cleanup(
                            cluster,
                            batch.collection,
                            CleanupKind.COPY,
                            ids,
                            version,
                            source=(batch.copy_from.cluster, batch.copy_from.collection),
                        )
                    )
                    continue
                fatal = fatal or error
                if isinstance(error, UpstreamTimeout | TimeoutError):
                    # It may still land: once it does, its older copies elsewhere are removed
                    # (watched from the outbox). A refused connection or an open circuit sent
                    # nothing: nothing can land.
                    queued.append(
                        Cleanup(cluster, batch.collection, CleanupKind.SETTLE, ids, version)
                    )
        try:
            await asyncio.to_thread(self.homes.outbox.add, queued)
        except OutboxFull:
            if fatal is None:
                raise self._outbox_full() from None
        if fatal is not None:
            raise fatal

    async def _settle(
        self,
        view: View,
        new_home: dict[PointId, tuple[CollectionHome, ...]],
        version: int,
        timeout: float,
    ) -> set[PointId]:
        """Remove copies older than ``version`` from the other homes; yield to a newer write.

        Returns the ids a newer change in place holds (here or elsewhere): such a change
        was made on a copy without this write, so this write is to be made again, after it.
        """
        homes = list(view.homes())
        ids = list(new_home)
        looked, unreached = await self.homes.look(homes, ids, self._settle_timeout(timeout))
        cleanups: list[Cleanup] = []
        settle: list[Cleanup] = []
        beaten: dict[CollectionHome, set[PointId]] = {}
        overtaken: set[PointId] = set()
        for home in homes:
            copies = looked.get(home, {})
            overtaken |= {
                i
                for i in ids
                if i in copies
                and copies[i].version > version
                and copies[i].merged
                and not copies[i].tombstone
            }
            elsewhere = [i for i in ids if home not in new_home[i]]
            if not elsewhere:
                continue
            if home in unreached:
                # Whether it holds an older copy (to remove) or a newer one (to yield to) is
                # known only when it answers: the write is settled again from the outbox then.
                cleanups.append(_cleanup(home, CleanupKind.REMOVE_OLDER, elsewhere, version))
                for mine in {h for i in elsewhere for h in new_home[i]}:
                    settle.append(
                        _cleanup(
                            mine,
                            CleanupKind.SETTLE,
                            [i for i in elsewhere if mine in new_home[i]],
                            version,
                        )
                    )
                continue
            older = [i for i in elsewhere if i in copies and copies[i].version < version]
            if older:
                cleanups.append(_cleanup(home, CleanupKind.REMOVE_OLDER, older, version))
            for i in elsewhere:
                if i in copies and copies[i].version > version:
                    for mine in new_home[i]:
                        beaten.setdefault(mine, set()).add(i)
        leaving = [
            i for i in ids if not any(m.writes_both and m.source in new_home[i] for m in view.moves)
        ]
        await self._fence_tombstones(view, looked, leaving, version, timeout)
        await self.homes.apply_or_queue(
            _tombstones_in_moves(view, cleanups), self._settle_timeout(timeout)
        )
        await asyncio.to_thread(self.homes.outbox.add, settle)
        beaten = {home: lost - overtaken for home, lost in beaten.items()}
        for home, lost in beaten.items():  # a newer write or delete won elsewhere: yield to it
            if not lost:
                continue
            flt = and_filters(ids_filter(sorted(lost, key=str)), version_at_most(version))
            await self.upstream.call(
                home_route(home),
                delete_where(home.collection, flt),
                self._settle_timeout(timeout),
            )
        return overtaken

    async def _fence_tombstones(
        self,
        view: View,
        found: dict[CollectionHome, dict[PointId, Copy]],
        ids: Sequence[PointId],
        version: int,
        timeout: float,
    ) -> None:
        """During a move, leave a tombstone in the home of the pair that lacks the point.

        The migration may still copy an older copy of a point into the new home after
        a delete (or a write that took the point to another domain) found nothing
        there to remove; a tombstone at this version makes that copy a no-op. It is
        a point, so it takes the vector of the copy the other home holds.
        """
        for move in view.moves:
            if not move.writes_both:
                continue
            pair = (move.source, move.target)
            held = [found.get(home, {}) for home in pair]
            for present, absent, copies, other in (
                (0, 1, held[0], held[1]),
                (1, 0, held[1], held[0]),
            ):
                missing = [i for i in ids if i in copies and i not in other]
                if missing and pair[absent] in found:
                    await self._tombstone_from(
                        pair[present], pair[absent], missing, version, timeout
                    )

    async def _tombstone_from(
        self,
        present: CollectionHome,
        absent: CollectionHome,
        ids: list[PointId],
        version: int,
        timeout: float,
    ) -> None:
        records = await self.upstream.call(
            home_route(present),
            lambda port: port.retrieve(present.collection, ids, with_payload=[LABEL_KEY]),
            timeout,
        )
        tombstones = [
            PointRecord(
                r.id, r.vector, tombstone_payload(version=version, label=r.payload.get(LABEL_KEY))
            )
            for r in records
            if r.vector is not None
        ]
        if tombstones:
            condition = older_than(version)
            await self.upstream.call(
                home_route(absent),
                lambda port: port.upsert(absent.collection, tombstones, update_filter=condition),
                timeout,
            )

    # ------------------------------------------------------------ delete

    async def delete(self, view: View, selector: Any, timeout: float) -> None:
        """Points by id, or every point matching a filter; tombstones left where they were."""
        if not view.routed:
            route = view.routes[0]
            if isinstance(selector, models.PointIdsList):
                ids = [parse_point_id(i) for i in selector.points]
                op: Callable[[QdrantPort], None] = lambda port: port.delete_points(  # noqa: E731
                    route.collection, ids=ids
                )
            else:
                op = lambda port: port.delete_points(  # noqa: E731
                    route.collection, points_filter=selector.filter
                )
            await self._call(route, op, timeout)
            self.cache.clear()
            return
        async for ids in self._selected(view, selector, timeout):
            await self._delete_ids(view, ids, timeout)
        self.cache.clear()

    async def _delete_ids(self, view: View, ids: list[PointId], timeout: float) -> None:
        if not ids:
            return
        pending = ids
        for _ in range(_IN_PLACE_TRIES):
            looked = await self._look(view, pending, timeout)
            if looked.unreached and self.homes.outbox.full():
                raise self._outbox_full()
            version = self.clock.tick(looked.highest)
            cleanups = [
                _cleanup(h, CleanupKind.TOMBSTONE, pending, version) for h in looked.unreached
            ]
            for home, copies in looked.found.items():
                older = [i for i in pending if i in copies and copies[i].version < version]
                if older:
                    cleanups.append(_cleanup(home, CleanupKind.TOMBSTONE, older, version))
            await self._queue_or_apply(cleanups, timeout)
            await self._fence_tombstones(view, looked.found, pending, version, timeout)
            if looked.unreached:
                _refuse_unseen(looked, pending)
            pending = await self._settle_delete(view, pending, version, timeout)
            if not pending:
                return
        raise ApiError(
            503,
            f"Service unavailable: the delete of {len(pending)} point(s) kept being overtaken by "
            "concurrent updates of the same points; retry it",
        )

    async def _settle_delete(
        self, view: View, ids: list[PointId], version: int, timeout: float
    ) -> list[PointId]:
        """Look at every home again once the tombstones are down, as a write looks after
        writing; returns the ids a newer change in place holds alive (to delete again).

        A write that took a version below this delete's and landed between the first
        look and the tombstones was missed by that look, and its own look may have
        missed the tombstones: whichever of the two looks last sees the other, and this
        one tombstones such a copy (left live, it would outlive the tombstone once
        tombstones are compacted).
        """
        homes = list(view.homes())
        found, unreached = await self.homes.look(homes, ids, self._settle_timeout(timeout))
        late = [
            _cleanup(home, CleanupKind.TOMBSTONE, older, version)
            for home, copies in found.items()
            if (older := [i for i in ids if i in copies and _live_below(copies[i], version)])
        ]
        late += [_cleanup(home, CleanupKind.TOMBSTONE, ids, version) for home in unreached]
        await self._queue_or_apply(late, timeout)
        return sorted(
            {
                i
                for copies in found.values()
                for i, c in copies.items()
                if c.version > version and c.merged and not c.tombstone
            },
            key=str,
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

    # ------------------------------------------------------------ payload and vectors

    async def set_payload(
        self,
        view: View,
        body: models.SetPayload,
        timeout: float,
        *,
        overwrite: bool = False,
    ) -> None:
        """Set (merge) or overwrite the payload of the selected points, at a new version."""
        payload = _no_reserved(body.payload)
        if overwrite and body.key:
            raise ApiError(400, "Wrong input: overwrite payload does not take a key")
        if not view.routed:
            await self._forward_payload(view, body, payload, overwrite, timeout)
            return
        async for ids in self._selected(view, _selector(body.points, body.filter), timeout):
            if overwrite:
                await self._replace_payload(view, ids, payload, timeout)
            else:
                await self._merge_payload(view, ids, payload, body.key, timeout)
        self.cache.clear()

    async def _forward_payload(
        self,
        view: View,
        body: models.SetPayload,
        payload: dict[str, Any],
        overwrite: bool,
        timeout: float,
    ) -> None:
        route = view.routes[0]
        ids = [parse_point_id(i) for i in body.points] if body.points is not None else None
        if overwrite:
            flt = and_filters(ids_filter(ids) if ids is not None else None, body.filter)
            await self._call(
                route,
                lambda port: port.overwrite_payload(
                    route.collection, payload, points_filter=flt or models.Filter()
                ),
                timeout,
            )
        else:
            await self._call(
                route,
                lambda port: port.set_payload(
                    route.collection, payload, ids, points_filter=body.filter, key=body.key
                ),
                timeout,
            )
        self.cache.clear()

    async def _in_place(
        self, view: View, ids: list[PointId], change: Change, timeout: float
    ) -> None:
        """Change the newest live copy of each id in place, at a new version.

        Only the homes holding an id's newest copy are changed (an older copy still
        awaiting removal is removed now, not changed); a deleted id is left alone.
        Each change is conditional on the stored version being older, and marks the
        point ``merged``. A change that a newer change in place overtook before it
        landed is made again, after it (bounded tries).
        """
        pending = list(ids)
        for _ in range(_IN_PLACE_TRIES):
            looked = await self._look(view, pending, timeout)
            if looked.unreached:
                clusters = ", ".join(sorted({h.cluster for h in looked.unreached}))
                raise ApiError(
                    503,
                    f"Service unavailable: cannot update points while cluster(s) {clusters} "
                    "do not answer",
                )
            version = self.clock.tick(looked.highest)
            targets, stale = _newest_copies(looked.found, pending)
            stale = await self._sync_move_pairs(view, looked.found, targets, stale, timeout)
            await self._queue_or_apply(stale, timeout)
            await asyncio.gather(
                *(
                    self._call(home_route(home), _in_home(home, groups, version, change), timeout)
                    for home, groups in targets.items()
                )
            )
            changed = sorted(
                {i for groups in targets.values() for g in groups.values() for i in g}, key=str
            )
            pending = await self._overtaken(list(targets), changed, version, timeout)
            if not pending:
                return
        raise ApiError(
            503,
            f"Service unavailable: the update of {len(pending)} point(s) kept being overtaken by "
            "concurrent updates of the same points; retry it",
        )

    async def _sync_move_pairs(
        self,
        view: View,
        found: dict[CollectionHome, dict[PointId, Copy]],
        targets: dict[CollectionHome, dict[str | None, list[PointId]]],
        stale: list[Cleanup],
        timeout: float,
    ) -> list[Cleanup]:
        """During a move both homes are one: a home of the pair that lags behind the other
        for an id gets the newest copy first, then takes the change too (rather than its
        older copy being removed). Returns the removals still to make (outside the pairs)."""
        pairs = [(m.source, m.target) for m in view.moves if m.writes_both]
        if not pairs:
            return stale
        fenced = {h for pair in pairs for h in pair}
        for pair in pairs:
            for newest, partner in (pair, pair[::-1]):
                held = targets.get(newest, {})
                lagging: dict[str | None, list[PointId]] = {}
                for label, ids in held.items():
                    behind = [i for i in ids if i not in targets.get(partner, {}).get(label, [])]
                    if behind:
                        lagging[label] = behind
                if not lagging or partner not in found:
                    continue
                ids = [i for group in lagging.values() for i in group]
                await self._copy_between(newest, partner, ids, timeout)
                for label, group in lagging.items():
                    targets.setdefault(partner, {}).setdefault(label, []).extend(group)
        return [c for c in stale if CollectionHome(c.cluster, c.collection) not in fenced]

    async def _copy_between(
        self, source: CollectionHome, target: CollectionHome, ids: list[PointId], timeout: float
    ) -> None:
        """``ids`` copied from ``source`` into ``target`` where ``target`` holds them older."""
        await self.homes.copy_over(
            Cleanup(
                target.cluster,
                target.collection,
                CleanupKind.COPY,
                tuple(ids),
                0,
                source=(source.cluster, source.collection),
            ),
            timeout,
        )

    async def _overtaken(
        self, homes: list[CollectionHome], ids: list[PointId], version: int, timeout: float
    ) -> list[PointId]:
        """The ids whose copy in ``homes`` a newer change in place holds instead of ``version``."""
        if not ids:
            return []
        after, _ = await self.homes.look(homes, ids, self._settle_timeout(timeout))
        return sorted(
            {
                i
                for copies in after.values()
                for i, c in copies.items()
                if c.version > version and c.merged and not c.tombstone
            },
            key=str,
        )

    async def _merge_payload(
        self,
        view: View,
        ids: list[PointId],
        payload: dict[str, Any],
        key: str | None,
        timeout: float,
    ) -> None:
        def change(collection: str, held: list[PointId], version: int, label: str | None) -> Ops:
            condition = and_filters(ids_filter(held), older_than(version), live_filter())
            mark = {POINT_VERSION_KEY: version, MERGED_KEY: True}
            if key is None:  # one operation: the keys and the version together
                return [_set_where(collection, {**payload, **mark}, condition)]
            exact = and_filters(ids_filter(held), version_is(version))
            return [
                _set_where(collection, mark, condition),
                _set_where(collection, payload, exact, key),
            ]

        await self._in_place(view, ids, change, timeout)

    async def _replace_payload(
        self, view: View, ids: list[PointId], payload: dict[str, Any], timeout: float
    ) -> None:
        def change(collection: str, held: list[PointId], version: int, label: str | None) -> Ops:
            condition = and_filters(ids_filter(held), older_than(version), live_filter())
            assert condition is not None
            new = stamped(payload, version=version, label=label, merged=True)
            return [_overwrite_where(collection, new, condition)]

        await self._in_place(view, ids, change, timeout)

    async def _delete_keys(
        self, view: View, ids: list[PointId], keys: list[str], timeout: float
    ) -> None:
        def change(collection: str, held: list[PointId], version: int, label: str | None) -> Ops:
            condition = and_filters(ids_filter(held), older_than(version), live_filter())
            exact = and_filters(ids_filter(held), version_is(version))
            mark = {POINT_VERSION_KEY: version, MERGED_KEY: True}
            return [
                _set_where(collection, mark, condition),
                _delete_keys_where(collection, keys, exact),
            ]

        await self._in_place(view, ids, change, timeout)

    async def delete_payload(self, view: View, body: models.DeletePayload, timeout: float) -> None:
        """Remove payload keys from the selected points, at a new version."""
        keys = list(body.keys)
        reserved = sorted(set(keys) & set(RESERVED_KEYS))
        if reserved and view.routed:
            raise ApiError(
                400, f"Wrong input: keys {', '.join(reserved)} are reserved by the library"
            )
        if not view.routed:
            route = view.routes[0]
            ids = [parse_point_id(i) for i in body.points] if body.points is not None else None
            flt = and_filters(ids_filter(ids) if ids is not None else None, body.filter)
            await self._call(
                route,
                lambda port: port.delete_payload_keys(route.collection, keys, points_filter=flt),
                timeout,
            )
            self.cache.clear()
            return
        async for ids in self._selected(view, _selector(body.points, body.filter), timeout):
            await self._delete_keys(view, ids, keys, timeout)
        self.cache.clear()

    async def clear_payload(self, view: View, selector: Any, timeout: float) -> None:
        """Clear the payload of the selected points (the library's own keys stay)."""
        if not view.routed:
            await self.set_payload(
                view,
                models.SetPayload(
                    payload={},
                    points=getattr(selector, "points", None),
                    filter=getattr(selector, "filter", None),
                ),
                timeout,
                overwrite=True,
            )
            return
        async for ids in self._selected(view, selector, timeout):
            await self._replace_payload(view, ids, {}, timeout)
        self.cache.clear()

    async def update_vectors(self, view: View, body: models.UpdateVectors, timeout: float) -> None:
        """New vectors for existing points, changed in place at a new version.

        Like a payload change, it is made on each point's newest copy, so it composes
        with concurrent writes, changes and deletes of the same points. The point stays
        in its domain (the search finds it there); an upsert of the point places it anew.
        """
        if body.update_filter is not None:
            raise ApiError(
                400, "Wrong input: update_filter is not served on a library collection yet"
            )
        vectors = {parse_point_id(p.id): dense(p.vector, view.vector_size) for p in body.points}
        if not view.routed:
            route = view.routes[0]
            points = [PointRecord(i, v) for i, v in vectors.items()]
            await self._call(
                route, lambda port: port.update_vectors(route.collection, points), timeout
            )
            self.cache.clear()
            return
        current = await self._current(view, list(vectors), timeout)
        missing = [i for i in vectors if i not in current]
        if missing:
            raise ApiError(404, f"Not found: No point with id {missing[0]} found")

        def change(collection: str, held: list[PointId], version: int, label: str | None) -> Ops:
            condition = and_filters(ids_filter(held), older_than(version), live_filter())
            exact = and_filters(ids_filter(held), version_is(version))
            mark = {POINT_VERSION_KEY: version, MERGED_KEY: True}
            points = [PointRecord(i, vectors[i]) for i in held]
            return [
                _set_where(collection, mark, condition),
                lambda port: port.update_vectors(collection, points, update_filter=exact),
            ]

        await self._in_place(view, list(vectors), change, timeout)
        self.cache.clear()

    async def _current(
        self, view: View, ids: list[PointId], timeout: float
    ) -> dict[PointId, PointRecord]:
        """The newest live copy of each id (every home must answer)."""
        homes = view.homes()

        def read(home: CollectionHome) -> Callable[[QdrantPort], list[PointRecord]]:
            return lambda port: port.retrieve(home.collection, ids, with_vectors=False)

        results = await asyncio.gather(
            *(self.upstream.call(home_route(h), read(h), timeout) for h in homes)
        )
        newest: dict[PointId, PointRecord] = {}
        for records in results:
            for record in records:
                held = newest.get(record.id)
                if held is None or version_of(record.payload) > version_of(held.payload):
                    newest[record.id] = record
        return {i: r for i, r in newest.items() if not is_tombstone(r.payload)}

    async def delete_vectors(self, view: View, body: models.DeleteVectors, timeout: float) -> None:
        """Deleting the library's only vector would leave a point no domain can hold: refused."""
        if not view.routed:
            route = view.routes[0]
            raise ApiError(
                400,
                f"Wrong input: collection {route.collection!r} has one unnamed vector; "
                "delete the points instead",
            )
        raise ApiError(
            400,
            "Wrong input: a library places every point by its one dense vector; a point "
            "without it cannot be placed. Delete the points, or update their vectors",
        )

    # ------------------------------------------------------------ batch

    async def batch(self, view: View, body: models.UpdateOperations, timeout: float) -> None:
        """Each operation in order, with the same guarantees as on its own."""
        for operation in body.operations:
            await self._one(view, operation, timeout)

    async def _one(self, view: View, operation: Any, timeout: float) -> None:
        if isinstance(operation, models.UpsertOperation):
            body = operation.upsert
            await self.upsert(view, records_of(getattr(body, "root", body), view), timeout)
        elif isinstance(operation, models.DeleteOperation):
            selector = operation.delete
            await self.delete(view, getattr(selector, "root", selector), timeout)
        elif isinstance(operation, models.SetPayloadOperation):
            await self.set_payload(view, operation.set_payload, timeout)
        elif isinstance(operation, models.OverwritePayloadOperation):
            await self.set_payload(view, operation.overwrite_payload, timeout, overwrite=True)
        elif isinstance(operation, models.DeletePayloadOperation):
            await self.delete_payload(view, operation.delete_payload, timeout)
        elif isinstance(operation, models.ClearPayloadOperation):
            selector = operation.clear_payload
            await self.clear_payload(view, getattr(selector, "root", selector), timeout)
        elif isinstance(operation, models.UpdateVectorsOperation):
            await self.update_vectors(view, operation.update_vectors, timeout)
        elif isinstance(operation, models.DeleteVectorsOperation):
            await self.delete_vectors(view, operation.delete_vectors, timeout)
        else:
            raise ApiError(400, f"Wrong input: unknown operation {type(operation).__name__}")


@dataclass(frozen=True)
class _Batch:
    """Points to write into one collection; ``copy_from``: the domain's own home, when this
    collection is a move's second home (which may catch up from it later)."""

    collection: str
    points: list[PointRecord]
    copy_from: CollectionHome | None = None


Ops = list[Callable[[QdrantPort], None]]
Change = Callable[[str, list[PointId], int, str | None], Ops]
"""(collection, ids, new version, their label) -> the operations that change them in place."""

_IN_PLACE_TRIES = 4


def _newest_copies(
    found: dict[CollectionHome, dict[PointId, Copy]], ids: Sequence[PointId]
) -> tuple[dict[CollectionHome, dict[str | None, list[PointId]]], list[Cleanup]]:
    """Where each id's newest live copy is (by home, then label), and removals of older copies.

    An id whose newest copy is a tombstone is deleted: nothing is changed, and its older
    live copies elsewhere are removed too.
    """
    newest = {
        i: max((copies[i].version for copies in found.values() if i in copies), default=None)
        for i in ids
    }
    targets: dict[CollectionHome, dict[str | None, list[PointId]]] = {}
    stale: dict[tuple[CollectionHome, int], list[PointId]] = {}
    for home, copies in found.items():
        for point_id, copy in copies.items():
            top = newest.get(point_id)
            if top is None:
                continue
            if copy.version < top:
                stale.setdefault((home, top), []).append(point_id)
            elif not copy.tombstone:
                targets.setdefault(home, {}).setdefault(copy.label, []).append(point_id)
    cleanups = [
        _cleanup(home, CleanupKind.REMOVE_OLDER, held, top) for (home, top), held in stale.items()
    ]
    return targets, cleanups


def _in_home(
    home: CollectionHome, groups: dict[str | None, list[PointId]], version: int, change: Change
) -> Callable[[QdrantPort], None]:
    def run(port: QdrantPort) -> None:
        for label, held in groups.items():
            for operation in change(home.collection, held, version, label):
                operation(port)

    return run


def _set_where(
    collection: str, payload: dict[str, Any], flt: models.Filter | None, key: str | None = None
) -> Callable[[QdrantPort], None]:
    return lambda port: port.set_payload(collection, payload, points_filter=flt, key=key)


def _overwrite_where(
    collection: str, payload: dict[str, Any], flt: models.Filter
) -> Callable[[QdrantPort], None]:
    return lambda port: port.overwrite_payload(collection, payload, points_filter=flt)


def _delete_keys_where(
    collection: str, keys: list[str], flt: models.Filter | None
) -> Callable[[QdrantPort], None]:
    return lambda port: port.delete_payload_keys(collection, keys, points_filter=flt)


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


def _tombstones_in_moves(view: View, cleanups: list[Cleanup]) -> list[Cleanup]:
    """In the two homes of a move being copied, a copy is replaced by a tombstone rather than
    removed: the migration cannot put an older copy back over a tombstone."""
    fenced = {h for m in view.moves if m.writes_both for h in (m.source, m.target)}
    return [
        replace(c, kind=CleanupKind.TOMBSTONE)
        if c.kind is CleanupKind.REMOVE_OLDER and CollectionHome(c.cluster, c.collection) in fenced
        else c
        for c in cleanups
    ]


def _refuse_unseen(looked: _Looked, ids: Sequence[PointId]) -> None:
    """A delete of an id no reachable home holds may be a delete of a copy on a cluster that
    does not answer: its tombstone waits in the outbox, and the delete is not acknowledged."""
    unseen = [i for i in ids if not any(i in copies for copies in looked.found.values())]
    if unseen:
        clusters = sorted({h.cluster for h in looked.unreached})
        raise UpstreamUnavailable(
            f"point {unseen[0]} may live on cluster(s) {', '.join(clusters)}, which do not "
            "answer: its delete is completed when they are back",
            clusters=clusters,
        )


def _live_below(copy: Copy, version: int) -> bool:
    return not copy.tombstone and copy.version < version


def _cleanup(
    home: CollectionHome, kind: CleanupKind, ids: Iterable[PointId], version: int
) -> Cleanup:
    return Cleanup(home.cluster, home.collection, kind, tuple(ids), version)


def _selector(points: Sequence[Any] | None, flt: models.Filter | None) -> Any:
    """A points selector from a body's ``points`` and ``filter`` (Qdrant takes either)."""
    if points is not None and flt is not None:
        ids = [parse_point_id(i) for i in points]
        return models.FilterSelector(filter=and_filters(ids_filter(ids), flt))
    if points is not None:
        return models.PointIdsList(points=list(points))
    if flt is not None:
        return models.FilterSelector(filter=flt)
    raise ApiError(400, "Wrong input: give points or filter")
