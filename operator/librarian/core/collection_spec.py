"""What a collection should look like: vectors, HNSW, quantization, optimizers, sharding.

Why this exists: the tuning core derives these from a domain's statistics and
the adapters apply them to a cluster; both need the same plain, pure
description (no client library types), so it lives in the core.

Vectors follow Qdrant's two layouts: one unnamed dense vector
(``vector_size``/``distance``/``on_disk_vectors``, the common case), or named
dense vectors (``vectors``: plain or multivectors, each with its own size,
distance, storage and optional HNSW/quantization); either may come with named
sparse vectors (``sparse_vectors``). A collection with only sparse vectors has
neither ``vector_size`` nor ``vectors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

Distance = Literal["Cosine", "Dot", "Euclid", "Manhattan"]
MultiVectorComparator = Literal["max_sim"]
VectorDatatype = Literal["float32", "float16", "uint8"]
SparseModifier = Literal["idf"]

__all__ = [
    "IMMUTABLE_FIELDS",
    "UNNAMED",
    "CollectionSpec",
    "ConfigChange",
    "DenseVectorSpec",
    "Distance",
    "HnswSpec",
    "MultiVectorComparator",
    "OptimizersSpec",
    "QuantizationSpec",
    "RoutingVectorError",
    "SparseModifier",
    "SparseVectorSpec",
    "VectorDatatype",
    "diff_specs",
    "routing_vector_name",
    "with_source_vectors",
]

UNNAMED = ""
"""The name Qdrant gives the unnamed dense vector (``using`` omitted or ``""``)."""


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
class DenseVectorSpec:
    """One dense vector of a collection: plain, or a multivector (several dense vectors per
    point compared with ``multivector``). ``hnsw``/``quantization`` override the
    collection's for this vector only (``None``: the collection's apply)."""

    size: int
    distance: Distance = "Cosine"
    on_disk: bool | None = None
    multivector: MultiVectorComparator | None = None
    datatype: VectorDatatype | None = None
    hnsw: HnswSpec | None = None
    quantization: QuantizationSpec | None = None

    def layout(self) -> tuple[int, Distance, MultiVectorComparator | None, VectorDatatype | None]:
        """What cannot change once the collection exists."""
        return (self.size, self.distance, self.multivector, self.datatype)


@dataclass(frozen=True)
class SparseVectorSpec:
    """One named sparse vector (``modifier="idf"``: scores weighted by inverse document
    frequency, as for BM25)."""

    modifier: SparseModifier | None = None
    on_disk: bool | None = None
    full_scan_threshold: int | None = None
    datatype: VectorDatatype | None = None


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection should look like.

    ``vector_size`` (with ``distance``, ``on_disk_vectors``, ``unnamed_multivector``
    and ``unnamed_datatype``) describes the unnamed dense vector; ``vectors`` the named dense ones instead (Qdrant has
    either, never both); ``sparse_vectors`` the named sparse ones. The vectors'
    layout and ``shard_number`` are immutable once the collection exists; the
    rest can be patched in place.

    ``shard_keys`` asks for Qdrant's custom sharding with these shard keys (one
    shard each; a point lives under the key it is written with); ``None`` is
    Qdrant's automatic sharding. The keys are fixed when the collection is
    created.
    """

    vector_size: int | None = None
    distance: Distance = "Cosine"
    on_disk_vectors: bool | None = None
    on_disk_payload: bool | None = None
    hnsw: HnswSpec | None = None
    quantization: QuantizationSpec | None = None
    optimizers: OptimizersSpec | None = None
    shard_number: int | None = None
    replication_factor: int | None = None
    vectors: Mapping[str, DenseVectorSpec] = field(default_factory=dict)
    sparse_vectors: Mapping[str, SparseVectorSpec] = field(default_factory=dict)
    unnamed_multivector: MultiVectorComparator | None = None
    unnamed_datatype: VectorDatatype | None = None
    shard_keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.shard_keys is not None:
            keys = tuple(self.shard_keys)
            object.__setattr__(self, "shard_keys", keys)  # a list (e.g. from JSON) becomes a tuple
            if len(set(keys)) != len(keys) or not all(isinstance(k, str) and k for k in keys):
                raise ValueError("shard keys are distinct non-empty strings")
        if self.vector_size is not None and self.vectors:
            raise ValueError(
                "a collection has either one unnamed dense vector (vector_size) or named "
                "dense vectors (vectors), not both"
            )
        if UNNAMED in self.vectors:
            raise ValueError("named vectors need a non-empty name; use vector_size instead")
        if self.vector_size is None and (self.unnamed_multivector or self.unnamed_datatype):
            raise ValueError(
                "unnamed_multivector and unnamed_datatype describe vector_size's vector"
            )

    @property
    def custom_sharded(self) -> bool:
        """Whether points are placed by shard key (Qdrant's custom sharding)."""
        return self.shard_keys is not None

    @property
    def named(self) -> bool:
        """Whether the dense vectors are named (``vectors``) rather than one unnamed vector."""
        return self.vector_size is None

    def dense_vectors(self) -> dict[str, DenseVectorSpec]:
        """Every dense vector (multivectors included) by name, the unnamed one as ``""``."""
        if self.vector_size is not None:
            return {
                UNNAMED: DenseVectorSpec(
                    size=self.vector_size,
                    distance=self.distance,
                    on_disk=self.on_disk_vectors,
                    multivector=self.unnamed_multivector,
                    datatype=self.unnamed_datatype,
                )
            }
        return dict(self.vectors)

    def routable_vectors(self) -> list[str]:
        """The dense vectors points can be routed on (plain ones, not multivectors), by name."""
        return [n for n, v in self.dense_vectors().items() if v.multivector is None]

    def default_vector(self) -> str | None:
        """The vector a library routes on unless told otherwise: the unnamed one, or the only
        plain dense vector; ``None`` when there is none or several to choose from."""
        routable = self.routable_vectors()
        return routable[0] if len(routable) == 1 else None

    def layout(self) -> tuple[object, ...]:
        """The vectors' immutable layout: dense (size, distance, multivector, datatype) and
        sparse (modifier, datatype) by name."""
        return (
            sorted((n, v.layout()) for n, v in self.dense_vectors().items()),
            sorted((n, (v.modifier, v.datatype)) for n, v in self.sparse_vectors.items()),
        )


