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
    port: QdrantPort, collection: str, limit: int, *, text_field: str = "text"
) -> Sample:
    """Draw up to ``limit`` random points (with vectors and their text) from ``collection``."""
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
    missing = [p.id for p in points if not p.vector]
    if missing:
        raise InvalidRequest(
            port.cluster,
            f"{len(missing)} sampled point(s) have no default dense vector (e.g. id "
            f"{missing[0]!r}); discovery needs the unnamed dense vector",
            collection=collection,
        )
    vectors = np.asarray([p.vector for p in points], dtype=np.float32)
    texts = [str(p.payload.get(text_field, "")) for p in points]
    return Sample(
        ids=[p.id for p in points],
        vectors=vectors,
        texts=texts if any(texts) else None,
    )
