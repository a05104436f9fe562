"""The DomainMap's analysis Job against the emulated API: the test plays the Job controller.

It checks the Job's shape, the phases the status shows while it runs, a result
equal to :func:`librarian.core.discovery.discover` run independently on the
same sample, that a Job killed before it published leaves the previous catalog
served (and its rerun publishes), that a Job whose spec changed meanwhile never
publishes, and that failed Jobs are created again with a delay, then reported
with how to retry by hand.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from librarian.cli import run_job_command
from librarian.contracts.metadata import RETRY_ANNOTATION
from librarian.core.discovery import discover
from librarian.kube.fleet_access import CredentialPolicy
from librarian.kube.spec import parse_domainmap_spec
from librarian.local.emulator import EmulatedCluster, load_crds
from librarian.operator.analysis import RetryPolicy
from librarian.operator.context import OperatorContext
from librarian.router.loader import catalog_loader
from librarian.services.analysis_job import (
    AnalysisInterrupted,
    AnalysisProgress,
    AnalysisStore,
    run_analysis,
)
from librarian.services.catalog import (
    PUBLICATION_KEY,
    labels_pending,
    read_head,
    read_published,
)
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import QdrantPort
from librarian.testing import operator_against_emulator

from .conftest import (
    DOMAINMAPS,
    POINTS,
    REPO,
    ManualClock,
    domainmap,
    events_with,
    load_source,
    play_job,
    run_analysis_job,
    wait_for,
)

JOBS = "batch/v1/jobs"
CATALOG = "librarian-catalog-packages"
OWNER = "default/packages"


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for condition in status.get("conditions") or []:
        if condition["type"] == type_:
            return condition  # type: ignore[no-any-return]
    return {}


async def _status_when(api: EmulatedCluster, check: Any, name: str = "packages") -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        obj = await api.get(DOMAINMAPS, "default", name)
        status = (obj or {}).get("status") or {}
        return status if check(status) else None

    return await wait_for(ready, 120)  # type: ignore[no-any-return]


def _analyzing(status: dict[str, Any], job: str | None = None) -> bool:
    analysis = status.get("analysis") or {}
    return (
        status.get("phase") == "Analyzing"
        and bool(analysis.get("job"))
        and (job is None or analysis["job"] == job)
    )


async def _job(api: EmulatedCluster, name: str) -> dict[str, Any]:
    job = await api.get(JOBS, "default", name)
    assert job is not None, f"no Job {name}"
    return job


async def _set_job_outcome(api: EmulatedCluster, name: str, *, failed: bool) -> None:
    condition = (
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "pods"}
        if failed
        else {"type": "Complete", "status": "True", "reason": "Completed"}
    )
    counts = {"failed": 7} if failed else {"succeeded": 1}
    await api.patch(JOBS, "default", name, {"status": {**counts, "conditions": [condition]}})


class _Pauses:
    """Holds the analysis (run in a thread) at chosen phases until the test lets it go."""

    def __init__(self, loop: asyncio.AbstractEventLoop, phases: set[str]) -> None:
        self._loop = loop
        self._phases = set(phases)
        self.reached: asyncio.Queue[AnalysisProgress] = asyncio.Queue()
        self._go = threading.Event()

    def __call__(self, progress: AnalysisProgress) -> None:
        if progress.phase not in self._phases:
            return
        self._phases.discard(progress.phase)
        self._go.clear()
        self._loop.call_soon_threadsafe(self.reached.put_nowait, progress)
        if not self._go.wait(timeout=120):
            raise AnalysisInterrupted("the test never let the analysis go on")

    def release(self) -> None:
        self._go.set()


def _published(port: QdrantPort) -> tuple[list[Any], list[Any]]:
    published = read_published(port, CATALOG, OWNER)
    return published.entries, published.partitions


async def test_analysis_job_shows_its_phases_and_publishes_what_discovery_finds(
    cluster_without_jobs: EmulatedCluster, tmp_path: Path
) -> None:
    api = cluster_without_jobs
    storage = tmp_path / "general"
    load_source(storage)
    # The sample is the whole collection, so the test can run discovery on the same points.
    body = domainmap("packages", storage, sampleSize=POINTS, labeling={"workers": 2})
    await api.create(body)
    status = await _status_when(api, _analyzing)
    job_name = status["analysis"]["job"]
    assert job_name == "packages-analyze-g1"
    assert (status["analysis"]["generation"], status["analysis"]["version"]) == (1, 1)
    job = await _job(api, job_name)
    assert "completionMode" not in job["spec"]
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "analysis"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DomainMap"
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["args"][:3] == ["analyze", "--name", job_name]

    loop = asyncio.get_running_loop()
    pauses = _Pauses(loop, {"Sampling", "Discovering", "Publishing"})
    port = EmbeddedQdrant("general", storage)
    try:
        store = AnalysisStore(port)
        request = store.load_request(job_name)
        running = asyncio.create_task(
            asyncio.to_thread(run_analysis, port, port, request, store=store, checkpoint=pauses)
        )
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(3):
            progress = await asyncio.wait_for(pauses.reached.get(), 120)
            shown = await _status_when(
                api, lambda s, p=progress.phase: s["analysis"].get("phase") == p
            )
            seen[progress.phase] = dict(shown["analysis"])
            assert shown["phase"] == "Analyzing"
            assert shown["message"].startswith(f"Job {job_name}: ")
            pauses.release()
        end = await running
        assert end.phase == "Published"
        assert seen["Sampling"]["sampleTarget"] == POINTS
        assert (seen["Discovering"]["sampled"], seen["Discovering"]["sampleTarget"]) == (
            POINTS,
            POINTS,
        )
        assert seen["Publishing"]["sourcePoints"] == POINTS
        assert "publishing" in seen["Publishing"]["message"]
        # Published, labels still to write: routers wait, the operator reads the report.
        assert labels_pending(port, CATALOG, OWNER)
        entries, partitions = _published(port)

        # Discovery run here, on the same points, with the spec's parameters.
        points, offset = [], None
        while True:
            page, offset = port.scroll("packages", limit=256, offset=offset, with_vectors=True)
            points += page
            if offset is None:
                break
    finally:
        port.close()
    points.sort(key=lambda p: p.id)
    parsed = parse_domainmap_spec(body["spec"], name="packages")
    expected = discover(
        np.asarray([p.dense() for p in points], dtype=np.float32),
        strategy=parsed.strategy,
        texts=[str(p.payload["text"]) for p in points],
        seed=parsed.seed,
        **{**parsed.thresholds, "population": POINTS},
    )
    by_id = {e.domain_id: e for e in entries}
    assert set(by_id) == {d.id for d in expected.domains}
    for domain in expected.domains:
        np.testing.assert_allclose(by_id[domain.id].centroid, domain.centroid, atol=1e-5)
        assert by_id[domain.id].size == domain.size
    assert {p.partition_id for p in partitions} == {p.id for p in expected.partitions}

    await _set_job_outcome(api, job_name, failed=False)
    labeling = await _status_when(api, lambda s: s.get("phase") == "Labeling")
    assert labeling["version"] == 1
    assert labeling["domainCount"] == len(expected.domains)
    assert labeling["confidence"] == round(expected.confidence, 4)
    assert labeling["sampled"] == labeling["sourcePoints"] == POINTS
    assert expected.domain_count is not None
    assert labeling["domainCountChoice"]["chosen"] == expected.domain_count.chosen
    assert labeling["analysis"]["phase"] == "Published"
    assert _condition(labeling, "Analyzed")["status"] == "True"
    assert labeling["labeling"]["plan"] == f"{OWNER}@v1/{job_name}"
    await events_with(api, {"Analyzing", "Analyzed", "Labeling"})


async def test_a_killed_analysis_leaves_the_previous_catalog_served_and_its_rerun_publishes(
    cluster_without_jobs: EmulatedCluster, tmp_path: Path
) -> None:
    api = cluster_without_jobs
    storage = tmp_path / "general"
    load_source(storage)
    body = domainmap("packages", storage, sampleSize=POINTS, labeling={"enabled": False})
    await api.create(body)
    first = await run_analysis_job(api, "packages")
    ready = await _status_when(api, lambda s: s.get("phase") == "Ready")
    assert ready["version"] == 1
    port = EmbeddedQdrant("general", storage)
    try:
        before = _published(port)
        assert before[0]
        assert before[1]
    finally:
        port.close()

    # A new generation: a new Job, killed after it wrote its entries, before the flip.
    await api.patch(DOMAINMAPS, "default", "packages", {"spec": {"interval": "2h"}})
    status = await _status_when(api, lambda s: _analyzing(s) and s["analysis"]["job"] != first)
    second = status["analysis"]["job"]
    assert second == "packages-analyze-g2"
    port = EmbeddedQdrant("general", storage)

    class _KilledAtTheFlip:
        def __getattr__(self, name: str) -> Any:
            return getattr(port, name)

        def set_payload(self, collection: str, payload: Any, *args: Any, **kwargs: Any) -> None:
            if PUBLICATION_KEY in payload:
                raise AnalysisInterrupted("pod killed")
            port.set_payload(collection, payload, *args, **kwargs)

    try:
        request = AnalysisStore(port).load_request(second)
        with pytest.raises(AnalysisInterrupted):
            run_analysis(port, _KilledAtTheFlip(), request)  # type: ignore[arg-type]
        staged = port.count(CATALOG, count_filter=_publication_filter(second))
        assert staged > 0  # half of a publication is there ...
        assert _published(port) == before  # ... and no reader sees it
        assert not labels_pending(port, CATALOG, OWNER)
        load = catalog_loader(
            Fleet.of_ports({"general": port}),
            name="packages",
            source=("general", "packages"),
            catalog=("general", CATALOG),
            owner=OWNER,
        )
        served = await load()
        assert served is not None
        assert {d.domain_id for d in served.domains} == {e.domain_id for e in before[0]}
    finally:
        port.close()

    # Kubernetes starts the pod again: it reruns from the start and publishes.
    await play_job(api, second)
    done = await _status_when(api, lambda s: s.get("phase") == "Ready" and s.get("version") == 2)
    assert done["observedGeneration"] == 2
    port = EmbeddedQdrant("general", storage)
    try:
        entries, partitions = _published(port)
        assert {e.version for e in entries} == {2}
        # The same points and seed: the re-analysis keeps every partition id it had.
        assert {p.partition_id for p in partitions} == {p.partition_id for p in before[1]}
        head = read_head(port, CATALOG, OWNER)
        assert head is not None
        assert (head.publication, head.version) == (second, 2)
        assert port.count(CATALOG, count_filter=_publication_filter(first)) == 0
    finally:
        port.close()


def _publication_filter(publication: str) -> Any:
    from qdrant_client.http import models

    return models.Filter(
        must=[
            models.FieldCondition(key=PUBLICATION_KEY, match=models.MatchValue(value=publication))
        ]
    )


async def test_a_job_whose_spec_changed_meanwhile_never_publishes(
    cluster_without_jobs: EmulatedCluster, tmp_path: Path
) -> None:
    api = cluster_without_jobs
    storage = tmp_path / "general"
    load_source(storage)
    await api.create(domainmap("packages", storage, labeling={"enabled": False}))
    status = await _status_when(api, _analyzing)
    stale = status["analysis"]["job"]
    stale_job = await _job(api, stale)

    # The stale Job's pod is past its start when the spec changes.
    loop = asyncio.get_running_loop()
    pauses = _Pauses(loop, {"Discovering"})
    port = EmbeddedQdrant("general", storage)
    try:
        request = AnalysisStore(port).load_request(stale)
        running = asyncio.create_task(
            asyncio.to_thread(run_analysis, port, port, request, checkpoint=pauses)
        )
        await asyncio.wait_for(pauses.reached.get(), 120)
        await api.patch(DOMAINMAPS, "default", "packages", {"spec": {"sampleSize": 250}})
        newer = await _status_when(api, lambda s: _analyzing(s) and s["analysis"]["job"] != stale)
        fresh = newer["analysis"]["job"]
        assert newer["analysis"]["generation"] == 2
        assert await api.get(JOBS, "default", stale) is None  # replaced
        pauses.release()
        end = await running
        assert end.phase == "Superseded"
        assert _published(port) == ([], [])
        assert port.count(CATALOG, count_filter=_publication_filter(stale)) == 0
    finally:
        port.close()

    await play_job(api, fresh)
    done = await _status_when(api, lambda s: s.get("phase") == "Ready")
    assert (done["observedGeneration"], done["sampled"]) == (2, 250)

    # The stale pod runs once more (its Job was deleted, the pod lingered): nothing changes.
    ok, output = run_job_command(stale_job["spec"]["template"]["spec"]["containers"][0]["args"])
    assert ok, output
    assert "Superseded" in output
    port = EmbeddedQdrant("general", storage)
    try:
        head = read_head(port, CATALOG, OWNER)
        assert head is not None
        assert head.publication == fresh
        assert {e.version for e in _published(port)[0]} == {1}
    finally:
        port.close()


@pytest.fixture
async def retrying(clock: ManualClock) -> AsyncIterator[EmulatedCluster]:
    """The operator with two retries per Job, 60 s then 120 s apart, on the test's clock."""
    context = OperatorContext(
        progress_interval_s=0.2, clock=clock, job_retry=RetryPolicy(retries=2, base_s=60)
    )
    async with operator_against_emulator(load_crds(REPO / "crds"), context=context) as api:
        yield api


