"""Reading the query load a policy judges: the routers' per-domain figures.

Why this exists: only the routers see the queries — how many reach each
domain and how long the domain's cluster takes to answer. A policy names its
routers (``spec.loadSource.routerUrls``); this module asks each for
``GET /librarian/status`` with a timeout and sums what they saw (queries per
second add up across replicas, the p95 latency is the worst replica's, the
online recall estimate the lowest). The answer is validated with the report
model the router serves (:mod:`librarian.contracts.router_report`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import ValidationError

from librarian.contracts.router_keys import ENV_API_KEY, ENV_READ_ONLY_API_KEY
from librarian.contracts.router_report import RouterStatus
from librarian.kube.client import USER_AGENT
from librarian.storage.tls import qdrant_ssl_context

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


async def _fetch(
    session: aiohttp.ClientSession, url: str, library: str | None = None
) -> RouterStatus:
    endpoint = url.rstrip("/") + "/librarian/status"
    params = {"library": library} if library else None
    try:
        async with session.get(endpoint, params=params) as response:
            if response.status in (401, 403):
                raise LoadSourceUnreachable(
                    f"{endpoint} answered HTTP {response.status}: give the operator the "
                    f"router's key ({ENV_READ_ONLY_API_KEY} or {ENV_API_KEY})"
                )
            if response.status != 200:
                raise LoadSourceUnreachable(f"{endpoint} answered HTTP {response.status}")
            try:
                data = await response.json(content_type=None)
            except ValueError:
                raise LoadSourceUnreachable(
                    f"{endpoint} did not return a load report (the body is not JSON)"
                ) from None
    except (aiohttp.ClientError, TimeoutError) as error:
        raise LoadSourceUnreachable(
            f"router {endpoint} is unreachable ({type(error).__name__}); check "
            "spec.loadSource.routerUrls and that the router runs"
        ) from None
    return _report(endpoint, data)


def _report(endpoint: str, data: Any) -> RouterStatus:
    """The status report inside Qdrant's envelope; names what is wrong with a malformed one."""
    result = data.get("result") if isinstance(data, dict) else None
    try:
        return RouterStatus.model_validate(result if isinstance(result, dict) else {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'result'}: {e['msg']}"
            for e in error.errors()[:3]
        )
        raise LoadSourceUnreachable(
            f"{endpoint} did not return a load report ({problems})"
        ) from None


def _merge(reports: Sequence[RouterStatus]) -> RouterLoad:
    merged: dict[str, DomainTraffic] = {}
    for report in reports:
        for entry in report.load.domains:
            seen = merged.get(entry.id, DomainTraffic())
            worst = [v for v in (seen.p95_ms, entry.p95_ms) if v is not None]
            merged[entry.id] = DomainTraffic(
                qps=seen.qps + entry.qps,
                p95_ms=max(worst) if worst else None,
                queries=seen.queries + entry.queries,
            )
    recalls = [
        r.quality.estimated_recall for r in reports if r.quality.estimated_recall is not None
    ]
    return RouterLoad(merged, len(reports), min(recalls) if recalls else None)


async def fetch_router_load(
    urls: Sequence[str],
    *,
    timeout_s: float = 5.0,
    api_key: str | None = None,
    library: str | None = None,
) -> RouterLoad:
    """Every router's per-domain load, summed; raises :class:`LoadSourceUnreachable`.

    ``api_key``: sent as ``api-key`` to routers that authenticate their callers.
    ``library``: the DomainMap (NAMESPACE/NAME) whose load is read, sent as
    ``?library=``: a router of several libraries answers for that one (a router of
    one ignores it).
    """
    if not urls:
        return RouterLoad()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"User-Agent": USER_AGENT, **({"api-key": api_key} if api_key else {})}
    # Routers served over https with a certificate of the internal CA (LIBRARIAN_CA_BUNDLE)
    # are verified as Qdrant clusters are: that CA besides the public ones.
    context = qdrant_ssl_context() if any(u.startswith("https://") for u in urls) else None
    connector = aiohttp.TCPConnector(ssl=context) if context is not None else None
    async with aiohttp.ClientSession(
        timeout=timeout, headers=headers, connector=connector
    ) as session:
        reports = await asyncio.gather(*(_fetch(session, url, library) for url in urls))
    return _merge(reports)
