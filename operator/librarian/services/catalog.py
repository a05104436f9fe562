"""The domain catalog: one point per domain (centroid + metadata) in a collection.

Why this exists: the router must know every domain's centroid to send a query
only where it can be answered, and re-analysis must find the previous domains
to keep their ids. Centroids are too big for etcd, so they live in Qdrant, in
a catalog collection shared by owners (one DomainMap each). Partition
centroids are stored as points too (``kind: partition``).

Publishing is atomic. Each analysis writes its entries under its own
*publication* (a token: the analysis Job's name, or ``v<version>``) beside
the published ones, then flips the owner's *head* point to it in one
conditional payload write, then removes the entries it replaced. Readers take
the head's publication only, so a writer killed half-way leaves entries no
reader serves (its rerun clears and rewrites them). The flip applies only
while the head still *wants* that publication (:func:`claim_publication`):
an analysis the operator replaced (its spec changed meanwhile) never
publishes over a newer one. The head also carries the analysis's report (the
status fields the operator fills from it) and whether the source's labels are
still being written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qdrant_client.http import models

from librarian.core.discovery import Domain, Partition
from librarian.storage.collection_config import create_if_missing
from librarian.storage.errors import CollectionNotFound
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

__all__ = [
    "OWNER_KEY",
    "PUBLICATION_KEY",
    "CatalogEntry",
    "CatalogHead",
    "CatalogPartition",
    "PublicationSuperseded",
    "PublishedCatalog",
    "catalog_point_id",
    "claim_publication",
    "delete_catalog",
    "discard_publication",
    "labels_pending",
    "mark_labelled",
    "read_catalog",
    "read_head",
    "read_partitions",
    "read_previous",
    "read_published",
    "write_catalog",
]

_NAMESPACE = uuid.UUID("6f1c3a52-5d0e-4b43-9a52-0c8e0b7f4a11")
OWNER_KEY = "owner"
PUBLICATION_KEY = "publication"
"""On every entry: the publication it belongs to (absent on entries written before heads)."""
_HEAD = "head"  # the kind of an owner's head point
_LEGACY_PENDING = "labels_pending"  # the marker older catalogs used for pending labels
_READ_ATTEMPTS = 5


class PublicationSuperseded(RuntimeError):
    """The head wants another publication now: this one was not published (and is gone)."""


def catalog_point_id(owner: str, entry_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{owner}/{entry_id}"))


def _entry_point_id(owner: str, publication: str, entry_id: str) -> str:
    return catalog_point_id(owner, f"{publication}/{entry_id}")


def _head_id(owner: str) -> str:
    return catalog_point_id(owner, _HEAD)


@dataclass(frozen=True)
class CatalogHead:
    """An owner's head: the publication readers serve, the one the operator wants next,
    and what the published analysis reported."""

    owner: str
    publication: str | None = None  # None: nothing published through a head yet
    wanted: str | None = None
    version: int = 0
    labels_pending: bool = False
    replaced: str | None = None
    report: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> CatalogHead:
        report = payload.get("report")
        return cls(
            owner=str(payload[OWNER_KEY]),
            publication=payload.get(PUBLICATION_KEY),
            wanted=payload.get("wanted"),
            version=int(payload.get("version") or 0),
            labels_pending=bool(payload.get("labels_pending")),
            replaced=payload.get("replaced"),
            report=json.loads(report) if isinstance(report, str) and report else {},
        )


@dataclass(frozen=True)
class CatalogEntry:
    """A domain as the catalog stores it."""

    owner: str
    domain_id: str
    name: str
    centroid: list[float]
    size: int
    radius: float
    cohesion: float
    keywords: tuple[str, ...]
    version: int
    parent: str | None = None
    source_cluster: str | None = None
    source_collection: str | None = None

    def to_domain(self) -> Domain:
        return Domain(
            id=self.domain_id,
            name=self.name,
            centroid=np.asarray(self.centroid, dtype=np.float32),
            radius=self.radius,
            size=self.size,
            cohesion=self.cohesion,
            keywords=self.keywords,
            parent=self.parent,
        )


@dataclass(frozen=True)
class CatalogPartition:
    """A partition as the catalog stores it: a cell of one domain, and its centroid."""

    owner: str
    partition_id: str
    domain_id: str
    centroid: list[float]
    size: int


@dataclass(frozen=True)
class PublishedCatalog:
    """What one owner (or every owner) has published, read consistently: the domains and
    partitions of the heads' publications, and whether labels are still being written."""

    entries: list[CatalogEntry]
    partitions: list[CatalogPartition]
    pending: bool


