"""The demo's rebalancing act: one cluster runs hot, the policy moves domains off it.

Why this exists: ``make demo`` should show adaptive rebalancing working, not
just described. With ``librarian up`` serving the specialized library, queries
are skewed toward the domains of one cluster; the example RebalancePolicy is
applied in ``auto`` mode with the address ``up`` serves as its load source; the
operator reads the router's load, proposes moves and executes them through
ClusterSpecializations and their migration Jobs (which ``up`` runs), and the
router follows. The same skewed queries run again, and the load per cluster is
compared: for that last analysis the demo switches the policy to ``observe``
(a new generation is analysed at once), so it judges the new placement
without starting more moves while the demo ends.

A policy judges the load as a rate over the router's sliding window, read
whenever the operator gets to it. So the skewed load is kept up — not fired
once — until the policy has read it: first for a whole window (so the window
holds this load only, not the queries before it), then until the analysis is
written, however long a busy machine makes the operator take. After the moves
the same again, before the policy is asked for a fresh analysis.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import yaml
from rich.console import Console
from rich.markup import escape

from librarian.contracts.api import REBALANCEPOLICIES, resource
from librarian.demo.workload import perturbed, query_client, router_load, router_status
from librarian.local.emulator import EmulatedCluster
from librarian.local.watch import ResourceWatch

__all__ = ["HOT_SHARE", "RebalanceReport", "RebalancingFailed", "SkewedLoad", "run_rebalancing"]

POLICIES = resource(REBALANCEPOLICIES)
HOT_SHARE = 0.85  # of the skewed queries, the share aimed at the hot cluster's domains
BUCKET_S = 1.0  # the router counts calls per second: a window spans up to one second more


class RebalancingFailed(RuntimeError):
    """The policy failed, or the router did not follow its moves."""


@dataclass
class RebalanceReport:
    """The fleet's load as the policy judged it before the moves and after them."""

    hot_cluster: str
    before: dict[str, Any]  # the policy's load figures (status.load) when it proposed
    after: dict[str, Any]  # and when it analysed the same queries after the moves
    calls_before: dict[str, int]  # cluster -> calls the router made during one pass
    calls_after: dict[str, int]
    status: dict[str, Any]  # once the moves were done
    moves: list[dict[str, Any]] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)  # its status after the last analysis


@dataclass
class SkewedLoad:
    """Passes of ``count`` queries near the library's points, ``HOT_SHARE`` of them on hot domains.

    Pass ``n`` is drawn with seed ``n``: the same pass number asks the same
    queries (before and after the moves), and successive passes differ, so the
    router's result cache does not answer them.
    """

    http: aiohttp.ClientSession
    url: str
    library: str
    vectors: npt.NDArray[np.float32]
    on_hot: npt.NDArray[np.bool_]  # per row: its domain is served by the hot cluster
    count: int

    def queries(self, seed: int) -> npt.NDArray[np.float32]:
        rows = np.arange(len(self.vectors))
        rng = np.random.default_rng(seed)
        n_hot = int(self.count * HOT_SHARE)
        picked = np.concatenate(
            [
                rng.choice(rows[self.on_hot], n_hot, replace=True),
                rng.choice(rows[~self.on_hot], self.count - n_hot, replace=True),
            ]
        )
        rng.shuffle(picked)
        return perturbed(self.vectors, picked, rng)

    async def run(self, seed: int, stop: asyncio.Event | None = None) -> None:
        """One pass through the official client (ended early once ``stop`` is set)."""
        client = query_client(self.url)
        try:
            for row in self.queries(seed):
                if stop is not None and stop.is_set():
                    return
                await client.query_points(self.library, query=row.tolist(), limit=10)
        finally:
            await client.close()

    async def counted(self, seed: int, clusters: Sequence[str]) -> dict[str, int]:
        """One pass, and the calls the router made to each cluster meanwhile (its load report)."""
        before = await self._calls_per_domain()
        await self.run(seed)
        after = await self._calls_per_domain()
        calls: Counter[str] = Counter(dict.fromkeys(clusters, 0))
        for domain, (cluster, total) in after.items():
            calls[cluster] += total - before.get(domain, (cluster, 0))[1]
        return dict(calls)

    async def _calls_per_domain(self) -> dict[str, tuple[str, int]]:
        report = await router_load(self.http, self.url, self.library)
        return {d.id: (d.cluster or "", d.queries) for d in report.domains}

    @asynccontextmanager
    async def kept_up(self, first_seed: int) -> AsyncIterator[None]:
        """Passes one after the other until the block ends (the one running is cut short)."""
        stop = asyncio.Event()

        async def passes() -> None:
            seed = first_seed
            while not stop.is_set():
                await self.run(seed, stop)
                seed += 1

        task = asyncio.ensure_future(passes())
        try:
            yield
        finally:
            stop.set()
            await task


