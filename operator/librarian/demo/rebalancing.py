"""The demo's rebalancing act: one cluster runs hot, the policy moves domains off it.

Why this exists: ``make demo`` should show adaptive rebalancing working, not
just described. With the router serving the specialized library, queries are
skewed toward the domains of one cluster; the example RebalancePolicy is
applied in ``auto`` mode pointing at that router; the operator reads the load,
proposes moves, executes them through ClusterSpecializations and their
migration Jobs (the demo plays the Job controller), and the router follows.
The same skewed queries run again, and the load per cluster is compared.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml
from qdrant_client import AsyncQdrantClient
from rich.console import Console

from librarian.contracts.api import REBALANCEPOLICIES, resource
from librarian.demo.workload import ServedRouter
from librarian.local.emulator import EmulatedCluster
from librarian.local.job_controller import CommandRunner, play_job_controller
from librarian.operator.policy_state import APPROVAL_ANNOTATION

__all__ = ["RebalanceReport", "run_rebalancing"]

POLICIES = resource(REBALANCEPOLICIES)
HOT_SHARE = 0.85  # of the skewed queries, the share aimed at the hot cluster's domains


@dataclass
class RebalanceReport:
    """The fleet's load as the policy judged it before the moves and after them."""

    hot_cluster: str
    before: dict[str, Any]  # the policy's load figures (status.load) when it proposed
    after: dict[str, Any]  # and when it analysed the same queries after the moves
    calls_before: dict[str, int]  # cluster -> calls the router made during each burst
    calls_after: dict[str, int]
    status: dict[str, Any]
    moves: list[dict[str, Any]] = field(default_factory=list)


async def _calls_per_domain(router: ServedRouter) -> dict[str, tuple[str, int]]:
    snapshot = router.state.load.snapshot()
    return {d["id"]: (d["cluster"], int(d["queries"])) for d in snapshot["domains"]}


async def _burst(
    router: ServedRouter, queries: npt.NDArray[np.float32], clusters: Sequence[str]
) -> dict[str, int]:
    """Run the queries; the router's calls to each cluster meanwhile (from its load meter)."""
    library = router.state.library
    assert library is not None
    before = await _calls_per_domain(router)
    client = AsyncQdrantClient(url=router.url, timeout=60, check_compatibility=False)
    try:
        for row in queries:
            await client.query_points(library.name, query=row.tolist(), limit=10)
    finally:
        await client.close()
    after = await _calls_per_domain(router)
    calls: Counter[str] = Counter(dict.fromkeys(clusters, 0))
    for domain, (cluster, total) in after.items():
        calls[cluster] += total - before.get(domain, (cluster, 0))[1]
    return dict(calls)


def skewed_queries(
    router: ServedRouter,
    vectors: npt.NDArray[np.float32],
    labels: Mapping[int, str],
    ids: Sequence[int],
    hot: str,
    *,
    count: int,
    seed: int = 1,
) -> npt.NDArray[np.float32]:
    """``count`` perturbed points, ``HOT_SHARE`` of them from domains served by cluster ``hot``."""
    library = router.state.library
    assert library is not None
    homes = {d.domain_id: d.cluster for d in library.domains}
    rows = np.arange(len(ids))
    on_hot = np.array([homes.get(labels.get(i, ""), "") == hot for i in ids])
    rng = np.random.default_rng(seed)
    n_hot = int(count * HOT_SHARE)
    picked = np.concatenate(
        [
            rng.choice(rows[on_hot], n_hot, replace=True),
            rng.choice(rows[~on_hot], count - n_hot, replace=True),
        ]
    )
    rng.shuffle(picked)
    data = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    asked = data[picked] + rng.normal(scale=0.03, size=(count, data.shape[1])).astype(np.float32)
    normalized: npt.NDArray[np.float32] = asked / np.linalg.norm(asked, axis=1, keepdims=True)
    return normalized


