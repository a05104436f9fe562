"""The embedded adapter: the real Qdrant engine in-process (``qdrant-edge``).

Why this exists: the embedded default (``make demo``) and the benchmarks need a
real Qdrant engine that honours HNSW, quantization and optimizer settings,
with no server to run. Each collection is one ``EdgeShard`` stored under
``<path>/<collection>/shard``, next to ``spec.json``, the
:class:`CollectionSpec` it was created with (the engine keeps no collection
metadata of its own). A readers-writer lock per collection makes the adapter
safe to share between threads (the router and the migration workers do): reads
of a collection run at once (the engine allows it and lets go of Python's
interpreter lock while it works), while writes, optimization, loading and
closing a shard have it to themselves. A collection with custom sharding
(:attr:`CollectionSpec.shard_keys`) has one engine shard per shard key under
``<path>/<collection>/keys/<key, hex-encoded>``, all created with the
collection (a shard missing on disk, from an interrupted create, is made on
its key's first write); reads over several keys merge the shards' answers as
Qdrant merges its shards'. The engine lets
one handle at a time open a shard, so every adapter on the same storage path
in one process shares its handles (the router, the operator and an in-process
migration can then work on one cluster at once); the last one to close closes
them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as edge
from pydantic import TypeAdapter
from qdrant_client.http import models

from librarian.storage.edge_filters import UnsupportedFilter, to_edge_filter
from librarian.storage.edge_queries import (
    QdrantVector,
    UnsupportedQuery,
    to_edge_facet_request,
    to_edge_index_schema,
    to_edge_query_request,
    to_edge_scroll_request,
    to_facet_hit,
    to_record,
    to_scored_point,
)
from librarian.storage.errors import (
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
from librarian.storage.remote import quantization_config as remote_quantization
from librarian.storage.remote import vectors_config as remote_vectors_config
from librarian.storage.shard_keys import checked_selector, checked_write_key
from librarian.storage.shared_lock import ReadWriteLock
from librarian.storage.vectors import (
    UNNAMED,
    VectorError,
    Vectors,
    VectorValue,
    checked_vectors,
    from_named,
)

T = TypeVar("T")

_DISTANCES = {
    "Cosine": edge.Distance.Cosine,
    "Dot": edge.Distance.Dot,
    "Euclid": edge.Distance.Euclid,
    "Manhattan": edge.Distance.Manhattan,
}
_COMPRESSION = {
    "x4": edge.CompressionRatio.X4,
    "x8": edge.CompressionRatio.X8,
    "x16": edge.CompressionRatio.X16,
    "x32": edge.CompressionRatio.X32,
    "x64": edge.CompressionRatio.X64,
}
_DATATYPES = {
    "float32": edge.VectorStorageDatatype.Float32,
    "float16": edge.VectorStorageDatatype.Float16,
    "uint8": edge.VectorStorageDatatype.Uint8,
}
# Qdrant's own defaults, used where a spec leaves HNSW fields unset.
DEFAULT_HNSW = HnswSpec(m=16, ef_construct=100, full_scan_threshold=10_000)
SPEC_FILE = "spec.json"


def spec_to_json(spec: CollectionSpec) -> dict[str, Any]:
    return asdict(spec)


def _dense_from_json(data: Mapping[str, Any]) -> DenseVectorSpec:
    hnsw = HnswSpec(**data["hnsw"]) if data.get("hnsw") else None
    quantization = QuantizationSpec(**data["quantization"]) if data.get("quantization") else None
    plain = {k: v for k, v in data.items() if k not in {"hnsw", "quantization"}}
    return DenseVectorSpec(**plain, hnsw=hnsw, quantization=quantization)


def spec_from_json(data: Mapping[str, Any]) -> CollectionSpec:
    hnsw = HnswSpec(**data["hnsw"]) if data.get("hnsw") else None
    quantization = QuantizationSpec(**data["quantization"]) if data.get("quantization") else None
    optimizers = OptimizersSpec(**data["optimizers"]) if data.get("optimizers") else None
    vectors = {n: _dense_from_json(v) for n, v in (data.get("vectors") or {}).items()}
    sparse = {n: SparseVectorSpec(**v) for n, v in (data.get("sparse_vectors") or {}).items()}
    nested = {"hnsw", "quantization", "optimizers", "vectors", "sparse_vectors"}
    plain = {k: v for k, v in data.items() if k not in nested}
    return CollectionSpec(
        **plain,
        hnsw=hnsw,
        quantization=quantization,
        optimizers=optimizers,
        vectors=vectors,
        sparse_vectors=sparse,
    )


def _layout_from_engine(config: Mapping[str, Any], stored: CollectionSpec) -> CollectionSpec:
    """``stored`` with the vectors as the engine persisted them (its ``edge_config.json``):
    names, sizes, distances, multivectors, datatypes, sparse modifiers."""
    dense = config.get("vectors") or {}
    sparse = {
        name: SparseVectorSpec(
            modifier=params.get("modifier"),
            on_disk=params.get("on_disk"),
            full_scan_threshold=params.get("full_scan_threshold"),
            datatype=params.get("datatype"),
        )
        for name, params in (config.get("sparse_vectors") or {}).items()
        if name != PAYLOAD_ONLY_VECTOR
    }
    if set(dense) == {UNNAMED}:
        params = dense[UNNAMED]
        return replace(
            stored,
            vector_size=int(params["size"]),
            distance=params["distance"],
            on_disk_vectors=params.get("on_disk"),
            unnamed_multivector=(params.get("multivector_config") or {}).get("comparator"),
            unnamed_datatype=params.get("datatype"),
            vectors={},
            sparse_vectors=sparse,
        )
    stored_vectors = stored.vectors
    vectors = {
        name: replace(
            stored_vectors.get(name) or DenseVectorSpec(size=int(params["size"])),
            size=int(params["size"]),
            distance=params["distance"],
            on_disk=params.get("on_disk"),
            multivector=(params.get("multivector_config") or {}).get("comparator"),
            datatype=params.get("datatype"),
        )
        for name, params in dense.items()
    }
    return replace(stored, vector_size=None, vectors=vectors, sparse_vectors=sparse)


def _hnsw(spec: HnswSpec | None) -> edge.HnswIndexConfig | None:
    if spec is None:
        return None
    return edge.HnswIndexConfig(
        m=spec.m if spec.m is not None else DEFAULT_HNSW.m or 16,
        ef_construct=spec.ef_construct
        if spec.ef_construct is not None
        else DEFAULT_HNSW.ef_construct or 100,
        full_scan_threshold=spec.full_scan_threshold
        if spec.full_scan_threshold is not None
        else DEFAULT_HNSW.full_scan_threshold or 10_000,
        on_disk=spec.on_disk,
    )


def _quantization(spec: QuantizationSpec | None) -> Any:
    if spec is None:
        return None
    if spec.kind == "scalar":
        return edge.ScalarQuantizationConfig(
            type=edge.ScalarType.Int8, quantile=spec.quantile, always_ram=spec.always_ram
        )
    if spec.kind == "product":
        return edge.ProductQuantizationConfig(
            compression=_COMPRESSION[spec.compression or "x16"], always_ram=spec.always_ram
        )
    return edge.BinaryQuantizationConfig(always_ram=spec.always_ram)


def _optimizers(spec: OptimizersSpec | None) -> edge.EdgeOptimizersConfig | None:
    if spec is None:
        return None
    return edge.EdgeOptimizersConfig(**asdict(spec))


_UPDATE_MODES = {
    models.UpdateMode.UPSERT: edge.UpdateMode.Upsert,
    models.UpdateMode.INSERT_ONLY: edge.UpdateMode.InsertOnly,
    models.UpdateMode.UPDATE_ONLY: edge.UpdateMode.UpdateOnly,
}


def _edge_dense(spec: DenseVectorSpec) -> edge.EdgeVectorParams:
    return edge.EdgeVectorParams(
        size=spec.size,
        distance=_DISTANCES[spec.distance],
        on_disk=spec.on_disk,
        multivector_config=(
            edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim)
            if spec.multivector is not None
            else None
        ),
        datatype=_DATATYPES[spec.datatype] if spec.datatype is not None else None,
        hnsw_config=_hnsw(spec.hnsw),
        quantization_config=_quantization(spec.quantization),
    )


def _edge_sparse(spec: SparseVectorSpec) -> edge.EdgeSparseVectorParams:
    return edge.EdgeSparseVectorParams(
        full_scan_threshold=spec.full_scan_threshold,
        on_disk=spec.on_disk,
        modifier=edge.Modifier.Idf if spec.modifier == "idf" else None,
        datatype=_DATATYPES[spec.datatype] if spec.datatype is not None else None,
    )


PAYLOAD_ONLY_VECTOR = "librarian-payload-only"
"""The engine needs a vector in every collection, Qdrant does not (a collection may hold
payloads only): a collection created with no vector is given this sparse vector, which no
point carries and which the collection's spec, and so every answer about it, leaves out."""