IMMUTABLE_FIELDS = (
    "vector_size",
    "distance",
    "unnamed_multivector",
    "unnamed_datatype",
    "shard_number",
    "vectors",
    "shard_keys",
)
"""Fields Qdrant cannot change in place: a change needs a new collection and a migration."""


_UNNAMED_FIELDS = ("distance", "on_disk_vectors", "unnamed_multivector", "unnamed_datatype")


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
    if (desired.named or desired.sparse_vectors) and desired.layout() != current.layout():
        immutable.append(ConfigChange("vectors", current.layout(), desired.layout()))
    for name in (
        "vector_size",
        "distance",
        "unnamed_multivector",
        "unnamed_datatype",
        "shard_number",
        "shard_keys",
        "on_disk_vectors",
        "on_disk_payload",
        "replication_factor",
    ):
        if desired.named and name in _UNNAMED_FIELDS:
            continue  # these describe the unnamed vector; named ones are compared by layout
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


def with_source_vectors(
    tuned: CollectionSpec, source: CollectionSpec, vector: str
) -> CollectionSpec:
    """``tuned`` (derived for the routing ``vector``) with every vector of ``source``.

    A home holds all the vectors its points carry: the layout (names, sizes,
    distances, multivectors, datatypes, sparse vectors) is the source's. The
    tuned HNSW, quantization and on-disk placement are set on the routing
    vector itself (so a per-vector setting of the source cannot hide them) and
    are the collection's defaults for the other dense vectors, which keep their
    own per-vector settings where the source has any.
    """
    if not source.named:
        return replace(tuned, sparse_vectors=dict(source.sparse_vectors))
    vectors = {
        name: (
            replace(
                spec,
                on_disk=tuned.on_disk_vectors,
                hnsw=tuned.hnsw,
                quantization=tuned.quantization,
            )
            if name == vector
            else spec
        )
        for name, spec in source.vectors.items()
    }
    return replace(
        tuned,
        vector_size=None,
        vectors=vectors,
        sparse_vectors=dict(source.sparse_vectors),
    )


class RoutingVectorError(ValueError):
    """The vector asked to route on is not a plain dense vector of the collection; the message
    lists the ones it has."""


def routing_vector_name(spec: CollectionSpec, requested: str | None = None) -> str:
    """The dense vector a library routes on: ``requested`` when it is a plain dense vector of
    the collection, else (when ``requested`` is empty) the unnamed one or the only plain dense
    one (``""`` stands for the unnamed vector); :class:`RoutingVectorError` otherwise."""
    dense = spec.dense_vectors()
    routable = spec.routable_vectors()
    choices = ", ".join(repr(n) if n else "the unnamed vector" for n in sorted(routable)) or "none"
    if requested:
        if requested in routable:
            return requested
        if requested in spec.sparse_vectors:
            kind = "a sparse vector"
        elif requested in dense:
            kind = "a multivector"
        else:
            kind = "not a vector of the collection"
        raise RoutingVectorError(
            f"vector {requested!r} is {kind}; a library routes on a plain dense vector "
            f"(the collection's: {choices})"
        )
    if len(routable) == 1:
        return routable[0]
    if not routable:
        raise RoutingVectorError(
            "the collection has no plain dense vector to route on (its dense vectors: none)"
        )
    raise RoutingVectorError(
        f"the collection has several dense vectors ({choices}); choose the one to route on"
    )