def _owner_filter(owner: str | None, kind: str | None = None, **equal: Any) -> models.Filter:
    """The catalog points of ``owner`` (``None``: every owner's), of one ``kind``, whose
    other payload fields equal ``equal``."""
    fields = {OWNER_KEY: owner, "kind": kind, **equal}
    return models.Filter(
        must=[
            models.FieldCondition(key=key, match=models.MatchValue(value=value))
            for key, value in fields.items()
            if value is not None
        ]
    )


def _of_publication(owner: str, publication: str | None) -> models.Filter:
    """``owner``'s entries of ``publication`` (``None``: the entries written before heads)."""
    if publication is not None:
        return _owner_filter(owner, **{PUBLICATION_KEY: publication})
    return models.Filter(
        must=[
            models.FieldCondition(key=OWNER_KEY, match=models.MatchValue(value=owner)),
            models.IsEmptyCondition(is_empty=models.PayloadField(key=PUBLICATION_KEY)),
        ],
        must_not=[models.FieldCondition(key="kind", match=models.MatchValue(value=_HEAD))],
    )


def _ensure_collection(port: QdrantPort, catalog_collection: str, dimension: int) -> None:
    if create_if_missing(port, catalog_collection, CollectionSpec(vector_size=dimension)):
        port.create_keyword_index(catalog_collection, OWNER_KEY)
        port.create_keyword_index(catalog_collection, PUBLICATION_KEY)


def read_head(port: QdrantPort, catalog_collection: str, owner: str) -> CatalogHead | None:
    """``owner``'s head (``None``: no catalog, or nothing claimed through a head yet)."""
    try:
        found = port.retrieve(catalog_collection, [_head_id(owner)], with_vectors=False)
    except CollectionNotFound:
        return None
    return CatalogHead.from_payload(found[0].payload) if found else None


def _heads(port: QdrantPort, catalog_collection: str, owner: str | None) -> dict[str, CatalogHead]:
    heads: dict[str, CatalogHead] = {}
    offset = None
    while True:
        page, offset = port.scroll(
            catalog_collection,
            limit=256,
            offset=offset,
            scroll_filter=_owner_filter(owner, _HEAD),
            with_vectors=False,
        )
        for point in page:
            head = CatalogHead.from_payload(point.payload)
            heads[head.owner] = head
        if offset is None:
            return heads


def claim_publication(
    port: QdrantPort, catalog_collection: str, owner: str, publication: str, dimension: int
) -> None:
    """Make ``publication`` the only one ``owner``'s head accepts from now on (the catalog
    collection is created, for centroids of ``dimension``, when missing). What is published
    stays served until ``publication`` is."""
    _ensure_collection(port, catalog_collection, dimension)
    if read_head(port, catalog_collection, owner) is None:
        head = PointRecord(
            id=_head_id(owner),
            vector=[1.0] + [0.0] * (dimension - 1),
            payload={
                "kind": _HEAD,
                OWNER_KEY: owner,
                "wanted": publication,
                PUBLICATION_KEY: None,
                "version": 0,
                "labels_pending": False,
            },
        )
        port.upsert(catalog_collection, [head])
        return
    port.set_payload(catalog_collection, {"wanted": publication}, [_head_id(owner)])


def discard_publication(
    port: QdrantPort, catalog_collection: str, owner: str, publication: str
) -> None:
    """Remove the entries an unpublished ``publication`` wrote (an analysis replaced or
    abandoned); a published one is left as it is."""
    head = read_head(port, catalog_collection, owner)
    if head is None or head.publication == publication:
        return
    port.delete_points(catalog_collection, points_filter=_of_publication(owner, publication))


def _entries(
    owner: str,
    publication: str,
    domains: Sequence[Domain],
    partitions: Sequence[Partition],
    version: int,
    source: tuple[str, str] | None,
) -> list[PointRecord]:
    cluster, collection = source or (None, None)
    points = [
        PointRecord(
            id=_entry_point_id(owner, publication, d.id),
            vector=[float(x) for x in d.centroid],
            payload={
                "kind": "domain",
                OWNER_KEY: owner,
                PUBLICATION_KEY: publication,
                "domain_id": d.id,
                "name": d.name,
                "size": d.size,
                "radius": d.radius,
                "cohesion": d.cohesion,
                "keywords": list(d.keywords),
                "parent": d.parent,
                "version": version,
                "source_cluster": cluster,
                "source_collection": collection,
            },
        )
        for d in domains
    ]
    points += [
        PointRecord(
            id=_entry_point_id(owner, publication, p.id),
            vector=[float(x) for x in p.centroid],
            payload={
                "kind": "partition",
                OWNER_KEY: owner,
                PUBLICATION_KEY: publication,
                "partition_id": p.id,
                "domain_id": domains[p.domain].id,
                "size": p.size,
                "version": version,
            },
        )
        for p in partitions
    ]
    return points


