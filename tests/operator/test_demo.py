"""The embedded default (what `make demo` runs) on ``librarian up``, end to end, smaller.

The scenario is the one ``make demo`` runs, with smaller parameters: 1,000 of
the bundled points, at most 6 domains, fewer queries and a shorter load window.
Every wait is on a condition (the API's objects as they change, the router's
status), and the skewed load is kept up until the policy has read it, so the
test holds on a busy machine.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from librarian.cli import main, run_job_command
from librarian.demo.report import DemoReport, print_report
from librarian.demo.runner import DemoError, DemoScenario, run_demo
from librarian.kube import client as kube_client

REPO = Path(__file__).resolve().parents[2]
POINTS = 1000


def _write(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(body))
    return path


def _scenario(folder: Path) -> DemoScenario:
    manifest = yaml.safe_load((REPO / "manifests/examples/domainmap.yaml").read_text())
    fleet = yaml.safe_load((REPO / "manifests/examples/qdrantfleet.yaml").read_text())
    assert manifest["spec"]["fleetRef"]["name"] == fleet["metadata"]["name"]
    for cluster in fleet["spec"]["clusters"]:
        cluster["embedded"] = str(folder / cluster["name"])
    manifest["spec"]["sampleSize"] = POINTS
    manifest["spec"]["bounds"]["maxDomains"] = 6
    policy = yaml.safe_load((REPO / "manifests/examples/rebalancepolicy.yaml").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    return DemoScenario(
        manifest=_write(folder / "domainmap.yaml", manifest),
        fleet=_write(folder / "qdrantfleet.yaml", fleet),
        policy=_write(folder / "rebalancepolicy.yaml", policy),
        root=folder / "demo",
        points=POINTS,
        queries=100,
        repeated=20,
        skewed_queries=150,
        load_window_s=3.0,
        timeout_s=240,
        quiet_s=1.0,
    )


def _outcome(report: DemoReport) -> tuple[object, ...]:
    """What must not change from one run to the next on the same data: the domains found and
    where each went, and the moves made."""
    assert report.rebalancing is not None
    return (
        sorted((d["id"], d["name"]) for d in report.status["domains"]),
        sorted(Counter(report.labels.values()).items()),
        sorted(
            (i["spec"]["domain"], i["spec"]["target"]["cluster"]) for i in report.specializations
        ),
        [(m["domain"], m["source"], m["target"]) for m in report.rebalancing.moves],
    )


async def test_demo_reaches_ready_and_labels_every_point(tmp_path: Path) -> None:
    """The whole story, twice on the same data: the second run finds the same domains, places
    them alike and makes the same moves."""
    output = io.StringIO()
    console = Console(file=output, width=160)
    report = await run_demo(
        _scenario(tmp_path / "first"), console=console, run_command=run_job_command
    )
    again = await run_demo(
        _scenario(tmp_path / "second"),
        console=Console(file=io.StringIO()),
        run_command=run_job_command,
    )
    assert _outcome(again) == _outcome(report)
    # Nothing left open in this loop: an open Kubernetes client session would be
    # reported as "Unclosed client session" when the process exits.
    assert asyncio.get_running_loop() not in kube_client._sessions
    status = report.status
    assert status["phase"] == "Ready"
    assert status["labeling"]["labeled"] == POINTS
    assert len(report.labels) == POINTS
    assert set(report.labels.values()) == {d["id"] for d in status["domains"]}
    assert report.nmi is not None
    assert report.nmi > 0.3
    # specialize: auto -> one ClusterSpecialization per domain, every one moved and verified
    assert len(report.specializations) == status["domainCount"]
    phases = {i["status"]["phase"] for i in report.specializations}
    assert phases == {"Ready"}
    moved = sum(i["status"]["migration"]["targetCount"] for i in report.specializations)
    assert moved == POINTS
    clusters = {i["spec"]["target"]["cluster"] for i in report.specializations}
    assert clusters == {"fast", "bulk"}
    # The router up serves, loaded from the DomainMap and its Ready ClusterSpecializations.
    router = report.router
    assert router is not None
    assert router.specialized == router.domains == status["domainCount"]
    assert router.recall_at_10 >= 0.9
    assert router.mean_domains_probed < router.domains / 2
    assert router.touched_share < 0.6
    assert router.estimated_recall is not None
    assert router.cache_hit_rate > 0
    # A skewed load makes one cluster hot; the example policy (auto) moves domains off it.
    rebalancing = report.rebalancing
    assert rebalancing is not None
    assert rebalancing.moves
    assert {m["state"] for m in rebalancing.moves} == {"Done"}
    assert rebalancing.before["maxMeanRatio"] > 1.3
    assert rebalancing.after["maxMeanRatio"] < rebalancing.before["maxMeanRatio"]
    hot = rebalancing.hot_cluster
    assert rebalancing.calls_after[hot] < rebalancing.calls_before[hot]
    # The last analysis is made in observe mode: it judges the new placement, moves nothing.
    assert rebalancing.verdict["lastAnalysis"]
    assert not rebalancing.verdict["moves"]
    # The state up kept: every resource, the policy among them.
    stored = {
        p.parent.name for p in (tmp_path / "first/demo/state/resources/default").glob("*/*.json")
    }
    assert {"domainmaps.librarian.dev", "rebalancepolicies.librarian.dev"} <= stored
    print_report(report, console)
    text = output.getvalue()
    assert "librarian up -f" in text
    assert "qdrantfleet.yaml -f" in text  # the fleet, then the DomainMap that names it
    assert "Deprecated=True" not in text  # the example names its fleet: nothing deprecated
    assert "DomainMap/packages: Ready (Analyzed)" in text
    assert "Job/" not in text  # up's lines for each Job are left out
    assert "Ready=True (Analyzed)" in text
    assert "NMI" in text
    assert "Specializations" in text
    assert "Router: 100 queries through qdrant-client" in text
    assert "Rebalancing: the same skewed queries" in text
    assert "max/mean cluster load" in text
    assert "The policy on the new placement (switched to observe): Balanced=" in text
    flat = " ".join(text.split())
    for move in rebalancing.moves:  # each move is shown with the planner's reason for it
        assert move["reason"]
        assert move["reason"] in flat
        assert f"({move['domain']}), {move['points']:,} points," in text


async def test_demo_outside_the_repository_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="run the demo from the repository root"):
        await run_demo(
            DemoScenario(manifest=tmp_path / "missing.yaml", root=tmp_path / "demo"),
            run_command=run_job_command,
        )


def test_demo_command_reports_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--manifest", str(tmp_path / "x.yaml")])
    assert result.exit_code == 1
    assert "repository root" in result.output
