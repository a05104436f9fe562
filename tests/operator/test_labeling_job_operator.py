"""The DomainMap's labeling Job against the emulated API: the test plays the Job controller.

It checks the Job's shape (one pod per worker), the live progress in the
status, a worker killed mid-way that resumes where it stopped, and labels equal
to :func:`librarian.core.discovery.assign` over the vectors the engine holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from librarian.cli import run_job_command
from librarian.contracts.payload import LABEL_KEY, VERSION_KEY
from librarian.core.discovery import assign
from librarian.local.emulator import EmulatedCluster
from librarian.services.catalog import read_catalog
from librarian.services.labeling_job import (
    LabelingProgressStore,
    RangeProgress,
    WorkerInterrupted,
    label_range,
)
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import PointId, QdrantPort

from .conftest import (
    DOMAINMAPS,
    POINTS,
    domainmap,
    events_with,
    load_source,
    run_analysis_job,
    wait_for,
)

JOBS = "batch/v1/jobs"


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return condition  # type: ignore[no-any-return]
    return {}


async def _status_when(api: EmulatedCluster, name: str, check: Any) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        obj = await api.get(DOMAINMAPS, "default", name)
        status = (obj or {}).get("status") or {}
        return status if check(status) else None

    return await wait_for(ready, 90)  # type: ignore[no-any-return]


class _Counting:
    """The port as a restarted pod uses it, counting the ids it labels."""

    def __init__(self, port: QdrantPort) -> None:
        self._port = port
        self.labelled: list[PointId] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)

    def set_payload(self, collection: str, payload: Any, ids: Any = None, **kwargs: Any) -> None:
        self.labelled += list(ids or ())
        self._port.set_payload(collection, payload, ids, **kwargs)


def _all_points(port: QdrantPort) -> list[Any]:
    points: list[Any] = []
    offset = None
    while True:
        page, offset = port.scroll("packages", limit=256, offset=offset, with_vectors=True)
        points += page
        if offset is None:
            return points


async def test_labeling_job_runs_per_worker_reports_progress_and_resumes_a_killed_worker(
    cluster_without_jobs: EmulatedCluster, tmp_path: Path
) -> None:
    api = cluster_without_jobs
    storage = tmp_path / "general"
    load_source(storage)
    await api.create(domainmap("packages", storage, labeling={"workers": 3, "batchSize": 40}))
    analysis = await run_analysis_job(api, "packages")
    status = await _status_when(api, "packages", lambda s: s.get("phase") == "Labeling")
    labeling = status["labeling"]
    assert (labeling["workers"], labeling["ranges"], labeling["labeled"]) == (3, 3, 0)
    assert _condition({"status": status}, "Labeled")["reason"] == "LabelingRunning"
    assert _condition({"status": status}, "Ready")["status"] == "Unknown"
    job = await api.get(JOBS, "default", labeling["job"])
    assert job is not None
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DomainMap"
    container = spec["template"]["spec"]["containers"][0]
    plan_name = f"default/packages@v1/{analysis}"
    assert container["args"][:3] == ["label", "--name", plan_name]

    # Pod 0 runs to the end, as Kubernetes would run it.
    ok, output = run_job_command(container["args"], {"JOB_COMPLETION_INDEX": "0"})
    assert ok, output
    port = EmbeddedQdrant("general", storage)
    try:
        store = LabelingProgressStore(port)
        plan = store.load_plan(plan_name)
        first = store.load_range(plan.name, 0)
        assert first is not None
        assert first.done

        # Pod 1 is killed after two pages.
        def killed(progress: RangeProgress) -> None:
            if progress.scanned >= 80:
                raise WorkerInterrupted("pod killed")

        before_kill = _Counting(port)
        with pytest.raises(WorkerInterrupted):
            label_range(before_kill, plan, 1, store=store, batch_size=40, should_stop=killed)  # type: ignore[arg-type]
        assert len(before_kill.labelled) == 80

        # The status shows what the workers committed so far.
        progress = await _status_when(
            api, "packages", lambda s: s["labeling"]["labeled"] == first.labeled + 80
        )
        assert progress["phase"] == "Labeling"
        assert progress["labeling"]["workersDone"] == 1
        assert progress["labeling"]["pointsPerSecond"] > 0
        assert [w["labeled"] for w in progress["labeling"]["perWorker"]] == [first.labeled, 80, 0]
        assert "labelled" in progress["message"]

        # The replacement pod resumes after the last committed page: nothing labelled twice.
        after_restart = _Counting(port)
        end = label_range(after_restart, plan, 1, store=store, batch_size=40)  # type: ignore[arg-type]
        assert end.done
        assert end.attempts == 2
        assert not set(before_kill.labelled) & set(after_restart.labelled)
        assert end.labeled == 80 + len(after_restart.labelled)
    finally:
        port.close()
    ok, output = run_job_command(container["args"], {"JOB_COMPLETION_INDEX": "2"})
    assert ok, output
    await api.patch(
        JOBS,
        "default",
        labeling["job"],
        {
            "status": {
                "succeeded": 3,
                "conditions": [{"type": "Complete", "status": "True", "reason": "Completed"}],
            }
        },
    )
    done = await _status_when(api, "packages", lambda s: s.get("phase") == "Ready")
    assert done["labeling"]["labeled"] == done["labeling"]["total"] == POINTS
    assert done["labeling"]["workersDone"] == 3
    assert _condition({"status": done}, "Labeled")["status"] == "True"
    assert _condition({"status": done}, "Ready")["reason"] == "Analyzed"
    await events_with(api, {"Labeling", "Labeled"})

    # Every label is the nearest catalog domain of the point's vector, as the engine holds it.
    port = EmbeddedQdrant("general", storage)
    try:
        domains = [e.to_domain() for e in read_catalog(port, "librarian-catalog-packages")]
        points = _all_points(port)
        nearest = assign(np.asarray([p.dense() for p in points], dtype=np.float32), domains)
        expected = {p.id: domains[int(i)].id for p, i in zip(points, nearest, strict=True)}
        labels = {p.id: p.payload[LABEL_KEY] for p in points}
        assert labels == expected
        assert {p.payload[VERSION_KEY] for p in points} == {1}
    finally:
        port.close()


async def test_invalid_worker_counts_are_refused(
    cluster_without_jobs: EmulatedCluster, tmp_path: Path
) -> None:
    """The CRD's schema refuses them in a cluster; the operator says so too (the emulated API
    does not check schemas)."""
    await cluster_without_jobs.create(domainmap("many", tmp_path / "g", labeling={"workers": 0}))
    status = await _status_when(cluster_without_jobs, "many", lambda s: s.get("phase") == "Failed")
    assert "spec.labeling.workers must be an integer from 1 to 64, not 0" in status["message"]
    assert await cluster_without_jobs.list_objects(JOBS, "default") == []