async def _hold_for_a_window(started: float, window_s: float) -> None:
    """Keep the load up until the router's window has seen nothing else since ``started``.

    Not a stand-in for synchronisation: the rate a policy reads is measured
    over this window, so the window has to pass.
    """
    elapsed = asyncio.get_running_loop().time() - started
    await asyncio.sleep(max(0.0, window_s + BUCKET_S - elapsed))


def _analysed(status: dict[str, Any] | None) -> dict[str, Any] | None:
    return status if status and status.get("lastAnalysis") else None


def _policy_status(
    watch: ResourceWatch, namespace: str, name: str
) -> Callable[[], dict[str, Any] | None]:
    """A check of the policy's status: ``None`` while absent; a Failed phase raises."""

    def check() -> dict[str, Any] | None:
        obj = watch.get(POLICIES, namespace, name)
        if obj is None:
            return None
        status = dict(obj.get("status") or {})
        if status.get("phase") == "Failed":
            raise RebalancingFailed(f"RebalancePolicy {name} failed: {status.get('message')}")
        return status

    return check


async def run_rebalancing(
    api: EmulatedCluster,
    watch: ResourceWatch,
    http: aiohttp.ClientSession,
    url: str,
    library: str,
    *,
    policy_path: Path,
    namespace: str,
    vectors: npt.NDArray[np.float32],
    labels: Mapping[int, str],
    ids: Sequence[int],
    console: Console,
    queries: int = 400,
    timeout_s: float = 300.0,
) -> RebalanceReport:
    """Skew the load, apply the policy (auto, this router as its load source), follow it."""
    served_by = await router_status(http, url, library)
    assert served_by.library is not None
    homes = {d.id: d.cluster for d in served_by.library.domains}
    names = {d.id: d.name for d in served_by.library.domains}
    window = served_by.load.window_seconds
    served = Counter(homes.values())
    policy = yaml.safe_load(await asyncio.to_thread(policy_path.read_text))
    policy["metadata"]["namespace"] = namespace  # the DomainMap's, as kubectl apply -n would
    name = policy["metadata"]["name"]
    capacity = {
        c["cluster"]: float(c.get("maxQueriesPerSecond") or "inf")
        for c in policy["spec"].get("capacity") or []
    }
    # The skew aims at the serving cluster with the least capacity: it runs hot first.
    hot = min(served, key=lambda c: (capacity.get(c, float("inf")), -served[c], c))
    clusters = sorted({*served, *(c["cluster"] for c in policy["spec"].get("capacity") or [])})
    on_hot = np.array([homes.get(labels.get(i, ""), "") == hot for i in ids])
    load = SkewedLoad(http, url, library, vectors, on_hot, queries)
    loop = asyncio.get_running_loop()
    started = loop.time()
    calls_before = await load.counted(1, clusters)
    console.print(
        f"   {queries} queries, {HOT_SHARE:.0%} of them about the domains on '{hot}': "
        + ", ".join(f"{c} {n:,} calls" for c, n in calls_before.items())
    )
    spec = policy["spec"]
    spec["mode"] = "auto"
    spec["loadSource"] = {"routerUrls": [url]}
    spec.setdefault("constraints", {})["maintenanceWindows"] = []  # the demo runs now
    spec.setdefault("execution", {})["gracePeriod"] = "2s"
    policy_now = _policy_status(watch, namespace, name)
    async with load.kept_up(first_seed=2):
        await _hold_for_a_window(started, window)
        console.print(
            f"   Applying {policy_path} with mode auto, {url} (librarian up) as its load source "
            "and no maintenance window; the skewed load goes on until it has been analysed"
        )
        await api.create(policy)
        analysed = await watch.until(
            lambda: _analysed(policy_now()), timeout_s, f"RebalancePolicy {name} analysed"
        )
    before = dict(analysed.get("load") or {})
    status = await _follow_policy(watch, policy_now, name, timeout_s, console, names)
    await _router_follows(http, url, library, status, timeout_s)
    started = loop.time()
    calls_after = await load.counted(1, clusters)
    async with load.kept_up(first_seed=2):
        await _hold_for_a_window(started, window)
        verdict = await _judged_again(api, watch, policy_now, namespace, name, timeout_s)
    return RebalanceReport(
        hot,
        before,
        dict(verdict.get("load") or {}),
        calls_before,
        calls_after,
        status,
        list(status.get("history") or []),
        verdict,
    )


