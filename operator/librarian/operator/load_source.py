"""Reading the query load a policy judges: the routers' per-domain figures.

Why this exists: only the routers see the queries — how many reach each
domain and how long the domain's cluster takes to answer. A policy names its
routers (``spec.loadSource.routerUrls``); this module asks each for
``GET /librarian/status`` with a timeout and sums what they saw (queries per
second add up across replicas, the p95 latency is the worst replica's, the
online recall estimate the lowest).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from librarian.kube.client import USER_AGENT

__all__ = ["DomainTraffic", "LoadSourceUnreachable", "RouterLoad", "fetch_router_load"]


class LoadSourceUnreachable(Exception):
    """A router did not answer or answered something that is not its load report."""


@dataclass(frozen=True)
class DomainTraffic:
    qps: float = 0.0
    p95_ms: float | None = None
    queries: int = 0


@dataclass(frozen=True)
class RouterLoad:
    domains: dict[str, DomainTraffic] = field(default_factory=dict)
    routers: int = 0
    estimated_recall: float | None = None  # from the routers' shadow queries


async def _fetch(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    endpoint = url.rstrip("/") + "/librarian/status"
    try:
        async with session.get(endpoint, headers={"User-Agent": USER_AGENT}) as response:
            if response.status != 200:
                raise LoadSourceUnreachable(f"{endpoint} answered HTTP {response.status}")
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise LoadSourceUnreachable(
            f"router {endpoint} is unreachable ({type(error).__name__}); check "
            "spec.loadSource.routerUrls and that the router runs"
        ) from None
    result = data.get("result") if isinstance(data, dict) else None  # Qdrant's envelope
    data = result if isinstance(result, dict) else {}
    load = data.get("load")
    if not isinstance(load, dict) or not isinstance(load.get("domains"), list):
        raise LoadSourceUnreachable(f"{endpoint} did not return a load report")
    recall = (data.get("quality") or {}).get("estimatedRecall")
    return {**load, "estimatedRecall": recall}


def _merge(reports: Sequence[dict[str, Any]]) -> RouterLoad:
    merged: dict[str, DomainTraffic] = {}
    for report in reports:
        for entry in report["domains"]:
            domain = str(entry.get("id"))
            seen = merged.get(domain, DomainTraffic())
            p95 = entry.get("p95Ms")
            worst = [v for v in (seen.p95_ms, p95) if isinstance(v, int | float)]
            merged[domain] = DomainTraffic(
                qps=seen.qps + float(entry.get("qps") or 0.0),
                p95_ms=max(worst) if worst else None,
                queries=seen.queries + int(entry.get("queries") or 0),
            )
    recalls = [
        float(r["estimatedRecall"])
        for r in reports
        if isinstance(r.get("estimatedRecall"), int | float)
    ]
    return RouterLoad(merged, len(reports), min(recalls) if recalls else None)


async def fetch_router_load(urls: Sequence[str], *, timeout_s: float = 5.0) -> RouterLoad:
    """Every router's per-domain load, summed; raises :class:`LoadSourceUnreachable`."""
    if not urls:
        return RouterLoad()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        reports = await asyncio.gather(*(_fetch(session, url) for url in urls))
    return _merge(reports)
