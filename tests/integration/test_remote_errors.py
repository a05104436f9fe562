"""The remote adapter against a recording HTTP server: errors, retries, and exact requests."""

from __future__ import annotations

import socket

import pytest
from qdrant_client.http import models

from librarian.storage.errors import (
    AuthenticationFailed,
    ClusterUnreachable,
    CollectionNotFound,
    UnknownCluster,
)
from librarian.storage.fleet import ClusterConfig, Fleet, FleetConfigError, connect
from librarian.storage.port import CollectionSpec, HnswSpec, OptimizersSpec, QuantizationSpec
from librarian.storage.remote import RemoteQdrant

from .recording_server import Recorded, qdrant_error, qdrant_ok, recording_server

SECRET = "s3cr3t-api-key-value"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_cluster_is_named_and_fails_fast() -> None:
    port = RemoteQdrant.connect(
        "analytics",
        f"http://127.0.0.1:{_free_port()}",
        api_key=SECRET,
        timeout_s=1,
        retries=1,
        backoff_s=0.01,
    )
    with pytest.raises(ClusterUnreachable, match="cluster 'analytics'") as caught:
        port.count("docs")
    assert SECRET not in str(caught.value)


def test_wrong_api_key_is_authentication_failed_without_the_key() -> None:
    with recording_server(lambda r, i: qdrant_error(401, "Invalid api-key")) as server:
        port = RemoteQdrant.connect("secure", server.url, api_key=SECRET, retries=2)
        with pytest.raises(AuthenticationFailed, match="cluster 'secure'") as caught:
            port.ping()
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert len(server.requests) == 1  # a refused key is not retried
    assert server.requests[0].headers.get("api-key") == SECRET


def test_transient_failures_are_retried_with_backoff() -> None:
    def answer(request: Recorded, index: int) -> tuple[int, dict[str, object]]:
        if index < 2:
            return qdrant_error(503, "overloaded")
        return qdrant_ok({"count": 42})

    delays: list[float] = []
    with recording_server(answer) as server:
        port = RemoteQdrant(
            "busy",
            RemoteQdrant.connect("busy", server.url)._client,
            retries=3,
            backoff_s=0.1,
            sleep=delays.append,
        )
        assert port.count("docs") == 42
    assert delays == [0.1, 0.2]
    assert len(server.requests) == 3


def test_retries_give_up_and_say_so() -> None:
    with recording_server(lambda r, i: qdrant_error(503, "overloaded")) as server:
        port = RemoteQdrant(
            "busy",
            RemoteQdrant.connect("busy", server.url)._client,
            retries=2,
            backoff_s=0.0,
            sleep=lambda _: None,
        )
        with pytest.raises(ClusterUnreachable, match="HTTP 503"):
            port.count("docs")
    assert len(server.requests) == 3


def test_missing_collection_on_remote() -> None:
    with recording_server(
        lambda r, i: qdrant_error(404, "Collection `docs` doesn't exist!")
    ) as server:
        port = RemoteQdrant.connect("main", server.url)
        with pytest.raises(CollectionNotFound, match="cluster 'main', collection 'docs'"):
            port.count("docs")


def test_create_collection_request_carries_the_config() -> None:
    def answer(request: Recorded, index: int) -> tuple[int, dict[str, object]]:
        if request.method == "GET" and request.path.endswith("/exists"):
            return qdrant_ok({"exists": False})
        return qdrant_ok(True)

    spec = CollectionSpec(
        vector_size=384,
        distance="Dot",
        on_disk_vectors=True,
        on_disk_payload=True,
        hnsw=HnswSpec(m=32, ef_construct=256, full_scan_threshold=5000),
        quantization=QuantizationSpec(kind="scalar", quantile=0.99, always_ram=True),
        optimizers=OptimizersSpec(indexing_threshold=20000),
        shard_number=3,
        replication_factor=2,
    )
    with recording_server(answer) as server:
        RemoteQdrant.connect("main", server.url).create_collection("fast", spec)
    put = next(r for r in server.requests if r.method == "PUT")
    assert put.path == "/collections/fast"
    body = models.CreateCollection.model_validate(put.body)
    assert isinstance(body.vectors, models.VectorParams)
    assert (body.vectors.size, body.vectors.distance) == (384, models.Distance.DOT)
    assert body.vectors.on_disk is True
    assert body.on_disk_payload is True
    assert body.hnsw_config is not None
    assert (body.hnsw_config.m, body.hnsw_config.ef_construct) == (32, 256)
    assert isinstance(body.quantization_config, models.ScalarQuantization)
    assert body.quantization_config.scalar.quantile == 0.99
    assert body.optimizers_config is not None
    assert body.optimizers_config.indexing_threshold == 20000
    assert (body.shard_number, body.replication_factor) == (3, 2)


def test_fleet_configs_and_lookup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(
        [
            ClusterConfig(name="local", embedded=str(tmp_path / "a")),
            ClusterConfig(name="mem", url=":memory:", api_key=SECRET),
        ]
    )
    assert fleet.get("local") is fleet.get("local")
    assert fleet.get("local").cluster == "local"
    with pytest.raises(UnknownCluster, match="known clusters: local, mem"):
        fleet.get("nope")
    assert SECRET not in repr(fleet.config("mem"))
    fleet.close()
    for bad, message in [
        (dict(name="x"), "exactly one of 'url'"),
        (dict(name="x", url="http://a", embedded="/b"), "exactly one of 'url'"),
        (dict(name="x", url="qdrant:6333"), "must start with http"),
        (dict(name="x", url="http://a", timeout_s=0), "timeout must be > 0"),
    ]:
        with pytest.raises(FleetConfigError, match=message):
            ClusterConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(FleetConfigError, match="appears twice"):
        Fleet([ClusterConfig(name="a", url=":memory:"), ClusterConfig(name="a", url=":memory:")])
    assert connect(ClusterConfig(name="e", embedded=str(tmp_path / "e"))).cluster == "e"
