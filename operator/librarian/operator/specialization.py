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
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import kopf

from librarian.contracts.api import CLUSTERSPECIALIZATIONS, GROUP, VERSION
from librarian.contracts.moves import MovePhase
from librarian.core.collection_spec import (
    RoutingVectorError,
    routing_vector_name,
    with_source_vectors,
)
from librarian.core.hlc import encode_version
from librarian.core.tuning import DomainStats, TuningError, tune_collection
from librarian.kube import client as api
from librarian.kube.fences import read_leases, waiting_routers
from librarian.kube.fleet_access import CredentialRefused, resolve_clusters
from librarian.kube.fleets import FleetNotFound, load_domainmap_spec
from librarian.kube.job_pod import JobPodError, JobPodSettings, merge_job_pod
from librarian.kube.spec import (
    ClusterRef,
    SpecError,
    SpecializationSpec,
    parse_specialization_spec,
)
from librarian.operator.conditions import ConditionStatus, set_condition
from librarian.operator.context import OperatorContext
from librarian.operator.domainmap import PLURAL as DOMAINMAPS
from librarian.operator.domainmap import owner_of
from librarian.operator.job_pods import job_outcome, show_stalled
from librarian.operator.jobs import JobSettings, build_migration_job
from librarian.services.domain_homes import copy_payload_indexes
from librarian.services.labeling import domain_filter
from librarian.services.migration import CheckpointStore, MigrationPlan, clean_old_home
from librarian.services.placement import (
    Placement,
    ensure_partition_index,
    placed_by_field,
    read_placement,
)
from librarian.services.validation import validate_specialization
from librarian.services.versioning import ensure_version_index
from librarian.storage.collection_config import apply_collection_config
from librarian.storage.errors import ClusterUnreachable, QdrantError

__all__ = [
    "PLURAL",
    "PROGRESS",
    "SpecializationFailed",
    "advance_move",
    "follow_specialization",
    "job_name",
    "move_in_flight",
    "start_specialization",
]

PLURAL = CLUSTERSPECIALIZATIONS
PROGRESS = {
    "Pending": 0,
    "Analyzing": 25,
    "Configuring": 50,
    "Fencing": 60,
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
    shared_source: bool = True  # the source is the DomainMap's (shared by every domain)
    vector: str | None = None  # the DomainMap's spec.source.vector (None: the default one)
    # The DomainMap's catalog (its cluster, collection and owner): the domain's partitions,
    # each point of the home marked with its own.
    catalog: tuple[ClusterRef, str, str] | None = None


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
    _job_pod(parsed, context)  # spec.job over the operator's jobs values: refused before any work
    domain_map = await _get_domain_map(namespace, parsed.domain_map)
    try:
        dm_spec = await load_domainmap_spec(
            domain_map.get("spec") or {},
            namespace=namespace,
            name=parsed.domain_map,
            defaults=context.spec_defaults,
        )
    except SpecError as error:
        raise SpecializationFailed(
            "DomainMapInvalid", f"DomainMap {parsed.domain_map} is invalid: {error}"
        ) from None
    except FleetNotFound as error:
        raise SpecializationFailed("FleetNotFound", str(error), retry=True, delay=30.0) from None
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
        shared_source=(source_cluster, source_collection)
        == (dm_spec.source_cluster, dm_spec.source_collection),
        vector=dm_spec.source_vector,
        catalog=(
            (
                clusters[dm_spec.catalog_cluster],
                dm_spec.catalog_collection,
                owner_of(namespace, parsed.domain_map),
            )
            if dm_spec.catalog_collection and dm_spec.catalog_cluster in clusters
            else None
        ),
    )


