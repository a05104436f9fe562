"""Qdrant's distance matrix over a library: a random sample and each one's nearest in it.

Why this exists: ``search/matrix/pairs`` and ``search/matrix/offsets`` draw
``sample`` points matching a filter and give each its ``limit`` nearest among
the sample. Over a library the sample is drawn from every home (each point at
most once, its newest copy; a home's draw weighted by how many points it
holds), and each sampled point is scored against the sampled points of every
home by the homes themselves, so every score is Qdrant's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client.http import models

from librarian.core.fusion import PointId
from librarian.router.copies import (
    VERSION_KEYS,
    checked_size,
    every_home,
    higher_is_better,
    home_filter,
    is_newest,
    newest_copies,
    point_key,
)
from librarian.router.library import DomainRoute, View
from librarian.router.qdrant_api import ApiError, id_order_key
from librarian.router.state import RouterState
from librarian.storage.port import QdrantPort

__all__ = ["MAX_SAMPLE", "DistanceMatrix", "Matrix"]

MAX_SAMPLE = 10_000
"""The largest sample a matrix draws over a library (each sampled point is a query per home)."""


@dataclass(frozen=True)
class Matrix:
    """The sampled ids (in id order) and, for each, its nearest others with their scores."""

    ids: list[PointId]
    neighbours: list[list[tuple[PointId, float]]]

    def pairs(self) -> dict[str, Any]:
        return {
            "pairs": [
                {"a": a, "b": b, "score": score}
                for a, row in zip(self.ids, self.neighbours, strict=True)
                for b, score in row
            ]
        }

    def offsets(self) -> dict[str, Any]:
        position = {point_id: i for i, point_id in enumerate(self.ids)}
        rows = [
            (i, position[b], score) for i, row in enumerate(self.neighbours) for b, score in row
        ]
        return {
            "offsets_row": [r for r, _, _ in rows],
            "offsets_col": [c for _, c, _ in rows],
            "scores": [s for _, _, s in rows],
            "ids": list(self.ids),
        }


@dataclass(frozen=True)
class _Sampled:
    point_id: PointId
    route: DomainRoute
    vector: Any


class DistanceMatrix:
    """Draws a view's sample and scores it."""

    def __init__(self, state: RouterState, rng: np.random.Generator | None = None) -> None:
        self.state = state
        self.rng = rng or np.random.default_rng()

    async def matrix(self, view: View, body: models.SearchMatrixRequest, timeout: float) -> Matrix:
        sample = checked_size("sample", body.sample, 10, 2)
        if sample > MAX_SAMPLE:
            raise ApiError(
                400,
                f"Bad request: a distance matrix over a library samples at most {MAX_SAMPLE:,} "
                f"points (each is scored by every home), not {sample:,}; ask for a smaller sample",
            )
        limit = checked_size("limit", body.limit, 3, 1)
        using = body.using or ""
        drawn = await self._sample(view, body.filter, using, sample, timeout)
        if len(drawn) < 2:
            return Matrix([], [])
        drawn.sort(key=lambda s: id_order_key(s.point_id))
        return Matrix(
            [s.point_id for s in drawn],
            await self._neighbours(view, drawn, using, limit, timeout),
        )

    async def _sample(
        self, view: View, user: models.Filter | None, using: str, sample: int, timeout: float
    ) -> list[_Sampled]:
        """Up to ``sample`` points matching ``user`` with the vector, at random over the homes."""
        has_vector = models.HasVectorCondition(has_vector=using)
        wanted = models.Filter(must=[f for f in (user, has_vector) if f is not None])
        request = models.QueryRequest(
            query=models.SampleQuery(sample=models.Sample.RANDOM),
            limit=sample,
            with_payload=VERSION_KEYS,
            with_vector=[using] if using else True,
        )

        def operation(
            route: DomainRoute,
        ) -> Callable[[QdrantPort], tuple[int, list[models.ScoredPoint]]]:
            scoped = home_filter(route, wanted)

            def run(port: QdrantPort) -> tuple[int, list[models.ScoredPoint]]:
                held = port.count(route.collection, count_filter=scoped)
                drawn = port.query_points(
                    route.collection, request.model_copy(update={"filter": scoped})
                )
                return held, drawn

            return run

        homes = await every_home(self.state.upstream, view, operation, timeout, "a distance matrix")
        newest = await newest_copies(
            self.state.upstream, view, (p.id for _, (_, drawn) in homes for p in drawn), timeout
        )
        candidates: list[_Sampled] = []
        weights: list[float] = []
        seen: set[PointId] = set()
        for route, (held, drawn) in homes:
            for point in drawn:
                key = point_key(point.id)
                vector = point.vector.get(using) if isinstance(point.vector, dict) else point.vector
                if key in seen or vector is None or not is_newest(newest, point.id, point.payload):
                    continue
                seen.add(key)
                candidates.append(_Sampled(key, route, vector))
                weights.append(held / max(len(drawn), 1))  # each drawn point stands for these
        if len(candidates) <= sample:
            return candidates
        p = np.asarray(weights, dtype=np.float64)
        chosen = self.rng.choice(len(candidates), size=sample, replace=False, p=p / p.sum())
        return [candidates[i] for i in sorted(chosen)]

    async def _neighbours(
        self, view: View, drawn: list[_Sampled], using: str, limit: int, timeout: float
    ) -> list[list[tuple[PointId, float]]]:
        """For each sampled point, its ``limit`` nearest other sampled points (Qdrant's scores)."""
        in_route: dict[str, list[PointId]] = {}
        for s in drawn:
            in_route.setdefault(s.route.key, []).append(s.point_id)

        def operation(
            route: DomainRoute,
        ) -> Callable[[QdrantPort], list[list[models.ScoredPoint]]]:
            held = in_route.get(route.key, [])

            def run(port: QdrantPort) -> list[list[models.ScoredPoint]]:
                rows: list[list[models.ScoredPoint]] = []
                for s in drawn:
                    others = [i for i in held if i != s.point_id]
                    if not others:
                        rows.append([])
                        continue
                    request = models.QueryRequest(
                        query=models.NearestQuery(nearest=s.vector),
                        using=using or None,
                        filter=home_filter(
                            route, models.Filter(must=[models.HasIdCondition(has_id=others)])
                        ),
                        limit=limit,
                        with_payload=False,
                        with_vector=False,
                    )
                    rows.append(port.query_points(route.collection, request))
                return rows

            return run

        homes = await every_home(self.state.upstream, view, operation, timeout, "a distance matrix")
        higher = await higher_is_better(
            self.state.upstream,
            view,
            models.NearestQuery(nearest=drawn[0].vector),
            using,
            [[p.score for p in row] for _, rows in homes for row in rows],
            timeout,
        )
        neighbours = []
        for i in range(len(drawn)):
            merged = [(point_key(p.id), p.score) for _, rows in homes for p in rows[i]]
            merged.sort(key=lambda pair: -pair[1] if higher else pair[1])
            neighbours.append(merged[:limit])
        return neighbours