def write_catalog(
    port: QdrantPort,
    catalog_collection: str,
    owner: str,
    domains: Sequence[Domain],
    version: int,
    *,
    partitions: Sequence[Partition] = (),
    source: tuple[str, str] | None = None,
    labelled: bool = True,
    publication: str | None = None,
    report: Mapping[str, Any] | None = None,
) -> None:
    """Publish ``domains`` (and partitions) of ``owner`` at ``version``, atomically.

    ``publication`` names this analysis's entries; the head must want it
    (:func:`claim_publication`), else :class:`PublicationSuperseded` is raised and nothing
    is published. ``None`` claims ``v<version>`` first (a caller that is the only writer).
    Writing a publication the head already serves changes nothing (a rerun after the flip).

    ``labelled=False``: the source's points do not carry this version's labels yet (a
    labeling Job is to write them); the head says so, and routers wait it out
    (:func:`labels_pending`) until :func:`mark_labelled`. ``report`` is kept on the head
    for the operator (:func:`read_head`).
    """
    if not domains:
        raise ValueError("write_catalog needs at least one domain")
    dim = len(domains[0].centroid)
    if publication is None:
        publication = f"v{version}"
        claim_publication(port, catalog_collection, owner, publication, dim)
    _ensure_collection(port, catalog_collection, dim)
    head = read_head(port, catalog_collection, owner)
    if head is not None and head.publication == publication:
        return  # published already: a rerun must not rewrite what routers serve
    if head is None or head.wanted != publication:
        raise PublicationSuperseded(
            f"the catalog of {owner} wants publication {head.wanted if head else None!r}, "
            f"not {publication!r}: a newer analysis replaced this one"
        )
    # Entries a killed attempt of this publication left: cleared, then written afresh.
    port.delete_points(catalog_collection, points_filter=_of_publication(owner, publication))
    points = _entries(owner, publication, domains, partitions, version, source)
    for start in range(0, len(points), 256):
        port.upsert(catalog_collection, points[start : start + 256])
    flip = {
        PUBLICATION_KEY: publication,
        "version": version,
        "labels_pending": not labelled,
        "replaced": head.publication,
        "report": json.dumps(dict(report or {})),
    }
    # One conditional write: applied only while the head still wants this publication.
    port.set_payload(
        catalog_collection,
        flip,
        [_head_id(owner)],
        points_filter=_owner_filter(owner, _HEAD, wanted=publication),
    )
    after = read_head(port, catalog_collection, owner)
    if after is None or after.publication != publication:
        port.delete_points(catalog_collection, points_filter=_of_publication(owner, publication))
        raise PublicationSuperseded(
            f"the catalog of {owner} was claimed for {after.wanted if after else None!r} "
            f"while {publication!r} was written: not published"
        )
    if head.publication != publication:
        port.delete_points(
            catalog_collection, points_filter=_of_publication(owner, head.publication)
        )


def labels_pending(port: QdrantPort, catalog_collection: str, owner: str | None = None) -> bool:
    """Whether the domains ``owner`` published are still being written onto the source's
    points as labels: a labelled slice read meanwhile would miss the points not labelled
    yet, so a router keeps serving the library it has (or none) until they are."""
    if not port.collection_exists(catalog_collection):
        return False
    pending = _owner_filter(owner or None, _HEAD, labels_pending=True)
    legacy = _owner_filter(owner or None, _LEGACY_PENDING)
    return (
        port.count(catalog_collection, count_filter=pending) > 0
        or port.count(catalog_collection, count_filter=legacy) > 0
    )


def mark_labelled(port: QdrantPort, catalog_collection: str, owner: str, version: int) -> None:
    """Every source point carries the labels of ``version``: routers may serve it now."""
    port.set_payload(
        catalog_collection,
        {"labels_pending": False},
        points_filter=_owner_filter(owner, _HEAD, version=version),
    )
    legacy = _owner_filter(owner, _LEGACY_PENDING, version=version)
    port.delete_points(catalog_collection, points_filter=legacy)


def _scroll_all(port: QdrantPort, catalog_collection: str, flt: models.Filter) -> list[PointRecord]:
    points: list[PointRecord] = []
    offset = None
    while True:
        page, offset = port.scroll(catalog_collection, limit=256, offset=offset, scroll_filter=flt)
        points += page
        if offset is None:
            return points


