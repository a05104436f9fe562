"""Everything that talks to Qdrant: the port, its two adapters, and what the product does with them.

Why this exists: one place for cluster I/O (``qdrant-client`` for remote
clusters, ``qdrant-edge`` for the in-process engine), so the pure core never
touches a network and every error names the cluster it came from.
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
    "OptimizersSpec",
    "PointRecord",
    "QdrantError",
    "QdrantPort",
    "QuantizationSpec",
    "ScoredHit",
    "UnknownCluster",
    "connect",
]
