"""A DomainMap's analysis as a Job: sample the source, discover, publish the catalog.

Why this exists: sampling a large source and running discovery takes minutes
to hours of CPU and gigabytes of memory; it runs in a Job of its own, not in
the operator's process. The operator writes a *request* (the spec's analysis
parameters, under the Job's name) next to the labeling plans on the source
cluster and claims the catalog for that name; the Job reads the request,
records its progress there (sampling n of N, discovering, publishing), and
publishes the domains, the partitions and a *report* (the status fields the
operator fills from it) in one atomic catalog flip
(:func:`librarian.services.catalog.write_catalog`). When labeling is on, the
Job also writes the labeling plan, before the flip, so the operator can start
the labeling Job as soon as it sees the publication.

A Job killed at any point reruns from the start: until the flip, routers and
re-analyses read the previous publication only; after it, a rerun finds its
publication served and stops. A Job the operator replaced (its spec changed)
finds the catalog claimed for another name and publishes nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from librarian.core.discovery import DiscoveryResult
from librarian.core.patterns import PatternReport, discover_patterns
from librarian.services.analysis import analyze_collection
from librarian.services.catalog import (
    PublicationSuperseded,
    read_head,
    read_previous,
    write_catalog,
)
from librarian.services.labeling_job import LabelingPlan, LabelingProgressStore, split_ids
from librarian.services.migration import CHECKPOINT_COLLECTION
from librarian.storage.collection_config import create_if_missing
from librarian.storage.errors import QdrantError
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

__all__ = [
    "AnalysisInterrupted",
    "AnalysisProgress",
    "AnalysisRequest",
    "AnalysisStore",
    "NoAnalysisRequest",
    "analysis_report",
    "domain_count_status",
    "domain_summaries",
    "labeling_plan_name",
    "run_analysis",
]

_NAMESPACE = uuid.UUID("0b6f3e8e-2c4d-4f0a-8a1e-7d9c5b3a2e61")

PHASES = ("Pending", "Sampling", "Discovering", "Publishing", "Published", "Superseded")
"""The analysis Job's phases, as the status shows them."""


class NoAnalysisRequest(QdrantError):
    """The Job found no request under its name (the operator writes it before the Job)."""


class AnalysisInterrupted(RuntimeError):
    """Raised by a ``checkpoint`` hook to stop the analysis between two steps (as a kill)."""


def labeling_plan_name(owner: str, version: int, analysis: str) -> str:
    """The labeling plan an analysis writes: one per DomainMap, version and analysis Job
    (an analysis replaced meanwhile writes another name, never this one's)."""
    return f"{owner}@v{version}/{analysis}"


@dataclass(frozen=True)
class AnalysisRequest:
    """What the operator asks of one analysis Job (from the DomainMap's spec)."""

    name: str  # the Job's name; the catalog publication is named so too
    owner: str  # namespace/name of the DomainMap
    version: int
    generation: int
    source_cluster: str
    source_collection: str
    catalog_collection: str
    vector: str = ""
    strategy: str = "hybrid"
    sample_size: int = 10_000
    text_field: str = "text"
    seed: int = 0
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    drift_threshold: float = 0.05
    labeling_workers: int | None = None  # None: labeling is off (the catalog is labelled)

    def to_json(self) -> str:
        data = asdict(self)
        data["thresholds"] = dict(self.thresholds)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> AnalysisRequest:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class AnalysisProgress:
    """Where the analysis Job stands, as it records it."""

    phase: str = "Pending"
    sampled: int = 0
    sample_target: int = 0
    source_points: int = 0
    attempts: int = 0
    started_at: float | None = None
    updated_at: float | None = None
    message: str = ""

    def as_status(self) -> dict[str, Any]:
        """The fields of ``status.analysis`` this progress fills."""
        return {
            "phase": self.phase,
            "sampled": self.sampled,
            "sampleTarget": self.sample_target,
            "sourcePoints": self.source_points,
            "attempts": self.attempts,
            "message": self.message,
        }


