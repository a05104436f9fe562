"""Counts and facets over a library: each point counted once, on its newest copy.

Why this exists: summing every home's count (or facet counts) counts a point
twice while it has two live copies (a cleanup pending, a move under way) and
counts a copy a newer tombstone has deleted. An exact answer needs to know
which copies are not the library's points. A *census* lists every copy of
every home (ids and version keys only) and finds them: older than the newest
copy, hidden by a newer tombstone, or a second copy at the newest version.
The answer is then the homes' own counts (or facets) minus the same counts
over those copies, asked of the homes with the client's filter, so the
filter is always evaluated by Qdrant.

A census is bounded (:data:`MAX_CENSUS_COPIES`): beyond it an exact answer
is refused with a 400 that says so and suggests ``exact=false``, which
answers the homes' sums as Qdrant's own estimates are answered. A facet needs
every distinct value of every home to rank the library's values exactly;
past :data:`MAX_FACET_VALUES` values in a home it is refused the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY
from librarian.core.fusion import PointId
from librarian.router.copies import (
    VERSION_KEYS,
    checked_path,
    checked_size,
    every_home,
    home_filter,
    point_key,
)
from librarian.router.library import DomainRoute, View
from librarian.router.qdrant_api import ApiError
from librarian.router.state import RouterState
from librarian.services.versioning import is_tombstone, version_of
from librarian.storage.port import QdrantPort

__all__ = ["MAX_CENSUS_COPIES", "MAX_FACET_VALUES", "Counting", "facet_order"]

MAX_CENSUS_COPIES = 2_000_000
"""The most copies a census lists to make a count or facet exact."""

MAX_FACET_VALUES = 100_000
"""The most distinct values a home may have for a facet to be ranked exactly."""

_CENSUS_PAGE = 10_000

Stale = dict[str, list[PointId]]  # route key -> its copies that are not the library's points


def facet_order(hit: models.FacetValueHit) -> tuple[int, int, Any]:
    """Qdrant's facet order: count descending, then value ascending."""
    value = hit.value
    kind = 0 if isinstance(value, bool) else 1 if isinstance(value, int) else 2
    return (-hit.count, kind, value)


