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
back; payload and vector updates are versioned the same way, changed in place
(:mod:`librarian.router.changes`, which this class extends). The write is
acknowledged once its new home holds it; a home that cannot be reached for the
settling step gets an outbox entry instead of failing the write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, MERGED_KEY, POINT_VERSION_KEY
from librarian.core.fusion import PointId
from librarian.core.unrouted import domain_for_unrouted
from librarian.router.changes import InPlaceChanges
from librarian.router.cleanup import Copy, delete_where, unreachable
from librarian.router.conditional import Condition, Seen, condition_of, evaluate_in, seen_newest
from librarian.router.library import (
    CollectionHome,
    DomainRoute,
    View,
    home_route,
)
from librarian.router.outbox import Cleanup, CleanupKind, OutboxFull
from librarian.router.qdrant_api import ApiError, parse_point_id
from librarian.router.upstream import UpstreamTimeout, UpstreamUnavailable
from librarian.router.write_steps import (
    IN_PLACE_TRIES,
    Looked,
    cleanup_of,
    no_reserved,
    point_vectors,
)
from librarian.services.versioning import (
    and_filters,
    ids_filter,
    older_than,
    stamped,
    tombstone_payload,
    version_at_most,
    version_is,
)
from librarian.storage.port import PointRecord, QdrantPort

__all__ = ["Writes", "records_of"]


def _batch_vectors(batch: models.Batch) -> list[Any]:
    """Each point's vectors of a batch (a list per point, or a list per vector name)."""
    vectors = batch.vectors
    if isinstance(vectors, dict):
        lengths = {len(values) for values in vectors.values()}
        if lengths - {len(batch.ids)}:
            raise ApiError(
                400, "Wrong input: batch ids, vectors and payloads must have the same length"
            )
        return [
            {name: values[i] for name, values in vectors.items()} for i in range(len(batch.ids))
        ]
    return list(vectors)


def records_of(operations: Any, view: View) -> list[PointRecord]:
    """The points of an upsert body (a point list or a batch), validated against the view."""
    if isinstance(operations, models.PointsList):
        return [
            PointRecord(
                parse_point_id(p.id),
                point_vectors(p.vector, view),
                no_reserved(p.payload) if view.routed else dict(p.payload or {}),
            )
            for p in operations.points
        ]
    batch = operations.batch
    vectors = _batch_vectors(batch)
    payloads = batch.payloads or [None] * len(batch.ids)
    if len(vectors) != len(batch.ids) or len(payloads) != len(batch.ids):
        raise ApiError(
            400, "Wrong input: batch ids, vectors and payloads must have the same length"
        )
    return [
        PointRecord(
            parse_point_id(i),
            point_vectors(v, view),
            no_reserved(p) if view.routed else dict(p or {}),
        )
        for i, v, p in zip(batch.ids, vectors, payloads, strict=True)
    ]


def _last_wins(records: Sequence[PointRecord]) -> list[PointRecord]:
    """One record per id, the last one given (as one upsert of a repeated id ends in Qdrant)."""
    return list({r.id: r for r in records}.values())


