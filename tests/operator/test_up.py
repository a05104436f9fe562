"""``librarian up`` as a user runs it: a process serving the library, stopped and resumed.

A small DomainMap (400 bundled points, ``specialize: auto`` onto one more
embedded cluster) is served by ``librarian up`` in a temporary directory; it
is queried through ``qdrant-client`` and compared with exact search, stopped
with SIGTERM (exit 0), and started again on the same state: nothing is
analysed or migrated again, and the answers are the same.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from qdrant_client import QdrantClient

from librarian.cli import main
from librarian.demo.data import load_demo_data
from librarian.testing import UpProcess, free_port, start_up, wait_until_ready

pytestmark = pytest.mark.slow

POINTS = 400
DOMAINMAP = {
    "apiVersion": "librarian.dev/v1alpha1",
    "kind": "DomainMap",
    "metadata": {"name": "mine"},  # namespace: default
    "spec": {
        "source": {"cluster": "local", "collection": "docs"},
        "clusters": [
            {"name": "local", "embedded": "data/local"},
            {"name": "fast", "embedded": "data/fast"},
        ],
        "sampleSize": 300,
        "interval": "1h",
        "bounds": {"maxDomains": 6, "minDomainSize": 15},
        "specialize": "auto",
        "specialization": {"targets": [{"cluster": "fast", "strategy": "latency"}]},
    },
}


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait_specialized(up: UpProcess, timeout_s: float) -> dict[str, Any]:
    """Until every domain is served from its specialized collection; the router's status."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        library = _get_json(f"{up.url}/librarian/status")["result"].get("library") or {}
        domains = library.get("domains") or []
        if domains and all(d["specialized"] for d in domains):
            return dict(library)
        assert up.process.poll() is None, up.text()
        time.sleep(0.25)
    raise AssertionError(f"not every domain specialized within {timeout_s}s:\n{up.text()}")


def _query(url: str, queries: np.ndarray) -> list[list[int]]:
    client = QdrantClient(url=url, check_compatibility=False, timeout=30)
    try:
        return [
            [int(p.id) for p in client.query_points("docs", query=q.tolist(), limit=10).points]
            for q in queries
        ]
    finally:
        client.close()


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = load_demo_data(limit=POINTS)
    vectors = np.asarray(data.vectors[:POINTS], dtype=np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    (tmp_path / "records.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in data.texts[:POINTS])
    )
    result = CliRunner().invoke(
        main,
        ["load", "--embedded", str(tmp_path / "data/local"), "--collection", "docs",
         "--npy", str(tmp_path / "vectors.npy"), "--payload", str(tmp_path / "records.jsonl")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (tmp_path / "library.yaml").write_text(yaml.safe_dump(DOMAINMAP))
    return tmp_path, vectors


def _stored_domainmap(root: Path) -> dict[str, Any]:
    path = root / ".librarian/resources/default/domainmaps.librarian.dev/mine.json"
    return dict(json.loads(path.read_text()))


def test_up_serves_stops_on_sigterm_and_resumes_without_redoing_anything(
    workspace: tuple[Path, np.ndarray],
) -> None:
    root, vectors = workspace
    rng = np.random.default_rng(7)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = unit[rng.choice(POINTS, 40, replace=False)]
    queries = queries + rng.normal(scale=0.03, size=queries.shape).astype(np.float32)
    exact = np.argsort(-(queries @ unit.T), axis=1)[:, :10]

    first = start_up(["-f", "library.yaml"], cwd=root, port=free_port(), output=root / "first.log")
    try:
        wait_until_ready(first, timeout_s=240)
        library = _wait_specialized(first, timeout_s=240)
        answers = _query(first.url, queries)
    finally:
        code = first.stop()
    log = first.text()
    assert code == 0, log
    assert "DomainMap/mine: Analyzing" in log and "DomainMap/mine: Ready (Analyzed)" in log
    assert "Job/mine-" in log and "Stopped." in log
    recall = np.mean(
        [len(set(a) & set(e.tolist())) / 10 for a, e in zip(answers, exact, strict=True)]
    )
    assert recall >= 0.9, recall
    stored = _stored_domainmap(root)
    assert stored["status"]["phase"] == "Ready"
    jobs = sorted((root / ".librarian/resources/default/jobs.batch").glob("*.json"))
    assert len(jobs) == len(library["domains"]) > 1
    assert not list((root / ".librarian").rglob(".*.json.*"))  # no temporary file left behind

    second = start_up([], cwd=root, port=free_port(), output=root / "second.log")  # no -f: resumes
    try:
        wait_until_ready(second, timeout_s=120)
        assert _wait_specialized(second, timeout_s=60)["version"] == library["version"]
        again = _query(second.url, queries)
    finally:
        code = second.stop()
    log = second.text()
    assert code == 0, log
    assert "Resuming from .librarian/" in log and "DomainMap/mine: Ready (Analyzed)" in log
    assert "Analyzing" not in log and "Labeling" not in log  # not analysed again
    assert "Running" not in log and "Migrating" not in log  # no migration run again
    # The same library answers: the routing model is rebuilt from a random sample of the
    # library at each start, so only the last of ten places may differ.
    assert [a[0] for a in again] == [a[0] for a in answers]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(again, answers, strict=True)])
    assert overlap >= 0.95, overlap
    restarted = _stored_domainmap(root)
    assert restarted["status"]["version"] == stored["status"]["version"]
    assert restarted["status"].get("lastAnalyzed") == stored["status"].get("lastAnalyzed")
    assert sorted((root / ".librarian/resources/default/jobs.batch").glob("*.json")) == jobs

    status = CliRunner().invoke(main, ["status", "--state", str(root / ".librarian")])
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert "librarian up is not running" in lines[0]
    assert lines[1].split() == ["NAME", "PHASE", "READY", "DOMAINS", "CONFIDENCE", "VERSION", "AGE"]
    assert lines[2].split()[:3] == ["domainmap.librarian.dev/mine", "Ready", "True"]


def test_up_refuses_a_bad_document_naming_file_and_document(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([DOMAINMAP, {"apiVersion": "v1", "kind": "ConfigMap"}]))
    result = CliRunner().invoke(main, ["up", "-f", str(bad), "--state", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert f"{bad}, document 2: v1 ConfigMap is not accepted here" in result.output
    assert not (tmp_path / "s/resources").exists()
