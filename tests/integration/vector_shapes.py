"""Points with every vector shape Qdrant has, and an independent reference holding them.

The collection: two named dense vectors (``text`` routes; ``image`` with its own
HNSW), a multivector (``colbert``, max-sim) and a sparse vector (``keywords``,
IDF). Some points lack some named vectors. The reference is qdrant-client's
local mode configured by hand with the client's own models (not through the
adapters), so it is independent of the code under test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client.http import models

from librarian.core.collection_spec import (
    CollectionSpec,
    DenseVectorSpec,
    HnswSpec,
    SparseVectorSpec,
)
from librarian.storage.port import PointRecord
from librarian.storage.vectors import VectorValue

TEXT_DIM, IMAGE_DIM, COLBERT_DIM = 6, 4, 3

SHAPED_SPEC = CollectionSpec(
    vectors={
        "text": DenseVectorSpec(size=TEXT_DIM, distance="Cosine"),
        "image": DenseVectorSpec(
            size=IMAGE_DIM, distance="Dot", hnsw=HnswSpec(m=8, ef_construct=64), on_disk=False
        ),
        "colbert": DenseVectorSpec(size=COLBERT_DIM, distance="Dot", multivector="max_sim"),
    },
    sparse_vectors={"keywords": SparseVectorSpec(modifier="idf")},
)


def reference_collection(client: QdrantClient, name: str) -> None:
    """Create ``name`` in local mode with the same vectors as :data:`SHAPED_SPEC`."""
    client.create_collection(
        name,
        vectors_config={
            "text": models.VectorParams(size=TEXT_DIM, distance=models.Distance.COSINE),
            "image": models.VectorParams(size=IMAGE_DIM, distance=models.Distance.DOT),
            "colbert": models.VectorParams(
                size=COLBERT_DIM,
                distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM
                ),
            ),
        },
        sparse_vectors_config={"keywords": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )


def shaped_vectors(rng: np.random.Generator, index: int) -> dict[str, VectorValue]:
    """Every shape for point ``index``; every 4th lacks ``image``, every 5th ``colbert``,
    every 7th ``keywords``, every 9th the routing vector ``text``."""
    vectors: dict[str, VectorValue] = {}
    if index % 9 != 8:
        vectors["text"] = [float(x) for x in rng.standard_normal(TEXT_DIM)]
    if index % 4 != 3:
        vectors["image"] = [float(x) for x in rng.standard_normal(IMAGE_DIM)]
    if index % 5 != 4:
        rows = 1 + index % 3
        vectors["colbert"] = [
            [float(x) for x in rng.standard_normal(COLBERT_DIM)] for _ in range(rows)
        ]
    if index % 7 != 6:
        indices = sorted(int(i) for i in rng.choice(50, size=1 + index % 4, replace=False))
        vectors["keywords"] = models.SparseVector(
            indices=indices, values=[float(x) for x in rng.random(len(indices))]
        )
    return vectors


def shaped_points(n: int, *, seed: int = 0, start: int = 0) -> list[PointRecord]:
    rng = np.random.default_rng(seed)
    return [
        PointRecord(
            id=start + i,
            vector=shaped_vectors(rng, start + i),
            payload={"n": start + i, "group": f"g{(start + i) % 3}"},
        )
        for i in range(n)
    ]


def reference_points(points: list[PointRecord]) -> list[models.PointStruct]:
    return [
        models.PointStruct(id=p.id, vector=p.vector or {}, payload=p.payload)  # type: ignore[arg-type]
        for p in points
    ]


def reference_vectors(client: QdrantClient, name: str, ids: list[Any]) -> dict[Any, Any]:
    """Each point's vectors as the reference holds them."""
    return {r.id: r.vector for r in client.retrieve(name, ids, with_vectors=True)}