class Writes(InPlaceChanges):
    """Every write operation of a library collection (and plain forwarding for the others)."""

    def _placed(self, view: View, records: Sequence[PointRecord]) -> dict[int, list[PointRecord]]:
        """The records grouped by the unit (domain) that is to hold them: the nearest to its
        routing vector, or, for a point without one, the domain its id hashes to (as the
        source's labelling places it: :mod:`librarian.core.unrouted`)."""
        assert view.library is not None
        routed = [(r, v) for r in records if (v := r.dense(view.vector)) is not None]
        nearest = view.library.nearest_domain([v for _, v in routed])
        unit_of = {id(r): unit for (r, _), unit in zip(routed, nearest, strict=True)}
        domain_ids = [route.domain_id for route in view.routes]
        groups: dict[int, list[PointRecord]] = {}
        for record in records:
            unit = unit_of.get(id(record))
            if unit is None:
                unit = domain_ids.index(domain_for_unrouted(record.id, domain_ids))
            groups.setdefault(unit, []).append(record)
        return groups

    # ------------------------------------------------------------ upsert

    async def upsert(
        self,
        view: View,
        records: list[PointRecord],
        timeout: float,
        condition: Condition | None = None,
    ) -> None:
        """Each record into its nearest domain at a new version; older copies elsewhere removed.

        With a ``condition`` (Qdrant's ``update_filter`` / ``update_mode``) each point is
        written only if its newest copy, as the look saw it, lets it be: see
        :meth:`_conditional_once`.
        """
        if not records:
            return
        if condition is not None and condition.unconditional:
            condition = None
        if not view.routed:
            await self._forward_upsert(view, records, condition, timeout)
            return
        pending = _last_wins(records)
        if condition is not None:
            await self._conditional_upsert(view, pending, condition, timeout)
            return
        kept: list[Cleanup] = []  # own copies left while they are written again
        try:
            for _ in range(IN_PLACE_TRIES):
                try:
                    overtaken = await self._upsert_once(view, pending, timeout, condition, kept)
                finally:
                    self.cache.clear()
                if not overtaken:
                    return
                pending = [r for r in pending if r.id in overtaken]  # written again, after them
        finally:
            await self._drop_kept(kept, timeout)
        raise ApiError(
            503,
            f"Service unavailable: the write of {len(pending)} point(s) kept being overtaken by "
            "concurrent updates of the same points; retry it",
        )

    async def _conditional_upsert(
        self, view: View, records: list[PointRecord], condition: Condition, timeout: float
    ) -> None:
        """Decide and write ``records`` until each decision stands (bounded tries)."""
        attempts: dict[PointId, dict[int, int]] = {}
        pending = records
        for _ in range(IN_PLACE_TRIES):
            try:
                again = await self._conditional_once(view, pending, condition, timeout, attempts)
            finally:
                self.cache.clear()
            if not again:
                return
            pending = [r for r in pending if r.id in again]
        unsettled = await self._withdraw(view, [r.id for r in pending], attempts, timeout)
        if not unsettled:
            return
        raise ApiError(
            503,
            f"Service unavailable: the write of {len(unsettled)} point(s) kept being overtaken "
            "by concurrent updates of the same points; retry it",
        )

    async def _withdraw(
        self,
        view: View,
        ids: list[PointId],
        attempts: dict[PointId, dict[int, int]],
        timeout: float,
    ) -> set[PointId]:
        """After the last try: the ids whose write neither stands nor was withdrawn.

        A try's copy still there may have been decided on a copy another write replaced;
        it is withdrawn the way a decision not to write is made (the newest copy someone
        else made gets a new version, then this write's copies, older now, are removed),
        never by removing it outright. A try that stands after all is settled and done.
        """
        try:
            looked = await self._look(view, ids, timeout)
            if looked.unreached:
                return set(ids)
            own = {i: set(attempts.get(i, {})) for i in ids}
            seen = seen_newest(looked.found, ids, own)
            standing = _standing(looked.found, ids, seen, attempts)
            stood = {i for held in standing.values() for i in held}
            for attempt, homes_of in standing.items():
                await self._settle_landed(view, homes_of, attempt, timeout)
            held = [
                i
                for i in ids
                if i not in stood
                and any(
                    c.version in own[i] for copies in looked.found.values() if (c := copies.get(i))
                )
            ]
            if held:
                await self._restamp(view, looked, seen, held, own, timeout)
            return set(ids) - stood
        finally:
            self.cache.clear()

    async def _forward_upsert(
        self,
        view: View,
        records: list[PointRecord],
        condition: Condition | None,
        timeout: float,
    ) -> None:
        """An upsert of a collection outside the library: one collection, Qdrant decides."""
        route = view.routes[0]
        update_filter = condition.update_filter if condition is not None else None
        update_mode = condition.update_mode if condition is not None else None
        await self._call(
            route,
            lambda port: port.upsert(
                route.collection, records, update_filter=update_filter, update_mode=update_mode
            ),
            timeout,
        )
        self.cache.clear()

    async def _upsert_once(
        self,
        view: View,
        records: list[PointRecord],
        timeout: float,
        condition: Condition | None = None,
        kept: list[Cleanup] | None = None,
        attempts: dict[PointId, dict[int, int]] | None = None,
    ) -> set[PointId]:
        """One versioned write of ``records``; the ids a newer change in place overtook
        (with a ``condition``: the ids to decide again, ``attempts`` its earlier tries)."""
        if condition is not None:
            return await self._conditional_once(
                view, records, condition, timeout, {} if attempts is None else attempts
            )
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
        return await self._settle_landed(view, new_home, version, timeout, kept)

    async def _conditional_once(
        self,
        view: View,
        records: list[PointRecord],
        condition: Condition,
        timeout: float,
        attempts: dict[PointId, dict[int, int]],
    ) -> set[PointId]:
        """One conditional write of ``records``; the ids to decide and write again.

        Every home is looked at (a home that does not answer may hold the newest copy:
        the write is refused with a 503, as a change in place is). Each point's newest
        copy made by someone else decides (this write's own earlier tries, ``attempts``:
        id -> {version: the version it was decided on}, are passed over): a tombstone or
        no copy is a point that does not exist; the client's filter is evaluated by the
        engine of a home holding the newest live copy, on that copy at the version the
        look saw (a copy changed since is decided again). The points the condition
        admits are written like any write, at a new version, marked as depending on what
        they replaced (``merged``: an older write that lands later is made again after
        this one), and only where the new home holds nothing newer than the copy the
        decision was made on (or an earlier try of this write).

        A copy is only ever removed for a newer copy that exists, never taken back: the
        writer of a copy this write finds between its decision and its own copy may at
        the same moment give way to this write's copy, and taking it back too would leave
        the point with no copy. So:

        - a try finding such a copy (the decision was made on a copy it replaces) leaves
          its own copy and decides again, on that copy;
        - a try finding a newer copy gives way to it (removes its own copy) and decides
          again, on it, as a plain write does;
        - an earlier try whose copy is still there with nothing newer than what it was
          decided on, but this write's own copies, stands;
        - a decision not to write, while an earlier try's copy (newer than the copy now
          decided on) is still there, gives the decided-on copy a new version, then
          removes the earlier try's copy (older than it now).
        """
        ids = [r.id for r in records]
        looked = await self._look(view, ids, timeout)
        if looked.unreached:
            raise _undecidable(looked.unreached)
        own = {i: set(attempts.get(i, {})) for i in ids}
        seen = seen_newest(looked.found, ids, own)
        standing = _standing(looked.found, ids, seen, attempts)
        again: set[PointId] = set()
        for attempt, homes_of in standing.items():
            again |= await self._settle_landed(view, homes_of, attempt, timeout)
        undecided = [r for r in records if not any(r.id in s for s in standing.values())]
        if not undecided:
            return again
        matched, changed = await self._evaluate(
            condition, {r.id: seen[r.id] for r in undecided}, timeout
        )
        again |= changed
        chosen = [
            r
            for r in undecided
            if r.id not in changed
            and condition.admits(seen[r.id].live)
            and (r.id in matched or not condition.needs_filter(seen[r.id].live))
        ]
        chosen_ids = {r.id for r in chosen}
        declined = [
            r.id
            for r in undecided
            if r.id not in changed
            and r.id not in chosen_ids
            and any(
                c.version in own[r.id]
                for copies in looked.found.values()
                if (c := copies.get(r.id))
            )
        ]
        if declined:
            again |= await self._restamp(view, looked, seen, declined, own, timeout)
        if not chosen:
            return again
        version = self.clock.tick(looked.highest)
        based_on = {r.id: seen[r.id].version for r in chosen}
        groups = self._placed(view, chosen)
        await self._write_homes(view, groups, version, timeout, based_on=based_on, passed_over=own)
        for point_id, base in based_on.items():
            attempts.setdefault(point_id, {})[version] = base
        self.cache.clear()
        new_home = {
            p.id: view.write_homes(view.routes[u]) for u, points in groups.items() for p in points
        }
        intervened = await self._intervened(view, new_home, based_on, version, own, timeout)
        landed = {i: homes for i, homes in new_home.items() if i not in intervened}
        again |= intervened
        if landed:  # no ``kept``: a newer copy that exists is given way to
            again |= await self._settle_landed(view, landed, version, timeout)
        return again

    async def _restamp(
        self,
        view: View,
        looked: Looked,
        seen: dict[PointId, Seen],
        ids: list[PointId],
        own: dict[PointId, set[int]],
        timeout: float,
    ) -> set[PointId]:
        """Give the copies decided on (not to be written over) a new version, where they
        are still that version; then remove this write's earlier copies of those ids,
        older now. Returns the ids whose decided-on copy changed meanwhile (to decide
        again: their earlier copies stay)."""
        version = self.clock.tick(looked.highest)
        by_home: dict[tuple[CollectionHome, int], list[PointId]] = {}
        for home, copies in looked.found.items():
            for i in ids:
                if i in copies and copies[i].version == seen[i].version:
                    by_home.setdefault((home, seen[i].version), []).append(i)
        mark = {POINT_VERSION_KEY: version, MERGED_KEY: True}
        for (home, decided), held in by_home.items():
            flt = and_filters(ids_filter(held), version_is(decided))
            await self.upstream.call(
                home_route(home), _set_where(home.collection, mark, flt), timeout
            )
        after, _ = await self.homes.look(list(view.homes()), ids, self._settle_timeout(timeout))
        restamped = {
            i for copies in after.values() for i, c in copies.items() if c.version == version
        }
        for home, copies in after.items():
            earlier = [
                i for i in sorted(restamped, key=str) if i in copies and copies[i].version in own[i]
            ]
            if earlier:
                versions = sorted({copies[i].version for i in earlier})
                flt = and_filters(
                    ids_filter(earlier), models.Filter(should=[version_is(v) for v in versions])
                )
                await self.upstream.call(
                    home_route(home), delete_where(home.collection, flt), timeout
                )
        return set(ids) - restamped

    async def _evaluate(
        self, condition: Condition, seen: dict[PointId, Seen], timeout: float
    ) -> tuple[set[PointId], set[PointId]]:
        """The ids the client's filter matches (on their newest copy, at the version seen)
        and the ids whose newest copy changed before it could be evaluated."""
        asked: dict[CollectionHome, dict[PointId, int]] = {}
        for point_id, newest in seen.items():
            if condition.needs_filter(newest.live):
                asked.setdefault(newest.homes[0], {})[point_id] = newest.version
        if not asked or condition.update_filter is None:
            return set(), set()
        flt = condition.update_filter
        verdicts = await asyncio.gather(
            *(
                self.upstream.call(
                    home_route(home), evaluate_in(home.collection, ids, flt), timeout
                )
                for home, ids in asked.items()
            )
        )
        matched = {i for verdict in verdicts for i in verdict.matched}
        changed = {i for verdict in verdicts for i in verdict.changed}
        return matched, changed

    async def _intervened(
        self,
        view: View,
        new_home: dict[PointId, tuple[CollectionHome, ...]],
        based_on: dict[PointId, int],
        version: int,
        own: dict[PointId, set[int]],
        timeout: float,
    ) -> set[PointId]:
        """The ids a copy newer than the one decided on, older than ``version`` (and not
        this write's own), reached meanwhile: the decision was made on a copy that one
        replaces, and is made again (this write's copies stay until a newer one lands).
        Every home must answer (one that does not may hold such a copy): otherwise the
        write is settled from the outbox and answered with a 503, in doubt."""
        ids = list(new_home)
        after, unreached = await self.homes.look(
            list(view.homes()), ids, self._settle_timeout(timeout)
        )
        if unreached:
            await self._settle_later(new_home, version)
            raise _undecidable(unreached)
        return {
            i
            for copies in after.values()
            for i, c in copies.items()
            if i in based_on
            and c.version not in own.get(i, ())
            and based_on[i] < c.version < version
        }

    async def _settle_landed(
        self,
        view: View,
        new_home: dict[PointId, tuple[CollectionHome, ...]],
        version: int,
        timeout: float,
        kept: list[Cleanup] | None = None,
    ) -> set[PointId]:
        """Settle a write that landed in ``new_home``; the ids a newer change overtook."""
        try:
            return await self._settle(view, new_home, version, timeout, kept)
        except OutboxFull:
            # Not acknowledged, but its copy stays: older copies elsewhere may be gone already
            # (removed for it), so taking it back could leave the point with no copy. A read
            # serves the newest copy; an older one left in a home that did not answer is
            # removed by the next write of the point there.
            raise self._outbox_full() from None
        except Exception as error:
            if unreachable(error):  # it landed: settled from the outbox once all homes answer
                await self._settle_later(new_home, version)
            raise

    async def _settle_later(
        self, new_home: dict[PointId, tuple[CollectionHome, ...]], version: int
    ) -> None:
        """Queue the settling of a write that landed in ``new_home`` (as far as the outbox
        has room: a write that is not settled is not acknowledged either)."""
        by_home: dict[CollectionHome, list[PointId]] = {}
        for point_id, homes in new_home.items():
            for home in homes:
                by_home.setdefault(home, []).append(point_id)
        queued = [cleanup_of(h, CleanupKind.SETTLE, ids, version) for h, ids in by_home.items()]
        with contextlib.suppress(OutboxFull):
            await asyncio.to_thread(self.homes.outbox.add, queued)

    async def _write_homes(
        self,
        view: View,
        groups: dict[int, list[PointRecord]],
        version: int,
        timeout: float,
        *,
        based_on: dict[PointId, int] | None = None,
        passed_over: dict[PointId, set[int]] | None = None,
    ) -> None:
        """Each group into its domain's write homes, labelled and versioned, where the stored
        version is older; one call per cluster (its collections written one after the other).

        ``based_on`` (a conditional write: each id's version its condition was decided on)
        writes a point only where the stored version is at most that one, and marks it
        ``merged``; ``passed_over`` (its earlier tries' versions) may be written over too.

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
                    p.id,
                    p.vector,
                    stamped(
                        p.payload,
                        version=version,
                        label=route.domain_id,
                        merged=based_on is not None,
                    ),
                )
                for p in points
            ]
            for home in view.write_homes(route):
                primary = None if home == route.home else route.home
                writes.setdefault(home.cluster, []).append(
                    _Batch(home.collection, stamped_points, primary)
                )
                first.setdefault(home.cluster, route if home == route.home else home_route(home))

        def write_all(batches: list[_Batch]) -> Callable[[QdrantPort], None]:
            def run(port: QdrantPort) -> None:
                for batch in batches:
                    for points, condition in _conditioned(
                        batch.points, version, based_on, passed_over
                    ):
                        port.upsert(batch.collection, points, update_filter=condition)

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
                        Cleanup(cluster, batch.collection, CleanupKind.WATCH, ids, version)
                    )
        if fatal is not None:
            # not acknowledged, but the clusters that answered hold it: settled from the
            # outbox once every home answers, like a write that landed late
            queued += [
                Cleanup(cluster, batch.collection, CleanupKind.SETTLE, batch_ids, version)
                for cluster, batches in writes.items()
                if cluster not in down
                for batch in batches
                if (batch_ids := tuple(p.id for p in batch.points))
            ]
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
        kept: list[Cleanup] | None = None,
    ) -> set[PointId]:
        """Remove copies older than ``version`` from the other homes; yield to a newer write.

        Returns the ids a newer change in place holds (here or elsewhere): such a change
        was made on a copy without this write, so this write is to be made again, after it.
        With ``kept``, this write's own copies of those ids stay until it is made again
        (their removal is added to ``kept``, for when the caller is done): the change may
        still be taken back (a conditional write that finds it decided on a replaced copy
        does so), and the point must not be left without a live copy meanwhile.
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
                cleanups.append(cleanup_of(home, CleanupKind.REMOVE_OLDER, elsewhere, version))
                for mine in {h for i in elsewhere for h in new_home[i]}:
                    settle.append(
                        cleanup_of(
                            mine,
                            CleanupKind.SETTLE,
                            [i for i in elsewhere if mine in new_home[i]],
                            version,
                        )
                    )
                continue
            older = [i for i in elsewhere if i in copies and copies[i].version < version]
            if older:
                cleanups.append(cleanup_of(home, CleanupKind.REMOVE_OLDER, older, version))
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
        # A newer write, delete or change won elsewhere: yield to it (a write that a change
        # overtook is made again after it, into its home, at a newer version).
        for home, lost in beaten.items():
            again = lost & overtaken if kept is not None else set()
            if again and kept is not None:
                ordered = sorted(again, key=str)
                kept.append(cleanup_of(home, CleanupKind.REMOVE_OLDER, ordered, version + 1))
            lost = lost - again
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
        for _ in range(IN_PLACE_TRIES):
            looked = await self._look(view, pending, timeout)
            if looked.unreached and self.homes.outbox.full():
                raise self._outbox_full()
            version = self.clock.tick(looked.highest)
            cleanups = [
                cleanup_of(h, CleanupKind.TOMBSTONE, pending, version) for h in looked.unreached
            ]
            for home, copies in looked.found.items():
                older = [i for i in pending if i in copies and copies[i].version < version]
                if older:
                    cleanups.append(cleanup_of(home, CleanupKind.TOMBSTONE, older, version))
            await self._queue_or_apply(cleanups, timeout)
            await self._fence_tombstones(view, looked.found, pending, version, timeout)
            if looked.unreached:
                _refuse_unseen(looked, pending)
            pending = await self._settle_delete(view, looked, pending, version, timeout)
            if not pending:
                return
        raise ApiError(
            503,
            f"Service unavailable: the delete of {len(pending)} point(s) kept being overtaken by "
            "concurrent updates of the same points; retry it",
        )

    async def _settle_delete(
        self, view: View, before: Looked, ids: list[PointId], version: int, timeout: float
    ) -> list[PointId]:
        """Look at every home again once the tombstones are down, as a write looks after
        writing; returns the ids a newer change in place holds alive (to delete again).

        A write that took a version below this delete's and landed between the first
        look and the tombstones was missed by that look, and its own look may have
        missed the tombstones: whichever of the two looks last sees the other, and this
        one tombstones such a copy (left live, it would outlive the tombstone once
        tombstones are compacted).

        The delete is acknowledged only if each point that was live is now held down
        in a home that answers (by this tombstone or a newer copy): a tombstone that
        only waits in the outbox would let a read serve the point once its cluster
        answers again, before the outbox is drained. Such a delete answers 502; it is
        completed from the outbox.
        """
        homes = list(view.homes())
        found, unreached = await self.homes.look(homes, ids, self._settle_timeout(timeout))
        late = [
            cleanup_of(home, CleanupKind.TOMBSTONE, older, version)
            for home, copies in found.items()
            if (older := [i for i in ids if i in copies and _live_below(copies[i], version)])
        ]
        late += [cleanup_of(home, CleanupKind.TOMBSTONE, ids, version) for home in unreached]
        await self._queue_or_apply(late, timeout)
        live = before.live()
        held_down = {
            i for copies in found.values() for i, c in copies.items() if c.version >= version
        }
        floating = [
            i for i in ids if i not in held_down and any(i in held for held in live.values())
        ]
        if floating:
            clusters = sorted({h.cluster for h, held in live.items() if floating[0] in held})
            raise UpstreamUnavailable(
                f"the tombstone of point {floating[0]} could not be written on cluster(s) "
                f"{', '.join(clusters)}: the delete is completed when they answer",
                clusters=clusters,
            )
        return sorted(
            {
                i
                for copies in found.values()
                for i, c in copies.items()
                if c.version > version and c.merged and not c.tombstone
            },
            key=str,
        )

    # ------------------------------------------------------------ batch

    async def batch(self, view: View, body: models.UpdateOperations, timeout: float) -> None:
        """Each operation in order, with the same guarantees as on its own."""
        for operation in body.operations:
            await self._one(view, operation, timeout)

    async def _one(self, view: View, operation: Any, timeout: float) -> None:
        if isinstance(operation, models.UpsertOperation):
            body = getattr(operation.upsert, "root", operation.upsert)
            condition = condition_of(body, routed=view.routed)
            await self.upsert(view, records_of(body, view), timeout, condition)
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


