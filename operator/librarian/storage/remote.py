"""The remote adapter: a Qdrant cluster reached through the official ``qdrant-client``.

Why this exists: production fleets are real Qdrant clusters. This adapter
gives them the same small port as the embedded engine, with a timeout on
every call, retries with exponential backoff for what may pass (connection
errors, timeouts, 429 and 5xx), and errors that name the cluster and
collection — and never carry the API key. ``qdrant-client``'s local mode
(``url=":memory:"``) is accepted so the shared test suite can run the data
operations without a server.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import httpx
from qdrant_client import QdrantClient
from qdrant_client.http import models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from librarian.storage.errors import (
    AuthenticationFailed,
    ClusterUnreachable,
    CollectionExists,
    CollectionNotFound,
    InvalidRequest,
    QdrantError,
)
from librarian.storage.port import (
    CollectionInfo,
    CollectionSpec,
    DenseVectorSpec,
    HnswSpec,
    KeyPage,
    OptimizersSpec,
    PointId,
    PointRecord,
    QuantizationSpec,
    ScoredHit,
    SparseVectorSpec,
    VectorNameConfig,
)
from librarian.storage.shard_keys import checked_selector, checked_write_key
from librarian.storage.tls import CaBundleError, qdrant_ssl_context
from librarian.storage.vectors import Vectors, VectorValue, from_named

T = TypeVar("T")
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}


def _hnsw_diff(hnsw: HnswSpec | None) -> models.HnswConfigDiff | None:
    if hnsw is None:
        return None
    return models.HnswConfigDiff(
        m=hnsw.m,
        ef_construct=hnsw.ef_construct,
        full_scan_threshold=hnsw.full_scan_threshold,
        on_disk=hnsw.on_disk,
    )


def hnsw_diff(spec: CollectionSpec) -> models.HnswConfigDiff | None:
    return _hnsw_diff(spec.hnsw)


def _hnsw_spec(hnsw: models.HnswConfig | models.HnswConfigDiff | None) -> HnswSpec | None:
    if hnsw is None:
        return None
    return HnswSpec(
        m=hnsw.m,
        ef_construct=hnsw.ef_construct,
        full_scan_threshold=hnsw.full_scan_threshold,
        on_disk=hnsw.on_disk,
    )


def vector_params(spec: DenseVectorSpec) -> models.VectorParams:
    """Qdrant's parameters of one dense vector."""
    return models.VectorParams(
        size=spec.size,
        distance=models.Distance(spec.distance),
        on_disk=spec.on_disk,
        multivector_config=(
            models.MultiVectorConfig(comparator=models.MultiVectorComparator(spec.multivector))
            if spec.multivector is not None
            else None
        ),
        datatype=models.Datatype(spec.datatype) if spec.datatype is not None else None,
        hnsw_config=_hnsw_diff(spec.hnsw),
        quantization_config=quantization_config(spec.quantization),
    )


def sparse_params(spec: SparseVectorSpec) -> models.SparseVectorParams:
    """Qdrant's parameters of one sparse vector."""
    index = (
        models.SparseIndexParams(
            full_scan_threshold=spec.full_scan_threshold,
            on_disk=spec.on_disk,
            datatype=models.Datatype(spec.datatype) if spec.datatype is not None else None,
        )
        if (spec.full_scan_threshold, spec.on_disk, spec.datatype) != (None, None, None)
        else None
    )
    return models.SparseVectorParams(
        index=index, modifier=models.Modifier(spec.modifier) if spec.modifier else None
    )


def vectors_config(
    spec: CollectionSpec,
) -> tuple[
    models.VectorParams | dict[str, models.VectorParams], dict[str, models.SparseVectorParams]
]:
    """Qdrant's ``vectors_config`` and ``sparse_vectors_config`` for ``spec``."""
    dense: models.VectorParams | dict[str, models.VectorParams]
    if spec.vector_size is not None:
        dense = vector_params(spec.dense_vectors()[""])
    else:
        dense = {name: vector_params(v) for name, v in spec.vectors.items()}
    return dense, {name: sparse_params(v) for name, v in spec.sparse_vectors.items()}


