"""``librarian status`` tables and ``up``'s phase lines, from the CRDs' own printer columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from librarian.cli import main
from librarian.local.crds import load_crds, packaged_crds
from librarian.local.printer import (
    PhaseReporter,
    format_age,
    get_tables,
    json_path,
    phase_line,
    printer_columns,
)
from librarian.local.state import StateDirectory

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 1, 2, 12, 0, 0, tzinfo=UTC)


def _ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(status: str, reason: str) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": status, "reason": reason}]


DOMAINMAP: dict[str, Any] = {
    "apiVersion": "librarian.dev/v1alpha1",
    "kind": "DomainMap",
    "metadata": {"name": "docs", "namespace": "default", "creationTimestamp": _ago(minutes=5)},
    "spec": {"source": {"collection": "docs"}},
    "status": {
        "phase": "Ready",
        "domainCount": 12,
        "confidence": 0.71,
        "version": 3,
        "message": "12 domains",
        "conditions": [{"type": "Drifted", "status": "False"}, *_ready("True", "Analyzed")],
    },
}
SPECIALIZATION: dict[str, Any] = {
    "apiVersion": "librarian.dev/v1alpha1",
    "kind": "ClusterSpecialization",
    "metadata": {"name": "docs-rust", "namespace": "default", "creationTimestamp": _ago(hours=3)},
    "spec": {"domain": "d-1", "target": {"cluster": "fast"}, "strategy": "latency"},
    "status": {"phase": "Migrating", "progress": 40, "conditions": _ready("False", "Migrating")},
}
JOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "docs-rust-migrate-g1", "namespace": "default",
                 "creationTimestamp": _ago(seconds=42)},
    "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
}  # fmt: skip


def test_every_printer_column_of_every_crd_is_read() -> None:
    columns = printer_columns(packaged_crds())
    assert {"DomainMap", "ClusterSpecialization", "RebalancePolicy"} <= set(columns)
    for kind_columns in columns.values():
        for column in kind_columns:
            json_path({}, column.json_path)  # raises on a path the printer cannot read


def test_json_path_fields_and_the_condition_filter() -> None:
    assert json_path(DOMAINMAP, ".status.domainCount") == 12
    assert json_path(DOMAINMAP, '.status.conditions[?(@.type=="Ready")].status') == "True"
    assert json_path(DOMAINMAP, '.status.conditions[?(@.type=="Stalled")].status') is None
    assert json_path(DOMAINMAP, ".status.missing.deeper") is None
    with pytest.raises(ValueError, match="unsupported JSONPath"):
        json_path(DOMAINMAP, ".items[*].name")


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(seconds=5), "5s"),
        (timedelta(seconds=119), "119s"),
        (timedelta(minutes=3), "3m"),
        (timedelta(hours=2, minutes=5), "2h"),
        (timedelta(days=4), "4d"),
    ],
)
def test_ages_as_kubectl_prints_them(delta: timedelta, expected: str) -> None:
    assert format_age((NOW - delta).isoformat(), NOW) == expected


def test_tables_per_kind_with_the_crd_columns_as_kubectl_get() -> None:
    text = get_tables([JOB, SPECIALIZATION, DOMAINMAP], packaged_crds(), now=NOW)
    domainmaps, specializations, jobs = (t.splitlines() for t in text.split("\n\n"))
    assert domainmaps[0].split() == [
        "NAME",
        "PHASE",
        "READY",
        "DOMAINS",
        "CONFIDENCE",
        "VERSION",
        "AGE",
    ]
    assert domainmaps[1].split() == [
        "domainmap.librarian.dev/docs",
        "Ready",
        "True",
        "12",
        "0.71",
        "3",
        "5m",
    ]
    assert specializations[0].split() == [
        "NAME",
        "PHASE",
        "READY",
        "PROGRESS",
        "DOMAIN",
        "CLUSTER",
        "STRATEGY",
        "AGE",
    ]
    assert specializations[1].split() == [
        "clusterspecialization.librarian.dev/docs-rust",
        "Migrating",
        "False",
        "40",
        "d-1",
        "fast",
        "latency",
        "3h",
    ]
    assert jobs[0].split() == ["NAME", "STATUS", "COMPLETIONS", "AGE"]
    assert jobs[1].split() == ["job.batch/docs-rust-migrate-g1", "Complete", "1/1", "42s"]
    # columns line up: every cell starts where its header does
    header, row = domainmaps
    assert row.index("Ready") == header.index("PHASE")
    assert row.index("12") == header.index("DOMAINS")
    wide = get_tables([DOMAINMAP], packaged_crds(), now=NOW, wide=True)
    assert wide.splitlines()[0].split()[-2:] == ["SOURCE", "MESSAGE"]
    assert wide.splitlines()[1].split()[-3:] == ["docs", "12", "domains"]  # fmt: skip


def test_tables_show_the_namespace_when_there_are_several() -> None:
    other = {**DOMAINMAP, "metadata": {**DOMAINMAP["metadata"], "namespace": "team-b"}}
    lines = get_tables([DOMAINMAP, other], packaged_crds(), now=NOW).splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [line.split()[0] for line in lines[1:]] == ["default", "team-b"]
    assert get_tables([], packaged_crds(), now=NOW) == "No resources found."


def test_the_packaged_crds_columns_are_the_repositorys() -> None:
    assert printer_columns(packaged_crds()) == printer_columns(load_crds(REPO / "crds"))


def test_a_phase_line_per_change_of_phase_or_reason() -> None:
    lines: list[str] = []
    reporter = PhaseReporter(lines.append, ["DomainMap", "Job"])
    pending = {**DOMAINMAP, "status": {}}
    analyzing = {**DOMAINMAP, "status": {"phase": "Analyzing", "message": "sampling",
                                         "conditions": _ready("False", "Analyzing")}}  # fmt: skip
    for body in (pending, analyzing, analyzing, DOMAINMAP, DOMAINMAP):
        reporter.observe("DomainMap", "default", "docs", body)
    reporter.observe("ConfigMap", "default", "x", {"status": {"phase": "Weird"}})  # not followed
    reporter.observe("DomainMap", "team-b", "other", DOMAINMAP)
    reporter.observe("DomainMap", "default", "docs", None)
    reporter.observe("DomainMap", "default", "never-seen", None)
    assert lines == [
        "DomainMap/docs: Pending",
        "DomainMap/docs: Analyzing (Analyzing): sampling",
        "DomainMap/docs: Ready (Analyzed): 12 domains",
        "DomainMap/team-b/other: Ready (Analyzed): 12 domains",
        "DomainMap/docs: Deleted",
    ]
    assert phase_line("Job", "default", JOB["metadata"]["name"], JOB) == (
        "Job/docs-rust-migrate-g1: Complete"
    )


def test_status_command_reads_the_state_directory(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path / "state")
    state.save(DOMAINMAP)
    state.save(JOB)
    result = CliRunner().invoke(main, ["status", "--state", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    assert "librarian up is not running" in result.stderr
    assert "domainmap.librarian.dev/docs" in result.stdout
    assert "job.batch/" in result.stdout
    missing = CliRunner().invoke(main, ["status", "--state", str(tmp_path / "nothing")])
    assert missing.exit_code == 1
    assert "start with librarian up -f FILE" in missing.output
    unreachable = CliRunner().invoke(main, ["status", "--port", "1"])
    assert unreachable.exit_code == 1
    assert "no librarian up answers at http://127.0.0.1:1" in (unreachable.output)