class AnalysisStore:
    """Requests and progress of analysis Jobs, as points of the checkpoint collection."""

    def __init__(self, port: QdrantPort, collection: str = CHECKPOINT_COLLECTION) -> None:
        self._port = port
        self._collection = collection

    def _id(self, key: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, key))

    def _load(self, key: str) -> dict[str, Any] | None:
        if not self._port.collection_exists(self._collection):
            return None
        found = self._port.retrieve(self._collection, [self._id(key)], with_vectors=False)
        return found[0].payload if found else None

    def _save(self, key: str, payload: Mapping[str, Any]) -> None:
        create_if_missing(self._port, self._collection, CollectionSpec(vector_size=1))
        point = PointRecord(id=self._id(key), vector=[1.0], payload=dict(payload))
        self._port.upsert(self._collection, [point])

    def save_request(self, request: AnalysisRequest) -> None:
        """Store ``request`` and forget any progress recorded under its name (a fresh run)."""
        self.clear(request.name)
        self._save(
            f"analysis:{request.name}", {"analysis": request.name, "request": request.to_json()}
        )

    def load_request(self, name: str) -> AnalysisRequest:
        payload = self._load(f"analysis:{name}")
        if payload is None:
            raise NoAnalysisRequest(
                self._port.cluster,
                f"no analysis request named {name!r} in {self._collection}; the operator "
                "writes it before it starts the analysis Job",
                collection=self._collection,
            )
        return AnalysisRequest.from_json(str(payload["request"]))

    def save_progress(self, name: str, progress: AnalysisProgress) -> None:
        self._save(
            f"analysis:{name}:progress",
            {"analysis": name, "progress": json.dumps(asdict(progress))},
        )

    def load_progress(self, name: str) -> AnalysisProgress | None:
        payload = self._load(f"analysis:{name}:progress")
        if payload is None:
            return None
        data = json.loads(str(payload["progress"]))
        known = set(AnalysisProgress.__dataclass_fields__)
        return AnalysisProgress(**{k: v for k, v in data.items() if k in known})

    def clear(self, name: str) -> None:
        """Remove the request ``name`` and its progress."""
        if not self._port.collection_exists(self._collection):
            return
        keys = [f"analysis:{name}", f"analysis:{name}:progress"]
        self._port.delete_points(self._collection, ids=[self._id(k) for k in keys])


def domain_summaries(result: DiscoveryResult) -> list[dict[str, Any]]:
    """The domains as the status lists them (no centroids: those live in the catalog)."""
    partitions: dict[int, int] = {}
    for partition in result.partitions:
        partitions[partition.domain] = partitions.get(partition.domain, 0) + 1
    return [
        {
            "id": d.id,
            "name": d.name,
            "size": d.size,
            "radius": round(d.radius, 4),
            "cohesion": round(d.cohesion, 4),
            "keywords": list(d.keywords[:8]),
            "partitions": partitions.get(index, 0),
            **({"parent": d.parent} if d.parent else {}),
        }
        for index, d in enumerate(result.domains)
    ]


def domain_count_status(result: DiscoveryResult) -> dict[str, Any] | None:
    """How the number of domains was chosen: criterion, chosen and final count, each
    candidate's score and a one-line explanation (None when discovery did not say)."""
    choice = result.domain_count
    if choice is None:
        return None
    return {
        "criterion": choice.criterion,
        "chosen": choice.chosen,
        "final": choice.final or len(result.domains),
        "candidates": [{"k": k, "score": round(score, 4)} for k, score in choice.scores],
        "reason": choice.reason,
        "summary": choice.summary(),
    }


