"""Conditional writes on a library collection: Qdrant's ``update_filter`` and ``update_mode``.

Why this exists: Qdrant's upsert takes a condition per point. With ``update_mode``
``insert_only`` a point that exists is left alone; with ``update_only`` a point that
does not exist is not created; with ``update_filter`` a point that exists is
overwritten only if it matches the filter (a point that does not exist is
inserted). On a library a point may have copies in several homes at different
versions, and a deleted point is a tombstone: the condition is decided on the
point's *newest* copy, by the engine of the home that holds it (the client's filter
is never evaluated here), and only while that copy is still the newest one (see
:meth:`librarian.router.writes.Writes.upsert`). These are the pieces of that
decision: the condition a request carries, what a look saw of each point, and the
evaluation of the client's filter in a home.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client.http import models

from librarian.contracts.payload import POINT_VERSION_KEY, TOMBSTONE_KEY
from librarian.core.fusion import PointId
from librarian.router.cleanup import Copy
from librarian.router.filter_keys import ReservedKeyInFilter, reserved_filter_keys
from librarian.router.library import CollectionHome
from librarian.router.qdrant_api import ApiError
from librarian.services.versioning import (
    and_filters,
    ids_filter,
    is_tombstone,
    live_filter,
    version_of,
)
from librarian.storage.port import QdrantPort

__all__ = [
    "Condition",
    "Evaluated",
    "Seen",
    "condition_of",
    "evaluate_in",
    "refuse_reserved_keys",
    "seen_newest",
]


@dataclass(frozen=True)
class Condition:
    """The condition of a write: Qdrant's ``update_filter`` and ``update_mode``."""

    update_filter: models.Filter | None = None
    update_mode: models.UpdateMode = models.UpdateMode.UPSERT

    @property
    def unconditional(self) -> bool:
        return self.update_filter is None and self.update_mode is models.UpdateMode.UPSERT

    def admits(self, exists: bool) -> bool:
        """Whether the mode lets a point that exists (or does not) be written at all."""
        if exists:
            return self.update_mode is not models.UpdateMode.INSERT_ONLY
        return self.update_mode is not models.UpdateMode.UPDATE_ONLY

    def needs_filter(self, exists: bool) -> bool:
        """Whether the filter decides the write of such a point (only a point that exists)."""
        return exists and self.update_filter is not None and self.admits(exists)


def condition_of(operations: Any, *, routed: bool) -> Condition:
    """The condition an upsert body (points list or batch) carries; a 400 for a filter that
    names the library's reserved keys on a library collection (they are not the client's)."""
    flt = getattr(operations, "update_filter", None)
    mode = getattr(operations, "update_mode", None) or models.UpdateMode.UPSERT
    condition = Condition(flt, models.UpdateMode(mode))
    if routed:
        refuse_reserved_keys(flt)
    return condition


def refuse_reserved_keys(flt: models.Filter | None) -> None:
    """A 400 if the client's ``update_filter`` names a key the library reserves."""
    reserved = reserved_filter_keys(flt)
    if reserved:
        raise ApiError(400, str(ReservedKeyInFilter(reserved)))


@dataclass(frozen=True)
class Seen:
    """A point's newest copy as a look saw it: its version, whether it is live (a tombstone
    or no copy at all is a point that does not exist), and the homes that hold it."""

    version: int
    live: bool
    homes: tuple[CollectionHome, ...]


def seen_newest(
    found: dict[CollectionHome, dict[PointId, Copy]],
    ids: Sequence[PointId],
    passed_over: Mapping[PointId, Collection[int]] | None = None,
) -> dict[PointId, Seen]:
    """Each id's newest copy over the homes a look reached (version 0, not live: no copy).

    Copies at a version in ``passed_over[id]`` (a conditional write's own earlier tries)
    are not what the write decides on: it decides on the newest copy someone else made.
    """
    seen: dict[PointId, Seen] = {}
    for point_id in ids:
        own = passed_over.get(point_id, ()) if passed_over else ()
        copies = [
            (home, c[point_id])
            for home, c in found.items()
            if point_id in c and c[point_id].version not in own
        ]
        if not copies:
            seen[point_id] = Seen(0, False, ())
            continue
        top = max(copy.version for _, copy in copies)
        holders = tuple(h for h, copy in copies if copy.version == top and not copy.tombstone)
        seen[point_id] = Seen(top, bool(holders), holders)
    return seen


@dataclass(frozen=True)
class Evaluated:
    """The filter's verdict in one home: the ids it matched at their seen version, and the
    ids whose copy there is no longer the one the look saw (to be decided again)."""

    matched: frozenset[PointId]
    changed: frozenset[PointId]


def evaluate_in(
    collection: str, seen: dict[PointId, int], flt: models.Filter
) -> Callable[[QdrantPort], Evaluated]:
    """The client's filter evaluated by a home's engine on its copies of ``seen`` (id ->
    the version the look saw): matched where the copy matches and is still that version.

    The filter runs first and the versions are read after it: an id whose version is
    still the seen one was that version when the filter ran (versions only grow).
    """
    ids = list(seen)

    def run(port: QdrantPort) -> Evaluated:
        scope = and_filters(ids_filter(ids), live_filter(), flt)
        records, _ = port.scroll(
            collection,
            limit=len(ids),
            scroll_filter=scope,
            with_vectors=False,
            with_payload=[POINT_VERSION_KEY],
        )
        hits = {r.id: version_of(r.payload) for r in records}
        now = {
            r.id: version_of(r.payload)
            for r in port.retrieve(
                collection, ids, with_vectors=False, with_payload=[POINT_VERSION_KEY, TOMBSTONE_KEY]
            )
            if not is_tombstone(r.payload)
        }
        changed = {i for i in ids if now.get(i) != seen[i] or hits.get(i, seen[i]) != seen[i]}
        matched = {i for i in hits if i not in changed}
        return Evaluated(frozenset(matched), frozenset(changed))

    return run