def _quantization_spec(quantization: Any) -> QuantizationSpec | None:
    if isinstance(quantization, models.ScalarQuantization):
        return QuantizationSpec(
            kind="scalar",
            quantile=quantization.scalar.quantile,
            always_ram=quantization.scalar.always_ram,
        )
    if isinstance(quantization, models.ProductQuantization):
        compression: Any = quantization.product.compression.value
        return QuantizationSpec(
            kind="product", always_ram=quantization.product.always_ram, compression=compression
        )
    if isinstance(quantization, models.BinaryQuantization):
        return QuantizationSpec(kind="binary", always_ram=quantization.binary.always_ram)
    return None


def _dense_spec(params: models.VectorParams) -> DenseVectorSpec:
    multivector: Any = (
        params.multivector_config.comparator.value if params.multivector_config else None
    )
    datatype: Any = params.datatype.value if params.datatype is not None else None
    return DenseVectorSpec(
        size=int(params.size),
        distance=params.distance.value,
        on_disk=params.on_disk,
        multivector=multivector,
        datatype=datatype,
        hnsw=_hnsw_spec(params.hnsw_config),
        quantization=_quantization_spec(params.quantization_config),
    )


def _sparse_spec(params: models.SparseVectorParams) -> SparseVectorSpec:
    index = params.index
    datatype: Any = index.datatype.value if index is not None and index.datatype else None
    modifier: Any = (
        params.modifier.value if params.modifier not in (None, models.Modifier.NONE) else None
    )
    return SparseVectorSpec(
        modifier=modifier,
        on_disk=index.on_disk if index is not None else None,
        full_scan_threshold=index.full_scan_threshold if index is not None else None,
        datatype=datatype,
    )


def quantization_config(spec: QuantizationSpec | None) -> models.QuantizationConfig | None:
    if spec is None:
        return None
    if spec.kind == "scalar":
        return models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, quantile=spec.quantile, always_ram=spec.always_ram
            )
        )
    if spec.kind == "product":
        return models.ProductQuantization(
            product=models.ProductQuantizationConfig(
                compression=models.CompressionRatio(spec.compression or "x16"),
                always_ram=spec.always_ram,
            )
        )
    return models.BinaryQuantization(
        binary=models.BinaryQuantizationConfig(always_ram=spec.always_ram)
    )


def optimizers_diff(spec: CollectionSpec) -> models.OptimizersConfigDiff | None:
    if spec.optimizers is None:
        return None
    o = spec.optimizers
    return models.OptimizersConfigDiff(
        indexing_threshold=o.indexing_threshold,
        default_segment_number=o.default_segment_number,
        max_segment_size=o.max_segment_size,
        deleted_threshold=o.deleted_threshold,
        vacuum_min_vector_number=o.vacuum_min_vector_number,
    )


def _optimizers_spec(
    optimizers: models.OptimizersConfig | models.OptimizersConfigDiff | None,
) -> OptimizersSpec | None:
    if optimizers is None:
        return None
    return OptimizersSpec(
        indexing_threshold=optimizers.indexing_threshold,
        default_segment_number=optimizers.default_segment_number,
        max_segment_size=optimizers.max_segment_size,
        deleted_threshold=optimizers.deleted_threshold,
        vacuum_min_vector_number=optimizers.vacuum_min_vector_number,
    )


def _spec(
    vectors: models.VectorParams | dict[str, models.VectorParams] | None,
    sparse_vectors: dict[str, models.SparseVectorParams] | None,
    *,
    quantization: Any,
    **rest: Any,
) -> CollectionSpec:
    """A collection spec from Qdrant's vectors parameters (an unnamed vector, or named ones)
    and the collection-wide fields in ``rest``; the unnamed vector's own quantization wins
    over the collection's ``quantization``."""
    unnamed = vectors if isinstance(vectors, models.VectorParams) else (vectors or {}).get("")
    named = {} if unnamed is not None else dict(vectors or {})
    dense = _dense_spec(unnamed) if unnamed is not None else None
    return CollectionSpec(
        vector_size=dense.size if dense is not None else None,
        distance=dense.distance if dense is not None else "Cosine",
        on_disk_vectors=dense.on_disk if dense is not None else None,
        unnamed_multivector=dense.multivector if dense is not None else None,
        unnamed_datatype=dense.datatype if dense is not None else None,
        vectors={name: _dense_spec(params) for name, params in named.items()},
        sparse_vectors={
            name: _sparse_spec(params) for name, params in (sparse_vectors or {}).items()
        },
        quantization=_quantization_spec(
            (unnamed.quantization_config if unnamed is not None else None) or quantization
        ),
        **rest,
    )


