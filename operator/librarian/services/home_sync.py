"""Comparing a domain's two homes by (id, version), and reconciling them conditionally.

Why this exists: while a domain moves, its points live in an old home (the
source) and a new one (the target), and the routers dual-write both. Which
copy of a point is right is decided by its version alone
(:mod:`librarian.services.versioning`), and the migration, its cleanup and the
end of a rebalancing move must apply the same rules:

- a tombstone and an absent point are the same thing;
- a copy is written only where the stored version is older than the copy's,
  so a newer write is never overwritten by an older copy;
- a point is removed only where its stored version is at most the one the
  decision was made on, so a write that landed meanwhile survives.

Reading a home lists ids with their version, tombstone flag and (where asked)
label only: no vectors, no user payload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from qdrant_client.http import models

from librarian.contracts.payload import POINT_VERSION_KEY, TOMBSTONE_KEY
from librarian.services.placement import Placement, placed_upsert
from librarian.services.versioning import (
    and_filters,
    ids_filter,
    is_tombstone,
    older_than,
    version_at_most,
    version_of,
)
from librarian.storage.port import PointId, PointRecord, QdrantPort

__all__ = [
    "Difference",
    "Held",
    "Listing",
    "VersionMap",
    "calls",
    "chunks",
    "compare",
    "copy_points",
    "is_live",
    "list_versions",
    "pack",
    "packed",
    "per_version",
    "remove_superseded",
    "same_state",
    "superseded",
    "unpack",
]

LIST_PAGE = 2000  # ids per page when listing versions (no vectors: pages can be large)
GROUPS_PER_CALL = 64  # version groups one conditional call carries at most
X = TypeVar("X")


class Held(NamedTuple):
    """What a home holds for an id: its version and whether it is a tombstone."""

    version: int
    tombstone: bool


VersionMap = dict[PointId, int]
"""Id -> what a home holds, packed in one int (:func:`pack`): maps of millions of ids stay
compact, and plain ints keep them out of the garbage collector's sight."""


def pack(version: int, tombstone: bool) -> int:
    return version * 2 + (1 if tombstone else 0)


def unpack(code: int) -> Held:
    return Held(code >> 1, bool(code & 1))


def packed(payload: Mapping[str, object] | None) -> int:
    """What a point's payload says it is, packed."""
    return pack(version_of(payload), is_tombstone(payload))


def is_live(code: int | None) -> bool:
    """Held, and not as a tombstone."""
    return code is not None and not code & 1


@dataclass
class Listing:
    """One home's selection by id, and how many of its points bypassed the library."""

    held: VersionMap = field(default_factory=dict)
    live: int = 0  # points that are not tombstones
    unversioned: int = 0  # live points with no version: written straight to the cluster
    unlabelled: int = 0  # points with no label (only counted when the label is asked for)

    def add(self, ids: Sequence[PointId], payloads: Sequence[Mapping[str, object]]) -> None:
        """Take in one page: ids and their payloads, read with (at least) the version and
        tombstone keys."""
        held, live, unversioned = self.held, 0, 0
        for point_id, payload in zip(ids, payloads, strict=True):
            version = payload.get(POINT_VERSION_KEY)
            tombstone = payload.get(TOMBSTONE_KEY) is True
            if type(version) is not int:
                unversioned += version is None and not tombstone
                version = version_of(payload)
            held[point_id] = version * 2 + tombstone  # pack(version, tombstone), inlined
            live += not tombstone
        self.live += live
        self.unversioned += unversioned


def list_versions(
    port: QdrantPort,
    collection: str,
    selection: models.Filter | None,
    *,
    label_key: str | None = None,
    page_size: int = LIST_PAGE,
) -> Listing:
    """Every id ``selection`` picks in ``collection``, with its version and tombstone flag."""
    keys = [POINT_VERSION_KEY, TOMBSTONE_KEY] + ([label_key] if label_key else [])
    listing = Listing()
    offset: PointId | None = None
    while True:
        page = port.scroll_keys(
            collection, keys=keys, limit=page_size, offset=offset, scroll_filter=selection
        )
        listing.add(page.ids, page.payloads)
        if label_key:
            listing.unlabelled += sum(1 for payload in page.payloads if not payload.get(label_key))
        offset = page.next_offset
        if offset is None:
            return listing


def same_state(a: int | None, b: int | None) -> bool:
    """Both absent (a tombstone counts as absent), or both live at the same version."""
    if not is_live(a) and not is_live(b):
        return True
    return a == b


@dataclass(frozen=True)
class Difference:
    """How two homes differ, by what is to be done about each id.

    ``copy``: the source is newer (or the target lacks the point): copy it over,
    conditionally. ``remove``: the target holds a point the source does not hold
    at all, from before the fence (a copy of a point the source deleted since),
    grouped by its version: remove it where it is still that version.
    ``leave``: the target is newer, or holds at or after the fence a point the
    source lacks, or holds the same version with other contents: a write in
    flight, never touched; only checked again.
    """

    copy: tuple[PointId, ...] = ()
    remove: Mapping[int, tuple[PointId, ...]] = field(default_factory=dict)
    leave: tuple[PointId, ...] = ()

    @property
    def ids(self) -> list[PointId]:
        """Every differing id, in a stable order."""
        removed = [i for ids in self.remove.values() for i in ids]
        return sorted({*self.copy, *removed, *self.leave}, key=_order)

    def __bool__(self) -> bool:
        return bool(self.copy or self.remove or self.leave)

    def __len__(self) -> int:
        return len(self.ids)


def _order(point_id: PointId) -> tuple[int, int, str]:
    """Integer ids first, in numeric order, then UUIDs (as Qdrant orders them)."""
    if isinstance(point_id, int):
        return (0, point_id, "")
    return (1, 0, point_id)


