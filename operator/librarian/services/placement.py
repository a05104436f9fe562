"""Which shard key of a specialized home each point goes under: its partition's.

Why this exists: a specialized domain's collection uses Qdrant's custom sharding
with one shard key per partition of the domain, so a routed query searches only
the partitions it chose. Every writer into such a home (the migration, catching
up a move, the router's writes) must put a point under the key of the partition
nearest its routing vector, exactly as discovery assigned it
(:func:`librarian.core.discovery.assign_partitions`); this module is that one
rule, read from the catalog where discovery stored the partitions.

A point without the routing vector (a named vector it does not carry) cannot be
placed by similarity: it goes under the first key, where a query naming no key
still finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from librarian.core.discovery import Partition, assign_partitions
from librarian.services.catalog import CatalogPartition, read_partitions
from librarian.storage.port import PointId, PointRecord, QdrantPort

__all__ = ["Placement", "placed_upsert", "read_placement"]


@dataclass(frozen=True)
class Placement:
    """A domain's partitions as shard keys, and the routing vector that places a point."""

    domain_id: str
    vector: str  # "" is the unnamed vector
    keys: tuple[str, ...]
    centroids: npt.NDArray[np.float32]  # one row per key

    @classmethod
    def of(cls, domain_id: str, vector: str, partitions: Sequence[CatalogPartition]) -> Placement:
        if not partitions:
            raise ValueError(f"domain {domain_id} has no partitions to place points in")
        return cls(
            domain_id=domain_id,
            vector=vector,
            keys=tuple(p.partition_id for p in partitions),
            centroids=np.asarray([p.centroid for p in partitions], dtype=np.float32),
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


def read_placement(
    catalog: QdrantPort,
    catalog_collection: str,
    owner: str,
    domain_id: str,
    vector: str,
) -> Placement | None:
    """The placement of ``domain_id``'s points from the catalog (``None``: discovery stored no
    partitions for it, so its home is not sharded by partition)."""
    partitions = read_partitions(catalog, catalog_collection, owner, domain_id)
    return Placement.of(domain_id, vector, partitions) if partitions else None


def placed_upsert(
    port: QdrantPort,
    collection: str,
    points: Sequence[PointRecord],
    placement: Placement | None,
    **options: Any,
) -> None:
    """Upsert ``points`` (with ``options``: a condition, a mode), each under its partition's
    shard key when the home is placed by partition."""
    if placement is None:
        port.upsert(collection, points, **options)
        return
    for key, group in placement.split(points).items():
        port.upsert(collection, group, shard_key=key, **options)
