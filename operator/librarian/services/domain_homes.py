"""Where each domain's points live now, how big they are, and removing them from an old home.

Why this exists: rebalancing needs each domain's points, RAM and disk on the
cluster that serves it, and a move ends by deleting the domain from its old
home — but only once the new home holds at least as many of its points. Both
select the domain by its label (``librarian_domain``), which every copied
point keeps, so a collection shared by several domains is handled the same way
as one per domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from librarian.core.collection_spec import CollectionSpec
from librarian.core.tuning import estimate_footprint
from librarian.services.labeling import domain_filter
from librarian.storage.errors import CollectionNotFound
from librarian.storage.fleet import Fleet

__all__ = [
    "DomainFootprint",
    "DomainHome",
    "NotVerified",
    "catch_up",
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
    """The new home holds fewer of the domain's points than the old one: nothing was deleted."""


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
                specs[key] = info.spec or CollectionSpec(
                    vector_size=info.vector_size, distance=info.distance
                )
            points = port.count(home.collection, count_filter=domain_filter(domain))
        except CollectionNotFound:
            measured[domain] = DomainFootprint(0, 0, 0, 0)
            continue
        spec = specs[key]
        assert spec is not None
        memory, disk = estimate_footprint(spec, points)
        measured[domain] = DomainFootprint(points, memory, disk, spec.vector_size)
    return measured


def catch_up(
    fleet: Fleet, domain: str, old: DomainHome, new: DomainHome, *, batch: int = 512
) -> int:
    """Copy the domain's points the new home lacks (written to the old one during the move).

    Only missing ids are copied: a point already in the new home may have been
    updated there since reads and writes switched, and is never overwritten.
    """
    source, target = fleet.get(old.cluster), fleet.get(new.cluster)
    selector = domain_filter(domain)
    copied = 0
    offset = None
    while True:
        try:
            page, offset = source.scroll(
                old.collection, limit=batch, offset=offset, scroll_filter=selector
            )
        except CollectionNotFound:
            return copied
        if page:
            present = {
                p.id
                for p in target.retrieve(
                    new.collection, [p.id for p in page], with_vectors=False, with_payload=False
                )
            }
            missing = [p for p in page if p.id not in present]
            if missing:
                target.upsert(new.collection, missing)
                copied += len(missing)
        if offset is None:
            return copied


def remove_from_old_home(fleet: Fleet, domain: str, old: DomainHome, new: DomainHome) -> int:
    """Delete ``domain``'s points from ``old`` after checking ``new`` holds at least as many.

    Idempotent: a second call finds nothing left to delete and returns 0.
    Raises :class:`NotVerified` (deleting nothing) when the new home has fewer.
    """
    if old == new:
        raise ValueError("the old and the new home are the same collection")
    selector = domain_filter(domain)
    try:
        left = fleet.get(old.cluster).count(old.collection, count_filter=selector)
    except CollectionNotFound:
        return 0
    if left == 0:
        return 0
    copied = fleet.get(new.cluster).count(new.collection, count_filter=selector)
    if copied < left:
        raise NotVerified(
            f"{new.cluster}/{new.collection} holds {copied:,} points of domain {domain} but "
            f"{old.cluster}/{old.collection} still has {left:,}; nothing was deleted"
        )
    fleet.get(old.cluster).delete_points(old.collection, points_filter=selector)
    return left
