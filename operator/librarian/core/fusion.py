"""Fusing the result lists that several domains return for one query.

Why this exists: a routed query comes back as one ranked list per domain
(per cluster); the application expects one list. How to merge depends on what
the scores mean:

- ``semantic_merge`` (default): every domain holds the same embedding model
  and metric, so raw scores are comparable; merge by (optionally calibrated)
  score, dedupe by id and collapse near-duplicate vectors. With identical
  collections this is exactly what one collection holding all points returns.
- ``weighted_score``: scores normalized per source (min-max) before a
  weighted sum, for sources whose scales differ.
- ``ranked_fusion``: Reciprocal Rank Fusion, scale-free.
- ``ml_based``: a small model fitted from shadow traffic (queries also run
  against every domain) predicts which candidate belongs in the true top-k.

Every function returns new :class:`Hit` objects and never mutates its inputs.
Pure: numpy and scikit-learn only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

PointId = int | str

FUSIONS = ("semantic_merge", "weighted_score", "ranked_fusion", "ml_based")
SETTINGS_NAMES = {"rrf": "ranked_fusion", "learned": "ml_based"}  # names used in the settings

__all__ = [
    "FUSIONS",
    "FusionError",
    "FusionModel",
    "Hit",
    "fuse",
    "fusion_name",
    "ml_based",
    "ranked_fusion",
    "semantic_merge",
    "weighted_score",
]


class FusionError(ValueError):
    """A fusion that cannot be done as asked (unknown name, unfitted model)."""


@dataclass(frozen=True)
class Hit:
    """One scored point from one source (a domain's collection)."""

    id: PointId
    score: float
    source: str = ""
    payload: Mapping[str, Any] | None = None
    vector: Any = None
    version: int = 0


def fusion_name(name: str) -> str:
    """The canonical fusion name for a settings value (``rrf`` -> ``ranked_fusion``)."""
    canonical = SETTINGS_NAMES.get(name, name)
    if canonical not in FUSIONS:
        accepted = ", ".join((*FUSIONS, *SETTINGS_NAMES))
        raise FusionError(f"fusion {name!r} is unknown; accepted: {accepted}")
    return canonical


def _ordered(
    scored: Mapping[PointId, tuple[float, Hit]], limit: int, higher_is_better: bool
) -> list[Hit]:
    sign = -1.0 if higher_is_better else 1.0
    ranked = sorted(scored.values(), key=lambda item: sign * item[0])
    return [replace(hit, score=float(score)) for score, hit in ranked[:limit]]


def ranked_fusion(
    results: Sequence[Sequence[Hit]],
    *,
    limit: int,
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[Hit]:
    """Reciprocal Rank Fusion: score = sum over lists of weight / (k + rank)."""
    fused: dict[PointId, tuple[float, Hit]] = {}
    for position, hits in enumerate(results):
        weight = 1.0 if weights is None else float(weights[position])
        for rank, hit in enumerate(hits, start=1):
            previous = fused.get(hit.id)
            gained = weight / (k + rank)
            fused[hit.id] = (gained + previous[0], previous[1]) if previous else (gained, hit)
    return _ordered(fused, limit, True)


def weighted_score(
    results: Sequence[Sequence[Hit]],
    *,
    limit: int,
    weights: Sequence[float] | None = None,
    higher_is_better: bool = True,
) -> list[Hit]:
    """Min-max normalize each list's scores to [0, 1] (best = 1), then a weighted sum per id."""
    fused: dict[PointId, tuple[float, Hit]] = {}
    for position, hits in enumerate(results):
        if not hits:
            continue
        weight = 1.0 if weights is None else float(weights[position])
        scores = np.array([hit.score for hit in hits], dtype=np.float64)
        low, high = float(scores.min()), float(scores.max())
        span = high - low
        for hit, score in zip(hits, scores, strict=True):
            normalized = 1.0 if span == 0 else (score - low) / span
            if not higher_is_better:
                normalized = 1.0 - normalized if span else 1.0
            previous = fused.get(hit.id)
            gained = weight * normalized
            fused[hit.id] = (gained + previous[0], previous[1]) if previous else (gained, hit)
    return _ordered(fused, limit, True)


def _unit_vector(vector: Any) -> np.ndarray[Any, np.dtype[np.float64]] | None:
    if isinstance(vector, Mapping):  # named vectors: only the unnamed one is compared (any
        vector = vector.get("")  # other may be sparse, multi, or not the one searched)
    if vector is None or not isinstance(vector, Sequence | np.ndarray) or not len(vector):
        return None
    array = np.asarray(vector, dtype=np.float64)
    if array.ndim != 1:
        return None
    norm = float(np.linalg.norm(array))
    return array / norm if norm else None


def semantic_merge(
    results: Sequence[Sequence[Hit]],
    *,
    limit: int,
    higher_is_better: bool = True,
    calibration: Mapping[str, tuple[float, float]] | None = None,
    duplicate_threshold: float | None = 0.999,
) -> list[Hit]:
    """Merge by (calibrated) score, dedupe by id, collapse near-duplicate vectors.

    ``calibration`` maps a source to ``(scale, offset)`` applied to its scores
    (identity by default: same model and metric everywhere means comparable
    scores). Two hits whose vectors have cosine similarity >= ``duplicate_threshold``
    are one result (the better one stays); vectors are only compared when present.
    """
    calibration = calibration or {}
    best: dict[PointId, tuple[float, Hit]] = {}
    sign = 1.0 if higher_is_better else -1.0
    for hits in results:
        for hit in hits:
            scale, offset = calibration.get(hit.source, (1.0, 0.0))
            score = scale * hit.score + offset
            previous = best.get(hit.id)
            if previous is None or sign * score > sign * previous[0]:
                best[hit.id] = (score, hit)
    ordered = sorted(best.values(), key=lambda item: -sign * item[0])
    kept: list[tuple[float, Hit]] = []
    kept_vectors: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    for score, hit in ordered:
        if len(kept) >= limit:
            break
        vector = None if duplicate_threshold is None else _unit_vector(hit.vector)
        if vector is not None:
            if kept_vectors and float(np.max(np.stack(kept_vectors) @ vector)) >= (
                duplicate_threshold or 1.0
            ):
                continue
            kept_vectors.append(vector)
        kept.append((score, hit))
    return [replace(hit, score=float(score)) for score, hit in kept]


def _features(
    results: Sequence[Sequence[Hit]], higher_is_better: bool
) -> list[tuple[Hit, list[float]]]:
    rows: list[tuple[Hit, list[float]]] = []
    sign = 1.0 if higher_is_better else -1.0
    all_scores = [sign * hit.score for hits in results for hit in hits]
    top = max(all_scores) if all_scores else 0.0
    for hits in results:
        if not hits:
            continue
        scores = np.array([sign * hit.score for hit in hits], dtype=np.float64)
        low, high = float(scores.min()), float(scores.max())
        for rank, (hit, score) in enumerate(zip(hits, scores, strict=True)):
            spread = (score - low) / (high - low) if high > low else 1.0
            rows.append((hit, [score, score - top, 1.0 / (1 + rank), spread, len(hits)]))
    return rows


class FusionModel:
    """Predicts whether a candidate belongs to the exhaustive top-k; fitted from shadow traffic."""

    def __init__(self, higher_is_better: bool = True) -> None:
        self.higher_is_better = higher_is_better
        self._model: LogisticRegression | None = None
        self.samples = 0

    @property
    def fitted(self) -> bool:
        return self._model is not None

    def fit(
        self,
        observations: Sequence[tuple[Sequence[Sequence[Hit]], Sequence[PointId]]],
    ) -> FusionModel:
        """Fit from ``(routed result lists, ids of the exhaustive top-k)`` pairs."""
        features: list[list[float]] = []
        targets: list[int] = []
        for results, truth in observations:
            wanted = set(truth)
            for hit, row in _features(results, self.higher_is_better):
                features.append(row)
                targets.append(int(hit.id in wanted))
        if len(set(targets)) < 2:
            raise FusionError(
                "shadow traffic must contain candidates both inside and outside the true top-k "
                f"to fit the fusion model ({len(targets)} candidates seen)"
            )
        model = LogisticRegression(max_iter=500)
        model.fit(np.asarray(features), np.asarray(targets))
        self._model = model
        self.samples = len(observations)
        return self

    def probabilities(self, results: Sequence[Sequence[Hit]]) -> list[tuple[Hit, float]]:
        if self._model is None:
            raise FusionError("the ml_based fusion model is not fitted yet (no shadow traffic)")
        rows = _features(results, self.higher_is_better)
        if not rows:
            return []
        predicted = self._model.predict_proba(np.asarray([row for _, row in rows]))[:, 1]
        return [(hit, float(p)) for (hit, _), p in zip(rows, predicted, strict=True)]


def ml_based(results: Sequence[Sequence[Hit]], *, limit: int, model: FusionModel) -> list[Hit]:
    """Rank candidates by the fitted model's probability of being in the true top-k.

    The returned hits keep their original scores (the probability only orders them).
    """
    best: dict[PointId, tuple[float, Hit]] = {}
    for hit, probability in model.probabilities(results):
        previous = best.get(hit.id)
        if previous is None or probability > previous[0]:
            best[hit.id] = (probability, hit)
    ranked = sorted(best.values(), key=lambda item: -item[0])
    return [replace(hit) for _, hit in ranked[:limit]]


def fuse(
    name: str,
    results: Sequence[Sequence[Hit]],
    *,
    limit: int,
    higher_is_better: bool = True,
    weights: Sequence[float] | None = None,
    model: FusionModel | None = None,
    calibration: Mapping[str, tuple[float, float]] | None = None,
) -> list[Hit]:
    """Dispatch to the named fusion (settings names ``rrf`` and ``learned`` accepted)."""
    canonical = fusion_name(name)
    if canonical == "ranked_fusion":
        return ranked_fusion(results, limit=limit, weights=weights)
    if canonical == "weighted_score":
        return weighted_score(
            results, limit=limit, weights=weights, higher_is_better=higher_is_better
        )
    if canonical == "ml_based":
        if model is None:
            raise FusionError("the ml_based fusion needs a fitted FusionModel")
        return ml_based(results, limit=limit, model=model)
    return semantic_merge(
        results, limit=limit, higher_is_better=higher_is_better, calibration=calibration
    )
