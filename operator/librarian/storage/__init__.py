"""Cluster I/O: the Qdrant port, its embedded and remote adapters, the fleet, and their errors.

Why this exists: one place talks to Qdrant (``qdrant-client`` for remote
clusters, ``qdrant-edge`` for the in-process engine), so nothing above it
touches a network directly and every error names the cluster it came from.
What the product does with the port lives in :mod:`librarian.services`.
"""

from librarian.storage.errors import (
    AuthenticationFailed,
    ClusterUnreachable,
    CollectionExists,
    CollectionNotFound,
    InvalidRequest,
    QdrantError,
    UnknownCluster,
)
from librarian.storage.fleet import ClusterConfig, Fleet, FleetConfigError, connect
from librarian.storage.port import (
    CollectionInfo,
    CollectionSpec,
    HnswSpec,
    KeyPage,
    OptimizersSpec,
    PointRecord,
    QdrantPort,
    QuantizationSpec,
    ScoredHit,
)

__all__ = [
    "AuthenticationFailed",
    "ClusterConfig",
    "ClusterUnreachable",
    "CollectionExists",
    "CollectionInfo",
    "CollectionNotFound",
    "CollectionSpec",
    "Fleet",
    "FleetConfigError",
    "HnswSpec",
    "InvalidRequest",
    "KeyPage",
    "OptimizersSpec",
    "PointRecord",
    "QdrantError",
    "QdrantPort",
    "QuantizationSpec",
    "ScoredHit",
    "UnknownCluster",
    "connect",
]
