"""What the write path does to the homes a write leaves: look, remove older copies, tombstone.

Why this exists: a point may have copies in several homes of a library (it
changed domain, a move is under way, an earlier cleanup is still pending). The
write path needs three things from each home, all conditional on versions so
that they commute with every other write: *look* at which ids a home holds and
at which versions; *remove* the copies older than a write; *tombstone* the
copies older than a delete. The outbox's drainer replays the last two the same
way, and compacts tombstones once no cleanup is pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, MERGED_KEY, POINT_VERSION_KEY, TOMBSTONE_KEY
from librarian.core.fusion import PointId
from librarian.router.library import CollectionHome, home_route
from librarian.router.outbox import Cleanup, CleanupKind, Outbox
from librarian.router.upstream import Upstream, UpstreamError
from librarian.services.versioning import (
    and_filters,
    ids_filter,
    is_merged,
    is_tombstone,
    older_than,
    tombstone_filter,
    tombstone_payload,
    version_of,
)
from librarian.storage.errors import AuthenticationFailed, CollectionNotFound, InvalidRequest
from librarian.storage.port import PointRecord, QdrantPort

__all__ = ["Copy", "Homes", "delete_where", "unreachable"]

log = logging.getLogger("librarian.router")

# Failures that are the request's (or the configuration's) fault: not for the outbox.
_FAULTS = (InvalidRequest, CollectionNotFound, AuthenticationFailed)

_VERSION_KEYS = [POINT_VERSION_KEY, TOMBSTONE_KEY, LABEL_KEY, MERGED_KEY]


@dataclass(frozen=True)
class Copy:
    """What a home holds of one id: its version, whether it is a tombstone, its label."""

    version: int
    tombstone: bool
    label: str | None
    merged: bool = False  # the version was made by a change in place


def unreachable(error: BaseException) -> bool:
    """Is ``error`` a cluster being down or slow (worth an outbox entry), not a bad request?"""
    return isinstance(error, UpstreamError | TimeoutError) or (
        isinstance(error, Exception) and not isinstance(error, _FAULTS)
    )


def _look(collection: str, ids: Sequence[PointId]) -> Callable[[QdrantPort], dict[PointId, Copy]]:
    def run(port: QdrantPort) -> dict[PointId, Copy]:
        records = port.retrieve(collection, ids, with_vectors=False, with_payload=_VERSION_KEYS)
        return {
            r.id: Copy(
                version_of(r.payload),
                is_tombstone(r.payload),
                r.payload.get(LABEL_KEY),
                is_merged(r.payload),
            )
            for r in records
        }

    return run


def _look_all(
    homes: Sequence[CollectionHome], ids: Sequence[PointId]
) -> Callable[[QdrantPort], dict[CollectionHome, dict[PointId, Copy]]]:
    def run(port: QdrantPort) -> dict[CollectionHome, dict[PointId, Copy]]:
        return {home: _look(home.collection, ids)(port) for home in homes}

    return run


def _apply_all(cleanups: Sequence[Cleanup]) -> Callable[[QdrantPort], None]:
    """Carry out ``cleanups`` (all on one cluster) one after the other."""

    def run(port: QdrantPort) -> None:
        for cleanup in cleanups:
            ids = list(cleanup.ids)
            if cleanup.kind is CleanupKind.REMOVE_OLDER:
                _remove_older(cleanup.collection, ids, cleanup.version)(port)
                continue
            by_label: dict[str | None, list[PointId]] = {}
            for point_id, copy in _look(cleanup.collection, ids)(port).items():
                if copy.version < cleanup.version:
                    by_label.setdefault(copy.label or cleanup.label, []).append(point_id)
            for label, labelled in by_label.items():
                _tombstone(cleanup.collection, labelled, cleanup.version, label)(port)

    return run


def _remove_older(
    collection: str, ids: Sequence[PointId], version: int
) -> Callable[[QdrantPort], None]:
    flt = and_filters(ids_filter(ids), older_than(version))
    return lambda port: port.delete_points(collection, points_filter=flt)


def _tombstone(
    collection: str, ids: Sequence[PointId], version: int, label: str | None
) -> Callable[[QdrantPort], None]:
    flt = and_filters(ids_filter(ids), older_than(version))
    assert flt is not None
    payload = tombstone_payload(version=version, label=label)
    return lambda port: port.overwrite_payload(collection, payload, points_filter=flt)


class Homes:
    """Calls about the homes of a library: look, remove older, tombstone; and the outbox."""

    def __init__(self, upstream: Upstream, outbox: Outbox) -> None:
        self.upstream = upstream
        self.outbox = outbox

    async def look(
        self, homes: Sequence[CollectionHome], ids: Sequence[PointId], timeout: float
    ) -> tuple[dict[CollectionHome, dict[PointId, Copy]], list[CollectionHome]]:
        """What each home holds of ``ids``, and the homes that could not be asked.

        One call per cluster (its homes asked one after the other in that call): the
        clusters answer concurrently, and a library of many domains on one cluster
        costs one round trip to a worker thread, not one per domain.
        """
        by_cluster: dict[str, list[CollectionHome]] = {}
        for home in homes:
            by_cluster.setdefault(home.cluster, []).append(home)
        clusters = list(by_cluster)
        outcomes = await asyncio.gather(
            *(
                self.upstream.call(
                    home_route(by_cluster[c][0]), _look_all(by_cluster[c], ids), timeout
                )
                for c in clusters
            ),
            return_exceptions=True,
        )
        found: dict[CollectionHome, dict[PointId, Copy]] = {}
        missing: list[CollectionHome] = []
        for cluster, outcome in zip(clusters, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not unreachable(outcome):
                    raise outcome
                missing += by_cluster[cluster]
            else:
                found.update(outcome)
        return found, missing

    async def apply(self, cleanup: Cleanup, timeout: float) -> None:
        """Carry out one cleanup now (raises when its cluster cannot take it)."""
        route = home_route(CollectionHome(cleanup.cluster, cleanup.collection))
        await self.upstream.call(route, _apply_all([cleanup]), timeout)

    async def apply_or_queue(self, cleanups: Sequence[Cleanup], timeout: float) -> None:
        """Carry out ``cleanups``, one call per cluster, the clusters concurrently; the
        cleanups of a cluster that fails go to the outbox (all of them: each is
        conditional, so one that was done already changes nothing when replayed).

        Raises :class:`~librarian.router.outbox.OutboxFull` if they cannot be queued.
        """
        by_cluster: dict[str, list[Cleanup]] = {}
        for cleanup in cleanups:
            by_cluster.setdefault(cleanup.cluster, []).append(cleanup)
        clusters = list(by_cluster)
        outcomes = await asyncio.gather(
            *(
                self.upstream.call(
                    home_route(CollectionHome(c, by_cluster[c][0].collection)),
                    _apply_all(by_cluster[c]),
                    timeout,
                )
                for c in clusters
            ),
            return_exceptions=True,
        )
        queued = []
        for cluster, outcome in zip(clusters, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not unreachable(outcome):
                    raise outcome
                log.info("cleanups on cluster %s queued: %s", cluster, outcome)
                queued += [_with_error(c, outcome) for c in by_cluster[cluster]]
        await asyncio.to_thread(self.outbox.add, queued)

    async def drain(
        self,
        timeout: float,
        *,
        homes: Callable[[], Sequence[CollectionHome]] = list,
        now: float = 0.0,
        settle_window_s: float = 300.0,
        limit: int = 200,
    ) -> int:
        """Retry the oldest pending cleanups once; returns how many were done.

        ``homes`` gives the library's homes now (where a landed write's older copies
        may be); a write that timed out is watched for ``settle_window_s`` after it
        was queued (``now`` is the outbox clock's time).
        """
        pending = await asyncio.to_thread(self.outbox.pending, limit)
        done = 0
        for cleanup in pending:
            if not self.upstream.breaker.allow(cleanup.cluster):
                continue
            try:
                if cleanup.kind in (CleanupKind.SETTLE, CleanupKind.WATCH):
                    finished = await self._settle_late(cleanup, homes(), timeout)
                    finished = finished or now - cleanup.queued_at > settle_window_s
                elif cleanup.kind is CleanupKind.COPY:
                    await self.copy_over(cleanup, timeout)
                    finished = True
                else:
                    await self.apply(cleanup, timeout)
                    finished = True
            except Exception as error:  # noqa: BLE001 - kept for the next round, with its reason
                await asyncio.to_thread(self.outbox.failed, cleanup.entry_id, str(error))
                continue
            if finished:
                await asyncio.to_thread(self.outbox.done, cleanup.entry_id)
                done += 1
        return done

    async def copy_over(self, cleanup: Cleanup, timeout: float) -> None:
        """Copy ``cleanup.ids`` from its source home into its collection where it holds them
        older (each point conditional on its own version)."""
        assert cleanup.source is not None
        source = CollectionHome(*cleanup.source)
        records = await self.upstream.call(
            home_route(source),
            lambda port: port.retrieve(source.collection, list(cleanup.ids)),
            timeout,
        )
        by_version: dict[int, list[PointRecord]] = {}
        for record in records:
            by_version.setdefault(version_of(record.payload), []).append(record)
        target = CollectionHome(cleanup.cluster, cleanup.collection)

        def write(port: QdrantPort) -> None:
            for version, points in by_version.items():
                port.upsert(target.collection, points, update_filter=older_than(version))

        if by_version:
            await self.upstream.call(home_route(target), write, timeout)

    async def _settle_late(
        self, cleanup: Cleanup, homes: Sequence[CollectionHome], timeout: float
    ) -> bool:
        """Settle a timed-out write where it has landed, as the write would have: remove older
        copies elsewhere, or its own copy if a newer one is elsewhere. True once done (a
        watched write that never lands is watched until the window closes)."""
        home = CollectionHome(cleanup.cluster, cleanup.collection)
        every = [home, *[h for h in homes if h != home]]
        found, unreached = await self.look(every, list(cleanup.ids), timeout)
        if unreached:  # every home must answer to know whether a newer copy is elsewhere
            clusters = sorted({h.cluster for h in unreached})
            raise UpstreamError(
                f"cluster(s) {', '.join(clusters)} do not answer", clusters=clusters
            )
        mine = found[home]
        version = cleanup.version
        landed = [i for i in cleanup.ids if i in mine and mine[i].version == version]
        beaten = {
            i
            for other, copies in found.items()
            if other != home
            for i in landed
            if i in copies and copies[i].version > version
        }
        cleanups = [
            Cleanup(h.cluster, h.collection, CleanupKind.REMOVE_OLDER, tuple(landed), version)
            for h in every[1:]
        ]
        if beaten:  # a newer write settled meanwhile: this one yields
            cleanups.append(
                Cleanup(
                    home.cluster,
                    home.collection,
                    CleanupKind.REMOVE_OLDER,
                    tuple(sorted(beaten, key=str)),
                    version + 1,
                )
            )
        if landed:
            await self.apply_or_queue(cleanups, timeout)
        if cleanup.kind is CleanupKind.WATCH:
            # A newer copy in its home does not end the watch: the write can still land once
            # that copy has gone (moved elsewhere, removed), and must then be settled.
            return len(landed) == len(cleanup.ids)
        settled = {i for i in cleanup.ids if i in mine and mine[i].version >= version}
        return len(settled) == len(cleanup.ids)

    async def compact(
        self, homes: Sequence[CollectionHome], before_version: int, timeout: float
    ) -> None:
        """Drop tombstones older than ``before_version`` (only when no cleanup is pending)."""
        if len(self.outbox):
            return
        flt = and_filters(tombstone_filter(), older_than(before_version))
        for home in homes:
            try:
                await self.upstream.call(
                    home_route(home), delete_where(home.collection, flt), timeout
                )
            except Exception as error:  # noqa: BLE001 - compaction waits for the next round
                log.info("tombstone compaction of %s/%s failed: %s", *home, error)


def delete_where(collection: str, flt: models.Filter | None) -> Callable[[QdrantPort], None]:
    """The operation deleting the points of ``collection`` that match ``flt``."""
    assert flt is not None
    return lambda port: port.delete_points(collection, points_filter=flt)


def _with_error(cleanup: Cleanup, error: BaseException) -> Cleanup:
    return replace(cleanup, last_error=f"{type(error).__name__}: {error}")
