"""Random sampling of a source collection for discovery.

Why this exists: discovery runs on a bounded sample, not on the whole
collection. Qdrant's Query API draws a random sample server-side; this module
turns it into arrays discovery can use and refuses, with the cluster and
collection named, a source that is empty or holds points without vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from librarian.storage.errors import InvalidRequest
from librarian.storage.port import PointId, QdrantPort


class EmptySource(InvalidRequest):
    """The source collection has no points to analyse."""


@dataclass(frozen=True)
class Sample:
    """Sampled points: ids, vectors (n, d) float32, and texts when the payload has them."""

    ids: list[PointId]
    vectors: npt.NDArray[np.float32]
    texts: list[str] | None


def sample_points(
    port: QdrantPort, collection: str, limit: int, *, text_field: str = "text", vector: str = ""
) -> Sample:
    """Draw up to ``limit`` random points (their dense ``vector`` and text) from ``collection``.

    ``vector`` names the dense vector discovery works on (``""``: the unnamed one).
    Sampled points that lack it are left out (they are placed by id, not by vector:
    :mod:`librarian.core.unrouted`); a sample where none has it is refused.
    """
    total = port.count(collection)  # raises CollectionNotFound naming cluster and collection
    if total == 0:
        raise EmptySource(
            port.cluster,
            "the source collection is empty; load points before discovery",
            collection=collection,
        )
    points = port.sample(collection, min(limit, total), with_payload=True)
    # In id order: the same points give the same domains whatever order the engine drew them.
    points.sort(key=lambda p: (isinstance(p.id, str), str(p.id) if isinstance(p.id, str) else p.id))
    points = [p for p in points if p.dense(vector)]
    if not points:
        named = f"dense vector {vector!r}" if vector else "the unnamed dense vector"
        raise InvalidRequest(
            port.cluster,
            f"no sampled point has {named}; discovery needs it (choose another with "
            "spec.source.vector)",
            collection=collection,
        )
    vectors = np.asarray([p.dense(vector) for p in points], dtype=np.float32)
    texts = [str(p.payload.get(text_field, "")) for p in points]
    return Sample(
        ids=[p.id for p in points],
        vectors=vectors,
        texts=texts if any(texts) else None,
    )
