"""Qdrant's own fusion of prefetch results: RRF and DBSF exactly as its query API defines them.

Why this exists: a client that sends ``query: {"fusion": "rrf"}`` (or
``"dbsf"``, or ``{"rrf": {"k": .., "weights": [..]}}``) over prefetches expects
Qdrant's answer, ranks and scores included, whatever the library does to merge
the domains of one search (:mod:`librarian.core.fusion`). These are Qdrant's
formulas, not the library's choices:

- **RRF**: the point at 0-based position ``p`` of a list with weight ``w``
  gains ``1 / ((p + 1) / w + k - 1)`` (``1 / (p + k)`` with weight 1); ``k`` is
  2 unless the query names it; a weight of 0 or less adds nothing.
- **DBSF**: each list's scores are mapped to ``(s - (mean - 3 sd)) /
  (6 sd)`` (the sample standard deviation); a list of one point, or of equal
  scores, gives 0.5 to each; the mapped scores are summed per point.

Both sort by the fused score, highest first; points with equal scores keep the
order in which they first appeared. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from librarian.core.fusion import Hit, PointId

__all__ = ["DEFAULT_RRF_K", "distribution_based_score_fusion", "reciprocal_rank_fusion"]

DEFAULT_RRF_K = 2


def reciprocal_rank_fusion(
    results: Sequence[Sequence[Hit]],
    *,
    limit: int,
    k: int | None = None,
    weights: Sequence[float] | None = None,
) -> list[Hit]:
    """Qdrant's RRF of ``results`` (one ranked list per prefetch), the best ``limit`` points."""
    constant = DEFAULT_RRF_K if k is None else k
    if weights is not None and len(weights) != len(results):
        raise ValueError(
            f"rrf weights: {len(weights)} given for {len(results)} prefetches; give one each"
        )
    scores: dict[PointId, float] = {}
    first: dict[PointId, Hit] = {}
    for position, hits in enumerate(results):
        weight = 1.0 if weights is None else float(weights[position])
        for rank, hit in enumerate(hits):
            gained = 0.0 if weight <= 0 else 1.0 / ((rank + 1.0) / weight + constant - 1.0)
            scores[hit.id] = scores.get(hit.id, 0.0) + gained
            first.setdefault(hit.id, hit)
    return _best(scores, first, limit)


def distribution_based_score_fusion(results: Sequence[Sequence[Hit]], *, limit: int) -> list[Hit]:
    """Qdrant's DBSF of ``results`` (one scored list per prefetch), the best ``limit`` points."""
    scores: dict[PointId, float] = {}
    first: dict[PointId, Hit] = {}
    for hits in results:
        for hit, normalized in zip(hits, _normalized([h.score for h in hits]), strict=True):
            scores[hit.id] = scores.get(hit.id, 0.0) + normalized
            first.setdefault(hit.id, hit)
    return _best(scores, first, limit)


def _normalized(scores: Sequence[float]) -> list[float]:
    if len(scores) == 1:
        return [0.5]
    if not scores:
        return []
    mean = sum(scores) / len(scores)
    variance = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
    if variance == 0:
        return [0.5] * len(scores)
    deviation = math.sqrt(variance)
    low, high = mean - 3 * deviation, mean + 3 * deviation
    return [(s - low) / (high - low) for s in scores]


def _best(scores: dict[PointId, float], first: dict[PointId, Hit], limit: int) -> list[Hit]:
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)  # stable on ties
    return [replace(first[point_id], score=score) for point_id, score in ranked[:limit]]