def _conditioned(
    points: list[PointRecord],
    version: int,
    based_on: dict[PointId, int] | None,
    passed_over: dict[PointId, set[int]] | None = None,
) -> list[tuple[list[PointRecord], models.Filter]]:
    """The points of one write with the condition on the stored copy each is written under:
    older than ``version``, or (a conditional write) at most the version decided on, or one
    of the write's own earlier tries (``passed_over``)."""
    if based_on is None:
        return [(points, older_than(version))]
    by_version: dict[tuple[int, tuple[int, ...]], list[PointRecord]] = {}
    for point in points:
        earlier = tuple(sorted((passed_over or {}).get(point.id, ())))
        by_version.setdefault((based_on[point.id], earlier), []).append(point)
    return [
        (group, version_at_most(seen) if not earlier else _seen_or_own(seen, earlier))
        for (seen, earlier), group in by_version.items()
    ]


def _seen_or_own(seen: int, earlier: tuple[int, ...]) -> models.Filter:
    return models.Filter(should=[version_at_most(seen), *(version_is(v) for v in earlier)])


def _set_where(
    collection: str, payload: dict[str, Any], flt: models.Filter | None
) -> Callable[[QdrantPort], None]:
    return lambda port: port.set_payload(collection, payload, points_filter=flt)