def _job_pod(parsed: SpecializationSpec, context: OperatorContext) -> JobPodSettings:
    """The migration Job's pod settings: ``spec.job`` merged over the operator's."""
    try:
        return merge_job_pod(context.job_pod, parsed.job)
    except JobPodError as error:
        message = "invalid spec: " + "; ".join(error.problems)
        raise SpecializationFailed("InvalidSpec", message) from None


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
            vector = routing_vector_name(info.spec, setup.vector)
        except RoutingVectorError as error:
            raise SpecializationFailed(
                "InvalidSourceVector", f"spec.source.vector of the DomainMap: {error}"
            ) from None
        routing = info.spec.dense_vectors()[vector]
        try:
            tuned = tune_collection(
                DomainStats(
                    points=points,
                    dimension=routing.size,
                    distance=routing.distance,
                    growth_per_day=parsed.growth_per_day,
                    queries_per_second=parsed.queries_per_second,
                    memory_budget_bytes=parsed.memory_budget_bytes,
                ),
                parsed.strategy,
                parsed.overrides,
            )
        except TuningError as error:
            raise SpecializationFailed("InvalidSpec", str(error)) from None
        # The home holds every vector the points carry, tuned on the routing one, and marks
        # each point's partition in an indexed payload field (a routed query keeps only the
        # partitions it chose); a home made with one shard key per partition keeps its keys.
        home_spec = with_source_vectors(tuned.collection, info.spec, vector)
        placement = _placement(setup, fleet, vector)
        if placement is not None and not placement.by_field:
            home_spec = replace(home_spec, shard_keys=placement.keys)
        outcome = apply_collection_config(target, setup.target_collection, home_spec)
        if outcome.action == "needs_migration":
            layout = any(c.field in ("vector_size", "vectors") for c in outcome.immutable)
            raise SpecializationFailed(
                "VectorSizeMismatch" if layout else "ImmutableConfigChange",
                f"target collection {setup.target_collection} on {setup.target.name}: "
                f"{outcome.describe()}; delete it or choose another target collection",
            )
        # the home answers filters as its source does: the source's payload indexes, copied
        copy_payload_indexes(source, setup.source_collection, target, setup.target_collection)
        ensure_version_index(target, setup.target_collection)  # routers read its newest version
        if placement is not None and placement.by_field:
            ensure_partition_index(target, setup.target_collection)
            if not placed_by_field(target.collection_info(setup.target_collection)):
                placement = None  # a store that keeps no payload index: the home is unplaced
        return {
            "points": points,
            "partitions": list(placement.keys) if placement is not None else [],
            "partitionLayout": _layout(placement),
            "appliedConfig": {
                "action": outcome.action,
                "collection": asdict(home_spec),
                "search": asdict(tuned.search),
                "estimatedRamBytes": tuned.estimated_ram_bytes,
                "rationale": list(tuned.rationale),
            },
        }
    finally:
        fleet.close()


def _job_clusters(setup: _Setup) -> list[ClusterRef]:
    """The clusters a specialization reads and writes: source, target and the catalog's."""
    refs = [setup.source, setup.target]
    if setup.catalog is not None and setup.catalog[0].name not in {r.name for r in refs}:
        refs.append(setup.catalog[0])
    return refs


def _placement(setup: _Setup, fleet: Any, vector: str) -> Placement | None:
    """The domain's partitions from the DomainMap's catalog (``None``: none stored), marked in
    the home's partition field. A home that exists keeps its layout: one placed by field (or
    still empty) by field; one sharded by partition its shard keys (a new analysis' partitions
    among them: custom sharding cannot be undone in place, a move to a new collection lays it
    out by field); one with neither holds points unmarked, so it stays unplaced."""
    if setup.catalog is None:
        return None
    cluster, collection, owner = setup.catalog
    placement = read_placement(
        fleet.get(cluster.name), collection, owner, setup.domain_id, vector, by_field=True
    )
    target = fleet.get(setup.target.name)
    if placement is None or not target.collection_exists(setup.target_collection):
        return placement
    info = target.collection_info(setup.target_collection)
    keys = info.spec.shard_keys
    if keys is not None:
        sharded = placement.restricted(keys)
        return replace(sharded, by_field=False) if sharded is not None else None
    if placed_by_field(info) or info.points_count == 0:
        return placement
    return None


def _layout(placement: Placement | None) -> str:
    """How the home marks partitions, for the status: ``field``, ``shardKeys`` or ``none``."""
    if placement is None:
        return "none"
    return "field" if placement.by_field else "shardKeys"


