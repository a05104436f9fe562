"""What the router says about itself: status, load, health and metrics.

Why this exists: operators of the library, Kubernetes probes, Prometheus and
rebalance policies each ask the router how it is doing. ``/librarian/status``
and ``/librarian/load`` serve the typed report of
:mod:`librarian.contracts.router_report` (the one a policy parses);
the collection endpoints are in :mod:`~librarian.router.collections`.
"""

from __future__ import annotations

import importlib.metadata
import time
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
from librarian.router.generation import DETECTS
from librarian.router.library import DomainRoute, Library
from librarian.router.qdrant_api import ok
from librarian.router.state import RouterState

__all__ = ["QDRANT_TITLE", "StatusEndpoints", "router_status"]


def _routing_report(library: Library) -> dict[str, Any]:
    """The routing model over domains, with the one over partitions (when a home is sharded
    by partition) under ``partitions``: each says its calibrated coverage and the recall,
    share of points touched and units per query its calibration expects."""
    report = library.router.describe()
    if library.partition_routing is not None:
        report["partitions"] = library.partition_routing.router.describe()
    return report


def _library_status(state: RouterState, library: Library) -> LibraryStatus:
    return LibraryStatus(
        name=library.name,
        version=library.definition.version,
        vector_size=library.vector_size,
        distance=library.distance,
        routing=_routing_report(library),
        domains=[
            DomainStatus(
                id=r.domain_id,
                name=r.name,
                cluster=r.cluster,
                collection=r.collection,
                points=r.size,
                specialized=r.specialized,
                circuit=state.breaker.state(r.cluster),
                partitions=[p.id for p in r.partitions],
                partition_layout=_partition_layout(library, r),
                sharded_by_partition=_partition_layout(library, r) == "shardKeys",
            )
            for r in library.domains
        ],
    )


def _partition_layout(library: Library, route: DomainRoute) -> str:
    """How a domain's home marks partitions: ``field``, ``shardKeys``, or ``""`` (not so)."""
    placement = library.placements.get(route.home) if route.specialized else None
    if placement is None:
        return ""
    return "field" if placement.by_field else "shardKeys"


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
            size_bytes=state.cache.size_bytes,
            settle_window_seconds=state.generations.settle_s,
            detects=DETECTS,
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


QDRANT_TITLE = "qdrant - vector search engine"
"""The service root's title, as Qdrant (and qdrant-client's local mode) answers it: clients
and tools identify a Qdrant server by it."""


class StatusEndpoints:
    """aiohttp handlers of the service and status endpoints."""

    def __init__(self, state: RouterState) -> None:
        self.state = state

    async def root(self, request: web.Request) -> web.Response:
        client = importlib.metadata.version("qdrant-client").split(".")
        return web.json_response(
            {
                "title": QDRANT_TITLE,
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