def spec_from_config(config: models.CollectionConfig) -> CollectionSpec:
    """Our description of a collection's current configuration, as Qdrant reports it (every
    dense and sparse vector)."""
    return _spec(
        config.params.vectors,
        config.params.sparse_vectors,
        quantization=config.quantization_config,
        on_disk_payload=config.params.on_disk_payload,
        hnsw=_hnsw_spec(config.hnsw_config),
        optimizers=_optimizers_spec(config.optimizer_config),
        shard_number=config.params.shard_number,
        replication_factor=config.params.replication_factor,
    )


def spec_from_create(body: models.CreateCollection) -> CollectionSpec:
    """Our description of the collection a create request asks for (every dense and sparse
    vector; HNSW, quantization and optimizers where the request sets them)."""
    return _spec(
        body.vectors,
        body.sparse_vectors,
        quantization=body.quantization_config,
        on_disk_payload=body.on_disk_payload,
        hnsw=_hnsw_spec(body.hnsw_config),
        optimizers=_optimizers_spec(body.optimizers_config),
        shard_number=body.shard_number,
        replication_factor=body.replication_factor,
    )


def _id(value: Any) -> PointId:
    return value if isinstance(value, int | str) else str(value)


def _vector(value: Any) -> Vectors | None:
    """The client's vectors of a point as :data:`~librarian.storage.vectors.Vectors`."""
    if value is None:
        return None
    if isinstance(value, list):
        return value  # no copy for lists
    if not isinstance(value, dict):
        return [float(x) for x in value]
    named: dict[str, VectorValue] = {
        name: v if isinstance(v, models.SparseVector | list) else [float(x) for x in v]
        for name, v in value.items()
    }
    return from_named(named)