def _migrate_args(
    setup: _Setup, namespace: str, name: str, context: OperatorContext, fence_version: int
) -> list[str]:
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
    args += ["--fence-version", str(fence_version)]
    args.append("--shared-source" if setup.shared_source else "--dedicated-source")
    if setup.catalog is not None:  # a home placed by partition marks each point with it
        cluster, collection, owner = setup.catalog
        if cluster.url:
            args += ["--catalog-url", cluster.url]
        else:
            args += ["--catalog-embedded", str(cluster.embedded)]
        args += ["--catalog-collection", collection, "--catalog-owner", owner]
        if setup.vector:
            args += ["--routing-vector", setup.vector]
    # no --cleanup: the old home is cleaned by the operator once no router writes it any more
    return args  # progress lines in the Job's log; the operator reads the checkpoint


async def start_specialization(
    body: kopf.Body, patch: kopf.Patch, context: OperatorContext
) -> None:
    """Analyzing -> Configuring -> Migrating (the Job is created)."""
    namespace = body.meta.namespace or "default"
    now = context.clock
    try:
        setup = await _setup(body, context)
        kopf.info(
            body,
            reason="Analyzing",
            message=f"domain {setup.domain_name} ({setup.domain_id}) -> "
            f"{setup.target.name}/{setup.target_collection}",
        )
        for ref in _job_clusters(setup):
            if ref.url and ref.api_key_env and not ref.secret:
                raise SpecializationFailed(
                    "MigrationNeedsSecret",
                    f"cluster {ref.name!r} takes its API key from the operator's environment "
                    "(apiKeyEnv); a migration Job needs apiKeySecretRef",
                )
        configs = await resolve_clusters(
            _job_clusters(setup), namespace, policy=context.credential_policy
        )
        configured = await asyncio.to_thread(_configure_blocking, setup, configs, context)
        kopf.info(
            body,
            reason="Configured",
            message=f"{setup.target_collection}: {configured['appliedConfig']['action']} "
            f"with strategy {setup.parsed.strategy}",
        )
        move = {
            "phase": MovePhase.DUAL_WRITE.value,
            "source": {"cluster": setup.source.name, "collection": setup.source_collection},
            "target": {"cluster": setup.target.name, "collection": setup.target_collection},
            "fenceVersion": encode_version(int(now().timestamp() * 1000), 0, 0),
            "acknowledged": False,
        }
        extra = {
            "domainId": setup.domain_id,
            "targetCluster": setup.target.name,
            "targetCollection": setup.target_collection,
            "source": {"cluster": setup.source.name, "collection": setup.source_collection},
            "migration": {"points": configured["points"]},
            "move": move,
            **configured,
        }
        patch.status.update(
            _status(
                body,
                "Fencing",
                "FenceWaiting",
                "asking every router to write the domain to both homes before the copy",
                ready="False",
                now=now(),
                extra=extra,
            )
        )
        await _start_copy_when_fenced(body, patch, context, setup, move, extra)
    except SpecializationFailed as error:
        _failed(body, patch, error, now())
    except (QdrantError, api.KubernetesApiError) as error:
        retry = isinstance(error, ClusterUnreachable | api.KubernetesApiError)
        reason = type(error).__name__
        _failed(body, patch, SpecializationFailed(reason, str(error), retry=retry), now())


async def _fence_waiting(
    body: kopf.Body, setup: _Setup, phase: MovePhase, context: OperatorContext
) -> list[str]:
    """The live router replicas of the DomainMap that do not enforce ``phase`` yet."""
    namespace = body.meta.namespace or "default"
    leases = await read_leases(namespace, setup.parsed.domain_map)
    return waiting_routers(leases, body.meta.name or "", phase.value, context.clock())


def _waiting_message(waiting: list[str], phase: MovePhase) -> str:
    what = {
        MovePhase.DUAL_WRITE: "write the domain to both homes",
        MovePhase.SWITCHED: "read the domain from its new home",
        MovePhase.DONE: "stop writing the old home",
    }[phase]
    return (
        f"waiting for router replica(s) {', '.join(waiting)} to {what} (phase {phase.value}); "
        "a replica that cannot renew its Lease stops writing and is no longer waited for"
    )


