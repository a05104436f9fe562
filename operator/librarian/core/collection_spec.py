"""What a collection should look like: vectors, HNSW, quantization, optimizers, sharding.

Why this exists: the tuning core derives these from a domain's statistics and
the adapters apply them to a cluster; both need the same plain, pure
description (no client library types), so it lives in the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Distance = Literal["Cosine", "Dot", "Euclid", "Manhattan"]


@dataclass(frozen=True)
class HnswSpec:
    """HNSW index parameters (``None`` keeps the engine's default)."""

    m: int | None = None
    ef_construct: int | None = None
    full_scan_threshold: int | None = None
    on_disk: bool | None = None


@dataclass(frozen=True)
class QuantizationSpec:
    """Vector quantization: ``scalar`` (int8), ``product`` or ``binary``."""

    kind: Literal["scalar", "product", "binary"]
    always_ram: bool | None = None
    quantile: float | None = None  # scalar only
    compression: Literal["x4", "x8", "x16", "x32", "x64"] | None = None  # product only


@dataclass(frozen=True)
class OptimizersSpec:
    """Optimizer thresholds (``None`` keeps the engine's default)."""

    indexing_threshold: int | None = None
    default_segment_number: int | None = None
    max_segment_size: int | None = None
    deleted_threshold: float | None = None
    vacuum_min_vector_number: int | None = None


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection should look like.

    ``vector_size``, ``distance`` and ``shard_number`` are immutable once the
    collection exists; the rest can be patched in place.
    """

    vector_size: int
    distance: Distance = "Cosine"
    on_disk_vectors: bool | None = None
    on_disk_payload: bool | None = None
    hnsw: HnswSpec | None = None
    quantization: QuantizationSpec | None = None
    optimizers: OptimizersSpec | None = None
    shard_number: int | None = None
    replication_factor: int | None = None