async def run_rebalancing(
    api: EmulatedCluster,
    router: ServedRouter,
    *,
    policy_path: Path,
    namespace: str,
    vectors: npt.NDArray[np.float32],
    labels: Mapping[int, str],
    ids: Sequence[int],
    console: Console,
    run_command: CommandRunner,
    timeout_s: float = 300.0,
    queries: int = 400,
) -> RebalanceReport:
    library = router.state.library
    assert library is not None
    served = Counter(d.cluster for d in library.domains)
    policy = yaml.safe_load(policy_path.read_text())
    name = policy["metadata"]["name"]
    capacity = {
        c["cluster"]: float(c.get("maxQueriesPerSecond") or "inf")
        for c in policy["spec"].get("capacity") or []
    }
    # The skew aims at the serving cluster with the least capacity: it runs hot first.
    hot = min(served, key=lambda c: (capacity.get(c, float("inf")), -served[c], c))
    clusters = sorted({*served, *(c["cluster"] for c in policy["spec"].get("capacity") or [])})
    asked = skewed_queries(router, vectors, labels, ids, hot, count=queries)
    window = router.state.load.window_s
    calls_before = await _burst(router, asked, clusters)
    burst_ended = time.monotonic()
    console.print(
        f"   {queries} queries, {HOT_SHARE:.0%} of them about the domains on '{hot}': "
        + ", ".join(f"{c} {n:,} calls" for c, n in calls_before.items())
    )
    spec = policy["spec"]
    spec["mode"] = "auto"
    spec["loadSource"] = {"routerUrls": [router.url]}
    spec.setdefault("constraints", {})["maintenanceWindows"] = []  # the demo runs now
    spec.setdefault("execution", {})["gracePeriod"] = "2s"
    console.print(
        f"   Applying {policy_path} with mode auto, the demo router as its load source "
        "and no maintenance window"
    )
    await api.create(policy)
    status, before = await _follow_policy(api, namespace, name, timeout_s, console, run_command)
    await _router_follows(router, status)
    # The same queries again, once the router's load window has forgotten the first burst.
    await asyncio.sleep(max(0.0, window - (time.monotonic() - burst_ended)))
    calls_after = await _burst(router, asked, clusters)
    after = await _analysed_again(api, namespace, name, timeout_s)
    return RebalanceReport(
        hot, before, after, calls_before, calls_after, status, list(status.get("history") or [])
    )


async def _router_follows(router: ServedRouter, status: Mapping[str, Any]) -> None:
    """Wait until the router serves every moved domain from its new cluster."""
    moved = {m["domain"]: m["target"] for m in status.get("history") or [] if m["state"] == "Done"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        library = router.state.library
        homes = {d.domain_id: d.cluster for d in library.domains} if library else {}
        if all(homes.get(domain) == cluster for domain, cluster in moved.items()):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the router did not follow the moves within 30s")


async def _analysed_again(
    api: EmulatedCluster, namespace: str, name: str, timeout_s: float
) -> dict[str, Any]:
    """Ask the policy for a fresh analysis (the refresh annotation) and return its load figures."""
    obj = await api.get(POLICIES, namespace, name)
    previous = ((obj or {}).get("status") or {}).get("lastAnalysis")
    await api.patch(
        POLICIES, namespace, name, {"metadata": {"annotations": {APPROVAL_ANNOTATION: "refresh"}}}
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        obj = await api.get(POLICIES, namespace, name)
        status = (obj or {}).get("status") or {}
        if status.get("lastAnalysis") and status.get("lastAnalysis") != previous:
            return dict(status.get("load") or {})
        await asyncio.sleep(0.3)
    raise RuntimeError(f"RebalancePolicy {name} did not analyse again within {timeout_s:.0f}s")


async def _follow_policy(
    api: EmulatedCluster,
    namespace: str,
    name: str,
    timeout_s: float,
    console: Console,
    run_command: CommandRunner,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Play the Job controller until the policy has nothing left to move; print what it does.

    Returns the last status and the load figures of its first proposal.
    """
    deadline = time.monotonic() + timeout_s
    done: set[str] = set()
    said: set[str] = set()
    first: dict[str, Any] = {}
    while time.monotonic() < deadline:
        await play_job_controller(api, namespace, done, run_command)
        obj = await api.get(POLICIES, namespace, name)
        status = (obj or {}).get("status") or {}
        proposal = status.get("proposal")
        if status.get("load") and not first:
            first = dict(status["load"])
        if proposal and proposal.get("id") not in said:
            said.add(proposal["id"])
            console.print(
                f"   Proposal {proposal['id']}: {len(proposal['moves'])} move(s), "
                f"{proposal['pointsMoved']:,} points; expected max/mean load "
                f"{proposal['before']['maxMeanRatio']:.2f} -> "
                f"{proposal['after']['maxMeanRatio']:.2f}"
            )
        for move in status.get("history") or []:
            key = f"{move['domain']}:{move['state']}"
            if key not in said:
                said.add(key)
                console.print(
                    f"   Move {move['domain']} {move['source']} -> {move['target']}: "
                    f"{move['state']} — {move.get('message', '')}"
                )
        if status.get("phase") == "Failed":
            raise RuntimeError(f"RebalancePolicy {name} failed: {status.get('message')}")
        settled = status.get("phase") in ("Balanced", "Observing")
        if status.get("lastAnalysis") and settled and not status.get("moves"):
            return status, first
        await asyncio.sleep(0.3)
    raise RuntimeError(f"RebalancePolicy {name} did not settle within {timeout_s:.0f}s")
