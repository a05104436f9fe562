"""The demo's query act: the library served by ``librarian up``, driven by the official client.

Why this exists: ``make demo`` should show the library answering as any Qdrant
would. Once every domain is served from its specialized collection, a query
workload runs through ``qdrant-client`` (async) against the address ``up``
serves; recall is measured against exhaustive search over every point, next to
how many domains each query asked (the router's own ``/librarian/predict``)
and the latency a client sees. The router's estimate of its recall, its cache
and its routing are read from ``/librarian/status``, the report a rebalance
policy reads too: the demo knows the router only through its address.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
from qdrant_client import AsyncQdrantClient

from librarian.contracts.router_report import LoadReport, RouterStatus

__all__ = [
    "RouterReport",
    "perturbed",
    "query_client",
    "router_load",
    "router_status",
    "run_router_workload",
]


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


def query_client(url: str) -> AsyncQdrantClient:
    """The official async client on ``url`` (the router speaks Qdrant's REST API)."""
    return AsyncQdrantClient(url=url, timeout=60, check_compatibility=False)


async def _result(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Any:
    async with http.request(method, url, **kwargs) as response:
        if response.status != 200:
            raise RuntimeError(f"{method} {url}: HTTP {response.status}: {await response.text()}")
        return (await response.json())["result"]


async def router_status(http: aiohttp.ClientSession, url: str, library: str) -> RouterStatus:
    """``GET /librarian/status`` of the router serving ``library``."""
    result = await _result(http, "GET", f"{url}/librarian/status", params={"library": library})
    return RouterStatus.model_validate(result)


async def router_load(http: aiohttp.ClientSession, url: str, library: str) -> LoadReport:
    """``GET /librarian/load`` of the router serving ``library``."""
    result = await _result(http, "GET", f"{url}/librarian/load", params={"library": library})
    return LoadReport.model_validate(result)


def perturbed(
    vectors: npt.NDArray[np.float32], rows: npt.NDArray[np.int_], rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Unit queries near the given points: each point plus a little noise."""
    data = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    asked = data[rows] + rng.normal(scale=0.03, size=(len(rows), data.shape[1])).astype(np.float32)
    normalized: npt.NDArray[np.float32] = asked / np.linalg.norm(asked, axis=1, keepdims=True)
    return normalized


async def run_router_workload(
    http: aiohttp.ClientSession,
    url: str,
    library: str,
    ids: Sequence[int],
    vectors: npt.NDArray[np.float32],
    *,
    queries: int = 300,
    repeated: int = 50,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> RouterReport:
    """``queries`` perturbed-point queries through the client, then ``repeated`` of them again.

    The repeated ones are answered from the router's cache; recall and
    latency are those of the first ``queries``. ``progress`` is told how many of them have
    been answered, after each.
    """
    rng = np.random.default_rng(seed)
    asked = perturbed(vectors, rng.choice(len(vectors), queries, replace=False), rng)
    data = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = np.argsort(-(asked @ data.T), axis=1)[:, :10]
    id_array = np.asarray(ids)
    recalls, latencies, probed = [], [], []
    client = query_client(url)
    try:
        for row, top in zip(asked, truth, strict=True):
            started = time.perf_counter()
            answer = await client.query_points(library, query=row.tolist(), limit=10)
            latencies.append(time.perf_counter() - started)
            recalls.append(len({p.id for p in answer.points} & set(id_array[top].tolist())) / 10)
            decision = await _result(
                http,
                "POST",
                f"{url}/librarian/predict",
                params={"library": library},
                json={"vector": row.tolist()},
            )
            probed.append(len(decision["domains"]))
            if progress is not None:
                progress(len(probed))
        for row in asked[:repeated]:  # a repeated burst: served from the cache
            await client.query_points(library, query=row.tolist(), limit=10)
    finally:
        await client.close()
    status = await router_status(http, url, library)
    if status.library is None:
        raise RuntimeError(f"the router of {library} has no library: {status.load_error}")
    domains, efficiency = status.library.domains, status.routing_efficiency
    return RouterReport(
        queries=queries,
        recall_at_10=float(np.mean(recalls)),
        domains=len(domains),
        specialized=sum(1 for d in domains if d.specialized),
        mean_domains_probed=float(np.mean(probed)),
        touched_share=0.0 if efficiency is None else 1.0 - efficiency,
        p50_ms=float(np.percentile(latencies, 50) * 1e3),
        p95_ms=float(np.percentile(latencies, 95) * 1e3),
        estimated_recall=status.quality.estimated_recall,
        cache_hit_rate=status.cache.hit_rate,
        routing=status.library.routing,
    )
