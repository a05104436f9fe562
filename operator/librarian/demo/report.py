"""What ``make demo`` prints at the end: the figures of the scenario, measured, as tables.

Why this exists: the scenario (:mod:`librarian.demo.runner`) gathers what
happened — the DomainMap's status, every point's label, the
ClusterSpecializations, the router's figures, the rebalancing — and this
module only shows it: the domains and their agreement with the Debian
sections, each specialization's recall and latency before and after, the
router's recall, probing and latency, and the load per cluster before and
after the moves.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from librarian.demo.rebalancing import RebalanceReport
from librarian.demo.workload import RouterReport

__all__ = ["DemoReport", "print_report"]


@dataclass
class DemoReport:
    """What the scenario measured."""

    status: dict[str, Any]
    labels: dict[int, str] = field(default_factory=dict)
    nmi: float | None = None
    seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    specializations: list[dict[str, Any]] = field(default_factory=list)
    router: RouterReport | None = None
    rebalancing: RebalanceReport | None = None


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
        f"{report.after.get('maxMeanRatio', 0):.2f}"
    )
    verdict = report.verdict
    conditions: list[dict[str, Any]] = verdict.get("conditions") or []
    balanced = next((c for c in conditions if c.get("type") == "Balanced"), {})
    console.print(
        f"The policy on the new placement (switched to observe): "
        f"Balanced={balanced.get('status', 'Unknown')} ({balanced.get('message', '')}); "
        f"{verdict.get('phase')}: {verdict.get('message', '')}"
    )
