"""``librarian up`` as a user runs it: a process serving the library, stopped and resumed.

A small DomainMap (400 bundled points, ``specialize: auto`` onto one more
embedded cluster) is served by ``librarian up`` in a temporary directory; it
is queried through ``qdrant-client`` and compared with exact search, stopped
with SIGTERM (exit 0), and started again on the same state: nothing is
analysed or migrated again, and the answers are the same, id for id.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from qdrant_client import QdrantClient

from librarian.cli import main, run_job_command
from librarian.contracts.payload import RESERVED_KEYS
from librarian.demo.data import load_demo_data
from librarian.local.state import StateDirectory
from librarian.local.up import UpConfig, local_library
from librarian.storage.embedded import _ENGINES as embedded_engines
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord
from librarian.testing import UpProcess, free_port, start_up, wait_for, wait_until_ready

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
    """The top-10 ids of each query; every payload the router shows is the user's own."""
    client = QdrantClient(url=url, check_compatibility=False, timeout=30)
    try:
        answers = [
            client.query_points("docs", query=q.tolist(), limit=10, with_payload=True).points
            for q in queries
        ]
        page, _ = client.scroll("docs", limit=50, with_payload=True)
        shown = [p.payload or {} for points in answers for p in points] + [
            p.payload or {} for p in page
        ]
        assert shown
        assert not [p for p in shown if set(p) & set(RESERVED_KEYS)], shown[:3]
        return [[int(p.id) for p in points] for points in answers]
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
    assert "DomainMap/mine: Analyzing" in log
    assert "DomainMap/mine: Ready (Analyzed)" in log
    assert "Job/mine-" in log
    assert "Stopped." in log
    recall = np.mean(
        [len(set(a) & set(e.tolist())) / 10 for a, e in zip(answers, exact, strict=True)]
    )
    assert recall >= 0.9, recall
    stored = _stored_domainmap(root)
    assert stored["status"]["phase"] == "Ready"
    jobs = sorted((root / ".librarian/resources/default/jobs.batch").glob("*.json"))
    labeling = [j for j in jobs if "-label-v" in j.name]
    analysis = [j for j in jobs if "-analyze-g" in j.name]
    # The DomainMap's analysis Job and labeling Job; one migration Job per domain.
    assert (len(analysis), len(labeling)) == (1, 1)
    assert len(jobs) - len(labeling) - len(analysis) == len(library["domains"]) > 1
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
    assert "Resuming from .librarian/" in log
    assert "DomainMap/mine: Ready (Analyzed)" in log
    assert "Analyzing" not in log
    assert "Labeling" not in log
    assert "Running" not in log
    assert "Migrating" not in log
    # The same library gives the same answers: the routing model is learnt from the same
    # (deterministic) sample of it at every start.
    assert again == answers
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


def _load_embedded(path: Path, collection: str, vectors: np.ndarray, texts: list[str]) -> None:
    port = EmbeddedQdrant("local", path)
    try:
        port.create_collection(collection, CollectionSpec(vector_size=vectors.shape[1]))
        port.upsert(
            collection,
            [
                PointRecord(id=i, vector=vectors[i].tolist(), payload={"text": texts[i]})
                for i in range(len(vectors))
            ],
        )
    finally:
        port.close()


