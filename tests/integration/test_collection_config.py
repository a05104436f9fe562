"""Applying tuned configs: create, patch, unchanged, and immutable changes refused."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from qdrant_client.http import models

from librarian.core.collection_spec import diff_specs
from librarian.core.tuning import DomainStats, tune_collection
from librarian.services.migration import Checkpoint, CheckpointStore
from librarian.storage.collection_config import apply_collection_config, create_if_missing
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, HnswSpec, QdrantPort
from librarian.storage.remote import RemoteQdrant

from .conftest import make_points
from .recording_server import Recorded, qdrant_ok, recording_server


def test_create_then_unchanged_then_patch_then_refuse(port: QdrantPort) -> None:
    tuned = tune_collection(DomainStats(points=5000, dimension=8), "latency").collection
    assert apply_collection_config(port, "fast", tuned).action == "created"
    port.upsert("fast", make_points(30))
    if isinstance(port, EmbeddedQdrant):  # the engine keeps exactly what was asked
        assert apply_collection_config(port, "fast", tuned).action == "unchanged"
    denser = CollectionSpec(vector_size=8, hnsw=HnswSpec(m=48, ef_construct=300))
    outcome = apply_collection_config(port, "fast", denser)
    assert outcome.action == "updated"
    assert "hnsw.m" in {c.field for c in outcome.changes}
    if isinstance(port, EmbeddedQdrant):
        spec = port.collection_info("fast").spec
        assert spec is not None
        assert spec.hnsw is not None
        assert spec.hnsw.m == 48
    refused = apply_collection_config(port, "fast", CollectionSpec(vector_size=16))
    assert refused.action == "needs_migration"
    assert "vector_size 8 -> 16" in refused.describe()
    assert port.collection_info("fast").vector_size == 8
    assert port.count("fast") == 30


def test_diff_only_compares_what_is_asked() -> None:
    current = CollectionSpec(vector_size=8, hnsw=HnswSpec(m=16, ef_construct=100), shard_number=1)
    mutable, immutable = diff_specs(current, CollectionSpec(vector_size=8))
    assert mutable == []
    assert immutable == []
    mutable, immutable = diff_specs(
        current, CollectionSpec(vector_size=8, shard_number=3, distance="Dot")
    )
    assert {c.field for c in immutable} == {"shard_number", "distance"}


def test_patch_request_that_reaches_a_remote_cluster() -> None:
    current = {
        "status": "green",
        "optimizer_status": "ok",
        "points_count": 0,
        "segments_count": 1,
        "indexed_vectors_count": 0,
        "payload_schema": {},
        "config": {
            "params": {
                "vectors": {"size": 8, "distance": "Cosine"},
                "shard_number": 1,
                "replication_factor": 1,
                "on_disk_payload": True,
            },
            "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
            "optimizer_config": {
                "deleted_threshold": 0.2,
                "vacuum_min_vector_number": 1000,
                "default_segment_number": 0,
                "flush_interval_sec": 5,
            },
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
        },
    }

    def answer(request: Recorded, index: int) -> tuple[int, dict[str, object]]:
        if request.method == "GET" and request.path.endswith("/exists"):
            return qdrant_ok({"exists": True})
        if request.method == "GET":
            return qdrant_ok(current)
        return qdrant_ok(True)

    tuned = tune_collection(
        DomainStats(points=2_000_000, dimension=8, queries_per_second=200), "latency"
    ).collection
    tuned = CollectionSpec(**{**vars(tuned), "shard_number": None})  # keep shards as they are
    with recording_server(answer) as server:
        outcome = apply_collection_config(RemoteQdrant.connect("main", server.url), "docs", tuned)
    assert outcome.action == "updated"
    patch = next(r for r in server.requests if r.method == "PATCH")
    body = models.UpdateCollection.model_validate(patch.body)
    assert body.hnsw_config is not None
    assert (body.hnsw_config.m, body.hnsw_config.ef_construct) == (32, 200)
    assert isinstance(body.quantization_config, models.ScalarQuantization)
    assert body.quantization_config.scalar.always_ram is True
    assert body.params is not None
    assert body.params.replication_factor == 2
    assert body.optimizers_config is not None
    assert body.optimizers_config.indexing_threshold == 1000


class _ExistsCheckRacesACreator:
    """A port whose existence check answers just before another process creates the
    collection: the check says missing, and the create then finds it there."""

    def __init__(self, inner: QdrantPort, other: Callable[[str], None]) -> None:
        self._inner = inner
        self._other = other

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def collection_exists(self, collection: str) -> bool:
        exists = self._inner.collection_exists(collection)
        if not exists:
            self._other(collection)
        return exists


def test_a_collection_another_process_creates_meanwhile_is_not_an_error(port: QdrantPort) -> None:
    spec = CollectionSpec(vector_size=1)
    racing = cast(
        QdrantPort,
        _ExistsCheckRacesACreator(port, lambda name: port.create_collection(name, spec)),
    )
    assert create_if_missing(racing, "records", spec) is False  # exists: created by the other
    assert port.collection_exists("records")
    # the operator's record stores shared by every DomainMap on a cluster go on
    CheckpointStore(racing, "checkpoints").save("move-1", Checkpoint(copied=7))
    loaded = CheckpointStore(port, "checkpoints").load("move-1")
    assert loaded is not None
    assert loaded.copied == 7
    assert apply_collection_config(racing, "tuned", spec).action in ("updated", "unchanged")
    assert create_if_missing(port, "fresh", spec) is True
    assert create_if_missing(port, "fresh", spec) is False


def test_creators_at_the_same_moment_all_succeed_and_one_created_it(port: QdrantPort) -> None:
    spec = CollectionSpec(vector_size=1)
    start = threading.Barrier(6)

    def create() -> bool:
        start.wait(30)
        return create_if_missing(port, "shared", spec)

    with ThreadPoolExecutor(6) as pool:
        created = list(pool.map(lambda _: create(), range(6)))
    assert created.count(True) == 1  # the others saw it exist, or lost the race to create it
    assert port.collection_exists("shared")
