"""Changes in place: payload and vector updates of each point's newest copy, at a new version.

Why this exists: a payload or vector update keeps the rest of a point, so it
is made where the point is, not rewritten elsewhere: on the newest copy only
(older copies awaiting removal are removed, a deleted point is left alone),
conditionally on the stored version, and marked ``merged``. A write or delete
with an older version that meets such a copy is made again after it (see
:mod:`librarian.router.writes`), and a change that a newer change overtook
before it landed is made again too. During a move both homes of the domain
take the change, the lagging one first getting the newest copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from qdrant_client.http import models

from librarian.contracts.payload import MERGED_KEY, POINT_VERSION_KEY, RESERVED_KEYS
from librarian.core.fusion import PointId
from librarian.router.cleanup import Copy, delete_where
from librarian.router.conditional import Condition, refuse_reserved_keys
from librarian.router.library import (
    CollectionHome,
    View,
    home_route,
)
from librarian.router.outbox import Cleanup, CleanupKind
from librarian.router.qdrant_api import ApiError, parse_point_id
from librarian.router.write_steps import (
    IN_PLACE_TRIES,
    Looked,
    WriteSteps,
    cleanup_of,
    no_reserved,
    point_vectors,
)
from librarian.services.versioning import (
    and_filters,
    ids_filter,
    is_tombstone,
    live_filter,
    older_than,
    stamped,
    user_payload,
    version_is,
    version_of,
)
from librarian.storage.errors import CollectionNotFound, InvalidRequest
from librarian.storage.port import PointRecord, QdrantPort
from librarian.storage.vectors import Vectors, as_named, from_named, routing_vector

__all__ = ["InPlaceChanges"]


class InPlaceChanges(WriteSteps):
    """Set / overwrite / delete / clear payload and update / delete vectors."""

    async def set_payload(
        self,
        view: View,
        body: models.SetPayload,
        timeout: float,
        *,
        overwrite: bool = False,
    ) -> None:
        """Set (merge) or overwrite the payload of the selected points, at a new version."""
        payload = no_reserved(body.payload)
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
        attempts: set[int] = set()  # versions of this change's earlier tries
        for _ in range(IN_PLACE_TRIES):
            looked = await self._look(view, pending, timeout)
            if looked.unreached:
                clusters = ", ".join(sorted({h.cluster for h in looked.unreached}))
                raise ApiError(
                    503,
                    f"Service unavailable: cannot update points while cluster(s) {clusters} "
                    "do not answer",
                )
            version = self.clock.tick(looked.highest)
            targets, stale = _newest_copies(looked.found, pending, attempts)
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
            pending = await self._settle_change(
                view, looked, targets, changed, version, attempts, timeout
            )
            attempts.add(version)
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

    async def _settle_change(
        self,
        view: View,
        looked: Looked,
        targets: dict[CollectionHome, dict[str | None, list[PointId]]],
        changed: list[PointId],
        version: int,
        attempts: set[int],
        timeout: float,
    ) -> list[PointId]:
        """Look at every home once the change is made; returns the ids to change again.

        Two reasons to make it again, after what overtook it:

        - a newer change in place holds the point (it landed first, on the copy this one
          was about to change);
        - a write of the point into another home, newer than the copy this change was
          made on, landed after the first look: the change was made on a copy that write
          replaces. The change is made again on the write's copy, passing over its own
          copy (see :func:`_newest_copies`). (The write's own look, after writing, may have
          come before this change landed and missed it.)

        A copy is only ever removed for a newer copy that exists elsewhere, never taken
        back: another writer may already have removed the write's copy for this one, and
        taking this one back too would leave the point without any copy. So the copies of
        earlier tries are removed here, once this try's copy (or a newer one) is seen.
        """
        if not changed:
            return []
        after, _ = await self.homes.look(list(view.homes()), changed, self._settle_timeout(timeout))
        changed_in: dict[PointId, set[CollectionHome]] = {}
        based_on: dict[PointId, int] = {}
        for home, groups in targets.items():
            for group in groups.values():
                for i in group:
                    changed_in.setdefault(i, set()).add(home)
                    base = looked.found.get(home, {}).get(i)
                    if base is not None:
                        based_on[i] = max(based_on.get(i, 0), base.version)
        overtaken = {
            i
            for copies in after.values()
            for i, c in copies.items()
            if c.version > version and c.merged and not c.tombstone
        }
        replaced = {
            i
            for home, copies in after.items()
            for i, c in copies.items()
            if home not in changed_in.get(i, set())
            and not c.tombstone
            and c.version not in attempts
            and based_on.get(i, 0) < c.version < version
        }
        landed = {i for copies in after.values() for i, c in copies.items() if c.version >= version}
        superseded: dict[tuple[CollectionHome, int], list[PointId]] = {}
        for home, copies in after.items():
            for i, c in copies.items():
                if i in landed and c.version in attempts:
                    superseded.setdefault((home, c.version), []).append(i)
        for (home, earlier), held in superseded.items():
            flt = and_filters(ids_filter(sorted(held, key=str)), version_is(earlier))
            await self._call(home_route(home), delete_where(home.collection, flt), timeout)
        return sorted(overtaken | replaced, key=str)

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

    async def _upsert_once(
        self,
        view: View,
        records: list[PointRecord],
        timeout: float,
        condition: Condition | None = None,
        kept: list[Cleanup] | None = None,
        attempts: dict[PointId, dict[int, int]] | None = None,
    ) -> set[PointId]:
        """One versioned upsert (conditional, given a ``condition``, ``attempts`` its earlier
        tries); the ids to write again (made by :class:`librarian.router.writes.Writes`)."""
        raise NotImplementedError

    async def _place_anew(
        self,
        view: View,
        ids: list[PointId],
        rebuild: Callable[[PointRecord], Vectors | None],
        timeout: float,
        kept: list[Cleanup],
        condition: Condition | None = None,
        redo: Callable[[PointRecord], Vectors | None] | None = None,
    ) -> set[PointId]:
        """Upsert each point's newest copy with the vectors ``rebuild`` gives it (``None``:
        leave that point alone), so the write path places it anew; returns the ids placed
        (or, with a ``condition``, decided: written if the condition let them be). A point
        a conditional placement decides again gets its vectors from ``redo`` (by default
        ``rebuild``): its earlier copy is still there, so the change cannot be left to a
        change in place any more.

        A change in place that overtook the upsert was made on the older copy: the point
        is read again and placed again, so that change is kept (an ordinary upsert would
        be written again as it was, replacing it). The upsert's own copy of such a point
        stays meanwhile (its removal goes to ``kept``, for the caller to make once it is
        done with the point): the change that overtook it may yet be taken back, having
        been made on a copy this upsert replaces, and the point must never be left without
        a live copy while each writer yields to the other.
        """
        placed: set[PointId] = set()
        attempts: dict[PointId, dict[int, int]] = {}  # a conditional placement's earlier tries
        pending = ids
        for _ in range(IN_PLACE_TRIES):
            # A conditional placement decided again reads the newest copy someone else made
            # (its own earlier copy stays until a newer one lands) and places that one.
            held = await self._current(
                view, pending, timeout, with_vectors=True, passed_over=attempts
            )
            records = [
                PointRecord(i, vectors, user_payload(held[i].payload))
                for i in pending
                if i in held
                and (vectors := (redo or rebuild)(held[i]) if i in attempts else rebuild(held[i]))
                is not None
            ]
            if not records:
                return placed
            try:
                overtaken = await self._upsert_once(
                    view, records, timeout, condition, kept, attempts
                )
            finally:
                self.cache.clear()
            placed |= {r.id for r in records}
            pending = [r.id for r in records if r.id in overtaken]
            if not pending:
                return placed
        raise ApiError(
            503,
            f"Service unavailable: the vector change of {len(pending)} point(s) kept being "
            "overtaken by concurrent updates of the same points; retry it",
        )

    async def update_vectors(self, view: View, body: models.UpdateVectors, timeout: float) -> None:
        """New vectors (any of the point's named, sparse or multivectors) for existing points,
        changed in place at a new version; the vectors a body leaves out are kept.

        Like a payload change, it is made on each point's newest copy, so it composes
        with concurrent writes, changes and deletes of the same points. The point stays
        in its domain (the search finds it there); an upsert of the point places it anew.
        A point that had no routing vector (placed by its id) and gets one is placed
        anew the way an upsert places it: its newest copy, with the new vectors, is
        upserted into the domain nearest to the new routing vector (:meth:`_place_anew`).
        A change in place of the same point that lands on the old copy between that
        read and the upsert, at a lower version, is removed with the old copy: such a
        move is a read-modify-write, not yet fenced against that interleaving.

        With ``update_filter`` only the points whose newest copy matches it change: the
        engine holding that copy evaluates the filter in the same operation that changes
        it; a point placed anew is written by a conditional upsert (``update_only`` with
        the filter, decided on its newest copy).
        """
        update_filter = body.update_filter
        if view.routed:
            refuse_reserved_keys(update_filter)
        vectors = {parse_point_id(p.id): point_vectors(p.vector, view) for p in body.points}
        if not view.routed:
            route = view.routes[0]
            points = [PointRecord(i, v) for i, v in vectors.items()]
            await self._call(
                route,
                lambda port: port.update_vectors(
                    route.collection, points, update_filter=update_filter
                ),
                timeout,
            )
            self.cache.clear()
            return
        current = await self._current(view, list(vectors), timeout)
        missing = [i for i in vectors if i not in current]
        if missing:
            raise ApiError(404, f"Not found: No point with id {missing[0]} found")
        placing = [i for i, v in vectors.items() if routing_vector(v, view.vector) is not None]
        if placing:

            def given(copy: PointRecord) -> Vectors | None:
                """The copy with the new vectors, if it had no routing vector."""
                if copy.dense(view.vector) is not None:
                    return None
                return merged(copy)

            def merged(copy: PointRecord) -> Vectors:
                """The copy with the new vectors."""
                return from_named({**as_named(copy.vector), **as_named(vectors[copy.id])})

            condition = (
                Condition(update_filter, models.UpdateMode.UPDATE_ONLY)
                if update_filter is not None
                else None
            )
            kept: list[Cleanup] = []
            try:
                for point_id in await self._place_anew(
                    view, placing, given, timeout, kept, condition, merged
                ):
                    del vectors[point_id]
                if vectors:
                    await self._change_vectors_in_place(view, vectors, update_filter, timeout)
            finally:
                await self._drop_kept(kept, timeout)
        else:
            await self._change_vectors_in_place(view, vectors, update_filter, timeout)
        self.cache.clear()

    async def _change_vectors_in_place(
        self,
        view: View,
        vectors: dict[PointId, Vectors],
        update_filter: models.Filter | None,
        timeout: float,
    ) -> None:
        if not vectors:
            return

        def change(collection: str, held: list[PointId], version: int, label: str | None) -> Ops:
            condition = and_filters(
                ids_filter(held), older_than(version), live_filter(), update_filter
            )
            mark = {POINT_VERSION_KEY: version, MERGED_KEY: True}
            points = [PointRecord(i, vectors[i]) for i in held]
            return [
                _set_where(collection, mark, condition),
                _vectors_where_marked(collection, points, version),
            ]

        await self._in_place(view, list(vectors), change, timeout)

    async def _current(
        self,
        view: View,
        ids: list[PointId],
        timeout: float,
        *,
        with_vectors: bool = False,
        passed_over: Mapping[PointId, Collection[int]] | None = None,
    ) -> dict[PointId, PointRecord]:
        """The newest live copy of each id (every home must answer); copies at a version in
        ``passed_over[id]`` (a write's own earlier tries) are not read."""
        homes = view.homes()

        def read(home: CollectionHome) -> Callable[[QdrantPort], list[PointRecord]]:
            return lambda port: port.retrieve(home.collection, ids, with_vectors=with_vectors)

        results = await asyncio.gather(
            *(self.upstream.call(home_route(h), read(h), timeout) for h in homes)
        )
        newest: dict[PointId, PointRecord] = {}
        for records in results:
            for record in records:
                if passed_over and version_of(record.payload) in passed_over.get(record.id, ()):
                    continue
                held = newest.get(record.id)
                if held is None or version_of(record.payload) > version_of(held.payload):
                    newest[record.id] = record
        return {i: r for i, r in newest.items() if not is_tombstone(r.payload)}

    async def delete_vectors(self, view: View, body: models.DeleteVectors, timeout: float) -> None:
        """Remove named vectors from the selected points (the rest of each point stays).

        Other vectors than the routing one are removed in place, at a new version, like a
        payload change. Removing the routing vector leaves points placed by their id
        (:mod:`librarian.core.unrouted`): each point's newest copy without the removed
        vectors is upserted there, as an upsert of it would place it. The unnamed vector
        cannot be removed (Qdrant refuses it too: delete the points instead).
        """
        names = list(body.vector)
        if "" in names:
            raise ApiError(
                400,
                "Wrong input: the unnamed vector cannot be removed from a point. Delete the "
                "points instead",
            )
        spec = view.spec
        known = set(spec.dense_vectors()) | set(spec.sparse_vectors) if spec else set()
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            shown = unknown[0] if unknown else ""
            raise ApiError(400, f"Wrong input: Not existing vector name error: {shown}")
        if not view.routed:
            route = view.routes[0]
            ids = [parse_point_id(i) for i in body.points] if body.points is not None else None
            await self._call(
                route,
                lambda port: port.delete_vectors(
                    route.collection, names, ids=ids, points_filter=body.filter
                ),
                timeout,
            )
            self.cache.clear()
            return
        async for ids in self._selected(view, _selector(body.points, body.filter), timeout):
            if view.vector in names:
                await self._unroute(view, ids, names, timeout)
            else:
                await self._delete_vectors_in_place(view, ids, names, timeout)
        self.cache.clear()

    async def _delete_vectors_in_place(
        self, view: View, ids: list[PointId], names: list[str], timeout: float
    ) -> None:
        def change(collection: str, held: list[PointId], version: int, label: str | None) -> Ops:
            condition = and_filters(ids_filter(held), older_than(version), live_filter())
            exact = and_filters(ids_filter(held), version_is(version))
            mark = {POINT_VERSION_KEY: version, MERGED_KEY: True}
            return [
                _set_where(collection, mark, condition),
                lambda port: port.delete_vectors(collection, names, points_filter=exact),
            ]

        await self._in_place(view, ids, change, timeout)

    async def _unroute(
        self, view: View, ids: list[PointId], names: list[str], timeout: float
    ) -> None:
        """The points without ``names`` (the routing vector among them), placed anew by id."""

        def without(copy: PointRecord) -> Vectors:
            return from_named({n: v for n, v in as_named(copy.vector).items() if n not in names})

        kept: list[Cleanup] = []
        try:
            await self._place_anew(view, ids, without, timeout, kept)
        finally:
            await self._drop_kept(kept, timeout)


Ops = list[Callable[[QdrantPort], None]]
Change = Callable[[str, list[PointId], int, str | None], Ops]
"""(collection, ids, new version, their label) -> the operations that change them in place."""


def _newest_copies(
    found: dict[CollectionHome, dict[PointId, Copy]],
    ids: Sequence[PointId],
    passed_over: Collection[int] = (),
) -> tuple[dict[CollectionHome, dict[str | None, list[PointId]]], list[Cleanup]]:
    """Where each id's newest live copy is (by home, then label), and removals of older copies.

    An id whose newest copy is a tombstone is deleted: nothing is changed, and its older
    live copies elsewhere are removed too.

    Copies at a version in ``passed_over`` (a change's own earlier tries, made on a copy
    that a write replaced) are neither changed nor removed: the change is made on the
    newest other copy, and its earlier copies are removed once it lands. Only when no
    other copy is left is the newest of them the one changed.
    """
    newest: dict[PointId, int | None] = {}
    for i in ids:
        held = [copies[i].version for copies in found.values() if i in copies]
        others = [v for v in held if v not in passed_over]
        newest[i] = max(others or held, default=None)
    targets: dict[CollectionHome, dict[str | None, list[PointId]]] = {}
    stale: dict[tuple[CollectionHome, int], list[PointId]] = {}
    for home, copies in found.items():
        for point_id, copy in copies.items():
            top = newest.get(point_id)
            if top is None or (copy.version in passed_over and copy.version != top):
                continue
            if copy.version < top:
                stale.setdefault((home, top), []).append(point_id)
            elif not copy.tombstone:
                targets.setdefault(home, {}).setdefault(copy.label, []).append(point_id)
    cleanups = [
        cleanup_of(home, CleanupKind.REMOVE_OLDER, held, top) for (home, top), held in stale.items()
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


def _vectors_where_marked(
    collection: str, points: list[PointRecord], version: int
) -> Callable[[QdrantPort], None]:
    """Give ``points`` their new vectors where the change marked them with ``version``.

    Between the mark and this step a concurrent move may remove a marked copy from this
    home (its newer copy lives elsewhere now). The engine refuses to update the vectors
    of a point it does not hold, so such a refusal is answered by asking which points
    still hold the mark and updating those again: a removed copy is gone whole (nothing
    torn is left behind), and the settle step sees it overtaken. A refusal while every
    point is still held is a real one and is raised.
    """

    def run(port: QdrantPort) -> None:
        pending = points
        while pending:
            marked = and_filters(ids_filter([p.id for p in pending]), version_is(version))
            try:
                port.update_vectors(collection, pending, update_filter=marked)
                return
            except (InvalidRequest, CollectionNotFound):
                held, _ = port.scroll(
                    collection,
                    limit=len(pending),
                    scroll_filter=marked,
                    with_payload=False,
                    with_vectors=False,
                )
                still = {record.id for record in held}
                if len(still) == len(pending):
                    raise
                pending = [p for p in pending if p.id in still]

    return run


def _overwrite_where(
    collection: str, payload: dict[str, Any], flt: models.Filter
) -> Callable[[QdrantPort], None]:
    return lambda port: port.overwrite_payload(collection, payload, points_filter=flt)


def _delete_keys_where(
    collection: str, keys: list[str], flt: models.Filter | None
) -> Callable[[QdrantPort], None]:
    return lambda port: port.delete_payload_keys(collection, keys, points_filter=flt)


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
