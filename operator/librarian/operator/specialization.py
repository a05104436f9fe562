"""What the operator does for one ClusterSpecialization: tune, configure, migrate, verify.

Why this exists: the kopf handlers stay thin. The phases follow the safe order
of a data move — Analyzing (25%: the domain, its size and the target are
checked), Configuring (50%: the tuned config is applied, immutable changes
refused), Migrating (75%: a ``batch/v1`` Job runs ``librarian migrate``),
Verifying (the Job's checkpoint says verified; recall and latency are
measured), Ready (100%) — or Failed with a reason and a message that says what
to fix. Every step posts an Event; nothing is deleted before verification.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import kopf

from librarian.contracts.api import CLUSTERSPECIALIZATIONS, GROUP, VERSION
from librarian.core.tuning import DomainStats, TuningError, tune_collection
from librarian.kube import client as api
from librarian.kube.fleet_access import resolve_clusters
from librarian.kube.spec import (
    ClusterRef,
    SpecError,
    SpecializationSpec,
    parse_domainmap_spec,
    parse_specialization_spec,
)
from librarian.operator.conditions import ConditionStatus, set_condition
from librarian.operator.context import OperatorContext
from librarian.operator.domainmap import PLURAL as DOMAINMAPS
from librarian.operator.jobs import JobSettings, build_migration_job
from librarian.services.labeling import domain_filter
from librarian.services.migration import CheckpointStore
from librarian.services.validation import validate_specialization
from librarian.storage.collection_config import apply_collection_config
from librarian.storage.errors import ClusterUnreachable, QdrantError

__all__ = [
    "PLURAL",
    "PROGRESS",
    "SpecializationFailed",
    "follow_specialization",
    "job_name",
    "start_specialization",
]

PLURAL = CLUSTERSPECIALIZATIONS
PROGRESS = {
    "Pending": 0,
    "Analyzing": 25,
    "Configuring": 50,
    "Migrating": 75,
    "Verifying": 90,
    "Ready": 100,
    "Failed": 0,
}


class SpecializationFailed(Exception):
    """A step failed; ``reason`` is the condition reason, ``retry`` whether it may pass."""

    def __init__(
        self, reason: str, message: str, *, retry: bool = False, delay: float = 30.0
    ) -> None:
        self.reason = reason
        self.retry = retry
        self.delay = delay
        super().__init__(message)


@dataclass(frozen=True)
class _Setup:
    parsed: SpecializationSpec
    domain_id: str
    domain_name: str
    source: ClusterRef
    source_collection: str
    target: ClusterRef
    target_collection: str


def _status(
    body: kopf.Body,
    phase: str,
    reason: str,
    message: str,
    *,
    ready: ConditionStatus,
    now: datetime,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    generation = body.meta.get("generation")
    conditions = set_condition(
        (body.get("status") or {}).get("conditions") or [],
        "Ready",
        ready,
        reason,
        message,
        observed_generation=generation,
        now=now,
    )
    return {
        "phase": phase,
        "progress": PROGRESS[phase],
        "conditions": conditions,
        "observedGeneration": generation,
        "message": message,
        **(extra or {}),
    }


def job_name(name: str, generation: int | None) -> str:
    return f"{name[:40]}-migrate-g{generation or 1}"


async def _setup(body: kopf.Body, context: OperatorContext) -> _Setup:
    namespace = body.meta.namespace or "default"
    try:
        parsed = parse_specialization_spec(
            body.spec, default_strategy=context.default_optimization_strategy
        )
    except SpecError as error:
        message = "invalid spec: " + "; ".join(error.problems)
        raise SpecializationFailed("InvalidSpec", message) from None
    domain_map = await _get_domain_map(namespace, parsed.domain_map)
    dm_spec = parse_domainmap_spec(
        domain_map.get("spec") or {}, name=parsed.domain_map, defaults=context.spec_defaults
    )
    domains = (domain_map.get("status") or {}).get("domains") or []
    match = next((d for d in domains if parsed.domain in (d["id"], d["name"])), None)
    if match is None:
        known = ", ".join(f"{d['id']} ({d['name']})" for d in domains) or "none yet"
        raise SpecializationFailed(
            "UnknownDomain",
            f"domain {parsed.domain!r} is not in DomainMap {parsed.domain_map} (known: {known})",
            retry=not domains,
            delay=3.0,  # the DomainMap's first analysis is about to publish its domains
        )
    clusters = {c.name: c for c in dm_spec.clusters}
    if parsed.target_cluster not in clusters:
        raise SpecializationFailed(
            "UnknownCluster",
            f"target cluster {parsed.target_cluster!r} is not in DomainMap "
            f"{parsed.domain_map}'s clusters ({', '.join(clusters)})",
        )
    target_collection = (
        parsed.target_collection or (f"{dm_spec.source_collection}-{match['name']}"[:200])
    )
    source_cluster = parsed.source_cluster or dm_spec.source_cluster
    source_collection = parsed.source_collection or dm_spec.source_collection
    if source_cluster not in clusters:
        raise SpecializationFailed(
            "UnknownCluster",
            f"source cluster {source_cluster!r} is not in DomainMap "
            f"{parsed.domain_map}'s clusters ({', '.join(clusters)})",
        )
    if (source_cluster, source_collection) == (parsed.target_cluster, target_collection):
        raise SpecializationFailed(
            "InvalidSpec",
            f"spec.source and the target are the same collection ({source_cluster}/"
            f"{source_collection}); a domain cannot be copied onto itself",
        )
    return _Setup(
        parsed,
        match["id"],
        match["name"],
        clusters[source_cluster],
        source_collection,
        clusters[parsed.target_cluster],
        target_collection,
    )


async def _get_domain_map(namespace: str, name: str) -> dict[str, Any]:
    try:
        return await api.get_json(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{DOMAINMAPS}/{name}"
        )
    except api.NotFound:
        raise SpecializationFailed(
            "DomainMapNotFound", f"DomainMap {namespace}/{name} does not exist", retry=True
        ) from None


def _configure_blocking(
    setup: _Setup, configs: list[Any], context: OperatorContext
) -> dict[str, Any]:
    fleet = context.fleet_factory(configs)
    try:
        source = fleet.get(setup.source.name)
        target = fleet.get(setup.target.name)
        info = source.collection_info(setup.source_collection)
        points = source.count(setup.source_collection, count_filter=domain_filter(setup.domain_id))
        if points == 0:
            raise SpecializationFailed(
                "DomainNotLabelled",
                f"no point of {setup.source_collection} carries domain {setup.domain_id}; "
                "wait for the DomainMap to label the source",
                retry=True,
            )
        parsed = setup.parsed
        try:
            tuned = tune_collection(
                DomainStats(
                    points=points,
                    dimension=info.vector_size,
                    distance=info.distance,
                    growth_per_day=parsed.growth_per_day,
                    queries_per_second=parsed.queries_per_second,
                    memory_budget_bytes=parsed.memory_budget_bytes,
                ),
                parsed.strategy,
                parsed.overrides,
            )
        except TuningError as error:
            raise SpecializationFailed("InvalidSpec", str(error)) from None
        outcome = apply_collection_config(target, setup.target_collection, tuned.collection)
        if outcome.action == "needs_migration":
            vector = any(c.field == "vector_size" for c in outcome.immutable)
            raise SpecializationFailed(
                "VectorSizeMismatch" if vector else "ImmutableConfigChange",
                f"target collection {setup.target_collection} on {setup.target.name}: "
                f"{outcome.describe()}; delete it or choose another target collection",
            )
        return {
            "points": points,
            "appliedConfig": {
                "action": outcome.action,
                "collection": asdict(tuned.collection),
                "search": asdict(tuned.search),
                "estimatedRamBytes": tuned.estimated_ram_bytes,
                "rationale": list(tuned.rationale),
            },
        }
    finally:
        fleet.close()


def _migrate_args(setup: _Setup, namespace: str, name: str, context: OperatorContext) -> list[str]:
    parsed = setup.parsed
    defaults = context.migration_defaults
    args = ["--name", f"{namespace}/{name}", "--domain", setup.domain_id]
    for side, ref, collection in (
        ("source", setup.source, setup.source_collection),
        ("target", setup.target, setup.target_collection),
    ):
        if ref.url:
            args += [f"--{side}-url", ref.url]
        else:
            args += [f"--{side}-embedded", str(ref.embedded)]
        args += [f"--{side}-collection", collection]
    args += [
        "--batch-size",
        str(parsed.batch_size or defaults["batch_size"]),
        "--workers",
        str(parsed.workers or defaults["parallel_workers"]),
    ]
    verify = defaults["verify_migration"] if parsed.verify is None else parsed.verify
    args.append("--verify" if verify else "--no-verify")
    if parsed.cleanup_source:
        args += ["--cleanup", "--grace", f"{parsed.grace_s}s"]
    return args  # progress lines in the Job's log; the operator reads the checkpoint


async def start_specialization(
    body: kopf.Body, patch: kopf.Patch, context: OperatorContext
) -> None:
    """Analyzing -> Configuring -> Migrating (the Job is created)."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    now = context.clock
    try:
        setup = await _setup(body, context)
        kopf.info(
            body,
            reason="Analyzing",
            message=f"domain {setup.domain_name} ({setup.domain_id}) -> "
            f"{setup.target.name}/{setup.target_collection}",
        )
        for ref in (setup.source, setup.target):
            if ref.url and ref.api_key_env and not ref.secret:
                raise SpecializationFailed(
                    "MigrationNeedsSecret",
                    f"cluster {ref.name!r} takes its API key from the operator's environment "
                    "(apiKeyEnv); a migration Job needs apiKeySecretRef",
                )
        configs = await resolve_clusters([setup.source, setup.target], namespace)
        configured = await asyncio.to_thread(_configure_blocking, setup, configs, context)
        kopf.info(
            body,
            reason="Configured",
            message=f"{setup.target_collection}: {configured['appliedConfig']['action']} "
            f"with strategy {setup.parsed.strategy}",
        )
        settings = JobSettings(
            image=setup.parsed.image or context.image,
            backoff_limit=setup.parsed.backoff_limit,
            active_deadline_s=int(setup.parsed.active_deadline_s),
        )
        job = build_migration_job(
            name=job_name(name, body.meta.get("generation")),
            namespace=namespace,
            owner={
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ClusterSpecialization",
                "metadata": {"name": name, "uid": body.meta.uid},
            },
            args=_migrate_args(setup, namespace, name, context),
            settings=settings,
            source_secret=setup.source.secret,
            target_secret=setup.target.secret,
        )
        await api.create_object(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
        kopf.info(body, reason="Migrating", message=f"Job {job['metadata']['name']} started")
        patch.status.update(
            _status(
                body,
                "Migrating",
                "MigrationRunning",
                f"Job {job['metadata']['name']} moves {configured['points']:,} points",
                ready="False",
                now=now(),
                extra={
                    "job": job["metadata"]["name"],
                    "domainId": setup.domain_id,
                    "targetCluster": setup.target.name,
                    "targetCollection": setup.target_collection,
                    "source": {"cluster": setup.source.name, "collection": setup.source_collection},
                    "migration": {"points": configured["points"]},
                    **configured,
                },
            )
        )
    except SpecializationFailed as error:
        _failed(body, patch, error, now())
    except (QdrantError, api.KubernetesApiError) as error:
        retry = isinstance(error, ClusterUnreachable | api.KubernetesApiError)
        reason = type(error).__name__
        _failed(body, patch, SpecializationFailed(reason, str(error), retry=retry), now())


def _failed(body: kopf.Body, patch: kopf.Patch, error: SpecializationFailed, now: datetime) -> None:
    phase = "Pending" if error.retry else "Failed"
    patch.status.update(_status(body, phase, error.reason, str(error), ready="False", now=now))
    kopf.event(body, type="Warning", reason=error.reason, message=str(error))
    if error.retry:
        raise kopf.TemporaryError(f"{error.reason}: {error}", delay=error.delay)
    raise kopf.PermanentError(f"{error.reason}: {error}")


def _job_state(job: Mapping[str, Any]) -> tuple[str, str]:
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded", ""
        if condition.get("type") == "Failed":
            return "failed", f"{condition.get('reason', 'Failed')}: {condition.get('message', '')}"
    if status.get("succeeded"):
        return "succeeded", ""
    return "running", ""


def _read_checkpoint(setup: _Setup, configs: list[Any], context: OperatorContext, key: str) -> Any:
    fleet = context.fleet_factory(configs)
    try:
        return CheckpointStore(fleet.get(setup.target.name)).load(key)
    finally:
        fleet.close()


async def _report_progress(
    body: kopf.Body, patch: kopf.Patch, context: OperatorContext, namespace: str, name: str
) -> None:
    """While the Job runs: copy its checkpoint (points copied of total) into the status."""
    try:
        setup = await _setup(body, context)
        configs = await resolve_clusters([setup.source, setup.target], namespace)
        checkpoint = await asyncio.to_thread(
            _read_checkpoint, setup, configs, context, f"{namespace}/{name}"
        )
    except (SpecializationFailed, QdrantError, api.KubernetesApiError):
        return  # progress is best effort; the Job's outcome decides
    if checkpoint is None:
        return
    migration = dict((body.get("status") or {}).get("migration") or {})
    update = {
        "phase": checkpoint.phase,
        "copied": checkpoint.copied,
        "sourceCount": checkpoint.source_count,
    }
    if {k: migration.get(k) for k in update} != update:
        patch.status["migration"] = {**migration, **update}


def _verify_blocking(
    setup: _Setup,
    configs: list[Any],
    context: OperatorContext,
    namespace: str,
    name: str,
    hnsw_ef: int | None,
) -> dict[str, Any]:
    fleet = context.fleet_factory(configs)
    try:
        source = fleet.get(setup.source.name)
        target = fleet.get(setup.target.name)
        checkpoint = CheckpointStore(target).load(f"{namespace}/{name}")
        if checkpoint is None or checkpoint.phase not in ("verified", "cleaning", "done"):
            raise SpecializationFailed(
                "NotVerified",
                "the migration Job finished but its checkpoint is not verified; "
                "the source was left untouched",
            )
        validation = validate_specialization(
            source,
            setup.source_collection,
            target,
            setup.target_collection,
            setup.domain_id,
            hnsw_ef=hnsw_ef,
        )
        return {
            "migration": {
                "phase": checkpoint.phase,
                "copied": checkpoint.copied,
                "sourceCount": checkpoint.source_count,
                "targetCount": checkpoint.target_count,
                "verifiedSample": checkpoint.verified_sample,
                "removedFromSource": checkpoint.removed_from_source,
            },
            "validation": {
                "queries": validation.queries,
                "recallAt10": validation.recall_at_k,
                "sourceP50Ms": validation.source_p50_ms,
                "targetP50Ms": validation.target_p50_ms,
                "speedup": round(validation.speedup, 2),
            },
        }
    finally:
        fleet.close()


async def follow_specialization(
    body: kopf.Body, patch: kopf.Patch, context: OperatorContext
) -> None:
    """While Migrating: read the Job; on success verify and go Ready, on failure go Failed."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    status = body.get("status") or {}
    try:
        job = await api.get_json(f"/apis/batch/v1/namespaces/{namespace}/jobs/{status['job']}")
    except api.KubernetesApiError as error:
        if isinstance(error, api.NotFound):
            _failed(
                body,
                patch,
                SpecializationFailed(
                    "MigrationJobMissing",
                    f"Job {status['job']} disappeared; change the spec or "
                    "delete and recreate the ClusterSpecialization to retry",
                ),
                context.clock(),
            )
        raise kopf.TemporaryError(str(error), delay=15) from None
    state, detail = _job_state(job)
    if state == "running":
        await _report_progress(body, patch, context, namespace, name)
        return
    if state == "failed":
        reason = "MigrationTimedOut" if "DeadlineExceeded" in detail else "MigrationJobFailed"
        _failed(
            body,
            patch,
            SpecializationFailed(
                reason,
                f"Job {status['job']} failed ({detail.strip(': ')}); nothing was deleted "
                "from the source; see the Job's logs, fix, and change the spec to retry",
            ),
            context.clock(),
        )
    patch.status.update(
        _status(
            body, "Verifying", "Verifying", "checking the copy", ready="False", now=context.clock()
        )
    )
    try:
        setup = await _setup(body, context)
        configs = await resolve_clusters([setup.source, setup.target], namespace)
        hnsw_ef = ((status.get("appliedConfig") or {}).get("search") or {}).get("hnsw_ef")
        verified = await asyncio.to_thread(
            _verify_blocking, setup, configs, context, namespace, name, hnsw_ef
        )
    except SpecializationFailed as error:
        _failed(body, patch, error, context.clock())
        return
    except (QdrantError, api.KubernetesApiError) as error:
        raise kopf.TemporaryError(str(error), delay=15) from None
    validation = verified["validation"]
    message = (
        f"{verified['migration']['targetCount']:,} points verified in "
        f"{setup.target.name}/{setup.target_collection}; recall@10 "
        f"{validation['recallAt10']:.3f}, p50 {validation['sourceP50Ms']:.2f} -> "
        f"{validation['targetP50Ms']:.2f} ms"
    )
    patch.status.update(
        _status(
            body, "Ready", "Specialized", message, ready="True", now=context.clock(), extra=verified
        )
    )
    kopf.info(body, reason="Ready", message=message)
