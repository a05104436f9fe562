"""Where each domain's points live now, how big they are, and removing them from an old home.

Why this exists: a new home must answer filters as its source does, so it gets
the source collection's payload indexes (the label's keyword index among them,
and every index a client created on the library, which the router creates on
the source collection too); rebalancing needs each domain's points, RAM and disk on the
cluster that serves it, and a move ends by copying over what the old home
holds newer and deleting the domain from it — but only once the new home holds
each of its points at the same or a newer version, decided by version as the
migration decides (:mod:`librarian.services.home_sync`). Both select the domain
by its label (``librarian_domain``), which every copied
point keeps, so a collection shared by several domains is handled the same way
as one per domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from librarian.contracts.payload import LABEL_KEY
from librarian.core.collection_spec import CollectionSpec
from librarian.core.tuning import estimate_footprint
from librarian.services.home_sync import (
    compare,
    copy_points,
    list_versions,
    remove_superseded,
    superseded,
)
from librarian.services.labeling import domain_filter
from librarian.services.placement import Placement
from librarian.storage.errors import CollectionNotFound
from librarian.storage.fleet import Fleet
from librarian.storage.port import QdrantPort

__all__ = [
    "DomainFootprint",
    "DomainHome",
    "NotVerified",
    "catch_up",
    "copy_payload_indexes",
    "measure_homes",
    "remove_from_old_home",
]


@dataclass(frozen=True)
class DomainHome:
    """The collection a domain is served from."""

    cluster: str
    collection: str


@dataclass(frozen=True)
class DomainFootprint:
    points: int
    memory_bytes: int
    disk_bytes: int
    vector_size: int


class NotVerified(RuntimeError):
    """The new home lacks some of the domain's points, or holds them older: nothing was deleted."""


def measure_homes(fleet: Fleet, homes: Mapping[str, DomainHome]) -> dict[str, DomainFootprint]:
    """Points and estimated RAM/disk of every domain at its home (0 when the collection is gone)."""
    specs: dict[tuple[str, str], CollectionSpec | None] = {}
    measured: dict[str, DomainFootprint] = {}
    for domain, home in homes.items():
        port = fleet.get(home.cluster)
        key = (home.cluster, home.collection)
        try:
            if key not in specs:
                info = port.collection_info(home.collection)
                specs[key] = info.spec
            points = port.count(home.collection, count_filter=domain_filter(domain))
        except CollectionNotFound:
            measured[domain] = DomainFootprint(0, 0, 0, 0)
            continue
        spec = specs[key]
        assert spec is not None
        memory, disk = estimate_footprint(spec, points)
        dense = sum(v.size for v in spec.dense_vectors().values() if v.multivector is None)
        measured[domain] = DomainFootprint(points, memory, disk, dense)
    return measured


def catch_up(
    fleet: Fleet,
    domain: str,
    old: DomainHome,
    new: DomainHome,
    *,
    batch: int = 512,
    placement: Placement | None = None,
) -> int:
    """Copy the domain's points the old home holds newer than the new one (or the new one lacks).

    Both homes are compared by (id, version); each copy is written only over an
    older one, so a point updated in the new home since reads and writes switched
    is never overwritten by its old copy. A tombstone newer than the new home's
    copy is carried over like any point. Returns how many points were copied.
    """
    source, target = fleet.get(old.cluster), fleet.get(new.cluster)
    selector = domain_filter(domain)
    try:
        held_old = list_versions(source, old.collection, selector)
    except CollectionNotFound:
        return 0
    held_new = list_versions(target, new.collection, selector)
    newer = compare(held_old.held, held_new.held, fence=None).copy
    return copy_points(
        source,
        old.collection,
        target,
        new.collection,
        newer,
        as_copied=lambda point: point if point.payload.get(LABEL_KEY) == domain else None,
        batch=batch,
        placement=placement,
    )


def remove_from_old_home(
    fleet: Fleet, domain: str, old: DomainHome, new: DomainHome, *, batch: int = 512
) -> int:
    """Delete ``domain``'s points from ``old`` once ``new`` holds each at the same or a newer version.

    The rule is :func:`librarian.services.migration.clean_old_home`'s: every
    point is removed only where it is still at most the version the new home
    holds. Idempotent: a second call finds nothing left to delete and returns 0.
    Raises :class:`NotVerified` (deleting nothing) when the new home lacks some of
    the points or holds them older: :func:`catch_up` first.
    """
    if old == new:
        raise ValueError("the old and the new home are the same collection")
    selector = domain_filter(domain)
    try:
        held_old = list_versions(fleet.get(old.cluster), old.collection, selector)
    except CollectionNotFound:
        return 0
    if not held_old.held:
        return 0
    held_new = list_versions(fleet.get(new.cluster), new.collection, selector)
    removable, kept = superseded(held_old.held, held_new.held)
    if kept:
        named = ", ".join(repr(i) for i in kept[:10])
        raise NotVerified(
            f"{new.cluster}/{new.collection} holds {held_new.live:,} points of domain {domain} "
            f"but {old.cluster}/{old.collection} still has {len(kept):,} it lacks or holds "
            f"older (e.g. {named}); nothing was deleted"
        )
    return remove_superseded(fleet.get(old.cluster), old.collection, removable, batch=batch)


def copy_payload_indexes(
    source: QdrantPort, source_collection: str, target: QdrantPort, target_collection: str
) -> list[str]:
    """Create on ``target_collection`` every payload index ``source_collection`` has, with its
    schema and parameters (idempotent). Returns the indexed keys, sorted."""
    schema = source.describe_collection(source_collection).payload_schema
    for key, index in sorted(schema.items()):
        target.create_payload_index(
            target_collection, key, index.params if index.params is not None else index.data_type
        )
    return sorted(schema)
