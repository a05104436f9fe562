"""What the router says about itself: status, load, health, metrics, the library's collection info.

Why this exists: operators of the library, Kubernetes probes, Prometheus and
rebalance policies each ask the router how it is doing. ``/librarian/status``
and ``/librarian/load`` serve the typed report of
:mod:`librarian.contracts.router_report` (the one a policy parses);
``/collections/{library}`` answers with a collection info made up from the
domains (points summed, one "segment" and "shard" per domain), so tools that
inspect a collection before querying it work on the library too.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from librarian.contracts.router_report import (
    CacheReport,
    DomainStatus,
    LibraryStatus,
    OutboxReport,
    QualityReport,
    RouterStatus,
)
from librarian.router.library import DomainRoute, Library, View
from librarian.router.qdrant_api import ok, request_timeout, vectors_config_json
from librarian.router.state import RouterState
from librarian.storage.port import QdrantPort

__all__ = ["StatusEndpoints", "collection_info", "router_status"]


def _library_status(state: RouterState, library: Library) -> LibraryStatus:
    return LibraryStatus(
        name=library.name,
        version=library.definition.version,
        vector_size=library.vector_size,
        distance=library.distance,
        routing=library.router.describe(),
        domains=[
            DomainStatus(
                id=r.domain_id,
                name=r.name,
                cluster=r.cluster,
                collection=r.collection,
                points=r.size,
                specialized=r.specialized,
                circuit=state.breaker.state(r.cluster),
            )
            for r in library.domains
        ],
    )


def authentication_note(state: RouterState) -> str:
    """How callers are authenticated (said loudly when they are not)."""
    keys = state.config.keys
    if keys.configured:
        return "api-key" + (" and read-only api-key" if keys.read_only else "")
    if state.config.insecure:
        return "off: --insecure, anyone who reaches the router can read and write"
    return "off: loopback only"


def router_status(state: RouterState) -> RouterStatus:
    """The router's report: readiness, cache, circuits, quality, load and the library served."""
    library = state.library
    estimator = state.estimator
    return RouterStatus(
        ready=library is not None,
        load_error=state.load_error,
        cache=CacheReport(
            entries=len(state.cache),
            hit_rate=round(state.cache.hit_rate, 4),
            enabled=state.cache.enabled,
        ),
        circuits=state.breaker.states(),
        quality=QualityReport(
            estimated_recall=estimator.estimate,
            shadow_queries=estimator.compared,
            shadow_fraction=estimator.fraction,
            learned_fusion_fitted=bool(estimator.model and estimator.model.fitted),
        ),
        outbox=OutboxReport.model_validate(state.outbox.summary()),
        fences=state.fences(),
        writes_refused=state.write_refusal(),
        routing_efficiency=None
        if state.touched_share is None
        else round(1 - state.touched_share, 4),
        fusion=state.config.settings.fusion_algorithm,
        authentication=authentication_note(state),
        load=state.load.report(),
        library=_library_status(state, library) if library is not None else None,
    )


async def collection_info(state: RouterState, view: View, timeout: float) -> dict[str, Any]:
    """Qdrant's collection info for what ``view`` addresses (the library: summed over domains)."""

    def operation(route: DomainRoute) -> Callable[[QdrantPort], int]:
        if route.labelled_slice:
            return lambda port: port.count(route.collection, count_filter=route.read_filter())
        return lambda port: port.collection_info(route.collection).points_count

    result = await state.upstream.fan_out(view, list(range(len(view.routes))), operation, timeout)
    points = sum(result.results)
    spec = view.spec
    if spec is None:
        first = view.routes[0]
        port = state.config.fleet.get(first.cluster)
        spec = (await asyncio.to_thread(port.collection_info, first.collection)).spec
    return {
        "status": "green" if not result.failures else "yellow",
        "optimizer_status": "ok",
        "points_count": points,
        "indexed_vectors_count": points,
        "segments_count": len(view.routes),
        "config": {
            "params": {
                **vectors_config_json(spec),  # the homes' real vectors, every one of them
                "shard_number": len(view.routes),
            },
            "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
            "optimizer_config": {"default_segment_number": 0, "flush_interval_sec": 5},
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
        },
        "payload_schema": {},
    }


class StatusEndpoints:
    """aiohttp handlers of the service and status endpoints."""

    def __init__(self, state: RouterState) -> None:
        self.state = state

    async def root(self, request: web.Request) -> web.Response:
        client = importlib.metadata.version("qdrant-client").split(".")
        return web.json_response(
            {
                "title": "qdrant-librarian router",
                "version": f"{client[0]}.{client[1]}.0",
                "librarian_version": importlib.metadata.version("qdrant-librarian"),
            }
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="healthz check passed")

    async def readyz(self, request: web.Request) -> web.Response:
        if self.state.library is None:
            return web.Response(
                status=503, text=f"not ready: {self.state.load_error or 'library not loaded yet'}"
            )
        return web.Response(text="all shards are ready")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.state.metrics.render(), content_type="text/plain", charset="utf-8"
        )

    async def status(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        return ok(router_status(self.state).to_json(), started)

    async def load(self, request: web.Request) -> web.Response:
        """Per-domain and per-cluster query load seen by this router (what rebalancing reads)."""
        started = time.perf_counter()
        return ok(self.state.load.report().to_json(), started)

    async def collections(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        names: list[str] = []
        if self.state.library is not None:
            names.append(self.state.library.name)
        port = self.state.config.fleet.get(self.state.config.default_cluster)
        lister = getattr(port, "list_collections", None)
        if lister is not None:
            found = self.state.visible_collections(await asyncio.to_thread(lister))
            names += [n for n in found if n not in names]
        return ok({"collections": [{"name": n} for n in names]}, started)

    async def collection(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        view = await self.state.view(request.match_info["name"])
        timeout = request_timeout(request, self.state.config.settings.timeout)
        return ok(await collection_info(self.state, view, timeout), started)