def edge_config(spec: CollectionSpec) -> edge.EdgeConfig:
    """The engine configuration equivalent to ``spec`` (every dense and sparse vector; the
    :data:`PAYLOAD_ONLY_VECTOR` for a collection that has none)."""
    vectors: Any
    if spec.vector_size is not None:
        vectors = _edge_dense(spec.dense_vectors()[UNNAMED])
    else:
        vectors = {name: _edge_dense(v) for name, v in spec.vectors.items()}
    sparse = {name: _edge_sparse(v) for name, v in spec.sparse_vectors.items()}
    if not spec.dense_vectors() and not sparse:
        sparse = {PAYLOAD_ONLY_VECTOR: edge.EdgeSparseVectorParams()}
    return edge.EdgeConfig(
        vectors=vectors,
        sparse_vectors=sparse,
        on_disk_payload=spec.on_disk_payload,
        hnsw_config=_hnsw(spec.hnsw),
        quantization_config=_quantization(spec.quantization),
        optimizers=_optimizers(spec.optimizers),
    )


def _load_shard(
    path: Path, config: edge.EdgeConfig | None = None, *, patience_s: float = 10.0
) -> edge.EdgeShard:
    """Open a shard, waiting while another handle in this process is still letting go of it.

    The engine releases a closed shard's write-ahead-log lock shortly after
    ``close()`` returns (background optimization may still hold it).
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return edge.EdgeShard.load(str(path), config)
        except Exception as error:
            if "WouldBlock" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _index_schema_model(
    value: str | Mapping[str, Any],
) -> models.PayloadSchemaType | models.PayloadSchemaParams:
    """A payload index schema as stored in a collection's folder, as qdrant-client's model."""
    if isinstance(value, str):
        return models.PayloadSchemaType(value)
    params: models.PayloadSchemaParams = TypeAdapter(models.PayloadSchemaParams).validate_python(
        dict(value)
    )
    return params


def _write_spec(folder: Path, spec: CollectionSpec) -> None:
    """Write a collection's spec whole or not at all (readers read it without its lock)."""
    partial = folder / f"{SPEC_FILE}.partial"
    partial.write_text(json.dumps(spec_to_json(spec)))
    os.replace(partial, folder / SPEC_FILE)


def _point_id(value: Any) -> PointId:
    if type(value) is int:  # the common case, first
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    return value  # type: ignore[no-any-return]


def _vector_value(value: Any) -> VectorValue:
    if isinstance(value, edge.SparseVector):
        return models.SparseVector(
            indices=[int(i) for i in value.indices], values=[float(x) for x in value.values]
        )
    if value and isinstance(value[0], list):
        return [[float(x) for x in row] for row in value]
    return [float(x) for x in value]


def _vector(value: Any) -> Vectors | None:
    """The engine's vectors of a point as :data:`~librarian.storage.vectors.Vectors`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return [float(x) for x in value]
    return from_named({name: _vector_value(v) for name, v in value.items()})


def _engine_vectors(vectors: Vectors) -> Any:
    """Checked vectors as the engine takes them (sparse ones as its own ``SparseVector``)."""
    if isinstance(vectors, list):
        return vectors
    return {
        name: edge.SparseVector(list(v.indices), list(v.values))
        if isinstance(v, models.SparseVector)
        else v
        for name, v in vectors.items()
    }


def _payload_selector(with_payload: bool | Sequence[str]) -> Any:
    """All of the payload, none of it, or the named keys only."""
    if isinstance(with_payload, bool):
        return with_payload
    return edge.PayloadSelector.Include(list(with_payload))


# ------------------------------------------------------------------ payload index schemas

_FLUSH_INTERVAL_S = 5  # the engine flushes as Qdrant does by default
_WAL_CAPACITY_MB = 32  # Qdrant's default write-ahead log segment size
_MODEL_PARAMS: dict[str, Any] = {
    "keyword": models.KeywordIndexParams,
    "integer": models.IntegerIndexParams,
    "float": models.FloatIndexParams,
    "geo": models.GeoIndexParams,
    "text": models.TextIndexParams,
    "bool": models.BoolIndexParams,
    "datetime": models.DatetimeIndexParams,
    "uuid": models.UuidIndexParams,
}
# Plain fields copied as they are from the engine's index params to qdrant-client's.
_PLAIN_FIELDS = (
    "is_tenant",
    "on_disk",
    "enable_hnsw",
    "prefix",
    "lookup",
    "range",
    "is_principal",
    "min_token_len",
    "max_token_len",
    "lowercase",
    "ascii_folding",
    "phrase_matching",
)


@dataclass(frozen=True)
class _SummedIndex:
    """A payload index as the engine describes it, with its points summed over shards."""

    data_type: Any
    params: Any
    points: int


def _schema_type(model: models.PayloadSchemaType | models.PayloadSchemaParams) -> str:
    return model.value if isinstance(model, models.PayloadSchemaType) else str(model.type.value)


def _schema_params(model: models.PayloadSchemaType | models.PayloadSchemaParams) -> Any:
    return None if isinstance(model, models.PayloadSchemaType) else model


def _schema_name(value: Any) -> str:
    return str(value).rsplit(".", 1)[-1].lower()


def _index_params_model(data_type: Any, params: Any) -> Any:
    """qdrant-client's index params for the engine's (``None`` when the index has none)."""
    if params is None:
        return None
    kind = _schema_name(data_type)
    fields: dict[str, Any] = {"type": kind}
    for name in _PLAIN_FIELDS:
        value = getattr(params, name, None)
        if value is not None:
            fields[name] = value
    tokenizer = getattr(params, "tokenizer", None)
    if tokenizer is not None:
        fields["tokenizer"] = _schema_name(tokenizer)
    return _MODEL_PARAMS[kind].model_validate(fields)


ShardKey = str | None
"""An engine shard's shard key (``None``: the one shard of a collection without custom
sharding)."""

_KEYS_DIR = "keys"
_INDEXES_FILE = "payload_indexes.json"
_EVERY_VALUE = 2**31 - 1  # a facet limit that asks a shard for all its values


def _id_order(point_id: Any) -> tuple[int, int]:
    """Qdrant's id order: numeric ids first, then UUIDs by their 128-bit value."""
    if isinstance(point_id, int):
        return (0, point_id)
    return (1, uuid.UUID(str(point_id)).int)