async def _start_copy_when_fenced(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    setup: _Setup,
    move: dict[str, Any],
    extra: dict[str, Any],
) -> bool:
    """Fencing -> Migrating once every router writes both homes: the Job is created."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    waiting = await _fence_waiting(body, setup, MovePhase.DUAL_WRITE, context)
    if waiting:
        message = _waiting_message(waiting, MovePhase.DUAL_WRITE)
        patch.status.update(
            _status(
                body,
                "Fencing",
                "FenceWaiting",
                message,
                ready="False",
                now=context.clock(),
                extra=extra,
            )
        )
        return False
    # The Job gets the keys from the Secrets themselves: check again that they may be used
    # (a Secret's label may have been removed since the move started).
    await resolve_clusters(_job_clusters(setup), namespace, policy=context.credential_policy)
    settings = JobSettings(
        image=setup.parsed.image or context.image,
        backoff_limit=setup.parsed.backoff_limit,
        active_deadline_s=int(setup.parsed.active_deadline_s),
        pod=_job_pod(setup.parsed, context),
    )
    job = build_migration_job(
        name=job_name(name, body.meta.get("generation")),
        namespace=namespace,
        owner={
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterSpecialization",
            "metadata": {"name": name, "uid": body.meta.uid},
        },
        args=_migrate_args(setup, namespace, name, context, int(move["fenceVersion"])),
        settings=settings,
        source_secret=setup.source.secret,
        target_secret=setup.target.secret,
        catalog_secret=setup.catalog[0].secret if setup.catalog is not None else None,
    )
    await api.create_object(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    kopf.info(body, reason="Migrating", message=f"Job {job['metadata']['name']} started")
    points = (extra.get("migration") or {}).get("points") or 0
    patch.status.update(
        _status(
            body,
            "Migrating",
            "MigrationRunning",
            f"every router writes both homes; Job {job['metadata']['name']} moves "
            f"{points:,} points",
            ready="False",
            now=context.clock(),
            extra={**extra, "job": job["metadata"]["name"], "move": {**move, "acknowledged": True}},
        )
    )
    return True


_STATUS_SUMMARY = {"phase", "progress", "conditions", "observedGeneration", "message"}
"""Status fields :func:`_status` writes afresh at every step (the others are carried over)."""


async def advance_fencing(body: kopf.Body, patch: kopf.Patch, context: OperatorContext) -> None:
    """While Fencing: start the copy once every router writes both homes."""
    status = dict(body.get("status") or {})
    kept = {k: v for k, v in status.items() if k not in _STATUS_SUMMARY}
    try:
        setup = await _setup(body, context)
        await _start_copy_when_fenced(body, patch, context, setup, dict(status["move"]), kept)
    except SpecializationFailed as error:
        _failed(body, patch, error, context.clock())
    except CredentialRefused as error:
        refused = SpecializationFailed(error.rule, str(error), retry=True, delay=60.0)
        _failed(body, patch, refused, context.clock())
    except (QdrantError, api.KubernetesApiError) as error:
        raise kopf.TemporaryError(str(error), delay=5) from None


async def advance_switch(body: kopf.Body, patch: kopf.Patch, context: OperatorContext) -> None:
    """After the switch: ``switched`` -> ``done`` once every router reads the new home; the
    move is complete (and the old home may be cleaned) once none writes the old home."""
    status = body.get("status") or {}
    move = dict(status.get("move") or {})
    phase = MovePhase(str(move.get("phase")))
    try:
        setup = await _setup(body, context)
        waiting = await _fence_waiting(body, setup, phase, context)
    except SpecializationFailed as error:
        _failed(body, patch, error, context.clock())
        return
    except api.KubernetesApiError as error:
        raise kopf.TemporaryError(str(error), delay=5) from None
    if waiting:
        message = _waiting_message(waiting, phase)
        if status.get("moveMessage") != message:
            patch.status["moveMessage"] = message
        return
    patch.status["moveMessage"] = None
    if phase is MovePhase.SWITCHED:
        patch.status["move"] = {**move, "phase": MovePhase.DONE.value, "acknowledged": False}
        kopf.info(body, reason="MoveSwitched", message="every router reads the new home")
        return
    patch.status["move"] = {**move, "acknowledged": True, "completedAt": _now_text(context)}
    kopf.info(body, reason="MoveCompleted", message="no router writes the old home any more")
    if setup.parsed.cleanup_source:
        patch.status["cleanup"] = {"due": _now_text(context, setup.parsed.grace_s)}


async def advance_cleanup(body: kopf.Body, patch: kopf.Patch, context: OperatorContext) -> None:
    """Once no router writes the old home and the grace period is over: remove the domain
    from the source where the new home holds it at the same or a newer version."""
    status = body.get("status") or {}
    cleanup = dict(status.get("cleanup") or {})
    if datetime.fromisoformat(str(cleanup["due"])) > context.clock():
        return
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    try:
        setup = await _setup(body, context)
        configs = await resolve_clusters(
            [setup.source, setup.target], namespace, policy=context.credential_policy
        )
        removed = await asyncio.to_thread(_clean_blocking, setup, configs, context, name, namespace)
    except SpecializationFailed as error:
        _failed(body, patch, error, context.clock())
        return
    except (QdrantError, api.KubernetesApiError) as error:
        raise kopf.TemporaryError(str(error), delay=15) from None
    patch.status["cleanup"] = {**cleanup, "removed": removed, "at": _now_text(context)}
    migration = dict(status.get("migration") or {})
    patch.status["migration"] = {**migration, "removedFromSource": removed}
    kopf.info(
        body,
        reason="SourceCleaned",
        message=f"{removed:,} points of the domain removed from {setup.source.name}/"
        f"{setup.source_collection}: the new home holds each at the same or a newer version",
    )


def _clean_blocking(
    setup: _Setup, configs: list[Any], context: OperatorContext, name: str, namespace: str
) -> int:
    fleet = context.fleet_factory(configs)
    try:
        plan = MigrationPlan(
            name=f"{namespace}/{name}",
            source_collection=setup.source_collection,
            target_collection=setup.target_collection,
            domain_id=setup.domain_id,
            dedicated_source=not setup.shared_source,
        )
        return clean_old_home(fleet.get(setup.source.name), fleet.get(setup.target.name), plan)
    finally:
        fleet.close()


def _report_bypass(body: kopf.Body, migration: Mapping[str, Any]) -> str | None:
    """Points written straight to a cluster (no version, or no label) were found and copied:
    an Event, and the message for the ``WritesBypassedRouter`` condition."""
    unversioned, unlabelled = migration.get("unversioned") or 0, migration.get("unlabelled") or 0
    if not (unversioned or unlabelled):
        return None
    message = (
        f"{unversioned:,} point(s) without a version and {unlabelled:,} without a label were "
        "found in the moved domain: they were written straight to a cluster, not through the "
        "router; they were copied as version 0 (any write through the router wins over them)"
    )
    kopf.event(body, type="Warning", reason="WritesBypassedRouter", message=message)
    return message


def move_in_flight(status: Mapping[str, Any]) -> bool:
    """Fencing, copying, or waiting for the routers to switch (the timer runs only then)."""
    phase = status.get("phase")
    move = status.get("move") or {}
    if phase == "Fencing" and move:
        return True
    if phase == "Migrating" and status.get("job"):
        return True
    if phase != "Ready" or not move:
        return False
    cleanup = status.get("cleanup") or {}
    return not move.get("acknowledged") or bool(cleanup.get("due") and "removed" not in cleanup)


async def advance_move(body: kopf.Body, patch: kopf.Patch, context: OperatorContext) -> None:
    """One step of a specialization's move, whichever phase it is in."""
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase == "Fencing":
        await advance_fencing(body, patch, context)
    elif phase == "Migrating" and status.get("job"):
        await follow_specialization(body, patch, context)
    elif move_in_flight(status) and not (status.get("move") or {}).get("acknowledged"):
        await advance_switch(body, patch, context)
    elif move_in_flight(status):
        await advance_cleanup(body, patch, context)


