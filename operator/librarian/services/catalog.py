"""The domain catalog: one point per domain (centroid + metadata) in a collection.

Why this exists: the router must know every domain's centroid to send a query
only where it can be answered, and re-analysis must find the previous domains
to keep their ids. Centroids are too big for etcd, so they live in Qdrant, in
a catalog collection shared by owners (one DomainMap each). Partition
centroids are stored as points too (``kind: partition``). Point ids are
deterministic (UUID5 of owner and id), so writing the catalog is idempotent;
entries an owner no longer has are removed after the new ones are written.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client.http import models

from librarian.core.discovery import Domain, Partition
from librarian.storage.errors import CollectionNotFound
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

_NAMESPACE = uuid.UUID("6f1c3a52-5d0e-4b43-9a52-0c8e0b7f4a11")
OWNER_KEY = "owner"
_PENDING_LABELS = "labels_pending"  # the kind of the marker of a version not labelled yet


def catalog_point_id(owner: str, entry_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{owner}/{entry_id}"))


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
) -> None:
    """Store ``domains`` (and partitions) of ``owner`` at ``version``; drop stale entries.

    ``labelled=False``: the source's points do not carry this version's labels yet (a
    labeling Job is to write them); the entries hold a marker saying so, which routers
    wait out (:func:`labels_pending`) until :func:`mark_labelled` removes it.
    """
    if not domains:
        raise ValueError("write_catalog needs at least one domain")
    dim = len(domains[0].centroid)
    if not port.collection_exists(catalog_collection):
        port.create_collection(catalog_collection, CollectionSpec(vector_size=dim))
        port.create_keyword_index(catalog_collection, OWNER_KEY)
    cluster, collection = source or (None, None)
    points = [
        PointRecord(
            id=catalog_point_id(owner, d.id),
            vector=[float(x) for x in d.centroid],
            payload={
                "kind": "domain",
                OWNER_KEY: owner,
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
            id=catalog_point_id(owner, p.id),
            vector=[float(x) for x in p.centroid],
            payload={
                "kind": "partition",
                OWNER_KEY: owner,
                "partition_id": p.id,
                "domain_id": domains[p.domain].id,
                "size": p.size,
                "version": version,
            },
        )
        for p in partitions
    ]
    if not labelled:
        points.append(
            PointRecord(
                id=catalog_point_id(owner, _PENDING_LABELS),
                vector=[1.0] + [0.0] * (dim - 1),
                payload={"kind": _PENDING_LABELS, OWNER_KEY: owner, "version": version},
            )
        )
    for start in range(0, len(points), 256):
        port.upsert(catalog_collection, points[start : start + 256])
    stale = _owner_filter(owner)
    stale.must_not = [models.FieldCondition(key="version", match=models.MatchValue(value=version))]
    port.delete_points(catalog_collection, points_filter=stale)


def labels_pending(port: QdrantPort, catalog_collection: str, owner: str | None = None) -> bool:
    """Whether the domains ``owner`` published are still being written onto the source's
    points as labels: a labelled slice read meanwhile would miss the points not labelled
    yet, so a router keeps serving the library it has (or none) until they are."""
    if not port.collection_exists(catalog_collection):
        return False
    flt = _owner_filter(owner or None, _PENDING_LABELS)
    return port.count(catalog_collection, count_filter=flt) > 0


def mark_labelled(port: QdrantPort, catalog_collection: str, owner: str, version: int) -> None:
    """Every source point carries the labels of ``version``: routers may serve it now."""
    flt = _owner_filter(owner, _PENDING_LABELS, version=version)
    port.delete_points(catalog_collection, points_filter=flt)


def read_catalog(
    port: QdrantPort, catalog_collection: str, owner: str | None = None
) -> list[CatalogEntry]:
    """The domains in the catalog (of one owner, or all); empty when there is no catalog."""
    try:
        flt = _owner_filter(owner or None, "domain")
        entries: list[CatalogEntry] = []
        offset = None
        while True:
            page, offset = port.scroll(
                catalog_collection, limit=256, offset=offset, scroll_filter=flt
            )
            for point in page:
                p = point.payload
                entries.append(
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
                )
            if offset is None:
                break
    except CollectionNotFound:
        return []
    return sorted(entries, key=lambda e: (e.owner, e.domain_id))


@dataclass(frozen=True)
class CatalogPartition:
    """A partition as the catalog stores it: a cell of one domain, and its centroid."""

    owner: str
    partition_id: str
    domain_id: str
    centroid: list[float]
    size: int


def read_previous(
    port: QdrantPort, catalog_collection: str, owner: str
) -> tuple[list[Domain], list[Partition]]:
    """The domains and partitions ``owner`` published last, as discovery takes them back to
    keep their ids (each partition's ``domain`` indexes the domains); empty when none."""
    domains = [entry.to_domain() for entry in read_catalog(port, catalog_collection, owner)]
    index = {domain.id: i for i, domain in enumerate(domains)}
    partitions = [
        Partition(
            id=p.partition_id,
            domain=index[p.domain_id],
            centroid=np.asarray(p.centroid, dtype=np.float32),
            size=p.size,
        )
        for p in read_partitions(port, catalog_collection, owner)
        if p.domain_id in index
    ]
    return domains, partitions


def read_partitions(
    port: QdrantPort,
    catalog_collection: str,
    owner: str | None,
    domain_id: str | None = None,
) -> list[CatalogPartition]:
    """The partitions of ``owner`` (``None``: every owner's; of one domain, or all), by id;
    empty when there is no catalog or it holds none."""
    flt = _owner_filter(owner or None, "partition", domain_id=domain_id)
    partitions: list[CatalogPartition] = []
    offset = None
    try:
        while True:
            page, offset = port.scroll(
                catalog_collection, limit=256, offset=offset, scroll_filter=flt
            )
            partitions += [
                CatalogPartition(
                    owner=str(point.payload[OWNER_KEY]),
                    partition_id=str(point.payload["partition_id"]),
                    domain_id=str(point.payload["domain_id"]),
                    centroid=list(point.dense() or ()),
                    size=int(point.payload["size"]),
                )
                for point in page
            ]
            if offset is None:
                break
    except CollectionNotFound:
        return []
    return sorted(partitions, key=lambda p: (p.domain_id, p.partition_id))


def delete_catalog(port: QdrantPort, catalog_collection: str, owner: str) -> None:
    """Remove ``owner``'s entries; drop the collection when nothing else is left in it."""
    try:
        port.delete_points(catalog_collection, points_filter=_owner_filter(owner))
        if port.count(catalog_collection) == 0:
            port.delete_collection(catalog_collection)
    except CollectionNotFound:
        return