def _standing(
    found: dict[CollectionHome, dict[PointId, Copy]],
    ids: Sequence[PointId],
    seen: dict[PointId, Seen],
    attempts: dict[PointId, dict[int, int]],
) -> dict[int, dict[PointId, tuple[CollectionHome, ...]]]:
    """The earlier tries that stand, by version: a copy of the try is still there and no
    copy but the write's own is newer than the one the try was decided on (whatever found
    it made on a replaced copy has given way since). Each with the homes holding it."""
    standing: dict[int, dict[PointId, tuple[CollectionHome, ...]]] = {}
    for point_id in ids:
        tries = attempts.get(point_id, {})
        held = [
            (home, c.version)
            for home, copies in found.items()
            if (c := copies.get(point_id)) is not None and c.version in tries and not c.tombstone
        ]
        if not held:
            continue
        latest = max(version for _, version in held)
        if seen[point_id].version <= tries[latest]:
            homes = tuple(home for home, version in held if version == latest)
            standing.setdefault(latest, {})[point_id] = homes
    return standing


def _undecidable(unreached: Sequence[CollectionHome]) -> ApiError:
    clusters = ", ".join(sorted({h.cluster for h in unreached}))
    return ApiError(
        503,
        f"Service unavailable: cannot decide a conditional write (update_filter, update_mode) "
        f"while cluster(s) {clusters} do not answer; retry it",
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


def _refuse_unseen(looked: Looked, ids: Sequence[PointId]) -> None:
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
