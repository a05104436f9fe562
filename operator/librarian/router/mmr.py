"""Maximal marginal relevance over a library's global candidates, as Qdrant computes it.

Why this exists: an ``mmr`` nearest query picks points that are relevant to the
query and unlike the points already picked, among the query's nearest
candidates of the WHOLE collection. Each home can only see its own points, so
the router takes the exact global candidates (with their vectors) and makes
the pick itself, with Qdrant's rule:

- similarities are the engine's raw ones: cosine or dot product, and the
  negated squared Euclidean or Manhattan distance;
- the most relevant candidate comes first; then, repeatedly, the candidate
  with the best ``(1 - diversity) * relevance - diversity * (max similarity
  to a picked point)``;
- candidates wait in a list from which a picked one is replaced by the last
  (a swap-remove), and a tie goes to the later candidate in that list: this
  is how the engine visits them, so exact ties resolve as Qdrant resolves them.

The points keep their relevance scores. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DISTANCES", "detect_distance", "mmr_order", "raw_similarities"]

DISTANCES = ("Cosine", "Dot", "Euclid", "Manhattan")


def raw_similarities(query: Sequence[float], vectors: np.ndarray, distance: str) -> np.ndarray:
    """The engine's raw similarity of ``query`` to each row of ``vectors`` (higher: closer)."""
    q = np.asarray(query, dtype=np.float64)
    if distance == "Euclid":
        raw = -np.square(vectors - q).sum(axis=1)
    elif distance == "Manhattan":
        raw = -np.abs(vectors - q).sum(axis=1)
    elif distance == "Cosine":
        norms = np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(q)), 1e-30)
        raw = (vectors @ q) / np.maximum(norms, 1e-30)
    else:
        raw = vectors @ q
    return np.asarray(raw, dtype=np.float64)


def _shown(query: Sequence[float], vectors: np.ndarray, distance: str) -> np.ndarray:
    """The score the engine shows for each vector (distances unsquared, not negated)."""
    raw = raw_similarities(query, vectors, distance)
    if distance == "Euclid":
        return np.asarray(np.sqrt(-raw), dtype=np.float64)
    if distance == "Manhattan":
        return -raw
    return raw


def detect_distance(
    query: Sequence[float], vectors: np.ndarray, scores: Sequence[float]
) -> str | None:
    """The distance under which ``query`` scores ``vectors`` as ``scores`` (the homes' own
    answer to a nearest query), or ``None`` if no distance does."""
    if len(scores) == 0:
        return "Cosine"  # nothing to rank: any will do
    wanted = np.asarray(scores, dtype=np.float64)
    for distance in DISTANCES:
        if np.allclose(_shown(query, vectors, distance), wanted, rtol=1e-3, atol=1e-4):
            return distance
    return None


def mmr_order(
    query: Sequence[float], vectors: np.ndarray, distance: str, diversity: float, limit: int
) -> list[int]:
    """Positions (into ``vectors``) of the ``limit`` candidates MMR picks, in pick order."""
    count = len(vectors)
    if count == 0 or limit <= 0:
        return []
    keep = 1.0 - diversity
    relevance = raw_similarities(query, vectors, distance)
    between = np.stack([raw_similarities(v, vectors, distance) for v in vectors])
    waiting = list(range(count))
    picked = [_take(waiting, _last_best([float(relevance[i]) for i in waiting]))]
    closest = between[picked[0]].copy()  # each candidate's max similarity to a picked one
    while len(picked) < limit and waiting:
        scores = [keep * float(relevance[i]) - diversity * float(closest[i]) for i in waiting]
        chosen = _take(waiting, _last_best(scores))
        picked.append(chosen)
        closest = np.maximum(closest, between[chosen])
    return picked


def _last_best(values: Sequence[float]) -> int:
    """The position of the largest value; the last one among equals."""
    best = 0
    for position, value in enumerate(values):
        if value >= values[best]:
            best = position
    return best


def _take(waiting: list[int], position: int) -> int:
    """Remove ``waiting[position]``, the last item taking its place; return it."""
    item = waiting[position]
    waiting[position] = waiting[-1]
    waiting.pop()
    return item
