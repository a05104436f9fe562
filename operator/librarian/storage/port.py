"""The one small port through which the product talks to any Qdrant cluster.

Why this exists: a fleet entry is either a remote cluster (``url``, reached
through ``qdrant-client``) or an embedded engine (``embedded: <path>``, the real
Qdrant engine in-process through ``qdrant-edge-py``). Everything above this
layer (sampling, labeling, catalog, migration, routing) is written once
against :class:`QdrantPort`; both adapters implement it and one shared test
suite runs against each.

Filters are expressed with ``qdrant_client.http.models.Filter`` (the official
models); adapters accept the subset the product uses: ``must`` / ``should`` /
``must_not`` of ``FieldCondition`` with ``MatchValue`` / ``MatchAny`` or a numeric ``Range``,
``IsEmptyCondition`` and ``HasIdCondition``.

An adapter may say whether calls made from several threads at once overlap
(``calls_overlap``: a remote cluster's calls wait on the network, so they do;
the embedded engine lets go of the interpreter lock while it works and lets
reads of one collection, and calls on different collections, run at once,
while writes to one collection take turns; qdrant-client's local mode does not
overlap). Callers that pipeline work in threads read it with a default of
``True`` and run one call after the other where it is ``False``.

Shard keys (Qdrant's custom sharding, :attr:`CollectionSpec.shard_keys`): a
write to a custom-sharded collection names the one key its points go under
(``shard_key``; none is refused, as Qdrant refuses it); reads, counts,
retrieves, scrolls, payload changes and deletes take a selector
(``shard_keys``: the keys to look in; ``None``: every key). A point id lives
under one key at a time: Qdrant itself would keep a second copy when an id is
written under another key, so an upsert under key B of a point held under key
A moves it (the adapter deletes it from A), and a conditional upsert is judged
against the point where it is. Reads over several keys answer as one
collection holding the same points would (top-k by score over every selected
key, counts summed, scrolls in id order). On a collection without custom
sharding a selector is refused and ``shard_key`` must be ``None``. qdrant-client's
local mode has no sharding at all: it keeps every point in one place and
ignores selectors, so there a selector does not narrow a read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from qdrant_client.http import models

from librarian.core.collection_spec import (
    CollectionSpec,
    DenseVectorSpec,
    Distance,
    HnswSpec,
    OptimizersSpec,
    QuantizationSpec,
    SparseVectorSpec,
)
from librarian.storage.vectors import Vectors, routing_vector

PointId = int | str
ShardKeys = Sequence[str] | None
"""A shard-key selector: the keys to look in (``None``: every key, or no custom sharding)."""
VectorNameConfig = models.DenseVectorNameConfig | models.SparseVectorNameConfig
"""A vector to add to a collection: dense (size, distance, multivector, datatype) or sparse."""

__all__ = [
    "CollectionInfo",
    "CollectionSpec",
    "DenseVectorSpec",
    "Distance",
    "HnswSpec",
    "KeyPage",
    "OptimizersSpec",
    "PointId",
    "PointRecord",
    "QdrantPort",
    "QuantizationSpec",
    "ScoredHit",
    "ShardKeys",
    "SparseVectorSpec",
    "VectorNameConfig",
    "Vectors",
]


@dataclass(frozen=True)
class PointRecord:
    """A point as the product moves it: id, all its vectors (absent when not asked for) and
    payload.

    ``vector`` is Qdrant's vector struct: the unnamed dense vector as a list, or
    named vectors (dense lists, ``models.SparseVector``, multivectors as lists
    of lists) by name; a point may lack some named vectors.
    """

    id: PointId
    vector: Vectors | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    def dense(self, name: str = "") -> list[float] | None:
        """The plain dense vector ``name`` (``""``: the unnamed one), if the point has it."""
        return routing_vector(self.vector, name)


class KeyPage(NamedTuple):
    """One page of a listing: ids in id order, each one's selected payload keys (aligned with
    the ids), and the offset of the next page (``None`` at the end)."""

    ids: list[PointId]
    payloads: list[dict[str, Any]]
    next_offset: PointId | None


@dataclass(frozen=True)
class ScoredHit:
    """One query result."""

    id: PointId
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    vector: Vectors | None = None


@dataclass(frozen=True)
class CollectionInfo:
    """What the product needs to know about an existing collection.

    ``spec`` is the collection's current configuration, read from the collection
    (its full vectors config included).
    """

    name: str
    points_count: int
    spec: CollectionSpec
    indexed_vectors_count: int | None = None
    payload_schema: Mapping[str, str] = field(default_factory=dict)

    @property
    def vector_size(self) -> int | None:
        """The size of the collection's default dense vector (the unnamed one, or the only
        plain dense one); ``None`` when it has none or several."""
        name = self.spec.default_vector()
        return None if name is None else self.spec.dense_vectors()[name].size

    @property
    def distance(self) -> Distance | None:
        """The distance of the default dense vector (see :attr:`vector_size`)."""
        name = self.spec.default_vector()
        return None if name is None else self.spec.dense_vectors()[name].distance


@runtime_checkable
class QdrantPort(Protocol):
    """Operations the product needs from one Qdrant cluster.

    Every method raises a :class:`librarian.storage.errors.QdrantError` subclass
    naming the cluster (and the collection where there is one) on failure.
    """

    @property
    def cluster(self) -> str:
        """The fleet name of this cluster (used in every error message)."""
        ...

    def ping(self) -> None:
        """Raise ClusterUnreachable / AuthenticationFailed if the cluster cannot be used."""
        ...

    def collection_exists(self, collection: str) -> bool: ...

    def create_collection(self, collection: str, spec: CollectionSpec) -> None:
        """Create the collection; raise CollectionExists if it already exists."""
        ...

    def update_collection(self, collection: str, spec: CollectionSpec) -> None:
        """Patch the mutable parts (HNSW, quantization, optimizers, on-disk, replication)."""
        ...

    def delete_collection(self, collection: str) -> None:
        """Delete the collection; a missing collection is not an error (idempotent)."""
        ...

    def collection_info(self, collection: str) -> CollectionInfo:
        """Raise CollectionNotFound if it does not exist."""
        ...

    def create_keyword_index(self, collection: str, field_name: str) -> None:
        """Create (idempotently) a keyword payload index on ``field_name``."""
        ...

    def describe_collection(self, collection: str) -> models.CollectionInfo:
        """Qdrant's full collection info (qdrant-client's model): status, counts, segments,
        the real vector configuration and the payload schema with each index's parameters.
        Raise CollectionNotFound if it does not exist."""
        ...

    def create_payload_index(
        self,
        collection: str,
        field_name: str,
        field_schema: models.PayloadSchemaType | models.PayloadSchemaParams,
    ) -> None:
        """Create (idempotently) a payload index of this schema."""
        ...

    def delete_payload_index(self, collection: str, field_name: str) -> None:
        """Delete the payload index on ``field_name`` (a missing one is not an error)."""
        ...

    def create_vector_name(self, collection: str, name: str, config: VectorNameConfig) -> None:
        """Add a named dense or sparse vector to an existing collection (Qdrant's
        ``PUT /collections/{name}/vectors/{vector_name}``); points have none of it yet."""
        ...

    def delete_vector_name(self, collection: str, name: str) -> None:
        """Remove a named vector, and every point's value of it, from a collection."""
        ...

    def upsert(
        self,
        collection: str,
        points: Sequence[PointRecord],
        *,
        update_filter: models.Filter | None = None,
        update_mode: models.UpdateMode | None = None,
        shard_key: str | None = None,
    ) -> None:
        """Insert or overwrite points; waits until they are applied.

        With ``update_filter`` the write is conditional (Qdrant's conditional
        upsert): a point that exists is overwritten only if it matches the
        filter; a point that does not exist is inserted. ``update_mode``
        (Qdrant's) ``insert_only`` leaves a point that exists alone,
        ``update_only`` creates no point that does not exist.
        """
        ...

    def update_vectors(
        self,
        collection: str,
        points: Sequence[PointRecord],
        *,
        update_filter: models.Filter | None = None,
        shard_keys: ShardKeys = None,
    ) -> None:
        """Replace the vectors of existing points (payload untouched); only those matching
        ``update_filter`` when it is given."""
        ...

    def delete_vectors(
        self,
        collection: str,
        names: Sequence[str],
        *,
        ids: Sequence[PointId] | None = None,
        points_filter: models.Filter | None = None,
        shard_keys: ShardKeys = None,
    ) -> None:
        """Remove the named vectors (the rest of each point stays) from ``ids`` (those matching
        ``points_filter`` too, when given), or from every point matching ``points_filter``."""
        ...

    def scroll(
        self,
        collection: str,
        *,
        limit: int,
        offset: PointId | None = None,
        scroll_filter: models.Filter | None = None,
        with_vectors: bool = True,
        with_payload: bool | Sequence[str] = True,
        shard_keys: ShardKeys = None,
    ) -> tuple[list[PointRecord], PointId | None]:
        """One page in id order, and the offset of the next page (``None`` at the end).

        ``with_payload`` may name the payload keys to return (the others are left out).
        """
        ...

    def scroll_keys(
        self,
        collection: str,
        *,
        keys: Sequence[str],
        limit: int,
        offset: PointId | None = None,
        scroll_filter: models.Filter | None = None,
        shard_keys: ShardKeys = None,
    ) -> KeyPage:
        """The page :meth:`scroll` returns with no vectors and only the payload ``keys``, as
        ids and payloads: listings of millions of ids (by version, by label) build no point
        records."""
        ...

    def query(
        self,
        collection: str,
        vector: Sequence[float],
        *,
        limit: int,
        query_filter: models.Filter | None = None,
        with_payload: bool = True,
        with_vectors: bool = False,
        hnsw_ef: int | None = None,
        exact: bool = False,
        using: str = "",
        shard_keys: ShardKeys = None,
    ) -> list[ScoredHit]:
        """Nearest neighbours of ``vector`` (of the dense vector ``using``; ``""``: the unnamed
        one), best first."""
        ...

    def sample(
        self,
        collection: str,
        limit: int,
        *,
        with_payload: bool = True,
        shard_keys: ShardKeys = None,
    ) -> list[PointRecord]:
        """A random sample of points with vectors (Qdrant's Query API random sample)."""
        ...

    def count(
        self,
        collection: str,
        *,
        count_filter: models.Filter | None = None,
        shard_keys: ShardKeys = None,
    ) -> int:
        """Exact count of points matching the filter."""
        ...

    def retrieve(
        self,
        collection: str,
        ids: Sequence[PointId],
        *,
        with_vectors: bool = True,
        with_payload: bool | Sequence[str] = True,
        shard_keys: ShardKeys = None,
    ) -> list[PointRecord]:
        """The points that exist among ``ids`` (missing ids are skipped).

        ``with_payload`` may name the payload keys to return (the others are left out).
        """
        ...

    def set_payload(
        self,
        collection: str,
        payload: Mapping[str, Any],
        ids: Sequence[PointId] | None = None,
        *,
        points_filter: models.Filter | None = None,
        key: str | None = None,
        shard_keys: ShardKeys = None,
    ) -> None:
        """Merge ``payload`` into the payload of ``ids`` (those matching ``points_filter``
        too, when given), or of every point matching ``points_filter``; under the nested
        path ``key`` when given."""
        ...

    def overwrite_payload(
        self,
        collection: str,
        payload: Mapping[str, Any],
        *,
        points_filter: models.Filter,
        shard_keys: ShardKeys = None,
    ) -> None:
        """Replace the whole payload of the points matching ``points_filter`` by ``payload``."""
        ...

    def delete_payload_keys(
        self,
        collection: str,
        keys: Sequence[str],
        *,
        points_filter: models.Filter | None = None,
        shard_keys: ShardKeys = None,
    ) -> None:
        """Remove payload ``keys`` from matching points (all points when no filter)."""
        ...

    def delete_points(
        self,
        collection: str,
        *,
        ids: Sequence[PointId] | None = None,
        points_filter: models.Filter | None = None,
        shard_keys: ShardKeys = None,
    ) -> None:
        """Delete by ids or by filter (exactly one of them)."""
        ...

    def query_points(
        self,
        collection: str,
        request: models.QueryRequest,
        *,
        shard_keys: ShardKeys = None,
    ) -> list[models.ScoredPoint]:
        """Qdrant's universal query on one collection: every query kind (nearest dense / sparse /
        multivector / named via `using`, recommend, discover, context, order_by, fusion, rrf,
        formula, sample, mmr), nested prefetch, params, score_threshold, limit/offset, with_payload
        and with_vector selectors. `lookup_from` is resolved by the caller: InvalidRequest if
        given."""
        ...

    def facet(
        self,
        collection: str,
        request: models.FacetRequest,
        *,
        shard_keys: ShardKeys = None,
    ) -> list[models.FacetValueHit]:
        """Counts of the values of `request.key` among points matching `request.filter` (Qdrant's
        order: count desc, then value asc), at most `request.limit`; `exact` honoured."""
        ...

    def scroll_points(
        self,
        collection: str,
        request: models.ScrollRequest,
        *,
        shard_keys: ShardKeys = None,
    ) -> tuple[list[models.Record], models.ExtendedPointId | None]:
        """One page of Qdrant's scroll: id order, or `order_by` (then the next offset is None, as
        Qdrant answers); payload and vector selectors honoured."""
        ...

    def close(self) -> None: ...