def _verdict(s: int | None, t: int | None, fence: int | None) -> str:
    """What to do about one id whose two copies differ: copy, remove or leave."""
    if t is None or (s is not None and s >> 1 > t >> 1):
        return "copy"
    if s is None:
        from_copy = fence is None or t >> 1 < fence
        return "remove" if from_copy else "leave"
    return "leave"  # the target is newer (or the same version in another state): in flight


def compare(
    source: Mapping[PointId, int],
    target: Mapping[PointId, int],
    *,
    fence: int | None,
    unequal: Iterable[PointId] = (),
) -> Difference:
    """The difference between the two homes' selections (``fence``: the dual writes' first
    version, ``None`` when nobody dual-writes); ``unequal`` ids are the same version with
    other contents, left alone."""
    copy: list[PointId] = []
    remove: dict[int, list[PointId]] = {}
    leave = list(unequal)
    for point_id, s in source.items():
        t = target.get(point_id)
        if s == t or same_state(s, t):
            continue
        verdict = _verdict(s, t, fence)
        (copy if verdict == "copy" else leave).append(point_id)
    for point_id, t in target.items():
        if point_id in source or not is_live(t):
            continue
        if _verdict(None, t, fence) == "remove":
            remove.setdefault(t >> 1, []).append(point_id)
        else:
            leave.append(point_id)
    return Difference(
        copy=tuple(copy),
        remove={v: tuple(ids) for v, ids in remove.items()},
        leave=tuple(dict.fromkeys(leave)),
    )


def chunks(items: Sequence[PointId], size: int) -> Iterator[list[PointId]]:
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + max(1, size)])


def calls(groups: Mapping[int, Sequence[X]], batch: int) -> Iterator[dict[int, list[X]]]:
    """Version groups packed into calls of at most ``batch`` items and
    :data:`GROUPS_PER_CALL` versions (a group larger than ``batch`` spans calls)."""
    call: dict[int, list[X]] = {}
    size = 0
    for version, items in sorted(groups.items()):
        for start in range(0, len(items), max(1, batch)):
            part = items[start : start + max(1, batch)]
            if call and (size + len(part) > batch or len(call) >= GROUPS_PER_CALL):
                yield call
                call, size = {}, 0
            call.setdefault(version, []).extend(part)
            size += len(part)
    if call:
        yield call


def per_version(
    call: Mapping[int, Sequence[PointId]], condition: Callable[[int], models.Filter]
) -> models.Filter:
    """Each group's ids with its own version's condition, for one call.

    Several groups are one filter: the call's ids (so engines look them up by
    id), and at least one group's ids together with that group's condition.
    """
    clauses = [and_filters(ids_filter(ids), condition(v)) for v, ids in call.items()]
    if len(clauses) == 1 and clauses[0] is not None:
        return clauses[0]
    every_id = [i for ids in call.values() for i in ids]
    return models.Filter(must=[models.HasIdCondition(has_id=every_id)], should=clauses)


def copy_points(
    source: QdrantPort,
    source_collection: str,
    target: QdrantPort,
    target_collection: str,
    ids: Sequence[PointId],
    *,
    as_copied: Callable[[PointRecord], PointRecord | None],
    batch: int,
    placement: Placement | None = None,
) -> int:
    """Copy ``ids`` as the source holds them now, each only over an older copy (marked with
    its partition when the target is placed by partition).

    ``as_copied`` turns a source point into what the target is to hold (``None``:
    it left the selection since it was listed: not copied). Points are grouped
    by version, each group upserted on the condition that the stored copy is older
    than it (several groups may share a call). Returns how many were written.
    """
    written = 0
    for part in chunks(ids, batch):
        by_version: dict[int, list[PointRecord]] = {}
        for record in source.retrieve(source_collection, part):
            copied = as_copied(record)
            if copied is not None:
                by_version.setdefault(version_of(copied.payload), []).append(copied)
        for call in calls(by_version, batch):
            points = [p for group in call.values() for p in group]
            condition = per_version(
                {v: [p.id for p in group] for v, group in call.items()}, older_than
            )
            placed_upsert(target, target_collection, points, placement, update_filter=condition)
            written += len(points)
    return written


def superseded(
    old: Mapping[PointId, int], new: Mapping[PointId, int]
) -> tuple[dict[int, list[PointId]], list[PointId]]:
    """The old home's ids the new home supersedes, and the ones it does not.

    An old copy is superseded when the new home holds the id at the same or a
    newer version (live or tombstone), or when neither holds it live (an old
    tombstone, and nothing or an older tombstone in the new home). The first
    result groups them by the version up to which the old copy may be removed;
    the second lists the ids the new home lacks or holds older: kept.
    """
    removable: dict[int, list[PointId]] = {}
    kept: list[PointId] = []
    for point_id, o in old.items():
        n = new.get(point_id)
        if n is not None and n >> 1 >= o >> 1:
            removable.setdefault(n >> 1, []).append(point_id)
        elif not is_live(o) and not is_live(n):
            removable.setdefault(o >> 1, []).append(point_id)
        else:
            kept.append(point_id)
    return removable, sorted(kept, key=_order)


def remove_superseded(
    port: QdrantPort,
    collection: str,
    groups: Mapping[int, Sequence[PointId]],
    *,
    batch: int,
) -> int:
    """Delete each group's ids where their version is still at most the group's; returns how
    many are gone (a point written meanwhile survives and is not counted)."""
    removed = 0
    for call in calls(groups, batch):
        port.delete_points(collection, points_filter=per_version(call, version_at_most))
        ids = [i for group in call.values() for i in group]
        left = port.retrieve(collection, ids, with_vectors=False, with_payload=False)
        removed += len(ids) - len(left)
    return removed
