"""Which partition of its domain each point of a specialized home is in, and how the home says it.

Why this exists: a routed query searches only the partitions of a domain it
chose. Every writer into a specialized home (the migration, catching up a move,
the router's writes) must mark a point with the partition nearest its routing
vector, exactly as discovery assigned it
(:func:`librarian.core.discovery.assign_partitions`); this module is that one
rule, read from the catalog where discovery stored the partitions.

A home marks partitions one of two ways. Its layout (``by_field``): every point
carries its partition id in the reserved payload field
:data:`~librarian.contracts.payload.PARTITION_KEY`, under a keyword payload
index, in one shard; a routed read of a home the engine still scans (its
points not yet in an HNSW graph) adds a condition keeping the chosen partitions
(one ``should`` match per partition: the engine answers it by scoring only the
kept points, exactly, and a ``should`` of single values costs it less than one
match-any). A home whose points are in an HNSW graph is asked whole: a graph
search of the whole home costs the engine less than scoring the chosen
partitions' points, and its answer holds theirs (the fleet-cost benchmark
measured both). Homes created before that layout use Qdrant's custom sharding with one shard key
per partition (a write names its point's key; a read selects the chosen keys);
they keep working so until they are specialized into a new collection. The
fleet-cost benchmark measured the field an order of magnitude cheaper per query
than a shard per partition on the embedded engine (every visited shard costs a
fixed overhead).

A point without the routing vector (a named vector it does not carry) cannot be
placed by similarity: it goes in the first partition, where a query selecting
no partition still finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from qdrant_client.http import models

from librarian.contracts.payload import PARTITION_KEY
from librarian.core.discovery import Partition, assign_partitions
from librarian.services.catalog import CatalogPartition, read_partitions
from librarian.storage.port import CollectionInfo, PointId, PointRecord, QdrantPort

__all__ = [
    "GRAPH_SHARE",
    "Placement",
    "ensure_partition_index",
    "partition_index_schema",
    "placed_by_field",
    "placed_upsert",
    "read_placement",
    "searched_by_graph",
]

GRAPH_SHARE = 0.9
"""The share of a home's points that must sit in HNSW-indexed segments for a read to ask the
home whole (the rest, in segments still scanned, are few enough not to matter)."""


def partition_index_schema(port: QdrantPort) -> models.KeywordIndexParams:
    """The payload index a home's partition field gets: a keyword index, declared
    ``is_tenant`` on a Qdrant server (Qdrant then keeps each partition's points together, as
    its multitenancy guide advises for a tenant field); the embedded engine gets the plain
    keyword index the fleet-cost benchmark measured."""
    tenant = bool(getattr(port, "tenant_indexes", False))
    return models.KeywordIndexParams(
        type=models.KeywordIndexType.KEYWORD, is_tenant=True if tenant else None
    )


def ensure_partition_index(port: QdrantPort, collection: str) -> None:
    """Index the partition field of ``collection`` (idempotent)."""
    port.create_payload_index(collection, PARTITION_KEY, partition_index_schema(port))


def searched_by_graph(points: int, indexed_vectors: int | None) -> bool:
    """Whether a home holding ``points`` with ``indexed_vectors`` vectors in HNSW-indexed
    segments answers a nearest search from its graph (so a search of the whole home costs the
    engine less than scoring the chosen partitions' points)."""
    return points > 0 and (indexed_vectors or 0) >= GRAPH_SHARE * points


def placed_by_field(info: CollectionInfo) -> bool:
    """Whether a home marks partitions by the indexed payload field (not by shard keys)."""
    return info.spec.shard_keys is None and PARTITION_KEY in info.payload_schema


@dataclass(frozen=True)
class Placement:
    """A domain's partitions (shard keys of its home, or values of its partition field), and
    the routing vector that places a point."""

    domain_id: str
    vector: str  # "" is the unnamed vector
    keys: tuple[str, ...]
    centroids: npt.NDArray[np.float32]  # one row per key
    by_field: bool = False  # the partition is a payload field, not a shard key
    # Some points of the home carry no partition among ``keys`` (marked by an earlier
    # analysis' partitions, or unmarked): every partition-filtered read keeps them too.
    strays: bool = False
    # The home's points are in an HNSW graph (see :func:`searched_by_graph`): reads ask it
    # whole, without the partition condition.
    graph: bool = False

    @classmethod
    def of(
        cls,
        domain_id: str,
        vector: str,
        partitions: Sequence[CatalogPartition],
        *,
        by_field: bool = False,
    ) -> Placement:
        if not partitions:
            raise ValueError(f"domain {domain_id} has no partitions to place points in")
        return cls(
            domain_id=domain_id,
            vector=vector,
            keys=tuple(p.partition_id for p in partitions),
            centroids=np.asarray([p.centroid for p in partitions], dtype=np.float32),
            by_field=by_field,
        )

    def restricted(self, keys: Sequence[str]) -> Placement | None:
        """This placement over the partitions that are among ``keys`` (a home created with an
        earlier analysis' partitions); ``None`` when none is."""
        kept = [i for i, key in enumerate(self.keys) if key in set(keys)]
        if not kept:
            return None
        return Placement(
            domain_id=self.domain_id,
            vector=self.vector,
            keys=tuple(self.keys[i] for i in kept),
            centroids=self.centroids[kept],
            by_field=self.by_field,
            strays=self.strays,
            graph=self.graph,
        )

    def keys_of_vectors(self, vectors: Any) -> list[str]:
        """The shard key of each routing vector (rows of ``vectors``)."""
        rows = np.asarray(vectors, dtype=np.float32)
        if len(rows) == 0:
            return []
        cells = [
            Partition(id=key, domain=0, centroid=centroid, size=0)
            for key, centroid in zip(self.keys, self.centroids, strict=True)
        ]
        return [self.keys[int(i)] for i in assign_partitions(rows, cells)]

    def split(self, points: Sequence[PointRecord]) -> dict[str, list[PointRecord]]:
        """``points`` grouped by the shard key each goes under (keys in first-seen order)."""
        routable = [(p, p.dense(self.vector)) for p in points]
        with_vector = [(p, v) for p, v in routable if v is not None]
        keys = self.keys_of_vectors([v for _, v in with_vector])
        key_of: dict[int, str] = {id(p): k for (p, _), k in zip(with_vector, keys, strict=True)}
        groups: dict[str, list[PointRecord]] = {}
        for point in points:
            groups.setdefault(key_of.get(id(point), self.keys[0]), []).append(point)
        return groups

    def key_by_id(self, points: Sequence[PointRecord]) -> dict[PointId, str]:
        """The shard key of each point, by id."""
        return {p.id: key for key, group in self.split(points).items() for p in group}

    def marked(self, points: Sequence[PointRecord]) -> list[PointRecord]:
        """``points`` (in order) each with its partition in the partition field."""
        key_of = self.key_by_id(points)
        return [
            PointRecord(p.id, p.vector, {**(p.payload or {}), PARTITION_KEY: key_of[p.id]})
            for p in points
        ]

    def writes(self, points: Sequence[PointRecord]) -> dict[str | None, list[PointRecord]]:
        """``points`` grouped by the shard key their upsert names: by partition on a home
        sharded so; on a home placed by field, one group (no key) of marked points."""
        if self.by_field:
            return {None: self.marked(points)} if points else {}
        return {key: group for key, group in self.split(points).items()}

    def read_filter(self, chosen: Sequence[str]) -> models.Filter | None:
        """On a home placed by field that the engine scans, the condition that keeps only the
        ``chosen`` partitions: one ``should`` match of each (and the points marked with none
        of the placement's partitions, when there are such). ``None`` (the whole home) when
        they are every partition of the placement, or when the home answers from its graph."""
        if not self.by_field or self.graph or not set(self.keys) - set(chosen):
            return None
        kept: list[models.Condition] = [
            models.FieldCondition(key=PARTITION_KEY, match=models.MatchValue(value=key))
            for key in dict.fromkeys(chosen)
        ]
        if self.strays:
            kept.append(models.Filter(must_not=[self.current()]))
        return models.Filter(should=kept)

    def current(self) -> models.FieldCondition:
        """The condition a point marked with one of this placement's partitions matches."""
        return models.FieldCondition(key=PARTITION_KEY, match=models.MatchAny(any=list(self.keys)))


def read_placement(
    catalog: QdrantPort,
    catalog_collection: str,
    owner: str,
    domain_id: str,
    vector: str,
    *,
    by_field: bool = False,
) -> Placement | None:
    """The placement of ``domain_id``'s points from the catalog (``None``: discovery stored no
    partitions for it, so its home is not placed by partition)."""
    partitions = read_partitions(catalog, catalog_collection, owner, domain_id)
    return Placement.of(domain_id, vector, partitions, by_field=by_field) if partitions else None


def placed_upsert(
    port: QdrantPort,
    collection: str,
    points: Sequence[PointRecord],
    placement: Placement | None,
    **options: Any,
) -> None:
    """Upsert ``points`` (with ``options``: a condition, a mode), each marked with its
    partition (its field, or its shard key) when the home is placed by partition."""
    if placement is None:
        port.upsert(collection, points, **options)
        return
    for key, group in placement.writes(points).items():
        port.upsert(collection, group, shard_key=key, **options)