async def _router_follows(
    http: aiohttp.ClientSession, url: str, library: str, status: Mapping[str, Any], timeout_s: float
) -> None:
    """Wait until the router serves every moved domain from its new cluster.

    The router re-reads its library when the resources change; its status is
    asked again until it shows the new homes.
    """
    moved = {m["domain"]: m["target"] for m in status.get("history") or [] if m["state"] == "Done"}
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        served = await router_status(http, url, library)
        homes = {d.id: d.cluster for d in served.library.domains} if served.library else {}
        if all(homes.get(domain) == cluster for domain, cluster in moved.items()):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise RebalancingFailed(f"the router did not follow the moves within {timeout_s:.0f}s")
        await asyncio.sleep(0.2)  # the next look at a condition with no notification


async def _judged_again(
    api: EmulatedCluster,
    watch: ResourceWatch,
    policy_now: Callable[[], dict[str, Any] | None],
    namespace: str,
    name: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Switch the policy to ``observe`` and return its status once it has analysed again.

    The new spec is a new generation, which the operator analyses at its next
    tick; in ``observe`` mode it may propose, but moves nothing more.
    """
    changed = await api.patch(POLICIES, namespace, name, {"spec": {"mode": "observe"}})
    generation = changed["metadata"]["generation"]

    def analysed() -> dict[str, Any] | None:
        status = policy_now() or {}
        if status.get("observedGeneration") != generation:
            return None
        if status.get("analysisFailed"):
            raise RebalancingFailed(
                f"RebalancePolicy {name} could not analyse: {status['message']}"
            )
        return status if status.get("lastAnalysis") else None

    return await watch.until(analysed, timeout_s, f"RebalancePolicy {name} analysed again")


async def _follow_policy(
    watch: ResourceWatch,
    policy_now: Callable[[], dict[str, Any] | None],
    name: str,
    timeout_s: float,
    console: Console,
    names: Mapping[str, str],
) -> dict[str, Any]:
    """Follow the policy until it has nothing left to move; print what it does (each move of a
    proposal with the reason the planner gave, ``names`` naming the domains). Its last status."""
    said: set[str] = set()

    def domain(key: str) -> str:
        return f"{names[key]} ({key})" if key in names else key

    def settled() -> dict[str, Any] | None:
        status = policy_now() or {}
        proposal = status.get("proposal")
        if proposal and proposal.get("id") not in said:
            said.add(proposal["id"])
            console.print(
                f"   Proposal {proposal['id']}: {len(proposal['moves'])} move(s), "
                f"{proposal['pointsMoved']:,} points; expected max/mean load "
                f"{proposal['before']['maxMeanRatio']:.2f} -> "
                f"{proposal['after']['maxMeanRatio']:.2f}"
            )
            for move in proposal["moves"]:
                where = f"{move['source']} -> {move['target'] or '(advice)'}"
                console.print(
                    f"     {domain(move['domain'])}, {move['points']:,} points, {where}: "
                    f"{escape(move['reason'])}"
                )
        for move in status.get("history") or []:
            key = f"{move['domain']}:{move['state']}"
            if key not in said:
                said.add(key)
                console.print(
                    f"   Move {domain(move['domain'])} {move['source']} -> {move['target']}: "
                    f"{move['state']} — {move.get('message', '')}"
                )
        done = status.get("phase") in ("Balanced", "Observing") and not status.get("moves")
        return status if status.get("lastAnalysis") and done else None

    return await watch.until(settled, timeout_s, f"RebalancePolicy {name} settled")
