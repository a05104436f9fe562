"""Random sampling of a source collection for discovery.

Why this exists: discovery runs on a bounded sample, not on the whole
collection. Qdrant's Query API draws a random sample server-side; this module
turns it into arrays discovery can use and refuses, with the cluster and
collection named, a source that is empty or holds points without vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from librarian.storage.errors import InvalidRequest
from librarian.storage.port import PointId, PointRecord, QdrantPort


class EmptySource(InvalidRequest):
    """The source collection has no points to analyse."""


@dataclass(frozen=True)
class Sample:
    """Sampled points: ids, vectors (n, d) float32, and texts when the payload has them."""

    ids: list[PointId]
    vectors: npt.NDArray[np.float32]
    texts: list[str] | None


SampleProgress = Callable[[int, int], None]
"""Called with the points drawn so far and the number asked for."""

_FRUITLESS_DRAWS = 3  # draws in a row that add no new point before sampling stops short


def _draw(
    port: QdrantPort,
    collection: str,
    target: int,
    total: int,
    chunk: int | None,
    on_progress: SampleProgress | None,
) -> list[PointRecord]:
    """``target`` distinct random points, drawn ``chunk`` at a time (each draw is a
    uniform random subset, so their union is one too); fewer when draws keep repeating
    points (the collection shrank meanwhile). The whole collection is drawn at once."""
    if chunk is None or target <= chunk or target >= total:
        points = port.sample(collection, target, with_payload=True)
        if on_progress is not None:
            on_progress(len(points), target)
        return points
    drawn: dict[PointId, PointRecord] = {}
    fruitless = 0
    while len(drawn) < target and fruitless < _FRUITLESS_DRAWS:
        before = len(drawn)
        for point in port.sample(collection, chunk, with_payload=True):
            if len(drawn) < target:
                drawn.setdefault(point.id, point)
        fruitless = fruitless + 1 if len(drawn) == before else 0
        if on_progress is not None:
            on_progress(len(drawn), target)
    return list(drawn.values())


def sample_points(
    port: QdrantPort,
    collection: str,
    limit: int,
    *,
    text_field: str = "text",
    vector: str = "",
    chunk: int | None = None,
    on_progress: SampleProgress | None = None,
) -> Sample:
    """Draw up to ``limit`` random points (their dense ``vector`` and text) from ``collection``.

    ``vector`` names the dense vector discovery works on (``""``: the unnamed one).
    Sampled points that lack it are left out (they are placed by id, not by vector:
    :mod:`librarian.core.unrouted`); a sample where none has it is refused. ``chunk``
    draws the sample that many points at a time, calling ``on_progress`` after each.
    """
    total = port.count(collection)  # raises CollectionNotFound naming cluster and collection
    if total == 0:
        raise EmptySource(
            port.cluster,
            "the source collection is empty; load points before discovery",
            collection=collection,
        )
    points = _draw(port, collection, min(limit, total), total, chunk, on_progress)
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
