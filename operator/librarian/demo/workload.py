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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web
from qdrant_client import AsyncQdrantClient

from librarian.router import RouterConfig, RouterState, create_app
from librarian.router.library import LibraryDefinition
from librarian.settings import OrchestratorSettings
from librarian.storage.fleet import ClusterConfig, Fleet

__all__ = ["RouterReport", "ServedRouter", "run_router_workload", "serve_router"]


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


@dataclass
class ServedRouter:
    """A router serving a library on a local port, and its state (for the demo's figures)."""

    state: RouterState
    url: str


@asynccontextmanager
async def serve_router(
    loader: Callable[[], Awaitable[LibraryDefinition | None]],
    clusters: Sequence[ClusterConfig],
    default_cluster: str,
    *,
    reload_interval_s: float = 1.0,
    load_window_s: float = 60.0,
    seed: int = 0,
) -> AsyncIterator[ServedRouter]:
    """Serve the library ``loader`` describes until the block ends, re-reading it as it changes."""
    settings = OrchestratorSettings.model_validate(
        {"shadow_fraction": 0.2, "reload_interval": reload_interval_s}
    )
    state = RouterState(
        RouterConfig(
            Fleet(clusters),
            default_cluster,
            loader,
            settings,
            seed=seed,
            load_window_s=load_window_s,
        )
    )
    await state.reload()
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield ServedRouter(state, f"http://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()
        await asyncio.to_thread(state.config.fleet.close)


async def run_router_workload(
    router: ServedRouter,
    ids: Sequence[int],
    vectors: npt.NDArray[np.float32],
    *,
    queries: int = 300,
    seed: int = 0,
) -> RouterReport:
    """Run ``queries`` perturbed-point queries through the router with the official async client."""
    state = router.state
    library = state.library
    if library is None:
        raise RuntimeError(f"the router has no library: {state.load_error}")
    client = AsyncQdrantClient(url=router.url, timeout=60, check_compatibility=False)
    name = library.name
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
            answer = await client.query_points(name, query=row.tolist(), limit=10)
            latencies.append(time.perf_counter() - started)
            recalls.append(len({p.id for p in answer.points} & set(id_array[top].tolist())) / 10)
            probed.append(len(library.router.decide(row).units))
        for row in asked[:50]:  # a repeated burst: served from the cache
            await client.query_points(name, query=row.tolist(), limit=10)
        await state.drain()
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
