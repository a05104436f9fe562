"""Fixtures: one port per adapter, so the same tests run against each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort
from librarian.storage.remote import RemoteQdrant


@pytest.fixture(params=["embedded", "remote"])
def port(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantPort]:
    """The embedded engine, and the remote adapter over qdrant-client local mode."""
    adapter: QdrantPort
    if request.param == "embedded":
        adapter = EmbeddedQdrant("edge", tmp_path / "edge")
    else:
        adapter = RemoteQdrant.connect("remote", ":memory:")
    yield adapter
    adapter.close()


def make_points(n: int, dim: int = 8, seed: int = 0, start: int = 0) -> list[PointRecord]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        PointRecord(
            id=start + i,
            vector=[float(x) for x in vectors[i]],
            payload={"text": f"doc {start + i}", "group": f"g{(start + i) % 3}", "n": start + i},
        )
        for i in range(n)
    ]


@pytest.fixture
def filled(port: QdrantPort) -> QdrantPort:
    port.create_collection("docs", CollectionSpec(vector_size=8))
    port.upsert("docs", make_points(50))
    return port
