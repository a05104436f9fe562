"""RebalancePolicy end to end against the emulated API; the test plays the Job controller.

The query load comes from a stand-in for the router's ``/librarian/status``
(the router itself is tested over real HTTP in tests/integration), so each
test decides which domains are hot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from librarian.local.crds import load_crds
from librarian.local.emulator import EmulatedCluster
from librarian.operator.context import OperatorContext
from librarian.operator.router_ref import cluster_service_url
from librarian.services.labeling import domain_filter
from librarian.storage.embedded import EmbeddedQdrant
from librarian.testing.operator import operator_against_emulator
from tests.packaging.rbac_calls import OPERATOR, OPERATOR_CLUSTER_WIDE, merge, triples

from .conftest import (
    DOMAINMAPS,
    REPO,
    ManualClock,
    domainmap,
    events_with,
    labeling_jobs_played,
    load_source,
    wait_for,
)
from .test_secret_hygiene import OPERATOR_AGENTS, _verb
from .test_specialization_operator import SPECS, _run_job, _status, specialization

POLICIES = "librarian.dev/v1alpha1/rebalancepolicies"
OWNER = "librarian.dev/rebalance-policy"


class FakeRouter:
    """Answers ``GET /librarian/status`` with the per-domain load a test sets."""

    def __init__(self) -> None:
        self.qps: dict[str, float] = {}
        self.load: Callable[[], dict[str, float]] | None = None  # or a load that changes
        self.url = ""
        self.asked = 0  # load reports served

    async def status(self, request: web.Request) -> web.Response:
        self.asked += 1
        if self.load is not None:
            self.qps = self.load()
        domains = [
            {"id": d, "qps": q, "queries": int(q * 60), "p95Ms": 5.0} for d, q in self.qps.items()
        ]
        result = {"load": {"domains": domains}, "quality": {"estimatedRecall": 0.97}}
        return web.json_response({"result": result, "status": "ok", "time": 0.0})


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    fake = FakeRouter()
    app = web.Application()
    app.router.add_get("/librarian/status", fake.status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


def policy(name: str, router: FakeRouter, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "domainMap": "packages",
        "mode": "approve",
        "analysisInterval": "1h",
        "constraints": {"excludedClusters": ["general"], "maxConcurrentMigrations": 1},
        "loadSource": {"routerUrls": [router.url]},
        "prediction": {"enabled": False},
        "execution": {"gracePeriod": "0s"},
    }
    body.update(spec)
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "RebalancePolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


async def _library_on_fast(
    api: EmulatedCluster, tmp_path: Path, count: int = 3
) -> list[dict[str, Any]]:
    """A DomainMap over general/fast/bulk with its ``count`` biggest domains specialized on fast.

    Discovery samples the collection, so how many domains it finds may vary from
    run to run: ``minDomains`` makes sure there are ``count`` to specialize.
    """
    load_source(tmp_path / "general")
    body = domainmap("packages", tmp_path / "general")
    if count:
        body["spec"]["bounds"]["minDomains"] = count
    body["spec"]["clusters"] += [
        {"name": "fast", "embedded": str(tmp_path / "fast")},
        {"name": "bulk", "embedded": str(tmp_path / "bulk")},
    ]
    await api.create(body)

    async def ready() -> dict[str, Any] | None:
        obj = await api.get(DOMAINMAPS, "default", "packages")
        return obj if obj and (obj.get("status") or {}).get("phase") == "Ready" else None

    domain_map = await wait_for(ready, 90)
    domains = sorted(domain_map["status"]["domains"], key=lambda d: -d["size"])[:count]
    assert len(domains) == count, f"discovery found {len(domains)} domains, the test needs {count}"
    for domain in domains:
        await api.create(
            specialization(f"on-fast-{domain['id']}", domain["id"], strategy="balanced")
        )
    for domain in domains:
        status = await _status(api, f"on-fast-{domain['id']}", {"Migrating"})
        await _run_job(api, status["job"])
        status = await _status(api, f"on-fast-{domain['id']}", {"Ready", "Failed"})
        assert status["phase"] == "Ready", status
        domain["collection"] = status["targetCollection"]
        domain["points"] = status["migration"]["targetCount"]
    for domain in domains:  # every move finished: no router writes an old home any more
        name = f"on-fast-{domain['id']}"

        async def finished(name: str = name) -> bool:
            obj = await api.get(SPECS, "default", name)
            return bool((((obj or {}).get("status") or {}).get("move") or {}).get("acknowledged"))

        await wait_for(finished, 60)
    return domains


async def _policy_status(
    api: EmulatedCluster, name: str, check: Any, timeout_s: float = 60
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> dict[str, Any] | None:
        obj = await api.get(POLICIES, "default", name)
        seen["status"] = status = (obj or {}).get("status") or {}
        return status if check(status) else None

    try:
        return await wait_for(reached, timeout_s)  # type: ignore[no-any-return]
    except AssertionError as error:
        raise AssertionError(f"RebalancePolicy {name}: {error}; last status {seen}") from None


async def _owned(api: EmulatedCluster, policy_name: str) -> list[dict[str, Any]]:
    items = await api.list_objects(SPECS, "default")
    return [i for i in items if (i["metadata"].get("labels") or {}).get(OWNER) == policy_name]


def _library_reads(api: EmulatedCluster) -> int:
    """How often the operator has read a DomainMap for a policy so far."""
    return sum(
        1
        for r in api.requests()
        if r.headers.get("User-Agent", "").startswith("qdrant-librarian/")
        and r.method.value == "GET"
        and r.resource is not None
        and r.resource.plural == "domainmaps"
    )


def _ticks(name: str) -> float:
    labels = {"namespace": "default", "policy": name}
    return REGISTRY.get_sample_value("librarian_rebalance_ticks_total", labels) or 0.0


async def _ticks_pass(name: str, count: int) -> None:
    """Wait until the operator has finished ``count`` more ticks of policy ``name``."""
    target = _ticks(name) + count

    async def ticked() -> bool:
        return _ticks(name) >= target

    await wait_for(ticked, 60)


def _count(path: Path, cluster: str, collection: str, domain: str) -> int:
    port = EmbeddedQdrant(cluster, path)
    try:
        return port.count(collection, count_filter=domain_filter(domain))
    finally:
        port.close()


async def test_approve_mode_runs_nothing_before_approval_then_moves_safely(
    cluster: EmulatedCluster, tmp_path: Path, router: FakeRouter
) -> None:
    domains = await _library_on_fast(cluster, tmp_path, count=4)
    router.qps = {d["id"]: 5.0 for d in domains}  # one move cannot balance fast and bulk
    await cluster.create(policy("balance", router))
    status = await _policy_status(
        cluster, "balance", lambda s: s.get("phase") == "AwaitingApproval"
    )
    proposal = status["proposal"]
    executable = [m for m in proposal["moves"] if m["executable"]]
    assert len(executable) >= 2
    assert all(m["target"] == "bulk" for m in executable)
    assert len({m["wave"] for m in executable}) == len(executable)  # one at a time
    assert status["load"]["maxMeanRatio"] > 1.3
    pending = next(c for c in status["conditions"] if c["type"] == "ProposalPending")
    assert pending["status"] == "True"
    assert "librarian.dev/rebalance=approve" in pending["message"]
    balanced = next(c for c in status["conditions"] if c["type"] == "Balanced")
    assert balanced["status"] == "False"
    assert "imbalance" in balanced["message"].lower()
    reads = _library_reads(cluster)
    await _ticks_pass("balance", 4)  # several ticks: still nothing runs
    assert _library_reads(cluster) == reads  # idle ticks call no API
    assert await _owned(cluster, "balance") == []
    assert (await cluster.get(POLICIES, "default", "balance"))["status"][
        "phase"
    ] == "AwaitingApproval"

    await cluster.patch(
        POLICIES,
        "default",
        "balance",
        {"metadata": {"annotations": {"librarian.dev/rebalance": "approve"}}},
    )
    moved = executable[0]
    done: set[str] = set()

    async def executed() -> dict[str, Any] | None:
        for child in await _owned(cluster, "balance"):
            job = (child.get("status") or {}).get("job")
            if job and job not in done and (child.get("status") or {}).get("phase") == "Migrating":
                done.add(job)
                await _run_job(cluster, job)
        obj = await cluster.get(POLICIES, "default", "balance")
        status = (obj or {}).get("status") or {}
        in_flight = [
            m
            for m in status.get("moves") or []
            if m["state"] in ("Copying", "Switching", "Cleaning")
        ]
        assert len(in_flight) <= 1  # maxConcurrentMigrations
        history = status.get("history") or []
        return status if len(history) == len(executable) and not status.get("moves") else None

    status = await wait_for(executed, 120)
    assert [h["state"] for h in status["history"]] == ["Done"] * len(executable)
    obj = await cluster.get(POLICIES, "default", "balance")
    assert "librarian.dev/rebalance" not in (obj["metadata"].get("annotations") or {})
    # The domain now lives on bulk; the old home was emptied only after the copy was verified.
    source = next(d for d in domains if d["id"] == moved["domain"])
    old = await cluster.get(SPECS, "default", f"on-fast-{moved['domain']}")
    assert old["metadata"]["annotations"]["librarian.dev/superseded-by"].startswith("balance-")
    new = next(
        c for c in await _owned(cluster, "balance") if c["spec"]["domain"] == moved["domain"]
    )
    assert new["spec"]["source"] == {"cluster": "fast", "collection": source["collection"]}
    assert not new["metadata"].get("ownerReferences")  # deleting the policy keeps it serving
    assert _count(tmp_path / "fast", "fast", source["collection"], moved["domain"]) == 0
    moved_points = _count(
        tmp_path / "bulk", "bulk", new["status"]["targetCollection"], moved["domain"]
    )
    assert moved_points == source["points"] == moved["points"]
    # The next analysis sees the new placement within the thresholds.
    status = await _policy_status(cluster, "balance", lambda s: s.get("phase") == "Balanced")
    assert status["load"]["maxMeanRatio"] <= 1.3
    await events_with(
        cluster, {"ProposalReady", "Approved", "MoveStarted", "MoveSwitched", "MoveCompleted"}
    )
    # The operator's metrics say the same.
    labels = {"namespace": "default", "policy": "balance"}
    sample = REGISTRY.get_sample_value
    assert sample("librarian_rebalance_moves_total", {**labels, "outcome": "done"}) == len(
        executable
    )
    assert sample("librarian_rebalance_points_moved_total", labels) == sum(
        m["points"] for m in executable
    )
    assert sample("librarian_rebalance_max_mean_load_ratio", labels) <= 1.3
    assert sample("librarian_rebalance_moves_in_flight", labels) == 0
    # Every call the operator made for it is granted by the chart's Role.
    made = set()
    for request in cluster.requests():
        agent = request.headers.get("User-Agent", "")
        if not agent.startswith(OPERATOR_AGENTS) or request.resource is None:
            continue
        if request.resource.plural is None:
            continue  # discovery
        resource = request.resource.plural + (
            f"/{request.subresource}" if request.subresource else ""
        )
        made.add(
            (
                request.resource.group or "",
                resource,
                _verb(request.method.value, request.name, dict(request.params)),
            )
        )
    assert made - triples(merge(OPERATOR, OPERATOR_CLUSTER_WIDE)) == set()
    assert ("librarian.dev", "clusterspecializations", "delete") not in made  # nothing to remove
    assert ("librarian.dev", "clusterspecializations", "patch") in made  # superseded-by


async def test_a_failing_move_is_rolled_back_and_nothing_is_lost(
    cluster: EmulatedCluster, tmp_path: Path, router: FakeRouter
) -> None:
    domains = await _library_on_fast(cluster, tmp_path, count=2)
    router.qps = {domains[0]["id"]: 10.0, domains[1]["id"]: 9.0}
    before = {d["id"]: _count(tmp_path / "fast", "fast", d["collection"], d["id"]) for d in domains}
    await cluster.create(policy("auto", router, mode="auto"))

    async def copying() -> dict[str, Any] | None:
        for child in await _owned(cluster, "auto"):
            if (child.get("status") or {}).get("phase") == "Migrating":
                return child
        return None

    child = await wait_for(copying, 60)
    # The Job copies everything, then fails (say, its verification): a partial home exists.
    job = await cluster.get("batch/v1/jobs", "default", child["status"]["job"])
    from click.testing import CliRunner

    from librarian.cli import main

    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (await asyncio.to_thread(CliRunner().invoke, main, args)).exit_code == 0
    domain = child["spec"]["domain"]
    target = child["status"]["targetCollection"]
    assert _count(tmp_path / "bulk", "bulk", target, domain) == before[domain]
    await _run_job(cluster, child["status"]["job"], succeed=False)
    status = await _policy_status(cluster, "auto", lambda s: bool(s.get("history")), 60)
    rolled = status["history"][0]
    assert rolled["state"] == "RolledBack"
    assert "nothing was lost" in rolled["message"]
    assert await _owned(cluster, "auto") == []
    assert _count(tmp_path / "bulk", "bulk", target, domain) == 0  # the partial copy is gone
    for d in domains:  # the old homes were never touched
        assert _count(tmp_path / "fast", "fast", d["collection"], d["id"]) == before[d["id"]]
    old = await cluster.get(SPECS, "default", f"on-fast-{domain}")
    assert "librarian.dev/superseded-by" not in (old["metadata"].get("annotations") or {})
    await events_with(cluster, {"MoveRolledBack"})


async def test_bad_policies_get_clear_conditions(
    cluster: EmulatedCluster, tmp_path: Path, router: FakeRouter
) -> None:
    await cluster.create(
        policy(
            "broken",
            router,
            strategy="fastest",
            thresholds={"loadImbalance": -1, "latencyDegradation": "soon"},
            constraints={"maintenanceWindows": ["Caturday 25:00-26:00"]},
        )
    )
    await cluster.create(policy("orphan", router, domainMap="nowhere"))
    await _library_on_fast(cluster, tmp_path, count=0)
    await cluster.create(policy("deaf", router, loadSource={"routerUrls": ["http://127.0.0.1:9"]}))
    for name, reason, words in (
        (
            "broken",
            "InvalidSpec",
            [
                "spec.strategy 'fastest'",
                "loadImbalance",
                "latencyDegradation",
                "maintenanceWindows[0]",
            ],
        ),
        ("orphan", "DomainMapNotFound", ["DomainMap default/nowhere does not exist"]),
        ("deaf", "LoadSourceUnreachable", ["http://127.0.0.1:9/librarian/status", "routerUrls"]),
    ):
        status = await _policy_status(
            cluster,
            name,
            lambda s: any(
                c["type"] == "Ready" and c["status"] == "False" for c in s.get("conditions") or []
            ),
        )
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", reason)
        for word in words:
            assert word in ready["message"], (word, ready["message"])
    await _ticks_pass("broken", 4)  # more ticks of the broken policy: none reports it again
    events = await events_with(cluster, {"InvalidSpec"})
    warnings = [e for e in events if e.get("reason") == "InvalidSpec"]
    assert len(warnings) == 1  # reported once, not at every tick


async def test_forecasts_propose_before_the_threshold_and_are_scored(
    cluster: EmulatedCluster, tmp_path: Path, router: FakeRouter, clock: ManualClock
) -> None:
    domains = await _library_on_fast(cluster, tmp_path, count=2)
    growing, steady = domains[0]["id"], domains[1]["id"]
    # Move the steady domain to bulk by hand, so both clusters serve one domain.
    await cluster.create(
        specialization(
            "steady-on-bulk",
            steady,
            target={"cluster": "bulk"},
            source={"cluster": "fast", "collection": domains[1]["collection"]},
        )
    )
    status = await _status(cluster, "steady-on-bulk", {"Migrating"})
    await _run_job(cluster, status["job"])
    await _status(cluster, "steady-on-bulk", {"Ready"})
    # From here on the operator's time passes only when it measures the load: a second
    # per measurement, so the forecast sees the same series however busy the machine is.
    started = clock.freeze()

    def load() -> dict[str, float]:  # one domain's queries grow 0.2/s; balanced for ~20 s
        elapsed = (clock.advance(1.0) - started).total_seconds()
        return {growing: 5.0 + 0.2 * elapsed, steady: 5.0}

    router.load = load
    common = {"mode": "observe", "analysisInterval": "1s"}
    await cluster.create(
        policy("ahead", router, prediction={"enabled": True, "horizon": "60s"}, **common)
    )
    await cluster.create(
        policy("scored", router, prediction={"enabled": True, "horizon": "2s"}, **common)
    )
    status = await _policy_status(
        cluster, "ahead", lambda s: (s.get("proposal") or {}).get("basedOn") == "forecast", 30
    )
    assert status["load"]["maxMeanRatio"] <= 1.3  # not crossed yet ...
    assert status["prediction"]["maxMeanRatio"] > 1.3  # ... but it will be within the horizon
    # With two domains on two clusters no move helps: the advice is to split the growing one.
    (advice,) = status["proposal"]["moves"]
    assert (advice["domain"], advice["kind"], advice["executable"]) == (growing, "split", False)
    assert status["phase"] == "Balanced"  # today's load is within the thresholds
    assert await _owned(cluster, "ahead") == []  # observe mode: nothing runs

    def scored(status: dict[str, Any]) -> bool:  # a forecast was scored; the history grows
        history = (status.get("loadHistory") or {}).get("times") or []
        return (status.get("prediction") or {}).get("mape") is not None and len(history) >= 3

    status = await _policy_status(cluster, "scored", scored, 30)
    assert 0 <= status["prediction"]["mape"] < 0.5


async def test_stop_cancels_the_moves_not_started_and_lets_the_running_one_finish(
    cluster: EmulatedCluster, tmp_path: Path, router: FakeRouter
) -> None:
    domains = await _library_on_fast(cluster, tmp_path, count=4)
    router.qps = {d["id"]: 5.0 for d in domains}
    await cluster.create(policy("halt", router))
    await _policy_status(cluster, "halt", lambda s: s.get("phase") == "AwaitingApproval")
    annotate = "librarian.dev/rebalance"
    await cluster.patch(
        POLICIES, "default", "halt", {"metadata": {"annotations": {annotate: "approve"}}}
    )

    async def running() -> dict[str, Any] | None:
        children = await _owned(cluster, "halt")
        migrating = [c for c in children if (c.get("status") or {}).get("phase") == "Migrating"]
        return migrating[0] if migrating else None

    first = await wait_for(running, 60)
    await cluster.patch(
        POLICIES, "default", "halt", {"metadata": {"annotations": {annotate: "stop"}}}
    )
    status = await _policy_status(
        cluster, "halt", lambda s: any(h["state"] == "Cancelled" for h in s.get("history") or [])
    )
    assert status["stopped"]
    assert [m["state"] for m in status["moves"]] == ["Copying"]
    await _run_job(cluster, first["status"]["job"])
    status = await _policy_status(cluster, "halt", lambda s: not s.get("moves"))
    assert sorted(h["state"] for h in status["history"]) == ["Cancelled", "Done"]
    assert [c["metadata"]["name"] for c in await _owned(cluster, "halt")] == [
        first["metadata"]["name"]
    ]
    await events_with(cluster, {"Stopped"})


ROUTER_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "librarian-router", "namespace": "default"},
    "spec": {"ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}]},
}


@pytest.fixture
async def cluster_with_router_service(
    clock: ManualClock, router: FakeRouter
) -> AsyncIterator[EmulatedCluster]:
    """The operator against the emulated API, reaching the fake router as the Service
    ``default/librarian-router`` on port 8080 (any other Service, namespace or port is
    its cluster DNS name, which does not resolve here)."""

    def service_url(name: str, namespace: str, port: int) -> str:
        if (name, namespace, port) == ("librarian-router", "default", 8080):
            return router.url
        return cluster_service_url(name, namespace, port)

    context = OperatorContext(progress_interval_s=0.2, clock=clock, service_url=service_url)
    async with (
        operator_against_emulator(load_crds(REPO / "crds"), context=context) as api,
        labeling_jobs_played(api),
    ):
        yield api


def _ready_is(reason: str) -> Callable[[dict[str, Any]], bool]:
    def check(status: dict[str, Any]) -> bool:
        ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
        return bool(ready) and ready[0]["reason"] == reason

    return check


async def test_a_router_named_by_its_service_is_read_or_reported_missing(
    cluster_with_router_service: EmulatedCluster, tmp_path: Path, router: FakeRouter
) -> None:
    api = cluster_with_router_service
    await _library_on_fast(api, tmp_path, count=0)
    by_service = {"mode": "observe", "analysisInterval": "1s"}
    ref = {"name": "librarian-router"}
    await api.create(policy("by-service", router, loadSource={"routerRef": ref}, **by_service))
    await api.create(
        policy(
            "elsewhere",
            router,
            loadSource={"routerRef": {**ref, "namespace": "search"}},
            **by_service,
        )
    )
    for name, where in (("by-service", "default"), ("elsewhere", "search")):
        status = await _policy_status(api, name, _ready_is("RouterNotFound"))
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert f"Service {where}/librarian-router" in ready["message"]
        assert "does not exist" in ready["message"]
        assert "routerRef.name" in ready["message"]  # what to fix
    assert router.asked == 0
    # The Service appears: its port named http is where the operator reads the load.
    await api.create(ROUTER_SERVICE)
    status = await _policy_status(api, "by-service", _ready_is("Analyzed"))
    assert router.asked > 0
    assert status["load"]["clusters"]
    assert status["observedGeneration"] == 1
    # A port the Service does not have is named, with the ports it has.
    await api.create(
        policy(
            "wrong-port",
            router,
            loadSource={"routerRef": {**ref, "port": 7000}},
            **by_service,
        )
    )
    status = await _policy_status(api, "wrong-port", _ready_is("RouterNotFound"))
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "has no port 7000 (its ports: metrics 9090, http 8080)" in ready["message"]

    async def warned() -> set[str] | None:  # a Warning Event for each policy, posted after
        names = {
            e["involvedObject"]["name"]
            for e in api.events("default")
            if e.get("reason") == "RouterNotFound" and e.get("type") == "Warning"
        }
        return names if {"by-service", "elsewhere", "wrong-port"} <= names else None

    await wait_for(warned, 30)