def _served(point: PointRecord, heads: Mapping[str, CatalogHead]) -> bool:
    """Whether ``point`` belongs to its owner's published entries."""
    head = heads.get(str(point.payload[OWNER_KEY]))
    return point.payload.get(PUBLICATION_KEY) == (head.publication if head else None)


def _domain_entries(
    port: QdrantPort,
    catalog_collection: str,
    owner: str | None,
    heads: Mapping[str, CatalogHead],
) -> list[CatalogEntry]:
    entries = [
        CatalogEntry(
            owner=str(p[OWNER_KEY]),
            domain_id=str(p["domain_id"]),
            name=str(p["name"]),
            centroid=list(point.dense() or ()),
            size=int(p["size"]),
            radius=float(p["radius"]),
            cohesion=float(p["cohesion"]),
            keywords=tuple(p.get("keywords") or ()),
            version=int(p["version"]),
            parent=p.get("parent"),
            source_cluster=p.get("source_cluster"),
            source_collection=p.get("source_collection"),
        )
        for point in _scroll_all(port, catalog_collection, _owner_filter(owner, "domain"))
        if _served(point, heads)
        for p in [point.payload]
    ]
    return sorted(entries, key=lambda e: (e.owner, e.domain_id))


def _partition_entries(
    port: QdrantPort,
    catalog_collection: str,
    owner: str | None,
    heads: Mapping[str, CatalogHead],
    domain_id: str | None = None,
) -> list[CatalogPartition]:
    flt = _owner_filter(owner, "partition", domain_id=domain_id)
    partitions = [
        CatalogPartition(
            owner=str(point.payload[OWNER_KEY]),
            partition_id=str(point.payload["partition_id"]),
            domain_id=str(point.payload["domain_id"]),
            centroid=list(point.dense() or ()),
            size=int(point.payload["size"]),
        )
        for point in _scroll_all(port, catalog_collection, flt)
        if _served(point, heads)
    ]
    return sorted(partitions, key=lambda p: (p.domain_id, p.partition_id))


def read_published(
    port: QdrantPort, catalog_collection: str, owner: str | None = None
) -> PublishedCatalog:
    """The domains and partitions ``owner`` (``None``: every owner) published, all of one
    publication per owner: read again when a head flipped meanwhile."""
    try:
        heads = _heads(port, catalog_collection, owner)
        for _ in range(_READ_ATTEMPTS):
            entries = _domain_entries(port, catalog_collection, owner, heads)
            partitions = _partition_entries(port, catalog_collection, owner, heads)
            again = _heads(port, catalog_collection, owner)
            if again == heads:
                break
            heads = again
        pending = labels_pending(port, catalog_collection, owner)
    except CollectionNotFound:
        return PublishedCatalog([], [], pending=False)
    return PublishedCatalog(entries, partitions, pending)


def read_catalog(
    port: QdrantPort, catalog_collection: str, owner: str | None = None
) -> list[CatalogEntry]:
    """The published domains (of one owner, or all); empty when there is no catalog."""
    try:
        heads = _heads(port, catalog_collection, owner or None)
        return _domain_entries(port, catalog_collection, owner or None, heads)
    except CollectionNotFound:
        return []


def read_previous(
    port: QdrantPort, catalog_collection: str, owner: str
) -> tuple[list[Domain], list[Partition]]:
    """The domains and partitions ``owner`` published last, as discovery takes them back to
    keep their ids (each partition's ``domain`` indexes the domains); empty when none."""
    published = read_published(port, catalog_collection, owner)
    domains = [entry.to_domain() for entry in published.entries]
    index = {domain.id: i for i, domain in enumerate(domains)}
    partitions = [
        Partition(
            id=p.partition_id,
            domain=index[p.domain_id],
            centroid=np.asarray(p.centroid, dtype=np.float32),
            size=p.size,
        )
        for p in published.partitions
        if p.domain_id in index
    ]
    return domains, partitions


def read_partitions(
    port: QdrantPort,
    catalog_collection: str,
    owner: str | None,
    domain_id: str | None = None,
) -> list[CatalogPartition]:
    """The published partitions of ``owner`` (``None``: every owner's; of one domain, or
    all), by id; empty when there is no catalog or it holds none."""
    try:
        heads = _heads(port, catalog_collection, owner or None)
        return _partition_entries(port, catalog_collection, owner or None, heads, domain_id)
    except CollectionNotFound:
        return []


def delete_catalog(port: QdrantPort, catalog_collection: str, owner: str) -> None:
    """Remove ``owner``'s entries and head; drop the collection when nothing else is left."""
    try:
        port.delete_points(catalog_collection, points_filter=_owner_filter(owner))
        if port.count(catalog_collection) == 0:
            port.delete_collection(catalog_collection)
    except CollectionNotFound:
        return
