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


IMMUTABLE_FIELDS = ("vector_size", "distance", "shard_number")
"""Fields Qdrant cannot change in place: a change needs a new collection and a migration."""


@dataclass(frozen=True)
class ConfigChange:
    """One field whose current value differs from the desired one."""

    field: str
    current: object
    desired: object


def diff_specs(
    current: CollectionSpec, desired: CollectionSpec
) -> tuple[list[ConfigChange], list[ConfigChange]]:
    """(mutable changes, immutable changes) from ``current`` to ``desired``.

    Only what ``desired`` sets is compared (``None`` means "keep as it is"),
    field by field inside HNSW and optimizers, and as a whole for quantization.
    """
    mutable: list[ConfigChange] = []
    immutable: list[ConfigChange] = []
    for name in (
        "vector_size",
        "distance",
        "shard_number",
        "on_disk_vectors",
        "on_disk_payload",
        "replication_factor",
    ):
        want, have = getattr(desired, name), getattr(current, name)
        if name in ("shard_number", "replication_factor") and have is None:
            have = 1  # Qdrant's default
        if want is not None and want != have:
            target = immutable if name in IMMUTABLE_FIELDS else mutable
            target.append(ConfigChange(name, have, want))
    for group in ("hnsw", "optimizers"):
        wanted, present = getattr(desired, group), getattr(current, group)
        if wanted is None:
            continue
        for key, want in vars(wanted).items():
            have = getattr(present, key) if present is not None else None
            if want is not None and want != have:
                mutable.append(ConfigChange(f"{group}.{key}", have, want))
    if desired.quantization is not None and desired.quantization != current.quantization:
        mutable.append(ConfigChange("quantization", current.quantization, desired.quantization))
    return mutable, immutable
