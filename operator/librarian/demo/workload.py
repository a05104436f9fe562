"""The demo's last act: the router over the specialized library, driven by the official client.

Why this exists: ``make demo`` should show the whole product, so after the
operator has specialized every domain, a router is started on the library the
DomainMap and its ClusterSpecializations describe, and a query workload runs
through ``qdrant-client`` (async). Recall is measured against exhaustive search
over every point, next to how many domains each query asked and the latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web
from qdrant_client import AsyncQdrantClient

from librarian.qdrant.fleet import ClusterConfig, Fleet
from librarian.router.library import LibraryDefinition
from librarian.router.server import RouterConfig, RouterState, create_app
from librarian.settings import OrchestratorSettings

__all__ = ["RouterReport", "run_router_workload"]


@dataclass(frozen=True)
class RouterReport:
    queries: int
    recall_at_10: float
    domains: int
    specialized: int
    mean_domains_probed: float
    touched_share: float
    p50_ms: float
    p95_ms: float
    estimated_recall: float | None
    cache_hit_rate: float
    routing: dict[str, Any]


async def run_router_workload(
    definition: LibraryDefinition,
    clusters: Sequence[ClusterConfig],
    ids: Sequence[int],
    vectors: npt.NDArray[np.float32],
    *,
    queries: int = 300,
    seed: int = 0,
) -> RouterReport:
    """Serve ``definition`` on a local port and run ``queries`` perturbed-point queries through it."""

    async def loader() -> LibraryDefinition:
        return definition

    settings = OrchestratorSettings.model_validate({"shadow_fraction": 0.2})
    state = RouterState(
        RouterConfig(Fleet(clusters), definition.default_cluster, loader, settings, seed=seed)
    )
    runner = web.AppRunner(create_app(state, reload_in_background=False), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = AsyncQdrantClient(url=url, timeout=60, check_compatibility=False)
    try:
        rng = np.random.default_rng(seed)
        data = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        picked = data[rng.choice(len(data), queries, replace=False)]
        asked = picked + rng.normal(scale=0.03, size=picked.shape).astype(np.float32)
        asked /= np.linalg.norm(asked, axis=1, keepdims=True)
        truth = np.argsort(-(asked @ data.T), axis=1)[:, :10]
        id_array = np.asarray(ids)
        recalls, latencies, probed = [], [], []
        for row, top in zip(asked, truth, strict=True):
            started = time.perf_counter()
            answer = await client.query_points(definition.name, query=row.tolist(), limit=10)
            latencies.append(time.perf_counter() - started)
            recalls.append(len({p.id for p in answer.points} & set(id_array[top].tolist())) / 10)
            library = state.library
            if library is not None:
                probed.append(len(library.router.decide(row).units))
        for row in asked[:50]:  # a repeated burst: served from the cache
            await client.query_points(definition.name, query=row.tolist(), limit=10)
        await state.drain()
        library = state.library
        assert library is not None
        return RouterReport(
            queries=queries,
            recall_at_10=float(np.mean(recalls)),
            domains=len(library.domains),
            specialized=sum(1 for d in library.domains if d.specialized),
            mean_domains_probed=float(np.mean(probed)),
            touched_share=state.touched_share or 0.0,
            p50_ms=float(np.percentile(latencies, 50) * 1e3),
            p95_ms=float(np.percentile(latencies, 95) * 1e3),
            estimated_recall=state.estimator.estimate,
            cache_hit_rate=state.cache.hit_rate,
            routing=library.router.describe(),
        )
    finally:
        await client.close()
        await runner.cleanup()
        await asyncio.to_thread(state.config.fleet.close)