class RemoteQdrant:
    """:class:`~librarian.storage.port.QdrantPort` over ``qdrant-client``."""

    def __init__(
        self,
        cluster: str,
        client: QdrantClient,
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        serialize: bool = False,
    ) -> None:
        self._cluster = cluster
        self._client = client
        # qdrant-client's local mode is not thread-safe: serialize calls to it.
        self._serial = threading.Lock() if serialize else contextlib.nullcontext()
        self.calls_overlap = not serialize  # see librarian.storage.port
        self._retries = max(0, retries)
        self._backoff_s = backoff_s
        self._sleep = sleep
        # Local mode has no sharding: the keys a collection was created with are kept here so
        # writes are checked as a server checks them (reads cannot be narrowed there).
        self._local_shard_keys: dict[str, tuple[str, ...] | None] | None = {} if serialize else None

    @classmethod
    def connect(
        cls,
        cluster: str,
        url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        ca_bundle: str | None = None,
    ) -> RemoteQdrant:
        """A client of the cluster at ``url``; over https it trusts the public CAs and those of
        ``ca_bundle`` (default: the file named by ``LIBRARIAN_CA_BUNDLE``, if any)."""
        if url == ":memory:":
            return cls(
                cluster,
                QdrantClient(location=":memory:"),
                retries=retries,
                backoff_s=backoff_s,
                serialize=True,
            )
        else:
            tls: dict[str, Any] = {}
            if url.startswith("https://"):
                try:
                    context = qdrant_ssl_context(ca_bundle)
                except CaBundleError as error:
                    raise ClusterUnreachable(cluster, str(error)) from None
                if context is not None:
                    tls["verify"] = context
            client = QdrantClient(
                url=url,
                api_key=api_key,
                timeout=max(1, round(timeout_s)),
                check_compatibility=False,
                **tls,
            )
        return cls(cluster, client, retries=retries, backoff_s=backoff_s)

    @property
    def cluster(self) -> str:
        return self._cluster

    @property
    def tenant_indexes(self) -> bool:
        """Whether a keyword index may be declared ``is_tenant`` (a Qdrant server; local mode
        keeps no payload index layout)."""
        return self._local_shard_keys is None

    # ----------------------------------------------------------------- error handling

    def _call(self, collection: str | None, action: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                with self._serial:
                    return action()
            except QdrantError:
                raise
            except Exception as error:  # noqa: BLE001 - the client's errors, translated to ours
                translated = self._translate(error, collection)
                if not translated.retryable or attempt >= self._retries:
                    raise translated from None
                self._sleep(self._backoff_s * (2**attempt))
                attempt += 1

    def _translate(self, error: Exception, collection: str | None) -> QdrantError:
        cluster = self._cluster
        if isinstance(error, UnexpectedResponse):
            status = error.status_code
            detail = _detail(error)
            if status in (401, 403):
                return AuthenticationFailed(
                    cluster,
                    f"the API key was refused (HTTP {status}); check the Secret or "
                    "environment variable that holds it",
                    collection=collection,
                )
            if status == 404:
                return CollectionNotFound(cluster, f"not found: {detail}", collection=collection)
            if status == 409:
                return CollectionExists(cluster, detail, collection=collection)
            if status in _RETRYABLE_STATUS:
                failure = ClusterUnreachable(
                    cluster, f"HTTP {status}: {detail}", collection=collection
                )
                return failure
            return InvalidRequest(cluster, f"HTTP {status}: {detail}", collection=collection)
        if isinstance(
            error, ResponseHandlingException | httpx.TransportError | TimeoutError | ConnectionError
        ):
            source = getattr(error, "source", None) or error
            return ClusterUnreachable(
                cluster,
                f"cannot reach the cluster ({type(source).__name__}: {source})",
                collection=collection,
            )
        message = str(error)
        if message.startswith("Wrong input"):  # local mode's words for a malformed request
            return InvalidRequest(cluster, message, collection=collection)
        if "not found" in message.lower() and message.lower().startswith("collection"):
            return CollectionNotFound(cluster, "collection does not exist", collection=collection)
        if "already exists" in message.lower():
            return CollectionExists(cluster, "collection already exists", collection=collection)
        return InvalidRequest(cluster, f"{type(error).__name__}: {message}", collection=collection)

    # ----------------------------------------------------------------- collections

    def ping(self) -> None:
        self._call(None, self._client.get_collections)

    def collection_exists(self, collection: str) -> bool:
        return bool(self._call(collection, lambda: self._client.collection_exists(collection)))

    def create_collection(self, collection: str, spec: CollectionSpec) -> None:
        if self.collection_exists(collection):
            raise CollectionExists(
                self._cluster, "collection already exists", collection=collection
            )
        dense, sparse = vectors_config(spec)
        custom = spec.shard_keys is not None and self._local_shard_keys is None
        self._call(
            collection,
            lambda: self._client.create_collection(
                collection,
                sharding_method=models.ShardingMethod.CUSTOM if custom else None,
                vectors_config=dense,
                sparse_vectors_config=sparse or None,
                hnsw_config=hnsw_diff(spec),
                quantization_config=quantization_config(spec.quantization),
                optimizers_config=optimizers_diff(spec),
                shard_number=spec.shard_number,
                replication_factor=spec.replication_factor,
                on_disk_payload=spec.on_disk_payload,
            ),
        )
        if self._local_shard_keys is not None:
            self._local_shard_keys[collection] = spec.shard_keys
        elif custom:  # one shard per key: a key is one partition, a small part of a domain
            for key in spec.shard_keys or ():
                self._call(
                    collection,
                    lambda key=key: self._client.create_shard_key(collection, key, shards_number=1),  # type: ignore[misc]
                )

    def _shard_keys_of(self, collection: str, sharding: Any) -> tuple[str, ...] | None:
        """The collection's shard keys (``None`` without custom sharding)."""
        if self._local_shard_keys is not None:
            return self._local_shard_keys.get(collection)
        if sharding != models.ShardingMethod.CUSTOM:
            return None
        listed = self._call(collection, lambda: self._client.list_shard_keys(collection))
        return tuple(str(d.key) for d in listed.shard_keys or [])

    def _selector(
        self, collection: str, shard_keys: Sequence[str] | None
    ) -> list[models.ShardKey] | None:
        """The selector sent with a read or delete (``None``: every key). A server checks the
        keys itself; local mode's are checked here."""
        if shard_keys is None or self._local_shard_keys is None:
            return None if shard_keys is None else list(dict.fromkeys(shard_keys))
        checked_selector(self._cluster, collection, self._known_keys(collection), shard_keys)
        return None  # local mode cannot narrow a read: it holds every point in one place

    def _known_keys(self, collection: str) -> tuple[str, ...] | None:
        """Local mode's record of a collection's shard keys."""
        assert self._local_shard_keys is not None
        if collection not in self._local_shard_keys and not self.collection_exists(collection):
            raise CollectionNotFound(
                self._cluster, "collection does not exist", collection=collection
            )
        return self._local_shard_keys.get(collection)

    def update_collection(self, collection: str, spec: CollectionSpec) -> None:
        current = self.collection_info(collection).spec
        if spec.layout() != current.layout():
            raise InvalidRequest(
                self._cluster,
                "the vectors' layout (names, sizes, distances, kinds) is immutable; create a "
                "new collection and migrate",
                collection=collection,
            )
        vectors: dict[str, models.VectorParamsDiff] | None = (
            {"": models.VectorParamsDiff(on_disk=spec.on_disk_vectors)}
            if spec.on_disk_vectors is not None and not spec.named
            else None
        )
        if spec.named:
            vectors = {
                name: models.VectorParamsDiff(
                    on_disk=v.on_disk,
                    hnsw_config=_hnsw_diff(v.hnsw),
                    quantization_config=quantization_config(v.quantization),
                )
                for name, v in spec.vectors.items()
                if (v.on_disk, v.hnsw, v.quantization) != (None, None, None)
            } or None
        params = (
            models.CollectionParamsDiff(
                replication_factor=spec.replication_factor, on_disk_payload=spec.on_disk_payload
            )
            if spec.replication_factor is not None or spec.on_disk_payload is not None
            else None
        )
        self._call(
            collection,
            lambda: self._client.update_collection(
                collection,
                vectors_config=vectors,
                hnsw_config=hnsw_diff(spec),
                quantization_config=quantization_config(spec.quantization),
                optimizers_config=optimizers_diff(spec),
                collection_params=params,
            ),
        )

    def delete_collection(self, collection: str) -> None:
        if self._local_shard_keys is not None:
            self._local_shard_keys.pop(collection, None)
        self._call(collection, lambda: self._client.delete_collection(collection))

    def collection_info(self, collection: str) -> CollectionInfo:
        info = self._call(collection, lambda: self._client.get_collection(collection))
        return CollectionInfo(
            name=collection,
            points_count=int(info.points_count or 0),
            indexed_vectors_count=info.indexed_vectors_count,
            payload_schema={k: str(v.data_type.value) for k, v in info.payload_schema.items()},
            spec=replace(
                spec_from_config(info.config),
                shard_keys=self._shard_keys_of(collection, info.config.params.sharding_method),
            ),
        )

    def create_keyword_index(self, collection: str, field_name: str) -> None:
        self._call(
            collection,
            lambda: self._client.create_payload_index(
                collection, field_name, models.PayloadSchemaType.KEYWORD, wait=True
            ),
        )

    def describe_collection(self, collection: str) -> models.CollectionInfo:
        return self._call(collection, lambda: self._client.get_collection(collection))

    def create_payload_index(
        self,
        collection: str,
        field_name: str,
        field_schema: models.PayloadSchemaType | models.PayloadSchemaParams,
    ) -> None:
        self._call(
            collection,
            lambda: self._client.create_payload_index(
                collection, field_name, field_schema, wait=True
            ),
        )

    def delete_payload_index(self, collection: str, field_name: str) -> None:
        self._call(
            collection,
            lambda: self._client.delete_payload_index(collection, field_name, wait=True),
        )

    def create_vector_name(self, collection: str, name: str, config: VectorNameConfig) -> None:
        self._call(
            collection,
            lambda: self._client.create_vector_name(collection, name, config, wait=True),
        )

    def delete_vector_name(self, collection: str, name: str) -> None:
        self._call(collection, lambda: self._client.delete_vector_name(collection, name, wait=True))

    # ----------------------------------------------------------------- points

    def _write_key(self, collection: str, shard_key: str | None) -> str | None:
        """The key a write goes under: required on a custom-sharded collection (Qdrant refuses
        a write without it), refused on any other (a server checks it itself)."""
        if self._local_shard_keys is None:
            return shard_key
        known = self._known_keys(collection)
        return checked_write_key(self._cluster, collection, known, shard_key)

    def upsert(
        self,
        collection: str,
        points: Sequence[PointRecord],
        *,
        update_filter: models.Filter | None = None,
        update_mode: models.UpdateMode | None = None,
        shard_key: str | None = None,
    ) -> None:
        """Insert or overwrite points (see the port). Under ``shard_key`` on a server, a point
        held under another key moves: written under ``shard_key`` (if the write's condition
        holds where it is), then deleted from its old key, so one copy remains."""
        target = self._write_key(collection, shard_key)
        if not points:
            return
        structs = {
            p.id: models.PointStruct(
                id=p.id, vector=p.vector if p.vector is not None else {}, payload=p.payload
            )
            for p in points
        }
        selector = target if self._local_shard_keys is None else None
        elsewhere = self._held_elsewhere(collection, list(structs), selector)
        moving = self._movable(collection, elsewhere, update_filter, update_mode)
        staying = [struct for point_id, struct in structs.items() if point_id not in elsewhere]
        if staying:
            self._call(
                collection,
                lambda: self._client.upsert(
                    collection,
                    points=staying,
                    wait=True,
                    update_filter=update_filter,
                    update_mode=update_mode,
                    shard_key_selector=selector,
                ),
            )
        if moving:
            moved = [structs[i] for i in moving]
            self._call(
                collection,
                lambda: self._client.upsert(
                    collection, points=moved, wait=True, shard_key_selector=selector
                ),
            )
            by_key: dict[str, list[PointId]] = {}
            for point_id in moving:
                by_key.setdefault(elsewhere[point_id], []).append(point_id)
            for key, ids in by_key.items():
                self._call(
                    collection,
                    lambda key=key, ids=ids: self._client.delete(  # type: ignore[misc]
                        collection,
                        points_selector=models.PointIdsList(points=list(ids)),
                        wait=True,
                        shard_key_selector=key,
                    ),
                )

    def _held_elsewhere(
        self, collection: str, ids: list[PointId], target: str | None
    ) -> dict[PointId, str]:
        """The points among ``ids`` held under a shard key other than ``target``, by id."""
        if target is None:
            return {}
        records = self._call(
            collection,
            lambda: self._client.retrieve(
                collection, ids=ids, with_payload=False, with_vectors=False
            ),
        )
        return {
            _id(r.id): str(r.shard_key)
            for r in records
            if r.shard_key is not None and str(r.shard_key) != target
        }

    def _movable(
        self,
        collection: str,
        elsewhere: Mapping[PointId, str],
        update_filter: models.Filter | None,
        update_mode: models.UpdateMode | None,
    ) -> list[PointId]:
        """The points held under another key that a write moves: none for ``insert_only`` (they
        exist), else those matching the write's condition where they are."""
        if not elsewhere or update_mode == models.UpdateMode.INSERT_ONLY:
            return []
        if update_filter is None:
            return list(elsewhere)
        by_key: dict[str, list[PointId]] = {}
        for point_id, key in elsewhere.items():
            by_key.setdefault(key, []).append(point_id)
        movable: list[PointId] = []
        for key, ids in by_key.items():
            condition = models.Filter(must=[models.HasIdCondition(has_id=list(ids)), update_filter])
            records, _ = self._call(
                collection,
                lambda key=key, ids=ids, condition=condition: self._client.scroll(  # type: ignore[misc]
                    collection,
                    scroll_filter=condition,
                    limit=len(ids),
                    with_payload=False,
                    with_vectors=False,
                    shard_key_selector=key,
                ),
            )
            movable.extend(_id(r.id) for r in records)
        return movable

    def update_vectors(
        self,
        collection: str,
        points: Sequence[PointRecord],
        *,
        update_filter: models.Filter | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        if not points:
            return
        vectors = [
            models.PointVectors(id=p.id, vector=p.vector if p.vector is not None else {})
            for p in points
        ]
        self._call(
            collection,
            lambda: self._client.update_vectors(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                points=vectors,
                wait=True,
                update_filter=update_filter,
            ),
        )

    def delete_vectors(
        self,
        collection: str,
        names: Sequence[str],
        *,
        ids: Sequence[PointId] | None = None,
        points_filter: models.Filter | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        if ids is not None and not ids:
            return
        selection = _selection(ids, points_filter)
        self._call(
            collection,
            lambda: self._client.delete_vectors(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                vectors=list(names),
                points=selection,
                wait=True,
            ),
        )

    def scroll(
        self,
        collection: str,
        *,
        limit: int,
        offset: PointId | None = None,
        scroll_filter: models.Filter | None = None,
        with_vectors: bool = True,
        with_payload: bool | Sequence[str] = True,
        shard_keys: Sequence[str] | None = None,
    ) -> tuple[list[PointRecord], PointId | None]:
        selector = with_payload if isinstance(with_payload, bool) else list(with_payload)
        records, next_offset = self._call(
            collection,
            lambda: self._client.scroll(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                scroll_filter=scroll_filter,
                limit=limit,
                offset=offset,
                with_payload=selector,
                with_vectors=with_vectors,
            ),
        )
        points = [
            PointRecord(id=_id(r.id), vector=_vector(r.vector), payload=dict(r.payload or {}))
            for r in records
        ]
        return points, (None if next_offset is None else _id(next_offset))

    def scroll_keys(
        self,
        collection: str,
        *,
        keys: Sequence[str],
        limit: int,
        offset: PointId | None = None,
        scroll_filter: models.Filter | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> KeyPage:
        records, next_offset = self._call(
            collection,
            lambda: self._client.scroll(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                scroll_filter=scroll_filter,
                limit=limit,
                offset=offset,
                with_payload=list(keys),
                with_vectors=False,
            ),
        )
        return KeyPage(
            [_id(r.id) for r in records],
            [dict(r.payload or {}) for r in records],
            None if next_offset is None else _id(next_offset),
        )

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
        shard_keys: Sequence[str] | None = None,
    ) -> list[ScoredHit]:
        response = self._call(
            collection,
            lambda: self._client.query_points(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                query=[float(x) for x in vector],
                using=using or None,
                limit=limit,
                query_filter=query_filter,
                search_params=models.SearchParams(hnsw_ef=hnsw_ef, exact=exact),
                with_payload=with_payload,
                with_vectors=with_vectors,
            ),
        )
        return [
            ScoredHit(
                id=_id(h.id),
                score=float(h.score),
                payload=dict(h.payload or {}),
                vector=_vector(h.vector),
            )
            for h in response.points
        ]

    def sample(
        self,
        collection: str,
        limit: int,
        *,
        with_payload: bool = True,
        shard_keys: Sequence[str] | None = None,
    ) -> list[PointRecord]:
        response = self._call(
            collection,
            lambda: self._client.query_points(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                query=models.SampleQuery(sample=models.Sample.RANDOM),
                limit=limit,
                with_payload=with_payload,
                with_vectors=True,
            ),
        )
        return [
            PointRecord(id=_id(h.id), vector=_vector(h.vector), payload=dict(h.payload or {}))
            for h in response.points
        ]

    def count(
        self,
        collection: str,
        *,
        count_filter: models.Filter | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> int:
        result = self._call(
            collection,
            lambda: self._client.count(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                count_filter=count_filter,
                exact=True,
            ),
        )
        return int(result.count)

    def retrieve(
        self,
        collection: str,
        ids: Sequence[PointId],
        *,
        with_vectors: bool = True,
        with_payload: bool | Sequence[str] = True,
        shard_keys: Sequence[str] | None = None,
    ) -> list[PointRecord]:
        if not ids:
            return []
        selector = with_payload if isinstance(with_payload, bool) else list(with_payload)
        records = self._call(
            collection,
            lambda: self._client.retrieve(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                ids=list(ids),
                with_vectors=with_vectors,
                with_payload=selector,
            ),
        )
        return [
            PointRecord(id=_id(r.id), vector=_vector(r.vector), payload=dict(r.payload or {}))
            for r in records
        ]

    def set_payload(
        self,
        collection: str,
        payload: Mapping[str, Any],
        ids: Sequence[PointId] | None = None,
        *,
        points_filter: models.Filter | None = None,
        key: str | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        if ids is not None and not ids:
            return
        selection = _selection(ids, points_filter)
        self._call(
            collection,
            lambda: self._client.set_payload(
                collection,
                dict(payload),
                points=selection,
                key=key,
                wait=True,
                shard_key_selector=self._selector(collection, shard_keys),
            ),
        )

    def overwrite_payload(
        self,
        collection: str,
        payload: Mapping[str, Any],
        *,
        points_filter: models.Filter,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        selection = models.FilterSelector(filter=points_filter)
        self._call(
            collection,
            lambda: self._client.overwrite_payload(
                collection,
                dict(payload),
                points=selection,
                wait=True,
                shard_key_selector=self._selector(collection, shard_keys),
            ),
        )

    def delete_payload_keys(
        self,
        collection: str,
        keys: Sequence[str],
        *,
        points_filter: models.Filter | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        selector = models.FilterSelector(filter=points_filter or models.Filter())
        self._call(
            collection,
            lambda: self._client.delete_payload(
                collection,
                list(keys),
                points=selector,
                wait=True,
                shard_key_selector=self._selector(collection, shard_keys),
            ),
        )

    def delete_points(
        self,
        collection: str,
        *,
        ids: Sequence[PointId] | None = None,
        points_filter: models.Filter | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        if (ids is None) == (points_filter is None):
            raise InvalidRequest(
                self._cluster,
                "delete_points needs exactly one of ids or filter",
                collection=collection,
            )
        selector: models.PointsSelector
        if ids is not None:
            if not ids:
                return
            selector = models.PointIdsList(points=list(ids))
        else:
            assert points_filter is not None
            selector = models.FilterSelector(filter=points_filter)
        self._call(
            collection,
            lambda: self._client.delete(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                points_selector=selector,
                wait=True,
            ),
        )

    # ----------------------------------------------------------------- Qdrant's own requests

    def query_points(
        self,
        collection: str,
        request: models.QueryRequest,
        *,
        shard_keys: Sequence[str] | None = None,
    ) -> list[models.ScoredPoint]:
        if request.lookup_from is not None:
            raise InvalidRequest(
                self._cluster,
                "lookup_from is resolved by the caller, not sent to one collection",
                collection=collection,
            )
        fields = request.model_dump(exclude_unset=True, exclude={"shard_key", "lookup_from"})
        fields = {name: getattr(request, name) for name in fields}
        if "filter" in fields:
            fields["query_filter"] = fields.pop("filter")
        if "params" in fields:
            fields["search_params"] = fields.pop("params")
        if "with_vector" in fields:
            fields["with_vectors"] = fields.pop("with_vector")
        fields.setdefault("with_payload", False)  # Qdrant's default for the query API
        fallback: models.ShardKeyWithFallback | None = None
        if shard_keys is None and request.shard_key is not None:  # the request's own selector
            named = request.shard_key
            if isinstance(named, models.ShardKeyWithFallback):
                fallback = named if self._local_shard_keys is None else None
            else:
                shard_keys = [str(k) for k in (named if isinstance(named, list) else [named])]
        selector = fallback if fallback is not None else self._selector(collection, shard_keys)
        response = self._call(
            collection,
            lambda: self._client.query_points(collection, shard_key_selector=selector, **fields),
        )
        return list(response.points)

    def facet(
        self,
        collection: str,
        request: models.FacetRequest,
        *,
        shard_keys: Sequence[str] | None = None,
    ) -> list[models.FacetValueHit]:
        response = self._call(
            collection,
            lambda: self._client.facet(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                key=request.key,
                facet_filter=request.filter,
                limit=request.limit if request.limit is not None else 10,
                exact=bool(request.exact),
            ),
        )
        return list(response.hits)

    def scroll_points(
        self,
        collection: str,
        request: models.ScrollRequest,
        *,
        shard_keys: Sequence[str] | None = None,
    ) -> tuple[list[models.Record], models.ExtendedPointId | None]:
        records, next_offset = self._call(
            collection,
            lambda: self._client.scroll(
                collection,
                shard_key_selector=self._selector(collection, shard_keys),
                scroll_filter=request.filter,
                limit=request.limit if request.limit is not None else 10,
                offset=request.offset,
                with_payload=request.with_payload if request.with_payload is not None else True,
                with_vectors=request.with_vector if request.with_vector is not None else False,
                order_by=request.order_by,
            ),
        )
        return list(records), next_offset

    def close(self) -> None:
        self._client.close()


def _detail(error: UnexpectedResponse) -> str:
    """Qdrant's error text from the body (``{"status": {"error": ...}}``), short."""
    try:
        body = error.structured()
        status = body.get("status") if isinstance(body, dict) else None
        if isinstance(status, dict) and "error" in status:
            return str(status["error"])[:300]
    except ValueError:  # a body that is not JSON
        pass
    return (error.reason_phrase or "error")[:300]


def _selection(
    ids: Sequence[PointId] | None, points_filter: models.Filter | None
) -> models.PointIdsList | models.FilterSelector:
    """The points selector for ``ids`` AND ``points_filter`` (either may be absent)."""
    if points_filter is None:
        return models.PointIdsList(points=list(ids or []))
    if ids is None:
        return models.FilterSelector(filter=points_filter)
    return models.FilterSelector(
        filter=models.Filter(must=[models.HasIdCondition(has_id=list(ids)), points_filter])
    )
