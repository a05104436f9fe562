"""The embedded default, end to end: what ``make demo`` runs.

Why this exists: a new user (and CI) should see the whole product work with
nothing to install by hand — real data, the real Qdrant engine in-process, an
emulated Kubernetes API with the real operator running against it, and the
example manifest applied exactly as ``kubectl apply`` would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from sklearn.metrics import normalized_mutual_info_score

from librarian.contracts import api
from librarian.contracts.api import resource
from librarian.contracts.payload import LABEL_KEY
from librarian.demo.data import DemoData, load_demo_data, load_demo_sections
from librarian.demo.rebalancing import RebalanceReport, run_rebalancing
from librarian.demo.workload import RouterReport, run_router_workload, serve_router
from librarian.local.emulator import EmulatedCluster, emulated_kubernetes, load_crds
from librarian.local.job_controller import CommandRunner, play_job_controller
from librarian.operator.runtime import operator_in_thread
from librarian.router.loader import kubernetes_fleet, kubernetes_loader
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointRecord

DOMAINMAPS = resource(api.DOMAINMAPS)
SPECIALIZATIONS = resource(api.CLUSTERSPECIALIZATIONS)


class DemoError(RuntimeError):
    """The demo could not run or did not reach Ready; the message says why."""


@dataclass
class DemoReport:
    status: dict[str, Any]
    labels: dict[int, str] = field(default_factory=dict)
    nmi: float | None = None
    seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    specializations: list[dict[str, Any]] = field(default_factory=list)
    router: RouterReport | None = None
    rebalancing: RebalanceReport | None = None


async def _wait_specialized(
    api: EmulatedCluster,
    namespace: str,
    expected: int,
    timeout_s: float,
    console: Console,
    run_command: CommandRunner,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    done: set[str] = set()
    while time.monotonic() < deadline:
        await play_job_controller(api, namespace, done, run_command)
        items = await api.list_objects(SPECIALIZATIONS, namespace)
        phases = Counter((i.get("status") or {}).get("phase", "Pending") for i in items)
        if len(items) >= expected and phases["Ready"] + phases["Failed"] == len(items):
            return items
        await asyncio.sleep(0.3)
    raise DemoError(f"specializations did not finish within {timeout_s:.0f}s")


def _source_of(manifest: dict[str, Any]) -> tuple[Path, str, str]:
    spec = manifest["spec"]
    source = spec["source"]
    cluster = next(c for c in spec["clusters"] if c["name"] == source["cluster"])
    if "embedded" not in cluster:
        raise DemoError("the demo manifest's source cluster must be embedded (a local path)")
    return (
        Path(cluster["embedded"]),
        str(source["collection"]),
        str(source.get("textField", "text")),
    )


def load_source(path: Path, collection: str, text_field: str, data: DemoData) -> None:
    """(Re)create the source collection on the embedded cluster with the demo data."""
    shutil.rmtree(path, ignore_errors=True)
    port = EmbeddedQdrant("general", path)
    try:
        port.create_collection(collection, CollectionSpec(vector_size=data.vectors.shape[1]))
        batch: list[PointRecord] = []
        for index, record in enumerate(data.records):
            batch.append(
                PointRecord(
                    id=int(str(record["id"])),
                    vector=[float(x) for x in data.vectors[index]],
                    payload={text_field: str(record["text"]), "package": str(record["package"])},
                )
            )
            if len(batch) == 500:
                port.upsert(collection, batch)
                batch = []
        port.upsert(collection, batch)
    finally:
        port.close()


def read_labels(path: Path, collection: str) -> dict[int, str]:
    port = EmbeddedQdrant("general", path)
    labels: dict[int, str] = {}
    try:
        offset = None
        while True:
            page, offset = port.scroll(collection, limit=1000, offset=offset, with_vectors=False)
            for point in page:
                if LABEL_KEY in point.payload:
                    labels[int(point.id)] = str(point.payload[LABEL_KEY])
            if offset is None:
                break
    finally:
        port.close()
    return labels


async def _wait_ready(
    api: EmulatedCluster, namespace: str, name: str, timeout_s: float, console: Console
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last_message = ""
    while time.monotonic() < deadline:
        obj = await api.get(DOMAINMAPS, namespace, name)
        status = (obj or {}).get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
        message = f"{status.get('phase', 'Pending')}: {status.get('message') or ''}".strip()
        if message != last_message:
            console.print(f"  [dim]{message}[/dim]")
            last_message = message
        if (
            ready
            and ready["status"] == "True"
            and status.get("observedGeneration")
            == (obj or {}).get("metadata", {}).get("generation")
        ):
            return status
        if ready and ready["status"] == "False" and status.get("phase") == "Failed":
            raise DemoError(f"DomainMap {name} failed: {ready['reason']}: {ready['message']}")
        await asyncio.sleep(0.3)
    raise DemoError(f"DomainMap {name} was not Ready within {timeout_s:.0f}s")


async def run_demo(
    *,
    manifest_path: Path = Path("manifests/examples/domainmap.yaml"),
    policy_path: Path | None = Path("manifests/examples/rebalancepolicy.yaml"),
    crds_path: Path = Path("crds"),
    timeout_s: float = 600.0,
    console: Console | None = None,
    run_command: CommandRunner,
) -> DemoReport:
    console = console or Console()
    if not manifest_path.exists() or not crds_path.is_dir():
        raise DemoError(
            f"{manifest_path} or {crds_path}/ not found: run the demo from the repository root "
            "(make demo)"
        )
    manifest = yaml.safe_load(manifest_path.read_text())
    storage, collection, text_field = _source_of(manifest)
    started = time.monotonic()

    data = load_demo_data()
    console.print(
        f"[bold]1.[/bold] Loading {len(data.records):,} Debian package descriptions "
        f"({data.vectors.shape[1]}-d embeddings) into embedded cluster 'general' "
        f"({storage}), collection '{collection}'"
    )
    load_source(storage, collection, text_field, data)
    for cluster in manifest["spec"]["clusters"]:  # fresh target clusters for every run
        if "embedded" in cluster and Path(cluster["embedded"]) != storage:
            shutil.rmtree(cluster["embedded"], ignore_errors=True)

    # The operator's timers tick every second here (10 s by default): the demo waits on them.
    os.environ.setdefault("LIBRARIAN_TIMER_TICK_SECONDS", "1")
    console.print("[bold]2.[/bold] Starting an emulated Kubernetes API and the operator")
    namespace = manifest["metadata"].get("namespace", "default")
    name = manifest["metadata"]["name"]
    async with (
        emulated_kubernetes(load_crds(crds_path), namespaces=[namespace]) as api,
        operator_in_thread(api.url),
    ):
        console.print(f"[bold]3.[/bold] Applying {manifest_path}")
        await api.create(manifest)
        status = await _wait_ready(api, namespace, name, timeout_s, console)
        specializations: list[dict[str, Any]] = []
        if manifest["spec"].get("specialize") == "auto":
            console.print(
                f"[bold]4.[/bold] Specializing {status['domainCount']} domains onto "
                + ", ".join(t["cluster"] for t in manifest["spec"]["specialization"]["targets"])
                + " (the demo plays the Job controller)"
            )
            specializations = await _wait_specialized(
                api, namespace, status["domainCount"], timeout_s, console, run_command
            )
        # The router reads the library as it would in a cluster: DomainMap, Ready
        # ClusterSpecializations, catalog — and follows them while the operator works.
        _, clusters, source_cluster = await kubernetes_fleet(namespace, name)
        loader_fleet = Fleet(clusters)
        loader = kubernetes_loader(loader_fleet, namespace, name)
        router_report = rebalance_report = None
        async with serve_router(loader, clusters, source_cluster, load_window_s=10.0) as router:
            if router.state.library is not None:
                console.print(
                    f"[bold]5.[/bold] Serving library '{router.state.library.name}' through the "
                    f"router at {router.url} and running a query workload through qdrant-client"
                )
                ids = [int(str(r["id"])) for r in data.records]
                router_report = await run_router_workload(router, ids, data.vectors)
                if policy_path is not None:
                    console.print(
                        "[bold]6.[/bold] Skewing the query load so one cluster runs hot; "
                        "a RebalancePolicy moves domains off it"
                    )
                    rebalance_report = await run_rebalancing(
                        api,
                        router,
                        policy_path=policy_path,
                        namespace=namespace,
                        vectors=data.vectors,
                        labels=read_labels(storage, collection),
                        ids=ids,
                        console=console,
                        run_command=run_command,
                        timeout_s=timeout_s,
                    )
        loader_fleet.close()
        events = api.events(namespace)
    labels = read_labels(storage, collection)
    sections = load_demo_sections()
    ids = sorted(labels)
    nmi = (
        float(normalized_mutual_info_score([sections[i] for i in ids], [labels[i] for i in ids]))
        if ids
        else None
    )
    return DemoReport(
        status=status,
        labels=labels,
        nmi=nmi,
        seconds=time.monotonic() - started,
        events=events,
        specializations=specializations,
        router=router_report,
        rebalancing=rebalance_report,
    )


def print_report(report: DemoReport, console: Console) -> None:
    status = report.status
    per_domain = Counter(report.labels.values())
    table = Table(
        title=f"DomainMap: {status['domainCount']} domains "
        f"(version {status['version']}, strategy {status.get('strategy')})",
        title_justify="left",
    )
    for column, justify in (
        ("domain", "left"),
        ("name", "left"),
        ("points", "right"),
        ("cohesion", "right"),
        ("keywords", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for domain in sorted(status["domains"], key=lambda d: -per_domain.get(d["id"], 0)):
        table.add_row(
            domain["id"],
            domain["name"],
            f"{per_domain.get(domain['id'], 0):,}",
            f"{domain['cohesion']:.3f}",
            ", ".join(domain["keywords"][:6]),
        )
    console.print(table)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    console.print(f"Ready={ready['status']} ({ready['reason']}): {ready['message']}")
    for condition in status["conditions"]:
        if condition["type"] != "Ready":
            console.print(f"  {condition['type']}={condition['status']} ({condition['reason']})")
    labeling = status.get("labeling", {})
    console.print(
        f"Labelled {labeling.get('labeled', 0):,} of {labeling.get('total', 0):,} "
        f"points; catalog {status['catalog']['cluster']}/"
        f"{status['catalog']['collection']}"
    )
    if report.nmi is not None:
        console.print(
            f"Agreement with the Debian archive sections (ground truth never read by "
            f"discovery): NMI {report.nmi:.3f}"
        )
    if report.specializations:
        spec_table = Table(title="Specializations", title_justify="left")
        for column, justify in (
            ("domain", "left"),
            ("cluster", "left"),
            ("strategy", "left"),
            ("points", "right"),
            ("verified", "left"),
            ("recall@10", "right"),
            ("p50 ms before -> after", "right"),
            ("phase", "left"),
        ):
            spec_table.add_column(column, justify=justify)  # type: ignore[arg-type]
        names = {d["id"]: d["name"] for d in status["domains"]}
        for item in sorted(
            report.specializations,
            key=lambda i: -((i.get("status") or {}).get("migration") or {}).get("targetCount", 0),
        ):
            st = item.get("status") or {}
            migration, validation = st.get("migration") or {}, st.get("validation") or {}
            strategy = (
                (st.get("appliedConfig") or {}).get("collection") and item["spec"].get("strategy")
            ) or item["spec"].get("strategy", "")
            spec_table.add_row(
                names.get(item["spec"]["domain"], item["spec"]["domain"]),
                item["spec"]["target"]["cluster"],
                strategy,
                f"{migration.get('targetCount', 0):,}",
                "yes" if migration.get("phase") in ("verified", "done") else "no",
                f"{validation.get('recallAt10', 0):.3f}",
                f"{validation.get('sourceP50Ms', 0):.2f} -> {validation.get('targetP50Ms', 0):.2f}",
                st.get("phase", ""),
            )
        console.print(spec_table)
    reasons = Counter(str(e.get("reason")) for e in report.events)
    console.print("Events: " + ", ".join(f"{r} x{n}" for r, n in sorted(reasons.items())))
    if report.router is not None:
        r = report.router
        console.print(
            f"Router: {r.queries} queries through qdrant-client on {r.domains} domains "
            f"({r.specialized} specialized): recall@10 {r.recall_at_10:.3f} vs exhaustive search, "
            f"{r.mean_domains_probed:.1f} domains probed per query "
            f"({r.touched_share:.0%} of the points), p50 {r.p50_ms:.2f} ms, p95 {r.p95_ms:.2f} ms; "
            f"estimated recall from shadow queries "
            f"{'n/a' if r.estimated_recall is None else f'{r.estimated_recall:.3f}'}, "
            f"cache hit rate {r.cache_hit_rate:.0%}"
        )
    if report.rebalancing is not None:
        _print_rebalancing(report.rebalancing, console)
    console.print(f"Done in {report.seconds:.1f}s.")


def _print_rebalancing(report: RebalanceReport, console: Console) -> None:
    table = Table(
        title="Rebalancing: the same skewed queries before and after the moves",
        title_justify="left",
    )
    for column in ("cluster", "router calls before", "after", "load before", "after"):
        table.add_column(column, justify="left" if column == "cluster" else "right")
    load_before = {c["name"]: c for c in report.before.get("clusters") or []}
    load_after = {c["name"]: c for c in report.after.get("clusters") or []}
    for cluster in sorted({*report.calls_before, *load_before, *load_after}):
        table.add_row(
            cluster + (" (queries aimed here)" if cluster == report.hot_cluster else ""),
            f"{report.calls_before.get(cluster, 0):,}",
            f"{report.calls_after.get(cluster, 0):,}",
            f"{(load_before.get(cluster) or {}).get('load', 0):.3f}",
            f"{(load_after.get(cluster) or {}).get('load', 0):.3f}",
        )
    console.print(table)
    done = [m for m in report.moves if m.get("state") == "Done"]
    console.print(
        f"Moves: {len(done)} done of {len(report.moves)}, "
        f"{sum(int(m.get('points', 0)) for m in done):,} points moved; max/mean cluster load "
        f"(queries/s over each cluster's capacity) {report.before.get('maxMeanRatio', 0):.2f} -> "
        f"{report.after.get('maxMeanRatio', 0):.2f}; policy {report.status.get('phase')}"
    )
