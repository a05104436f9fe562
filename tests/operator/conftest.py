"""kopf running in-process against the emulated Kubernetes API, with an embedded Qdrant fleet."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("LIBRARIAN_TIMER_TICK_SECONDS", "0.5")

import pytest
from qdrant_client.http import models

from librarian.cli import run_job_command
from librarian.core.collection_spec import DenseVectorSpec, SparseVectorSpec
from librarian.demo.data import load_demo_data
from librarian.kube import client as kube_client
from librarian.local.emulator import EmulatedCluster, load_crds
from librarian.local.job_controller import play_job_controller
from librarian.operator.context import OperatorContext
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord
from librarian.testing import events_with, operator_against_emulator, wait_for

__all__ = [
    "DOMAINMAPS",
    "POINTS",
    "REPO",
    "ManualClock",
    "domainmap",
    "events_with",
    "labeling_jobs_played",
    "load_named_source",
    "load_source",
    "play_job",
    "run_analysis_job",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[2]
DOMAINMAPS = "librarian.dev/v1alpha1/domainmaps"
POINTS = 400


def load_source(path: Path, collection: str = "packages", n: int = POINTS) -> None:
    data = load_demo_data(limit=n)
    port = EmbeddedQdrant("general", path)
    port.create_collection(collection, CollectionSpec(vector_size=384))
    port.upsert(
        collection,
        [
            PointRecord(
                id=i, vector=[float(x) for x in data.vectors[i]], payload={"text": data.texts[i]}
            )
            for i in range(n)
        ],
    )
    port.close()


def load_named_source(path: Path, n: int = POINTS) -> list[int]:
    """The demo points under the named dense vector ``text``, next to another dense vector, a
    sparse one and a multivector; every 10th point lacks ``text``. Returns those ids."""
    data = load_demo_data(limit=n)
    port = EmbeddedQdrant("general", path)
    port.create_collection(
        "packages",
        CollectionSpec(
            vectors={
                "text": DenseVectorSpec(size=int(data.vectors.shape[1])),
                "other": DenseVectorSpec(size=4, distance="Dot"),
                "late": DenseVectorSpec(size=2, multivector="max_sim"),
            },
            sparse_vectors={"keywords": SparseVectorSpec(modifier="idf")},
        ),
    )
    lacking = [i for i in range(n) if i % 10 == 9]
    port.upsert(
        "packages",
        [
            PointRecord(
                id=i,
                vector={
                    **({} if i in lacking else {"text": [float(x) for x in data.vectors[i]]}),
                    "other": [float(i % 7), 1.0, 0.0, 2.0],
                    "late": [[1.0, float(i % 3)]],
                    "keywords": models.SparseVector(indices=[i % 50], values=[1.0]),
                },
                payload={"text": data.texts[i]},
            )
            for i in range(n)
        ],
    )
    port.close()
    return lacking


def domainmap(name: str, storage: Path, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": {"cluster": "general", "collection": "packages"},
        "clusters": [{"name": "general", "embedded": str(storage)}],
        "sampleSize": 300,
        "bounds": {"maxDomains": 8, "minDomainSize": 15},
        "interval": "1h",
    }
    body.update(spec)
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "DomainMap",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


class ManualClock:
    """The operator's clock in a test: wall time until frozen, then only what the test adds.

    The operator reads it from its own thread; the test advances it from its loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frozen: datetime | None = None

    def __call__(self) -> datetime:
        with self._lock:
            return self._frozen or datetime.now(UTC)

    def freeze(self) -> datetime:
        with self._lock:
            self._frozen = self._frozen or datetime.now(UTC)
            return self._frozen

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._frozen = (self._frozen or datetime.now(UTC)) + timedelta(seconds=seconds)
            return self._frozen


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _is_domainmap_job(job: Mapping[str, Any]) -> bool:
    labels = job["metadata"].get("labels") or {}
    return labels.get("app.kubernetes.io/component") in ("analysis", "labeling")


@contextlib.asynccontextmanager
async def labeling_jobs_played(api: EmulatedCluster) -> AsyncIterator[None]:
    """Play the Job controller for analysis and labeling Jobs (each pod's command
    in-process) while the block runs; migration Jobs are left to the tests that play them."""
    done: set[str] = set()

    async def play() -> None:
        while True:
            await play_job_controller(api, None, done, run_job_command, selected=_is_domainmap_job)
            await asyncio.sleep(0.2)  # a rescan, as the Job controller's watch would wake it

    player = asyncio.create_task(play())
    try:
        yield
    finally:
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await player


async def play_job(api: EmulatedCluster, job_name: str) -> None:
    """Run the Job ``job_name``'s pods in-process and set its outcome, as Kubernetes would."""
    ran = await play_job_controller(
        api,
        "default",
        set(),
        run_job_command,
        selected=lambda job: job["metadata"]["name"] == job_name,
    )
    assert ran == 1, f"Job {job_name} was not there to run"


async def run_analysis_job(api: EmulatedCluster, name: str, *, not_named: str = "") -> str:
    """Wait for the DomainMap ``name``'s analysis Job (other than ``not_named``), run it and
    mark it complete; returns its name."""

    async def started() -> str | None:
        obj = await api.get(DOMAINMAPS, "default", name)
        status = (obj or {}).get("status") or {}
        job = (status.get("analysis") or {}).get("job")
        running = status.get("phase") == "Analyzing" and job and job != not_named
        return str(job) if running else None

    job_name: str = await wait_for(started, 90)
    await play_job(api, job_name)
    return job_name


@pytest.fixture
async def cluster(clock: ManualClock) -> AsyncIterator[EmulatedCluster]:
    """The operator against the emulated API; analysis and labeling Jobs run as they are
    created."""
    context = OperatorContext(progress_interval_s=0.2, clock=clock)
    async with (
        operator_against_emulator(
            load_crds(REPO / "crds"), context=context, record_requests=True
        ) as api,
        labeling_jobs_played(api),
    ):
        yield api


@pytest.fixture
async def cluster_without_jobs(clock: ManualClock) -> AsyncIterator[EmulatedCluster]:
    """The operator against the emulated API; the test plays every Job itself."""
    context = OperatorContext(progress_interval_s=0.2, clock=clock)
    async with operator_against_emulator(load_crds(REPO / "crds"), context=context) as api:
        yield api


@pytest.fixture(autouse=True)
async def _kube_session() -> AsyncIterator[None]:
    """Close the Kubernetes client's session of the test's event loop (a router may open one)."""
    yield
    await kube_client.close_session()
