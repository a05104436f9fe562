"""HTTP handlers of the reads that aggregate a library: groups, facets, counts, distance matrix.

Why this exists: these endpoints share one shape (parse the body as Qdrant's
model, run the exact read within the request's deadline, answer in Qdrant's
envelope) and none of them is cached: each answer is computed from the homes
as they are when it is asked.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from qdrant_client.http import models

from librarian.router.facets import Counting
from librarian.router.groups import GroupedQueries, RecommendGroupsRequest, SearchGroupsRequest
from librarian.router.library import View
from librarian.router.limits import request_deadline
from librarian.router.matrix import DistanceMatrix
from librarian.router.qdrant_api import ok, parse_body, request_timeout
from librarian.router.state import RouterState

__all__ = ["AggregateEndpoints"]

Run = Callable[[View, Any, float], Awaitable[Any]]


class AggregateEndpoints:
    """aiohttp handlers of ``query/groups``, ``search/groups``, ``recommend/groups``,
    ``facet``, ``count`` and ``search/matrix/{pairs,offsets}``."""

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.grouped = GroupedQueries(state)
        self.counting = Counting(state)
        self.distances = DistanceMatrix(state)

    async def _answer(self, request: web.Request, model: Any, run: Run) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])
        body = await parse_body(request, model)
        timeout = request_timeout(request, self.state.config.settings.timeout)
        async with request_deadline(timeout):
            result = await run(view, body, timeout)
        return ok(result, started)

    async def query_groups(self, request: web.Request) -> web.Response:
        return await self._answer(request, models.QueryGroupsRequest, self.grouped.query_groups)

    async def search_groups(self, request: web.Request) -> web.Response:
        return await self._answer(request, SearchGroupsRequest, self.grouped.search_groups)

    async def recommend_groups(self, request: web.Request) -> web.Response:
        return await self._answer(request, RecommendGroupsRequest, self.grouped.recommend_groups)

    async def facet(self, request: web.Request) -> web.Response:
        return await self._answer(request, models.FacetRequest, self.counting.facet)

    async def count(self, request: web.Request) -> web.Response:
        async def run(view: View, body: models.CountRequest, timeout: float) -> Any:
            return {"count": await self.counting.count(view, body, timeout)}

        return await self._answer(request, models.CountRequest, run)

    async def matrix_pairs(self, request: web.Request) -> web.Response:
        async def run(view: View, body: models.SearchMatrixRequest, timeout: float) -> Any:
            return (await self.distances.matrix(view, body, timeout)).pairs()

        return await self._answer(request, models.SearchMatrixRequest, run)

    async def matrix_offsets(self, request: web.Request) -> web.Response:
        async def run(view: View, body: models.SearchMatrixRequest, timeout: float) -> Any:
            return (await self.distances.matrix(view, body, timeout)).offsets()

        return await self._answer(request, models.SearchMatrixRequest, run)
