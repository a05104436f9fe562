"""The embedded default (what `make demo` runs), on the bundled data, end to end."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from librarian.cli import main, run_job_command
from librarian.demo.runner import DemoError, print_report, run_demo

REPO = Path(__file__).resolve().parents[2]


async def test_demo_reaches_ready_and_labels_every_point(tmp_path: Path) -> None:
    manifest = yaml.safe_load((REPO / "manifests/examples/domainmap.yaml").read_text())
    for cluster in manifest["spec"]["clusters"]:
        cluster["embedded"] = str(tmp_path / cluster["name"])
    path = tmp_path / "domainmap.yaml"
    path.write_text(yaml.safe_dump(manifest))
    output = io.StringIO()
    console = Console(file=output, width=160)
    report = await run_demo(
        manifest_path=path,
        crds_path=REPO / "crds",
        console=console,
        timeout_s=300,
        run_command=run_job_command,
    )
    status = report.status
    assert status["phase"] == "Ready" and status["labeling"]["labeled"] == 3000
    assert len(report.labels) == 3000
    assert set(report.labels.values()) == {d["id"] for d in status["domains"]}
    assert report.nmi is not None and report.nmi > 0.45  # real structure, not noise
    # specialize: auto -> one ClusterSpecialization per domain, every one moved and verified
    assert len(report.specializations) == status["domainCount"]
    phases = {i["status"]["phase"] for i in report.specializations}
    assert phases == {"Ready"}
    moved = sum(i["status"]["migration"]["targetCount"] for i in report.specializations)
    assert moved == 3000
    clusters = {i["spec"]["target"]["cluster"] for i in report.specializations}
    assert clusters == {"fast", "bulk"}
    # The router, loaded from the DomainMap and its Ready ClusterSpecializations, serves the library.
    router = report.router
    assert router is not None and router.specialized == router.domains == status["domainCount"]
    assert router.recall_at_10 >= 0.9
    assert router.mean_domains_probed < router.domains / 2 and router.touched_share < 0.5
    assert router.estimated_recall is not None and router.cache_hit_rate > 0
    # A skewed load makes one cluster hot; the example policy (auto) moves domains off it.
    rebalancing = report.rebalancing
    assert rebalancing is not None
    assert rebalancing.moves and {m["state"] for m in rebalancing.moves} == {"Done"}
    assert rebalancing.before["maxMeanRatio"] > 1.3
    assert rebalancing.after["maxMeanRatio"] < rebalancing.before["maxMeanRatio"]
    assert rebalancing.status["phase"] == "Balanced"
    hot = rebalancing.hot_cluster
    assert rebalancing.calls_after[hot] < rebalancing.calls_before[hot]
    print_report(report, console)
    text = output.getvalue()
    assert "Ready=True (Analyzed)" in text and "NMI" in text and "Specializations" in text
    assert "Router: 300 queries through qdrant-client" in text
    assert "Rebalancing: the same skewed queries" in text and "max/mean cluster load" in text


async def test_demo_outside_the_repository_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="run the demo from the repository root"):
        await run_demo(
            manifest_path=tmp_path / "missing.yaml",
            crds_path=tmp_path,
            run_command=run_job_command,
        )


def test_demo_command_reports_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--manifest", str(tmp_path / "x.yaml")])
    assert result.exit_code == 1 and "repository root" in result.output