def _now_text(context: OperatorContext, after_s: float = 0.0) -> str:
    return (context.clock() + timedelta(seconds=after_s)).isoformat()


def _failed(body: kopf.Body, patch: kopf.Patch, error: SpecializationFailed, now: datetime) -> None:
    phase = "Pending" if error.retry else "Failed"
    patch.status.update(_status(body, phase, error.reason, str(error), ready="False", now=now))
    kopf.event(body, type="Warning", reason=error.reason, message=str(error))
    if error.retry:
        raise kopf.TemporaryError(f"{error.reason}: {error}", delay=error.delay)
    raise kopf.PermanentError(f"{error.reason}: {error}")


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
        configs = await resolve_clusters(
            [setup.source, setup.target], namespace, policy=context.credential_policy
        )
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
            vector=routing_vector_name(
                source.collection_info(setup.source_collection).spec, setup.vector
            ),
        )
        return {
            "migration": {
                "phase": checkpoint.phase,
                "copied": checkpoint.copied,
                "sourceCount": checkpoint.source_count,
                "targetCount": checkpoint.target_count,
                "verifiedSample": checkpoint.verified_sample,
                "verifiedPoints": checkpoint.verified_points,
                "removedFromSource": checkpoint.removed_from_source,
                "unversioned": checkpoint.unversioned,
                "unlabelled": checkpoint.unlabelled,
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


async def _job_failed(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    status: Mapping[str, Any],
    detail: str,
) -> None:
    """The Job failed: say why, naming the points that differ when verification failed."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    reason = "MigrationTimedOut" if "DeadlineExceeded" in detail else "MigrationJobFailed"
    message = (
        f"Job {status['job']} failed ({detail.strip(': ')}); nothing was deleted "
        "from the source; see the Job's logs, fix, and change the spec to retry"
    )
    try:
        setup = await _setup(body, context)
        configs = await resolve_clusters(
            [setup.source, setup.target], namespace, policy=context.credential_policy
        )
        checkpoint = await asyncio.to_thread(
            _read_checkpoint, setup, configs, context, f"{namespace}/{name}"
        )
    except (SpecializationFailed, QdrantError, api.KubernetesApiError):
        checkpoint = None
    if checkpoint is not None and checkpoint.differing_count:
        ids = ", ".join(str(i) for i in checkpoint.differing)
        reason = "VerificationFailed"
        message = (
            f"{checkpoint.differing_count:,} point(s) still differ between the homes by "
            f"(id, version) after every try (ids: {ids}); nothing was deleted from the "
            "source; change the spec to retry"
        )
        patch.status["migration"] = {
            **dict(status.get("migration") or {}),
            "differing": [str(i) for i in checkpoint.differing],
            "differingCount": checkpoint.differing_count,
        }
    _failed(body, patch, SpecializationFailed(reason, message), context.clock())


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
    state, detail = job_outcome(job)
    if state == "running":
        await show_stalled(body, patch, namespace, status["job"], context.clock())
        await _report_progress(body, patch, context, namespace, name)
        return
    if state == "failed":
        await _job_failed(body, patch, context, status, detail)
    patch.status.update(
        _status(
            body, "Verifying", "Verifying", "checking the copy", ready="False", now=context.clock()
        )
    )
    try:
        setup = await _setup(body, context)
        configs = await resolve_clusters(
            [setup.source, setup.target], namespace, policy=context.credential_policy
        )
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
    move = dict(status.get("move") or {})
    if move:
        move = {**move, "phase": MovePhase.SWITCHED.value, "acknowledged": False}
        verified = {**verified, "move": move}
    bypass = _report_bypass(body, verified["migration"])
    ready = _status(
        body, "Ready", "Specialized", message, ready="True", now=context.clock(), extra=verified
    )
    ready["conditions"] = set_condition(
        ready["conditions"],
        "WritesBypassedRouter",
        "True" if bypass else "False",
        "UnversionedPoints" if bypass else "AllVersioned",
        bypass or "every point of the domain was written through the library",
        observed_generation=body.meta.get("generation"),
        now=context.clock(),
    )
    patch.status.update(ready)
    kopf.info(body, reason="Ready", message=message)