class _Engine:
    """The open shards of one storage path, shared by every adapter on it in this process."""

    def __init__(self) -> None:
        self.shards: dict[str, dict[ShardKey, edge.EdgeShard]] = {}
        self.locks: dict[str, ReadWriteLock] = {}
        self.guard = threading.Lock()
        self.users = 0
        self.closed = False


_ENGINES: dict[Path, _Engine] = {}
_ENGINES_GUARD = threading.Lock()


class EmbeddedQdrant:
    """:class:`~librarian.storage.port.QdrantPort` on in-process Qdrant engine shards.

    ``create=False`` opens existing storage only: a path that is not a
    directory raises :class:`ClusterUnreachable` instead of being created (a
    typo in a reader's configuration must not become an empty cluster).
    """

    calls_overlap = True
    """Reads of a collection overlap, and so do calls on different collections: the engine
    lets go of Python's interpreter lock while it works. Writes to one collection take turns
    (see :mod:`librarian.storage.port`)."""

    def __init__(self, cluster: str, path: str | Path, *, create: bool = True) -> None:
        self._cluster = cluster
        self._root = Path(path)
        if create:
            self._root.mkdir(parents=True, exist_ok=True)
        elif not self._root.is_dir():
            raise ClusterUnreachable(
                cluster,
                f"embedded storage {str(self._root)!r} does not exist (it is not created here: "
                "check the path, or load a collection there first)",
            )
        self._key = self._root.resolve()
        with _ENGINES_GUARD:
            engine = _ENGINES.setdefault(self._key, _Engine())
            engine.users += 1
        self._engine: _Engine | None = engine
        self._shards = engine.shards
        self._locks = engine.locks
        self._guard = engine.guard
        self._specs: dict[str, tuple[tuple[int, int, int], CollectionSpec]] = {}

    # ----------------------------------------------------------------- plumbing

    @property
    def cluster(self) -> str:
        return self._cluster

    @property
    def path(self) -> Path:
        return self._root

    def _dir(self, collection: str) -> Path:
        if not collection or "/" in collection or collection.startswith("."):
            raise InvalidRequest(self._cluster, "invalid collection name", collection=collection)
        return self._root / collection

    def _lock(self, collection: str) -> ReadWriteLock:
        with self._guard:
            return self._locks.setdefault(collection, ReadWriteLock())

    def _spec(self, collection: str) -> CollectionSpec:
        """The collection's spec, parsed again only when its file was replaced (every call
        reads it: one ``stat`` instead of reading and parsing the file each time)."""
        spec_path = self._dir(collection) / SPEC_FILE
        try:
            stat = os.stat(spec_path)
        except FileNotFoundError:
            raise CollectionNotFound(
                self._cluster, "collection does not exist", collection=collection
            ) from None
        # The spec file is only ever replaced whole (a new file), so its identity, time and
        # size tell whether the parsed spec is still the file's.
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        held = self._specs.get(collection)
        if held is not None and held[0] == version:
            return held[1]
        spec = spec_from_json(json.loads(spec_path.read_text()))
        self._specs[collection] = (version, spec)
        return spec

    def _key_dir(self, collection: str, key: ShardKey) -> Path:
        """Where the engine shard of ``key`` lives (``None``: a collection's only shard)."""
        if key is None:
            return self._dir(collection) / "shard"
        return self._dir(collection) / _KEYS_DIR / key.encode().hex()

    def _selected(
        self, collection: str, spec: CollectionSpec, shard_keys: Sequence[str] | None
    ) -> list[ShardKey]:
        """The shard keys a selector names (every key when it is ``None``), checked."""
        chosen = checked_selector(self._cluster, collection, spec.shard_keys, shard_keys)
        if chosen is not None:
            return list(chosen)
        return list(spec.shard_keys) if spec.shard_keys is not None else [None]

    @contextmanager
    def _shards_of(
        self,
        collection: str,
        shard_keys: Sequence[str] | None = None,
        *,
        exclusive: bool = False,
    ) -> Iterator[list[tuple[ShardKey, edge.EdgeShard]]]:
        """The open engine shards of the selected keys (keys never written to have none), held
        shared (reads) or ``exclusive`` (writes, optimization) for the block."""
        lock = self._lock(collection)
        if exclusive:
            with lock.writing():
                opened = self._opened(collection)
                keys = self._selected(collection, self._spec(collection), shard_keys)
                yield [(key, opened[key]) for key in keys if key in opened]
            return
        while True:
            with lock.reading():
                opened_now = self._shards.get(collection)
                if opened_now is not None:
                    keys = self._selected(collection, self._spec(collection), shard_keys)
                    yield [(key, opened_now[key]) for key in keys if key in opened_now]
                    return
            with lock.writing():
                self._opened(collection)

    @contextmanager
    def _shard(self, collection: str, *, exclusive: bool = False) -> Iterator[edge.EdgeShard]:
        """The one shard of a collection without custom sharding (see :meth:`_shards_of`)."""
        with self._shards_of(collection, exclusive=exclusive) as selected:
            yield selected[0][1]

    def _opened(self, collection: str) -> dict[ShardKey, edge.EdgeShard]:
        """Every shard of the collection, opened if they are not yet; call with its lock held to
        write."""
        self._check_open()
        opened = self._shards.get(collection)
        if opened is None:
            spec = self._spec(collection)  # raises CollectionNotFound
            opened = {}
            if spec.shard_keys is None:
                folder = self._key_dir(collection, None)
                opened[None] = self._call(collection, lambda: _load_shard(folder))
            else:
                for key in spec.shard_keys:
                    folder = self._key_dir(collection, key)
                    if folder.is_dir():
                        opened[key] = self._call(collection, partial(_load_shard, folder))
            self._shards[collection] = opened
        return opened

    def _created(self, collection: str, key: str) -> edge.EdgeShard:
        """The shard of ``key``, created (with the collection's payload indexes) on its first
        write; call with the collection's lock held to write."""
        opened = self._opened(collection)
        shard = opened.get(key)
        if shard is not None:
            return shard
        spec = self._spec(collection)
        folder = self._key_dir(collection, key)
        shutil.rmtree(folder, ignore_errors=True)  # leftovers of an interrupted create
        folder.mkdir(parents=True)
        shard = self._call(
            collection, lambda: edge.EdgeShard.create(str(folder), edge_config(spec))
        )
        for field_name, schema in self._payload_indexes(collection).items():
            operation = edge.UpdateOperation.create_field_index(field_name, schema)
            self._call(collection, partial(shard.update, operation))
        opened[key] = shard
        return shard

    def _payload_indexes(self, collection: str) -> dict[str, Any]:
        """The payload indexes of a custom-sharded collection, as the engine takes them (a shard
        created later gets them too)."""
        path = self._dir(collection) / _INDEXES_FILE
        if not path.exists():
            return {}
        stored: dict[str, Any] = json.loads(path.read_text())
        return {
            name: to_edge_index_schema(_index_schema_model(value)) for name, value in stored.items()
        }

    def _remember_index(
        self,
        collection: str,
        field_name: str,
        schema: models.PayloadSchemaType | models.PayloadSchemaParams | None,
    ) -> None:
        """Record (``None``: forget) a payload index of a custom-sharded collection."""
        folder = self._dir(collection)
        path = folder / _INDEXES_FILE
        stored: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        if schema is None:
            stored.pop(field_name, None)
        elif isinstance(schema, models.PayloadSchemaType):
            stored[field_name] = schema.value
        else:
            stored[field_name] = schema.model_dump(mode="json", exclude_none=True)
        partial = folder / f"{_INDEXES_FILE}.partial"
        partial.write_text(json.dumps(stored))
        os.replace(partial, path)

    def _check_open(self) -> None:
        """Refuse to open a shard once this adapter, or the last one on its path, closed."""
        engine = self._engine
        if engine is None or engine.closed:
            raise ClusterUnreachable(self._cluster, "the embedded storage has been closed")

    def _call(self, collection: str | None, action: Callable[[], T]) -> T:
        try:
            return action()
        except QdrantError:
            raise
        except (UnsupportedFilter, UnsupportedQuery) as error:
            raise InvalidRequest(self._cluster, str(error), collection=collection) from None
        except Exception as error:  # noqa: BLE001 - the engine's plain exceptions, translated
            raise InvalidRequest(
                self._cluster, f"the engine refused the request: {error}", collection=collection
            ) from None

    def _update(
        self,
        collection: str,
        operation: edge.UpdateOperation,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        """Apply ``operation`` to every selected shard (every shard by default)."""
        with self._shards_of(collection, shard_keys, exclusive=True) as selected:
            for _, shard in selected:
                self._call(collection, partial(shard.update, operation))

    # ----------------------------------------------------------------- collections

    def ping(self) -> None:
        if not self._root.is_dir():
            raise InvalidRequest(self._cluster, f"storage path {self._root} is not a directory")

    def collection_exists(self, collection: str) -> bool:
        return (self._dir(collection) / SPEC_FILE).exists()

    def list_collections(self) -> list[str]:
        return sorted(p.parent.name for p in self._root.glob(f"*/{SPEC_FILE}"))

    def create_collection(self, collection: str, spec: CollectionSpec) -> None:
        for vector in spec.dense_vectors().values():
            if vector.distance not in _DISTANCES:
                raise InvalidRequest(
                    self._cluster, f"unknown distance {vector.distance!r}", collection=collection
                )
        with self._lock(collection).writing():
            self._check_open()
            folder = self._dir(collection)
            if (folder / SPEC_FILE).exists():
                raise CollectionExists(
                    self._cluster, "collection already exists", collection=collection
                )
            shutil.rmtree(folder, ignore_errors=True)  # leftovers of an interrupted create
            if spec.shard_keys is None:
                (folder / "shard").mkdir(parents=True)
                shard = self._call(
                    collection,
                    lambda: edge.EdgeShard.create(str(folder / "shard"), edge_config(spec)),
                )
                self._shards[collection] = {None: shard}
            else:  # one shard per key, made now: a first write must not wait for one
                (folder / _KEYS_DIR).mkdir(parents=True)
                self._shards[collection] = {}
                _write_spec(folder, spec)
                for key in spec.shard_keys:
                    self._created(collection, key)
            _write_spec(folder, spec)

    def update_collection(self, collection: str, spec: CollectionSpec) -> None:
        with self._lock(collection).writing():
            self._check_open()
            current = self._spec(collection)
            if spec.layout() != current.layout():
                raise InvalidRequest(
                    self._cluster,
                    f"the vectors' layout is immutable ({_describe(current)}); create a new "
                    "collection and migrate",
                    collection=collection,
                )
            merged = replace(spec, shard_number=current.shard_number, shard_keys=current.shard_keys)
            folder = self._dir(collection)
            for shard in (self._shards.pop(collection, None) or {}).values():
                shard.close()
            keys: list[ShardKey] = (
                [None]
                if current.shard_keys is None
                else [k for k in current.shard_keys if self._key_dir(collection, k).is_dir()]
            )
            reopened: dict[ShardKey, edge.EdgeShard] = {}
            for key in keys:
                path = self._key_dir(collection, key)
                reopened[key] = self._call(
                    collection, partial(_load_shard, path, edge_config(merged))
                )
            self._shards[collection] = reopened
            _write_spec(folder, merged)

    def delete_collection(self, collection: str) -> None:
        with self._lock(collection).writing():
            for shard in (self._shards.pop(collection, None) or {}).values():
                shard.close()
            shutil.rmtree(self._dir(collection), ignore_errors=True)

    def collection_info(self, collection: str) -> CollectionInfo:
        spec = self._spec(collection)
        engine_config = self._dir(collection) / "shard" / "edge_config.json"
        if engine_config.exists():
            spec = _layout_from_engine(json.loads(engine_config.read_text()), spec)
        points, indexed, _, payload_schema = self._shard_totals(collection)
        schema = {
            key: str(value.data_type).rsplit(".", 1)[-1].lower()
            for key, value in payload_schema.items()
        }
        return CollectionInfo(
            name=collection,
            points_count=points,
            indexed_vectors_count=indexed,
            payload_schema=schema,
            spec=spec,
        )

    def _shard_totals(self, collection: str) -> tuple[int, int, int, dict[str, Any]]:
        """Points, indexed vectors and segments summed over the collection's shards, and its
        payload schema (with each index's points summed)."""
        with self._shards_of(collection) as selected:
            infos = [self._call(collection, shard.info) for _, shard in selected]
        schema: dict[str, Any] = {}
        for info in infos:
            for key, value in info.payload_schema.items():
                seen = schema.get(key)
                schema[key] = (
                    value
                    if seen is None
                    else _SummedIndex(seen.data_type, seen.params, seen.points + value.points)
                )
        if not infos:  # a custom-sharded collection nobody wrote to yet
            schema = {
                name: _SummedIndex(_schema_type(model), _schema_params(model), 0)
                for name, model in self._stored_index_models(collection).items()
            }
        return (
            sum(i.points_count for i in infos),
            sum(i.indexed_vectors_count for i in infos),
            sum(i.segments_count for i in infos),
            schema,
        )

    def _stored_index_models(
        self, collection: str
    ) -> dict[str, models.PayloadSchemaType | models.PayloadSchemaParams]:
        path = self._dir(collection) / _INDEXES_FILE
        if not path.exists():
            return {}
        stored: dict[str, Any] = json.loads(path.read_text())
        return {name: _index_schema_model(value) for name, value in stored.items()}

    def create_keyword_index(self, collection: str, field_name: str) -> None:
        self._update(
            collection,
            edge.UpdateOperation.create_field_index(field_name, edge.PayloadSchemaType.Keyword),
        )

    def describe_collection(self, collection: str) -> models.CollectionInfo:
        spec = self._spec(collection)
        dense, sparse = remote_vectors_config(spec)  # every vector, named, sparse and multi
        points, indexed, segments, payload_schema = self._shard_totals(collection)
        hnsw = spec.hnsw or HnswSpec()
        optimizers = spec.optimizers or OptimizersSpec()
        return models.CollectionInfo(
            status=models.CollectionStatus.GREEN,
            optimizer_status=models.OptimizersStatusOneOf.OK,
            points_count=points,
            indexed_vectors_count=indexed,
            segments_count=segments,
            config=models.CollectionConfig(
                params=models.CollectionParams(
                    vectors=dense,
                    sparse_vectors=sparse or None,
                    shard_number=spec.shard_number or 1,
                    sharding_method=models.ShardingMethod.CUSTOM
                    if spec.shard_keys is not None
                    else None,
                    replication_factor=spec.replication_factor or 1,
                    on_disk_payload=spec.on_disk_payload
                    if spec.on_disk_payload is not None
                    else True,
                ),
                hnsw_config=models.HnswConfig(
                    m=hnsw.m if hnsw.m is not None else DEFAULT_HNSW.m or 16,
                    ef_construct=hnsw.ef_construct
                    if hnsw.ef_construct is not None
                    else DEFAULT_HNSW.ef_construct or 100,
                    full_scan_threshold=hnsw.full_scan_threshold
                    if hnsw.full_scan_threshold is not None
                    else DEFAULT_HNSW.full_scan_threshold or 10_000,
                    on_disk=hnsw.on_disk,
                ),
                optimizer_config=models.OptimizersConfig(
                    deleted_threshold=optimizers.deleted_threshold,
                    vacuum_min_vector_number=optimizers.vacuum_min_vector_number,
                    default_segment_number=optimizers.default_segment_number or 0,
                    max_segment_size=optimizers.max_segment_size,
                    indexing_threshold=optimizers.indexing_threshold,
                    flush_interval_sec=_FLUSH_INTERVAL_S,
                ),
                quantization_config=remote_quantization(spec.quantization),
                wal_config=models.WalConfig(  # the engine's write-ahead log, at Qdrant's defaults
                    wal_capacity_mb=_WAL_CAPACITY_MB, wal_segments_ahead=0
                ),
            ),
            payload_schema={
                key: models.PayloadIndexInfo(
                    data_type=models.PayloadSchemaType(_schema_name(value.data_type)),
                    params=_index_params_model(value.data_type, value.params),
                    points=value.points,
                )
                for key, value in payload_schema.items()
            },
        )

    def create_payload_index(
        self,
        collection: str,
        field_name: str,
        field_schema: models.PayloadSchemaType | models.PayloadSchemaParams,
    ) -> None:
        """Create (idempotently) a payload index of this schema (the engine replaces an index
        of another schema on the same field, as Qdrant does)."""
        schema = self._call(collection, lambda: to_edge_index_schema(field_schema))
        with self._lock(collection).writing():
            if self._spec(collection).shard_keys is not None:
                self._remember_index(collection, field_name, field_schema)
            self._update(collection, edge.UpdateOperation.create_field_index(field_name, schema))

    def delete_payload_index(self, collection: str, field_name: str) -> None:
        with self._lock(collection).writing():
            if self._spec(collection).shard_keys is not None:
                self._remember_index(collection, field_name, None)
            self._update(collection, edge.UpdateOperation.delete_field_index(field_name))

    def create_vector_name(self, collection: str, name: str, config: VectorNameConfig) -> None:
        with self._lock(collection).writing():
            spec = self._spec(collection)
            if not name:
                raise InvalidRequest(
                    self._cluster,
                    "Wrong input: a vector name must not be empty",
                    collection=collection,
                )
            if spec.vector_size is not None:
                raise InvalidRequest(
                    self._cluster,
                    "Wrong input: the collection has an unnamed vector; named vectors are added "
                    "to a collection of named vectors",
                    collection=collection,
                )
            if name in spec.vectors or name in spec.sparse_vectors:
                raise InvalidRequest(
                    self._cluster,
                    f"Wrong input: Vector name {name} already exists",
                    collection=collection,
                )
            operation, changed = self._vector_added(spec, name, config)
            self._update(collection, operation)
            _write_spec(self._dir(collection), changed)

    def _vector_added(
        self, spec: CollectionSpec, name: str, config: VectorNameConfig
    ) -> tuple[edge.UpdateOperation, CollectionSpec]:
        """The engine's operation adding vector ``name``, and ``spec`` with it."""
        if isinstance(config, models.DenseVectorNameConfig):
            dense = config.dense
            datatype = dense.datatype.value if dense.datatype is not None else None
            if datatype is not None and datatype not in _DATATYPES:
                raise InvalidRequest(
                    self._cluster, f"Wrong input: datatype {datatype} not supported"
                )
            added = DenseVectorSpec(
                size=dense.size,
                distance=dense.distance.value,
                multivector="max_sim" if dense.multivector_config is not None else None,
                datatype=datatype,  # type: ignore[arg-type]
            )
            operation = edge.UpdateOperation.create_dense_vector(
                name,
                dense.size,
                _DISTANCES[added.distance],
                edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim)
                if added.multivector is not None
                else None,
                _DATATYPES[datatype] if datatype is not None else None,
            )
            return operation, replace(spec, vectors={**spec.vectors, name: added})
        sparse = config.sparse
        idf = sparse.modifier == models.Modifier.IDF
        sparse_datatype = sparse.datatype.value if sparse.datatype is not None else None
        if sparse_datatype is not None and sparse_datatype not in _DATATYPES:
            raise InvalidRequest(
                self._cluster, f"Wrong input: datatype {sparse_datatype} not supported"
            )
        operation = edge.UpdateOperation.create_sparse_vector(
            name,
            edge.Modifier.Idf if idf else None,
            _DATATYPES[sparse_datatype] if sparse_datatype is not None else None,
        )
        added_sparse = SparseVectorSpec(
            modifier="idf" if idf else None,
            datatype=sparse_datatype,  # type: ignore[arg-type]
        )
        return operation, replace(spec, sparse_vectors={**spec.sparse_vectors, name: added_sparse})

    def delete_vector_name(self, collection: str, name: str) -> None:
        with self._lock(collection).writing():
            spec = self._spec(collection)
            if name not in spec.vectors and name not in spec.sparse_vectors:
                raise InvalidRequest(
                    self._cluster,
                    f"Wrong input: Not existing vector name error: {name}",
                    collection=collection,
                )
            self._update(collection, edge.UpdateOperation.delete_vector_name(name))
            changed = replace(
                spec,
                vectors={n: v for n, v in spec.vectors.items() if n != name},
                sparse_vectors={n: v for n, v in spec.sparse_vectors.items() if n != name},
            )
            _write_spec(self._dir(collection), changed)

    def optimize(self, collection: str) -> None:
        """Build indexes now (the engine otherwise optimizes lazily)."""
        with self._shards_of(collection, exclusive=True) as selected:
            for _, shard in selected:
                self._call(collection, shard.optimize)

    # ----------------------------------------------------------------- points

    def _checked(self, collection: str, points: Sequence[PointRecord]) -> list[Any]:
        """Each point's vectors checked against the collection's (the engine aborts on some
        malformed ones instead of refusing them), in the engine's form."""
        spec = self._spec(collection)
        checked: list[Any] = []
        for point in points:
            if point.vector is None and not spec.named:
                raise InvalidRequest(
                    self._cluster,
                    f"point {point.id!r} has no vector; the collection expects "
                    f"{spec.vector_size}-d vectors",
                    collection=collection,
                )
            try:
                vectors = checked_vectors(point.vector or {}, spec)
            except VectorError as error:
                raise InvalidRequest(
                    self._cluster, f"point {point.id!r}: {error}", collection=collection
                ) from None
            checked.append(_engine_vectors(vectors))
        return checked

    def _sharded(self, collection: str) -> bool:
        return self._spec(collection).shard_keys is not None

    def _located(
        self,
        collection: str,
        selected: Sequence[tuple[ShardKey, edge.EdgeShard]],
        ids: Sequence[PointId],
    ) -> dict[PointId, ShardKey]:
        """Which of the selected shards holds each of ``ids`` (ids held nowhere are left out)."""
        where: dict[PointId, ShardKey] = {}
        wanted: list[Any] = list(dict.fromkeys(ids))
        for key, shard in selected:
            if not wanted:
                break
            found = self._call(collection, partial(shard.retrieve, wanted, False, False))
            held = {_point_id(r.id) for r in found}
            for point_id in held:
                where[point_id] = key
            wanted = [i for i in wanted if i not in held]
        return where

    def _write_key(self, collection: str, shard_key: str | None) -> ShardKey:
        """The shard a write goes to: ``shard_key`` on a custom-sharded collection (where it is
        required, as Qdrant requires it), none otherwise."""
        known = self._spec(collection).shard_keys
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
        """Insert or overwrite points (see the port); under ``shard_key`` on a custom-sharded
        collection, where a point held under another key moves (one copy, judged where it is)."""
        target = self._write_key(collection, shard_key)
        if not points:
            return
        vectors = self._checked(collection, points)
        batch = [edge.Point(p.id, v, dict(p.payload)) for p, v in zip(points, vectors, strict=True)]
        condition = self._call(collection, lambda: to_edge_filter(update_filter))
        mode = _UPDATE_MODES[update_mode] if update_mode is not None else None
        if target is None:
            self._update(collection, edge.UpdateOperation.upsert_points(batch, condition, mode))
            return
        with self._lock(collection).writing():
            opened = self._opened(collection)
            elsewhere = self._located(
                collection,
                [(k, s) for k, s in opened.items() if k != target],
                [p.id for p in points],
            )
            staying = [p for p in batch if p.id not in elsewhere]
            moving = self._movable(collection, opened, elsewhere, condition, update_mode)
            shard = self._created(collection, target)
            if staying:
                operation = edge.UpdateOperation.upsert_points(staying, condition, mode)
                self._call(collection, lambda: shard.update(operation))
            moved = [p for p in batch if p.id in moving]
            if moved:
                operation = edge.UpdateOperation.upsert_points(moved, None, None)
                self._call(collection, lambda: shard.update(operation))
            by_key: dict[ShardKey, list[Any]] = {}
            for point_id in moving:
                by_key.setdefault(elsewhere[point_id], []).append(point_id)
            for key, ids in by_key.items():
                removal = edge.UpdateOperation.delete_points(ids)
                self._call(collection, partial(opened[key].update, removal))

    def _movable(
        self,
        collection: str,
        opened: Mapping[ShardKey, edge.EdgeShard],
        elsewhere: Mapping[PointId, ShardKey],
        condition: edge.Filter | None,
        update_mode: models.UpdateMode | None,
    ) -> set[PointId]:
        """The points held under another key that a write moves: none for ``insert_only`` (they
        exist), else those matching the write's condition where they are."""
        if not elsewhere or update_mode == models.UpdateMode.INSERT_ONLY:
            return set()
        if condition is None:
            return set(elsewhere)
        movable: set[PointId] = set()
        by_key: dict[ShardKey, list[Any]] = {}
        for point_id, key in elsewhere.items():
            by_key.setdefault(key, []).append(point_id)
        for key, ids in by_key.items():
            request = edge.ScrollRequest(
                limit=len(ids),
                filter=edge.Filter(must=[edge.HasIdCondition(set(ids)), condition]),
                with_payload=False,
                with_vector=False,
            )
            records, _ = self._call(collection, partial(opened[key].scroll, request))
            movable.update(_point_id(r.id) for r in records)
        return movable

    def _by_location(
        self,
        collection: str,
        ids: Sequence[PointId],
        shard_keys: Sequence[str] | None,
        make: Callable[[list[Any]], edge.UpdateOperation],
    ) -> None:
        """Apply the id-based operation ``make(ids)`` in the shard holding each point; ids held
        nowhere go to one shard, which refuses them as one collection would."""
        with self._shards_of(collection, shard_keys, exclusive=True) as selected:
            if len(selected) == 1 and selected[0][0] is None:
                only = selected[0][1]
                self._call(collection, lambda: only.update(make(list(ids))))
                return
            where = self._located(collection, selected, ids)
            shards = dict(selected)
            by_key: dict[ShardKey, list[Any]] = {}
            for point_id in dict.fromkeys(ids):
                if point_id in where:
                    by_key.setdefault(where[point_id], []).append(point_id)
            missing: list[Any] = [i for i in dict.fromkeys(ids) if i not in where]
            if missing:
                if not selected:
                    raise InvalidRequest(
                        self._cluster, f"No point with id {missing[0]}", collection=collection
                    )
                first = selected[0][1]
                self._call(collection, lambda: first.update(make(missing)))
            for key, held in by_key.items():
                operation = make(held)
                self._call(collection, partial(shards[key].update, operation))

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
        checked = self._checked(collection, points)
        vectors = {p.id: edge.PointVectors(p.id, v) for p, v in zip(points, checked, strict=True)}
        condition = self._call(collection, lambda: to_edge_filter(update_filter))
        self._by_location(
            collection,
            [p.id for p in points],
            shard_keys,
            lambda ids: edge.UpdateOperation.update_vectors([vectors[i] for i in ids], condition),
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
        spec = self._spec(collection)
        unknown = [
            n for n in names if n not in spec.dense_vectors() and n not in spec.sparse_vectors
        ]
        if unknown:
            raise InvalidRequest(
                self._cluster,
                f"Wrong input: Not existing vector name error: {unknown[0]}",
                collection=collection,
            )
        if ids is not None and not ids:
            return
        if ids is not None and points_filter is None:
            self._by_location(
                collection,
                ids,
                shard_keys,
                lambda held: edge.UpdateOperation.delete_vectors(held, list(names)),
            )
            return
        flt = self._edge_selection(collection, ids, points_filter)
        operation = edge.UpdateOperation.delete_vectors_by_filter(flt, list(names))
        self._update(collection, operation, shard_keys)

    def _scrolled(
        self,
        collection: str,
        request: edge.ScrollRequest,
        shard_keys: Sequence[str] | None,
    ) -> tuple[list[Any], Any]:
        """One page in id order over the selected shards, and the next offset (the engine's
        records; ``None`` at the end)."""
        with self._shards_of(collection, shard_keys) as selected:
            if len(selected) == 1:
                only = selected[0][1]
                return self._call(collection, lambda: only.scroll(request))
            limit = request.limit or 0
            wider = edge.ScrollRequest(
                offset=request.offset,
                limit=limit + 1,
                filter=request.filter,
                with_payload=request.with_payload,
                with_vector=request.with_vector,
            )
            records: list[Any] = []
            for _, shard in selected:
                page, _ = self._call(collection, partial(shard.scroll, wider))
                records.extend(page)
        records.sort(key=lambda r: _id_order(_point_id(r.id)))
        next_offset = records[limit].id if len(records) > limit else None
        return records[:limit], next_offset

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
        request = edge.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=self._call(collection, lambda: to_edge_filter(scroll_filter)),
            with_payload=_payload_selector(with_payload),
            with_vector=with_vectors,
        )
        records, next_offset = self._scrolled(collection, request, shard_keys)
        points = [
            PointRecord(id=_point_id(r.id), vector=_vector(r.vector), payload=dict(r.payload or {}))
            for r in records
        ]
        return points, (_point_id(next_offset) if next_offset is not None else None)

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
        request = edge.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=self._call(collection, lambda: to_edge_filter(scroll_filter)),
            with_payload=_payload_selector(keys),
            with_vector=False,
        )
        records, next_offset = self._scrolled(collection, request, shard_keys)
        ids = [_point_id(r.id) for r in records]
        # The engine hands out a new payload dict on every read: no copy needed.
        payloads = [r.payload or {} for r in records]
        return KeyPage(ids, payloads, _point_id(next_offset) if next_offset is not None else None)

    def _ascending(self, collection: str, using: str | None, query: Any) -> bool:
        """Whether the best hits have the lowest scores: a nearest query on a distance metric
        (Qdrant reports Euclid and Manhattan distances, smallest first)."""
        plain_nearest = isinstance(query, list | models.NearestQuery) or (
            isinstance(query, models.NearestQuery) and query.mmr is None
        )
        if not plain_nearest:
            return False
        vector = self._spec(collection).dense_vectors().get(using or "")
        return vector is not None and vector.distance in ("Euclid", "Manhattan")

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
        dense = self._spec(collection).dense_vectors().get(using)
        if dense is None or dense.multivector is not None or len(vector) != dense.size:
            expected = (
                "no such plain dense vector"
                if dense is None or dense.multivector
                else (f"expected dim: {dense.size}, got {len(vector)}")
            )
            raise InvalidRequest(
                self._cluster,
                f"cannot search vector {using or 'unnamed'!r}: {expected}",
                collection=collection,
            )
        request = edge.QueryRequest(
            limit=limit,
            query=edge.Query.Nearest([float(x) for x in vector], using or None),
            filter=self._call(collection, lambda: to_edge_filter(query_filter)),
            with_payload=with_payload,
            with_vector=with_vectors,
            params=edge.SearchParams(hnsw_ef=hnsw_ef, exact=exact),
        )
        ascending = dense.distance in ("Euclid", "Manhattan")
        with self._shards_of(collection, shard_keys) as selected:
            hits: list[Any] = []
            for _, shard in selected:
                hits.extend(self._call(collection, partial(shard.query, request)))
        if len(selected) > 1:
            hits = _best(hits, limit, 0, ascending)
        return [
            ScoredHit(
                id=_point_id(h.id),
                score=float(h.score),
                payload=dict(h.payload or {}),
                vector=_vector(h.vector),
            )
            for h in hits
        ]

    def query_points(
        self,
        collection: str,
        request: models.QueryRequest,
        *,
        shard_keys: Sequence[str] | None = None,
    ) -> list[models.ScoredPoint]:
        """Qdrant's universal query on one collection (see :mod:`librarian.storage.edge_queries`);
        points named by id in the query are read from this collection. Over several shards
        each answers the whole request and the hits merge by score (by order value for
        ``order_by``; a random sample at random), as Qdrant merges its shards'; a fusion or MMR
        at the top of the request needs the candidates of every shard at once, so it is refused
        there (the router fuses its homes' candidates itself)."""
        if request.shard_key is not None:
            if shard_keys is not None:
                raise InvalidRequest(
                    self._cluster,
                    "Wrong input: the shard key is given twice",
                    collection=collection,
                )
            shard_keys = self._selector(collection, request.shard_key)
            request = request.model_copy(update={"shard_key": None})
        with self._shards_of(collection, shard_keys) as selected:
            if len(selected) > 1:
                self._check_mergeable(collection, request)
            limit = request.limit if request.limit is not None else 10
            offset = request.offset or 0
            per_shard = (
                request
                if len(selected) <= 1
                else request.model_copy(update={"limit": limit + offset, "offset": 0})
            )
            hits: list[Any] = []
            for _, shard in selected:

                def vector_of(point_id: models.ExtendedPointId, name: str) -> QdrantVector:
                    return self._stored_vector(collection, selected, point_id, name)

                edge_request = self._call(
                    collection, lambda: to_edge_query_request(per_shard, vector_of)
                )
                hits.extend(self._call(collection, partial(shard.query, edge_request)))
        if len(selected) > 1:
            order_by = _order_by(request.query)
            if isinstance(request.query, models.SampleQuery):  # a random page of all of them
                random.shuffle(hits)
                hits = hits[offset : offset + limit]
            elif order_by is not None:
                hits = _by_order_value(hits, limit, offset, order_by)
            else:
                ascending = self._ascending(collection, request.using, request.query)
                hits = _best(hits, limit, offset, ascending)
        selector = request.with_payload if request.with_payload is not None else False
        return [
            to_scored_point(hit, with_payload=selector, with_vector=request.with_vector)
            for hit in hits
        ]

    def _selector(self, collection: str, shard_key: Any) -> list[str]:
        """The keys a request's own ``shard_key`` names."""
        if isinstance(shard_key, models.ShardKeyWithFallback):
            raise InvalidRequest(
                self._cluster,
                "Wrong input: a shard key with a fallback is not supported here; name the keys",
                collection=collection,
            )
        keys = shard_key if isinstance(shard_key, list) else [shard_key]
        return [str(k) for k in keys]

    def _check_mergeable(self, collection: str, request: models.QueryRequest) -> None:
        query = request.query
        unmergeable = isinstance(query, models.FusionQuery | models.RrfQuery) or (
            isinstance(query, models.NearestQuery) and query.mmr is not None
        )
        if unmergeable:
            raise InvalidRequest(
                self._cluster,
                "Wrong input: a fusion or MMR over several shard keys needs "
                "every key's candidates together; query one shard key at a time, or fuse the "
                "answers of plain queries on the caller's side",
                collection=collection,
            )

    def _stored_vector(
        self,
        collection: str,
        selected: Sequence[tuple[ShardKey, edge.EdgeShard]],
        point_id: models.ExtendedPointId,
        name: str,
    ) -> QdrantVector:
        """The vector ``name`` of a stored point, for a query that names the point by id (read
        in whichever selected shard holds it)."""
        records: list[Any] = []
        for _, shard in selected:
            records = self._call(collection, partial(shard.retrieve, [point_id], False, [name]))
            if records:
                break
        vectors = records[0].vector if records else None
        if not records:
            raise UnsupportedQuery(f"no point with id {point_id!r} found")
        vector = vectors.get(name) if isinstance(vectors, dict) else vectors
        if vector is None:
            shown = repr(name) if name else "the unnamed vector"
            raise UnsupportedQuery(f"point {point_id!r} has no vector {shown}")
        output = to_record(records[0], with_payload=False, with_vector=[name]).vector
        found = output.get(name) if isinstance(output, dict) else output
        assert found is not None
        return found

    def facet(
        self,
        collection: str,
        request: models.FacetRequest,
        *,
        shard_keys: Sequence[str] | None = None,
    ) -> list[models.FacetValueHit]:
        """Counts of the values of ``request.key`` among matching points (the engine, as
        Qdrant, needs a payload index on the key); over several shards every value's counts
        are summed, so the top values are exact."""
        if request.shard_key is not None:
            shard_keys = self._selector(collection, request.shard_key)
            request = request.model_copy(update={"shard_key": None})
        with self._shards_of(collection, shard_keys) as selected:
            if len(selected) == 1:
                edge_request = self._call(collection, lambda: to_edge_facet_request(request))
                only = selected[0][1]
                response = self._call(collection, lambda: only.facet(edge_request))
                return [to_facet_hit(hit) for hit in response.hits]
            every = request.model_copy(update={"limit": _EVERY_VALUE})
            edge_request = self._call(collection, lambda: to_edge_facet_request(every))
            counts: dict[Any, int] = {}
            for _, shard in selected:
                response = self._call(collection, partial(shard.facet, edge_request))
                for hit in response.hits:
                    value = to_facet_hit(hit)
                    counts[value.value] = counts.get(value.value, 0) + value.count
        limit = request.limit if request.limit is not None else 10
        ranked = sorted(counts.items(), key=lambda item: (-item[1], _value_order(item[0])))
        return [models.FacetValueHit(value=v, count=c) for v, c in ranked[:limit]]

    def scroll_points(
        self,
        collection: str,
        request: models.ScrollRequest,
        *,
        shard_keys: Sequence[str] | None = None,
    ) -> tuple[list[models.Record], models.ExtendedPointId | None]:
        """One page of Qdrant's scroll, in id order or ``order_by`` (then no next offset)."""
        if request.shard_key is not None:
            shard_keys = self._selector(collection, request.shard_key)
            request = request.model_copy(update={"shard_key": None})
        edge_request = self._call(collection, lambda: to_edge_scroll_request(request))
        selector = request.with_payload if request.with_payload is not None else True
        records: list[Any]
        next_offset: Any
        if request.order_by is None:
            records, next_offset = self._scrolled(collection, edge_request, shard_keys)
        else:
            with self._shards_of(collection, shard_keys) as selected:
                records = []
                for _, shard in selected:
                    page, _ = self._call(collection, partial(shard.scroll, edge_request))
                    records.extend(page)
            if len(selected) > 1:
                records = _by_order_value(records, edge_request.limit or 0, 0, request.order_by)
            next_offset = None
        rendered = [
            to_record(record, with_payload=selector, with_vector=request.with_vector)
            for record in records
        ]
        if request.order_by is not None or next_offset is None:
            return rendered, None
        return rendered, _point_id(next_offset)

    def sample(
        self,
        collection: str,
        limit: int,
        *,
        with_payload: bool = True,
        shard_keys: Sequence[str] | None = None,
    ) -> list[PointRecord]:
        request = edge.QueryRequest(
            limit=limit, query=edge.Sample.Random, with_payload=with_payload, with_vector=True
        )
        with self._shards_of(collection, shard_keys) as selected:
            hits: list[Any] = []
            for _, shard in selected:
                hits.extend(self._call(collection, partial(shard.query, request)))
        if len(selected) > 1 and len(hits) > limit:
            hits = random.sample(hits, limit)
        return [
            PointRecord(id=_point_id(h.id), vector=_vector(h.vector), payload=dict(h.payload or {}))
            for h in hits
        ]

    def count(
        self,
        collection: str,
        *,
        count_filter: models.Filter | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> int:
        request = edge.CountRequest(
            filter=self._call(collection, lambda: to_edge_filter(count_filter)), exact=True
        )
        with self._shards_of(collection, shard_keys) as selected:
            return sum(
                int(self._call(collection, partial(shard.count, request))) for _, shard in selected
            )

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
        selector = _payload_selector(with_payload)
        records: list[Any] = []
        with self._shards_of(collection, shard_keys) as selected:
            for _, shard in selected:
                records.extend(
                    self._call(
                        collection, partial(shard.retrieve, list(ids), selector, with_vectors)
                    )
                )
        if len(selected) > 1:  # the order one collection answers in: the ids' own
            found = {_point_id(r.id): r for r in records}
            records = [found[i] for i in dict.fromkeys(_point_id(i) for i in ids) if i in found]
        return [
            PointRecord(id=_point_id(r.id), vector=_vector(r.vector), payload=dict(r.payload or {}))
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
        if ids is not None and points_filter is None:
            self._by_location(
                collection,
                ids,
                shard_keys,
                lambda held: edge.UpdateOperation.set_payload(held, dict(payload), key),
            )
            return
        flt = self._edge_selection(collection, ids, points_filter)
        operation = edge.UpdateOperation.set_payload_by_filter(flt, dict(payload), key)
        self._update(collection, operation, shard_keys)

    def overwrite_payload(
        self,
        collection: str,
        payload: Mapping[str, Any],
        *,
        points_filter: models.Filter,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        flt = self._edge_selection(collection, None, points_filter)
        self._update(
            collection,
            edge.UpdateOperation.overwrite_payload_by_filter(flt, dict(payload)),
            shard_keys,
        )

    def _edge_selection(
        self, collection: str, ids: Sequence[PointId] | None, points_filter: models.Filter | None
    ) -> edge.Filter:
        """The engine filter for ``ids`` AND ``points_filter`` (either may be absent)."""
        flt = self._call(collection, lambda: to_edge_filter(points_filter))
        if ids is None:
            return flt or edge.Filter()
        has_id = edge.HasIdCondition(set(ids))
        return edge.Filter(must=[has_id, flt] if flt is not None else [has_id])

    def delete_payload_keys(
        self,
        collection: str,
        keys: Sequence[str],
        *,
        points_filter: models.Filter | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        flt = self._call(collection, lambda: to_edge_filter(points_filter)) or edge.Filter()
        self._update(
            collection, edge.UpdateOperation.delete_payload_by_filter(flt, list(keys)), shard_keys
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
        if ids is not None:
            if ids:
                self._update(collection, edge.UpdateOperation.delete_points(list(ids)), shard_keys)
            return
        flt = self._call(collection, lambda: to_edge_filter(points_filter))
        assert flt is not None
        self._update(collection, edge.UpdateOperation.delete_points_by_filter(flt), shard_keys)

    def close(self) -> None:
        """Let go of the engine; the last adapter on this path closes the shards."""
        with _ENGINES_GUARD:
            engine, self._engine = self._engine, None
            if engine is None:
                return  # closed already
            engine.users -= 1
            if engine.users > 0:
                return
            if _ENGINES.get(self._key) is engine:
                del _ENGINES[self._key]
        with engine.guard:
            engine.closed = True  # no shard opens again here
            collections = list(engine.shards)
        for collection in collections:  # each once its readers and writer are done
            with self._lock(collection).writing():
                for shard in (engine.shards.pop(collection, None) or {}).values():
                    shard.close()


def _best(hits: list[Any], limit: int, offset: int, ascending: bool) -> list[Any]:
    """The page ``offset``..``offset + limit`` of hits from several shards, best first (a
    stable sort: equal scores keep the shards' order)."""
    ranked = sorted(hits, key=lambda h: h.score if ascending else -h.score)
    return ranked[offset : offset + limit]


def _order_by(query: Any) -> Any:
    """The ``order_by`` of an order-by query (``None`` for any other)."""
    return query.order_by if isinstance(query, models.OrderByQuery) else None


def _by_order_value(records: list[Any], limit: int, offset: int, order_by: Any) -> list[Any]:
    """Records of several shards in ``order_by``'s order (ascending unless it says otherwise)."""
    descending = (
        isinstance(order_by, models.OrderBy) and order_by.direction == models.Direction.DESC
    )
    ranked = sorted(
        records,
        key=lambda r: (r.order_value is None, r.order_value or 0),
        reverse=descending,
    )
    return ranked[offset : offset + limit]


def _value_order(value: Any) -> tuple[int, Any]:
    """Qdrant's order of facet values of one kind (booleans, numbers, then strings)."""
    if isinstance(value, bool):
        return (0, value)
    if isinstance(value, int | float):
        return (1, value)
    return (2, str(value))


def _describe(spec: CollectionSpec) -> str:
    """The vectors of ``spec`` in a few words (for messages)."""
    dense = [
        f"{name or 'unnamed'}: {v.size}-d {v.distance}{' multivector' if v.multivector else ''}"
        for name, v in spec.dense_vectors().items()
    ]
    sparse = [f"{name}: sparse" for name in spec.sparse_vectors]
    return ", ".join(dense + sparse) or "no vectors"


__all__ = [
    "PAYLOAD_ONLY_VECTOR",
    "EmbeddedQdrant",
    "edge_config",
    "spec_from_json",
    "spec_to_json",
]