def analysis_report(
    result: DiscoveryResult,
    patterns: PatternReport,
    *,
    sampled: int,
    source_points: int,
    labeling: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the operator fills the status from (JSON-ready): the domains, the confidence,
    how their number was chosen, what was sampled, and how they changed since the last
    publication."""
    choice = domain_count_status(result)
    return {
        "domains": domain_summaries(result),
        "domainCount": len(result.domains),
        "confidence": round(result.confidence, 4),
        "strategy": result.strategy,
        **({"domainCountChoice": choice} if choice is not None else {}),
        "sampled": sampled,
        "sourcePoints": source_points,
        "patterns": {
            "emerging": patterns.emerging,
            "vanished": patterns.vanished,
            "maxDrift": round(patterns.max_drift, 4),
            "growth": {c.id: round(c.growth, 4) for c in patterns.changes},
            "drifted": patterns.drifted,
            "summary": patterns.summary(),
        },
        **({"labeling": dict(labeling)} if labeling is not None else {}),
    }


Checkpoint = Callable[[AnalysisProgress], None]


@dataclass
class _Recorder:
    store: AnalysisStore
    name: str
    clock: Callable[[], float]
    checkpoint: Checkpoint | None
    progress: AnalysisProgress

    def record(self, **changes: Any) -> None:
        self.progress = replace(self.progress, updated_at=self.clock(), **changes)
        self.store.save_progress(self.name, self.progress)
        if self.checkpoint is not None:
            self.checkpoint(self.progress)


def run_analysis(
    source: QdrantPort,
    catalog: QdrantPort,
    request: AnalysisRequest,
    *,
    store: AnalysisStore | None = None,
    clock: Callable[[], float] = time.time,
    checkpoint: Checkpoint | None = None,
    sample_chunk: int = 10_000,
) -> AnalysisProgress:
    """Run the analysis ``request`` asks for and publish it; returns where it ended
    (``Published``, or ``Superseded`` when the operator claimed the catalog for another
    analysis meanwhile: nothing is published then).

    ``checkpoint`` is called after each recorded step with the progress so far; raising
    :class:`AnalysisInterrupted` there stops the analysis as a kill would.
    """
    store = store or AnalysisStore(source)
    stored = store.load_progress(request.name)
    now = clock()
    recorder = _Recorder(
        store,
        request.name,
        clock,
        checkpoint,
        AnalysisProgress(
            attempts=(stored.attempts if stored else 0) + 1,
            started_at=now,
            sample_target=request.sample_size,
        ),
    )
    head = read_head(catalog, request.catalog_collection, request.owner)
    if head is not None and head.publication == request.name:
        if stored is not None:
            recorder.progress = replace(stored, attempts=recorder.progress.attempts)
        recorder.record(phase="Published", message="published by an earlier attempt")
        return recorder.progress
    if head is None or head.wanted != request.name:
        wanted = head.wanted if head is not None else None
        recorder.record(
            phase="Superseded",
            message=f"the catalog of {request.owner} is claimed for {wanted!r}: this analysis "
            "was replaced and publishes nothing",
        )
        return recorder.progress
    recorder.record(phase="Sampling", message=f"sampling {request.source_collection}")
    previous, previous_partitions = read_previous(
        catalog, request.catalog_collection, request.owner
    )

    def sampled(done: int, target: int) -> None:
        recorder.record(
            phase="Sampling",
            sampled=done,
            sample_target=target,
            message=f"sampled {done:,} of {target:,} points",
        )

    def stage(name: str) -> None:
        if name == "discovering":
            recorder.record(
                phase="Discovering",
                message=f"discovering domains in {recorder.progress.sampled:,} sampled points",
            )

    outcome = analyze_collection(
        source,
        request.source_collection,
        strategy=request.strategy,
        sample_size=request.sample_size,
        text_field=request.text_field,
        seed=request.seed,
        previous=previous,
        previous_partitions=previous_partitions,
        thresholds=request.thresholds,
        on_stage=stage,
        on_sampled=sampled,
        sample_chunk=sample_chunk,
        vector=request.vector,
    )
    result = outcome.result
    recorder.record(
        phase="Publishing",
        sampled=outcome.sampled,
        source_points=outcome.source_points,
        message=f"publishing {len(result.domains)} domains and {len(result.partitions)} "
        f"partitions to {request.catalog_collection}",
    )
    patterns = discover_patterns(previous, result.domains, drift_threshold=request.drift_threshold)
    plan: LabelingPlan | None = None
    if request.labeling_workers is not None:
        plan = LabelingPlan(
            name=labeling_plan_name(request.owner, request.version, request.name),
            collection=request.source_collection,
            version=request.version,
            domains=tuple(result.domains),
            ranges=split_ids(outcome.sample_ids, max(1, request.labeling_workers)),
            total=outcome.source_points,
            vector=request.vector,
        )
        LabelingProgressStore(source).save_plan(plan)
    report = analysis_report(
        result,
        patterns,
        sampled=outcome.sampled,
        source_points=outcome.source_points,
        labeling=None
        if plan is None
        else {"plan": plan.name, "ranges": len(plan.ranges), "total": plan.total},
    )
    try:
        write_catalog(
            catalog,
            request.catalog_collection,
            request.owner,
            result.domains,
            request.version,
            partitions=result.partitions,
            source=(request.source_cluster, request.source_collection),
            labelled=plan is None,
            publication=request.name,
            report=report,
        )
    except PublicationSuperseded as error:
        if plan is not None:
            LabelingProgressStore(source).clear(plan.name, len(plan.ranges))
        recorder.record(phase="Superseded", message=str(error))
        return recorder.progress
    recorder.record(
        phase="Published",
        message=f"published {len(result.domains)} domains, confidence {result.confidence:.2f}, "
        f"version {request.version}",
    )
    return recorder.progress