class Counting:
    """Exact counts and facets of a view, and the census that makes them exact."""

    def __init__(self, state: RouterState) -> None:
        self.state = state

    async def census(self, view: View, timeout: float, *, needed: bool) -> Stale | None:
        """The copies of each home that are not the library's points; ``None`` when there are
        too many copies to list and ``needed`` is false (a 400 when it is true)."""
        if not view.routed:
            return {}
        budget = MAX_CENSUS_COPIES

        def operation(
            route: DomainRoute,
        ) -> Callable[[QdrantPort], list[tuple[PointId, Any]] | None]:
            def run(port: QdrantPort) -> list[tuple[PointId, Any]] | None:
                listed: list[tuple[PointId, Any]] = []
                offset: PointId | None = None
                while True:
                    page = port.scroll_keys(
                        route.collection,
                        keys=VERSION_KEYS,
                        limit=_CENSUS_PAGE,
                        offset=offset,
                        scroll_filter=route.slice_filter(),
                    )
                    for point_id, payload in zip(page.ids, page.payloads, strict=True):
                        if not route.holds_label(payload.get(LABEL_KEY)):
                            continue
                        listed.append((point_key(point_id), payload))
                    if len(listed) > budget:
                        return None  # more than a census may list
                    if page.next_offset is None:
                        return listed
                    offset = page.next_offset

            return run

        listings = await every_home(self.state.upstream, view, operation, timeout, "an exact count")
        homes = [(route, listed) for route, listed in listings if listed is not None]
        if len(homes) < len(listings) or sum(len(c) for _, c in homes) > MAX_CENSUS_COPIES:
            if not needed:
                return None
            raise ApiError(
                400,
                "Bad request: an exact answer must list every copy of the library's points to "
                f"count each point once, and the library holds more than {MAX_CENSUS_COPIES:,}; "
                "use exact=false for the sum of its homes' answers (which counts a point twice "
                "while a second copy of it awaits its cleanup)",
            )
        return _stale_copies(homes)

    # ------------------------------------------------------------ count

    async def count(self, view: View, body: models.CountRequest, timeout: float) -> int:
        """Points matching the filter, each once; ``exact=false`` sums the homes' counts."""
        exact = body.exact if body.exact is not None else True

        def operation(route: DomainRoute) -> Callable[[QdrantPort], int]:
            scoped = home_filter(route, body.filter)
            return lambda port: port.count(route.collection, count_filter=scoped)

        counts = await every_home(self.state.upstream, view, operation, timeout, "count")
        total = sum(n for _, n in counts)
        if not exact:
            return total
        stale = await self.census(view, timeout, needed=True)
        if not stale:
            return total
        return total - await self._stale_count(view, body.filter, stale, timeout)

    async def _stale_count(
        self, view: View, user: models.Filter | None, stale: Stale, timeout: float
    ) -> int:
        def operation(route: DomainRoute) -> Callable[[QdrantPort], int]:
            ids = stale.get(route.key)
            scoped = home_filter(route, _among(user, ids or []))
            return lambda port: port.count(route.collection, count_filter=scoped) if ids else 0

        counts = await every_home(self.state.upstream, view, operation, timeout, "count")
        return sum(n for _, n in counts)

    # ------------------------------------------------------------ facet

    async def facet(self, view: View, body: models.FacetRequest, timeout: float) -> dict[str, Any]:
        """Qdrant's ``{"hits": [...]}``: the ``limit`` most frequent values, counted once per
        point over the library."""
        limit = checked_size("limit", body.limit, 10, 1)
        checked_path("key", body.key)
        exact = bool(body.exact)
        counts = await self._facet_counts(view, body, None, timeout)
        stale = await self.census(view, timeout, needed=exact)
        if stale:
            for value, count in (await self._facet_counts(view, body, stale, timeout)).items():
                counts[value] -= count
        hits = [
            models.FacetValueHit(value=value[1], count=count)
            for value, count in counts.items()
            if count > 0
        ]
        hits.sort(key=facet_order)
        return {"hits": [hit.model_dump(mode="json") for hit in hits[:limit]]}

    async def _facet_counts(
        self, view: View, body: models.FacetRequest, stale: Stale | None, timeout: float
    ) -> dict[tuple[int, Any], int]:
        """Every value's count summed over the homes (over the ``stale`` copies only, if given)."""

        def operation(route: DomainRoute) -> Callable[[QdrantPort], list[models.FacetValueHit]]:
            ids = stale.get(route.key) if stale is not None else None
            user = _among(body.filter, ids) if ids is not None else body.filter
            request = models.FacetRequest(
                key=body.key,
                filter=home_filter(route, user),
                limit=MAX_FACET_VALUES,
                exact=body.exact,
            )

            def run(port: QdrantPort) -> list[models.FacetValueHit]:
                if stale is not None and not ids:
                    return []
                return port.facet(route.collection, request)

            return run

        summed: dict[tuple[int, Any], int] = {}
        for route, hits in await every_home(self.state.upstream, view, operation, timeout, "facet"):
            if len(hits) >= MAX_FACET_VALUES:
                raise ApiError(
                    400,
                    f"Bad request: {body.key!r} has more than {MAX_FACET_VALUES:,} distinct values "
                    f"in {route.key}; the library's most frequent values cannot be ranked exactly "
                    "without every count. Narrow the filter so that fewer values match",
                )
            for hit in hits:
                value = (facet_order(hit)[1], hit.value)
                summed[value] = summed.get(value, 0) + hit.count
        return summed


def _stale_copies(homes: list[tuple[DomainRoute, list[tuple[PointId, Any]]]]) -> Stale:
    """The live copies that are not the library's points: older than the newest copy of their
    id, hidden by a tombstone at least as new, or a second copy at the newest version."""
    keeper: dict[PointId, tuple[int, bool, str]] = {}  # id -> newest version, deleted, home
    for route, listed in homes:
        for point_id, payload in listed:
            copy = (version_of(payload), is_tombstone(payload), route.key)
            held = keeper.get(point_id)
            if (
                held is None
                or copy[0] > held[0]
                or (copy[0] == held[0] and held[1] and not copy[1])
            ):
                keeper[point_id] = copy
    stale: Stale = {}
    for route, listed in homes:
        for point_id, payload in listed:
            if is_tombstone(payload):
                continue  # never counted: every read leaves tombstones out
            version, deleted, home = keeper[point_id]
            if deleted or version_of(payload) < version or home != route.key:
                stale.setdefault(route.key, []).append(point_id)
    return stale


def _among(user: models.Filter | None, ids: list[PointId]) -> models.Filter:
    only = models.Filter(must=[models.HasIdCondition(has_id=list(ids))])
    return only if user is None else models.Filter(must=[user, only])