async def test_failed_jobs_are_retried_then_reported_with_how_to_retry(
    retrying: EmulatedCluster, tmp_path: Path, clock: ManualClock
) -> None:
    api = retrying
    storage = tmp_path / "general"
    load_source(storage)
    clock.freeze()
    await api.create(domainmap("packages", storage, labeling={"workers": 2}))

    # The analysis Job fails: another one starts once its delay has passed.
    status = await _status_when(api, _analyzing)
    first = status["analysis"]["job"]
    await _set_job_outcome(api, first, failed=True)
    waiting = await _status_when(api, lambda s: bool(s["analysis"].get("retryAt")))
    assert waiting["phase"] == "Analyzing"
    assert "BackoffLimitExceeded" in waiting["analysis"]["lastFailure"]
    assert _condition(waiting, "Analyzed")["reason"] == "AnalysisFailedRetrying"
    clock.advance(60)
    retried = await _status_when(api, lambda s: _analyzing(s) and s["analysis"]["job"] != first)
    assert retried["analysis"]["job"] == f"{first}-2"
    assert retried["analysis"]["attempt"] == 2
    await play_job(api, retried["analysis"]["job"])

    # The labeling Job fails three times: two retries, then the DomainMap says what to do.
    jobs = []
    for attempt, delay in ((1, 60), (2, 120), (3, None)):
        labeling = await _status_when(
            api,
            lambda s, a=attempt: (
                s.get("phase") == "Labeling"
                and s["labeling"].get("attempt") == a
                and not s["labeling"].get("retryAt")
            ),
        )
        jobs.append(labeling["labeling"]["job"])
        await _set_job_outcome(api, jobs[-1], failed=True)
        if delay is None:
            break
        await _status_when(api, lambda s: bool(s["labeling"].get("retryAt")))
        clock.advance(delay)
    assert jobs == ["packages-label-v1", "packages-label-v1-2", "packages-label-v1-3"]
    assert await api.get(JOBS, "default", jobs[0]) is None  # a retry replaces the failed Job
    failed = await _status_when(api, lambda s: s.get("phase") == "Failed")
    ready = _condition(failed, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "LabelingFailed")
    assert "3 attempt(s) failed, no retry is left" in ready["message"]
    assert f"kubectl annotate domainmap packages -n default {RETRY_ANNOTATION}=" in ready["message"]
    assert _condition(failed, "Labeled")["reason"] == "LabelingFailed"
    await events_with(api, {"LabelingFailed", "AnalysisFailed"})

    # By hand: the annotation starts another labeling Job, which resumes and finishes.
    await api.patch(
        DOMAINMAPS, "default", "packages", {"metadata": {"annotations": {RETRY_ANNOTATION: "1"}}}
    )
    again = await _status_when(
        api, lambda s: s.get("phase") == "Labeling" and s["labeling"]["job"] not in jobs
    )
    assert again["labeling"]["attempt"] == 1
    assert again["retryHandled"] == "1"
    await play_job(api, again["labeling"]["job"])
    done = await _status_when(api, lambda s: s.get("phase") == "Ready")
    assert done["labeling"]["labeled"] == POINTS
    assert _condition(done, "Labeled")["status"] == "True"


async def test_a_cluster_keyed_from_the_operators_environment_cannot_be_analysed_by_a_job(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENERAL_KEY", "a-key-only-the-operator-has")
    # The operator may use the key (its policy allows the variable), but a Job's pod does not
    # have the operator's environment: the analysis needs the key from a Secret.
    context = OperatorContext(
        progress_interval_s=0.2,
        clock=clock,
        credential_policy=CredentialPolicy.of(allowed_api_key_env={"GENERAL_KEY"}),
    )
    async with operator_against_emulator(load_crds(REPO / "crds"), context=context) as api:
        body = domainmap("remote", Path("unused"))
        body["spec"]["clusters"] = [
            {"name": "general", "url": "https://general.example:6333", "apiKeyEnv": "GENERAL_KEY"}
        ]
        await api.create(body)
        failed = await _status_when(api, lambda s: s.get("phase") == "Failed", name="remote")
        ready = _condition(failed, "Ready")
        assert ready["reason"] == "AnalysisNeedsSecret"
        assert "apiKeySecretRef" in ready["message"]
        assert await api.list_objects(JOBS, "default") == []