async def test_two_libraries_behind_one_address_then_everything_closed(tmp_path: Path) -> None:
    data = load_demo_data(limit=600)
    vectors = np.asarray(data.vectors[:600], dtype=np.float32)
    storage = tmp_path / "local"
    _load_embedded(storage, "docs", vectors[:300], data.texts[:300])
    _load_embedded(storage, "more", vectors[300:], data.texts[300:600])
    maps = []
    for name, collection in (("first", "docs"), ("second", "more")):
        spec = {**DOMAINMAP["spec"], "source": {"cluster": "local", "collection": collection}}
        spec["clusters"] = [{"name": "local", "embedded": str(storage)}]
        spec.pop("specialize")
        spec.pop("specialization")
        spec["catalog"] = {"collection": f"catalog-{name}"}
        maps.append({**DOMAINMAP, "metadata": {"name": name}, "spec": spec})
    files = [tmp_path / "maps.yaml"]
    files[0].write_text(yaml.safe_dump_all(maps))
    lines: list[str] = []
    config = UpConfig(files=files, state_dir=tmp_path / "state", port=0)
    state = StateDirectory(tmp_path / "state")
    async with (
        local_library(config, run_command=run_job_command, write=lines.append) as running,
        aiohttp.ClientSession() as http,
    ):

        async def ready() -> bool:
            async with http.get(f"{running.url}/readyz") as response:
                return response.status == 200

        await wait_for(ready, 180)
        assert {library.name for library in running.libraries} == {"docs", "more"}
        running_up = state.running()
        assert running_up is not None
        assert running_up.url == running.url
        async with http.get(f"{running.url}/collections") as response:
            names = {c["name"] for c in (await response.json())["result"]["collections"]}
        assert {"docs", "more"} <= names
        probe = {"query": vectors[305].tolist(), "limit": 3}
        async with http.post(f"{running.url}/collections/more/points/query", json=probe) as r:
            best = (await r.json())["result"]["points"][0]
        assert best["id"] == 5
        assert best["score"] > 0.999
        async with http.post(f"{running.url}/collections/docs/points/query", json=probe) as r:
            assert (await r.json())["result"]["points"][0]["score"] < 0.999  # not in "docs"
        async with http.post(f"{running.url}/collections/typo/points/query", json=probe) as r:
            assert r.status == 404
            assert "libraries: docs, more" in (await r.text())
        async with http.get(f"{running.url}/librarian/resources") as response:
            items = (await response.json())["items"]
        assert sorted(i["metadata"]["name"] for i in items if i["kind"] == "DomainMap") == [
            "first",
            "second",
        ]
        assert all(i["kind"] != "Secret" for i in items)
    assert "DomainMap/first: Ready (Analyzed)" in "\n".join(lines)
    assert "DomainMap/second: Ready (Analyzed)" in "\n".join(lines)
    assert state.running() is None  # the lock is released
    assert storage.resolve() not in embedded_engines  # its shards are closed


async def test_up_serves_a_library_whose_clusters_come_from_a_fleet(tmp_path: Path) -> None:
    """A QdrantFleet in the files given to ``up``: the DomainMap naming it is analysed and
    served, and the fleet is kept in the state with the other resources."""
    data = load_demo_data(limit=300)
    vectors = np.asarray(data.vectors[:300], dtype=np.float32)
    storage = tmp_path / "local"
    _load_embedded(storage, "docs", vectors, data.texts[:300])
    fleet = {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "QdrantFleet",
        "metadata": {"name": "qdrant"},
        "spec": {"clusters": [{"name": "local", "embedded": str(storage)}]},
    }
    spec = {k: v for k, v in DOMAINMAP["spec"].items() if k not in ("specialize", "specialization")}
    spec["fleetRef"] = {"name": "qdrant"}
    del spec["clusters"]
    files = [tmp_path / "library.yaml"]
    files[0].write_text(yaml.safe_dump_all([fleet, {**DOMAINMAP, "spec": spec}]))
    lines: list[str] = []
    config = UpConfig(files=files, state_dir=tmp_path / "state", port=0)
    async with (
        local_library(config, run_command=run_job_command, write=lines.append) as running,
        aiohttp.ClientSession() as http,
    ):

        async def ready() -> bool:
            async with http.get(f"{running.url}/readyz") as response:
                return response.status == 200

        await wait_for(ready, 180)
        probe = {"query": vectors[7].tolist(), "limit": 3}
        async with http.post(f"{running.url}/collections/docs/points/query", json=probe) as r:
            best = (await r.json())["result"]["points"][0]
        assert best["id"] == 7
    assert "DomainMap/mine: Ready (Analyzed)" in "\n".join(lines)
    stored = tmp_path / "state/resources/default/qdrantfleets.librarian.dev/qdrant.json"
    assert json.loads(stored.read_text())["spec"] == fleet["spec"]
