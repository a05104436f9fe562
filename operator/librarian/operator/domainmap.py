"""What the operator does for one DomainMap: analyse, publish, report; and clean up.

Why this exists: the kopf handlers stay thin — they pass the object here. This
module parses the spec, resolves API keys, runs the blocking Qdrant and
numpy work in a thread with a timeout, and turns every outcome (success, bad
spec, missing Secret, unreachable cluster, missing source) into a status with
a typed condition and an Event. It decides what may pass (retry later) and
what needs the user (a permanent error), and never puts a secret in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf

from librarian.contracts.api import DOMAINMAPS, GROUP, VERSION
from librarian.contracts.metadata import DOMAIN_LABEL, DOMAINMAP_LABEL
from librarian.core.collection_spec import RoutingVectorError, routing_vector_name
from librarian.core.discovery import DiscoveryError, Domain
from librarian.core.patterns import discover_patterns
from librarian.core.placement import place_domains
from librarian.kube import client as api
from librarian.kube.fleet_access import CredentialRefused, resolve_clusters
from librarian.kube.naming import kubernetes_name
from librarian.kube.spec import DomainMapSpec, SpecDefaults, SpecError, parse_domainmap_spec
from librarian.operator.conditions import parse_timestamp, set_condition
from librarian.operator.context import OperatorContext
from librarian.operator.domainmap_status import analyzed_status, failed_status, progress_status
from librarian.operator.labeling import labeling_job, labeling_progress
from librarian.services.analysis import analyze_collection, publish_domains
from librarian.services.catalog import delete_catalog, mark_labelled, read_previous
from librarian.services.labeling import remove_labels, unlabeled_filter
from librarian.services.labeling_job import (
    LabelingPlan,
    LabelingProgressStore,
    labeling_name,
    plan_labeling,
)
from librarian.services.sampling import EmptySource
from librarian.storage.errors import (
    AuthenticationFailed,
    ClusterUnreachable,
    CollectionNotFound,
    QdrantError,
)
from librarian.storage.fleet import ClusterConfig

__all__ = [
    "PLURAL",
    "analysis_due",
    "analyze_domainmap",
    "cleanup_domainmap",
    "context_from",
    "follow_labeling",
    "labeling_in_flight",
    "owner_of",
]

PLURAL = DOMAINMAPS


@dataclass(frozen=True)
class _Failure:
    reason: str
    message: str
    retry_after: float | None  # None: needs the user (permanent)


def owner_of(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def analysis_due(
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    generation: int | None,
    now: datetime,
    defaults: SpecDefaults | None = None,
) -> bool:
    """True when the DomainMap has not been analysed at this generation or its interval passed.

    Not while this generation's labeling Job runs: the labeling timer follows it."""
    if status.get("observedGeneration") == generation and labeling_in_flight(status):
        return False
    if status.get("observedGeneration") != generation or status.get("phase") != "Ready":
        return True
    last = parse_timestamp(status.get("lastAnalysisTime"))
    try:
        interval = parse_domainmap_spec(spec, name="_", defaults=defaults).interval_s
    except SpecError:
        return False  # a bad spec is reported by the change handlers, not retried by the timer
    return last is None or (now - last).total_seconds() >= interval


async def _live_status(namespace: str, name: str, fallback: Mapping[str, Any]) -> Mapping[str, Any]:
    """The DomainMap's status as the API holds it now (kopf's body may predate a handler)."""
    try:
        obj = await api.get_json(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}")
    except api.KubernetesApiError:
        return fallback
    return obj.get("status") or {}


def _analysed_within(status: Mapping[str, Any], now: datetime, interval_s: float) -> bool:
    if status.get("phase") != "Ready":
        return False
    last = parse_timestamp(status.get("lastAnalysisTime"))
    return last is not None and (now - last).total_seconds() < interval_s


def _source_failure(error: Exception, parsed: DomainMapSpec) -> _Failure | None:
    """The failures that are about the source collection itself (None: another kind)."""
    if isinstance(error, RoutingVectorError):
        return _Failure(
            "InvalidSourceVector",
            f"spec.source.vector of collection {parsed.source_collection!r} on cluster "
            f"{parsed.source_cluster!r}: {error}; set spec.source.vector to one of them",
            None,
        )
    if isinstance(error, EmptySource):
        return _Failure("EmptySource", f"{error}", 60.0)
    if isinstance(error, CollectionNotFound):
        if error.collection == parsed.source_collection:
            return _Failure(
                "SourceNotFound",
                f"source collection {parsed.source_collection!r} does not exist on cluster "
                f"{parsed.source_cluster!r}; create it or fix spec.source.collection",
                60.0,
            )
        return _Failure("CollectionNotFound", str(error), 60.0)
    return None


def _classify(error: Exception, parsed: DomainMapSpec) -> _Failure:
    if isinstance(error, CredentialRefused):
        # Needs the user (label the Secret, change the configuration); retried in case they did.
        return _Failure(error.rule, str(error), 60.0)
    if isinstance(error, api.SecretNotFound):
        return _Failure("SecretNotFound", str(error), 60.0)
    source_failure = _source_failure(error, parsed)
    if source_failure is not None:
        return source_failure
    if isinstance(error, AuthenticationFailed):
        return _Failure("AuthenticationFailed", str(error), 120.0)
    if isinstance(error, ClusterUnreachable):
        return _Failure("ClusterUnreachable", str(error), 30.0)
    if isinstance(error, DiscoveryError):
        return _Failure("InvalidSource", f"cannot analyse the source: {error}", None)
    if isinstance(error, QdrantError):
        return _Failure("QdrantRequestFailed", str(error), 60.0)
    if isinstance(error, TimeoutError):
        return _Failure("AnalysisTimeout", "analysis took longer than its time limit", 120.0)
    if isinstance(error, api.KubernetesApiError):
        return _Failure("KubernetesApiError", str(error), 30.0)
    raise error


def _fail(
    body: kopf.Body,
    patch: kopf.Patch,
    failure: _Failure,
    *,
    generation: int | None,
    now: datetime,
) -> None:
    patch.status.update(
        failed_status(
            body.get("status"), failure.reason, failure.message, generation=generation, now=now
        )
    )
    kopf.event(body, type="Warning", reason=failure.reason, message=failure.message)
    if failure.retry_after is None:
        raise kopf.PermanentError(f"{failure.reason}: {failure.message}")
    raise kopf.TemporaryError(f"{failure.reason}: {failure.message}", delay=failure.retry_after)


async def analyze_domainmap(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Analyse the DomainMap's source, label it, write the catalog and the status."""
    meta, namespace, name = body.meta, body.meta.namespace or "default", body.meta.name or ""
    generation = meta.get("generation")
    now = context.clock()
    if not context.discovery_enabled:
        patch.status.update(
            failed_status(
                body.get("status"),
                "DiscoveryDisabled",
                "domain discovery is disabled in the operator configuration "
                "(domain_discovery.enabled: false)",
                generation=generation,
                now=now,
            )
        )
        return
    try:
        parsed = parse_domainmap_spec(body.spec, name=name, defaults=context.spec_defaults)
    except SpecError as error:
        message = "invalid spec: " + "; ".join(error.problems)
        _fail(body, patch, _Failure("InvalidSpec", message, None), generation=generation, now=now)
        return
    async with context.lock(owner_of(namespace, name)):
        try:
            configs = await resolve_clusters(
                parsed.clusters, namespace, policy=context.credential_policy
            )
        except api.KubernetesApiError as error:
            _fail(body, patch, _classify(error, parsed), generation=generation, now=now)
            return
        loop = asyncio.get_running_loop()
        live = await _live_status(namespace, name, body.get("status") or {})
        if live.get("observedGeneration") == generation and _analysed_within(
            live, now, parsed.interval_s
        ):
            # Another handler (change, resume or timer) analysed this generation while this
            # one waited for the lock: analysing again would only bump the version.
            logger.info(
                "DomainMap %s/%s already analysed at generation %s", namespace, name, generation
            )
            return
        reporter = _ProgressReporter(body, context, generation, loop)
        await reporter.send("Analyzing", f"sampling {parsed.source_collection}", force=True)
        version = int(live.get("version") or 0) + 1
        try:
            outcome = await asyncio.wait_for(
                asyncio.to_thread(
                    _analyze_blocking,
                    parsed,
                    configs,
                    namespace,
                    name,
                    version,
                    context,
                    reporter,
                    _labeling_record(live),
                ),
                timeout=context.analysis_timeout_s,
            )
        except Exception as error:  # noqa: BLE001 - classified below; unknown ones re-raised
            _fail(body, patch, _classify(error, parsed), generation=generation, now=context.clock())
            return
    result, previous, sampled, source_points, plan = outcome
    patterns = discover_patterns(previous, result.domains, drift_threshold=parsed.drift_threshold)
    status = analyzed_status(
        body.get("status"),
        result=result,
        patterns=patterns,
        version=version,
        sampled=sampled,
        source_points=source_points,
        labeled=0 if plan is not None else None,
        catalog=(parsed.catalog_cluster, parsed.catalog_collection),
        confidence_threshold=parsed.confidence_threshold,
        generation=generation,
        now=context.clock(),
    )
    status["message"] = ""
    kopf.info(
        body,
        reason="Analyzed",
        message=f"{len(result.domains)} domains, confidence {result.confidence:.2f}, "
        f"version {version}; {patterns.summary()}",
    )
    if patterns.drifted:
        kopf.event(body, type="Normal", reason="Drifted", message=patterns.summary())
    if result.confidence < parsed.confidence_threshold:
        kopf.warn(
            body,
            reason="LowConfidence",
            message=f"confidence {result.confidence:.2f} is below "
            f"{parsed.confidence_threshold:.2f}",
        )
    if plan is not None:
        await _start_labeling(body, patch, parsed, plan, status, live, context)
        return
    patch.status.update(status)
    if parsed.specialize == "auto":
        # Publish the domains now (kopf writes the patch only after this handler), so the
        # children find their domain at once instead of retrying.
        with contextlib.suppress(api.KubernetesApiError):
            await api.patch_status(GROUP, VERSION, PLURAL, namespace, name, status)
        await _specialize_domains(body, parsed, status["domains"], context)
    logger.info("DomainMap %s/%s analysed: %d domains", namespace, name, len(result.domains))


async def _specialize_domains(
    body: kopf.Body,
    parsed: DomainMapSpec,
    domains: Sequence[Mapping[str, Any]],
    context: OperatorContext,
) -> None:
    """Create (idempotently) one owned ClusterSpecialization per domain (the status's
    summaries: id, name, size)."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    strategies = dict(parsed.specialization_targets)
    placement = place_domains(
        {str(d["id"]): int(d["size"]) for d in domains},
        [cluster for cluster, _ in parsed.specialization_targets],
    )
    created = 0
    for domain in domains:
        domain_id, domain_name = str(domain["id"]), str(domain["name"])
        cluster = placement[domain_id]
        spec: dict[str, Any] = {
            "domainMap": name,
            "domain": domain_id,
            "target": {"cluster": cluster},
        }
        if strategies.get(cluster):
            spec["strategy"] = strategies[cluster]
        child = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterSpecialization",
            "metadata": {
                "name": kubernetes_name(name, domain_name),
                "namespace": namespace,
                "labels": {DOMAINMAP_LABEL: name, DOMAIN_LABEL: domain_id},
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "DomainMap",
                        "name": name,
                        "uid": body.meta.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
        }
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/clusterspecializations"
        with contextlib.suppress(api.KubernetesApiError):  # reported below if none is created
            created += await api.create_object(path, child)
    if created:
        kopf.info(
            body,
            reason="Specializing",
            message=f"created {created} ClusterSpecialization(s) for new domains",
        )


def _analyze_blocking(
    parsed: DomainMapSpec,
    configs: list[ClusterConfig],
    namespace: str,
    name: str,
    version: int,
    context: OperatorContext,
    reporter: _ProgressReporter,
    previous_labeling: tuple[str, int] | None,
) -> tuple[Any, list[Domain], int, int, LabelingPlan | None]:
    fleet = context.fleet_factory(configs)
    try:
        source = fleet.get(parsed.source_cluster)
        if previous_labeling is not None:  # an older analysis's plan and progress go
            LabelingProgressStore(source).clear(*previous_labeling)
        catalog = fleet.get(parsed.catalog_cluster)
        owner = owner_of(namespace, name)
        previous, previous_partitions = read_previous(catalog, parsed.catalog_collection, owner)
        spec = source.collection_info(parsed.source_collection).spec
        vector = routing_vector_name(spec, parsed.source_vector)
        outcome = analyze_collection(
            source,
            parsed.source_collection,
            strategy=parsed.strategy,
            sample_size=parsed.sample_size,
            text_field=parsed.text_field,
            seed=parsed.seed,
            previous=previous,
            previous_partitions=previous_partitions,
            thresholds=parsed.thresholds,
            on_stage=lambda stage: reporter.report("Analyzing", stage),
            vector=vector,
        )
        # The catalog first: the labeling Job's workers read the domains from their plan, and
        # the routers place new writes by the catalog meanwhile.
        publish_domains(
            source,
            parsed.source_collection,
            catalog,
            parsed.catalog_collection,
            owner,
            outcome.result,
            version,
            label=False,
            labelled=not parsed.labeling_enabled,
            vector=vector,
        )
        plan = None
        if parsed.labeling_enabled:
            plan = plan_labeling(
                source,
                parsed.source_collection,
                outcome.result.domains,
                name=labeling_name(owner, version),
                version=version,
                workers=parsed.labeling_workers,
                sample_ids=outcome.sample_ids,
                vector=vector,
            )
            LabelingProgressStore(source).save_plan(plan)
        return outcome.result, previous, outcome.sampled, outcome.source_points, plan
    finally:
        fleet.close()


class _ProgressReporter:
    """Patches progress into the status from the worker thread, at most every few seconds."""

    def __init__(
        self,
        body: kopf.Body,
        context: OperatorContext,
        generation: int | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._body = body
        self._context = context
        self._generation = generation
        self._loop = loop
        self._last = 0.0

    async def send(
        self,
        phase: str,
        message: str,
        extra: Mapping[str, Any] | None = None,
        *,
        force: bool = False,
    ) -> None:
        if not force and time.monotonic() - self._last < self._context.progress_interval_s:
            return
        self._last = time.monotonic()
        status = progress_status(
            self._body.get("status"),
            phase,
            message,
            generation=self._generation,
            now=self._context.clock(),
        )
        status.update(extra or {})
        meta = self._body.meta
        with contextlib.suppress(api.KubernetesApiError):  # best effort; kopf writes the final
            await api.patch_status(
                GROUP, VERSION, PLURAL, meta.namespace or "default", meta.name or "", status
            )

    def report(self, phase: str, message: str, extra: Mapping[str, Any] | None = None) -> None:
        if time.monotonic() - self._last < self._context.progress_interval_s:
            return
        future = asyncio.run_coroutine_threadsafe(self.send(phase, message, extra), self._loop)
        with contextlib.suppress(Exception):  # progress never stops the work
            future.result(timeout=15)


def labeling_in_flight(status: Mapping[str, Any]) -> bool:
    """Whether the DomainMap's labeling Job runs (the labeling timer follows it only then)."""
    return status.get("phase") == "Labeling" and bool((status.get("labeling") or {}).get("job"))


async def _start_labeling(
    body: kopf.Body,
    patch: kopf.Patch,
    parsed: DomainMapSpec,
    plan: LabelingPlan,
    status: dict[str, Any],
    live: Mapping[str, Any],
    context: OperatorContext,
) -> None:
    """Create the labeling Job of ``plan``; the status says Labeling until it is done."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation, now = body.meta.get("generation"), context.clock()
    source = parsed.cluster(parsed.source_cluster)
    if source.url and source.api_key_env and not source.secret:
        message = (
            f"cluster {source.name!r} takes its API key from the operator's environment "
            "(apiKeyEnv); the labeling Job needs apiKeySecretRef"
        )
        _fail(
            body,
            patch,
            _Failure("LabelingNeedsSecret", message, None),
            generation=generation,
            now=now,
        )
    previous = (live.get("labeling") or {}).get("job")
    job = labeling_job(
        body={"metadata": {"name": name, "namespace": namespace, "uid": body.meta.uid}},
        parsed=parsed,
        plan_name=plan.name,
        version=plan.version,
        image=context.image,
    )
    job_name = str(job["metadata"]["name"])
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    try:
        if previous and previous != job_name:  # an older analysis's labels are not wanted now
            await api.delete_object(f"{jobs}/{previous}")
        await api.create_object(jobs, job)
    except api.KubernetesApiError as error:
        _fail(body, patch, _classify(error, parsed), generation=generation, now=now)
    message = (
        f"Job {job_name} labels {plan.total:,} points with {parsed.labeling_workers} "
        f"worker(s) over {len(plan.ranges)} id range(s)"
    )
    conditions = status["conditions"]
    ready_before = next((c for c in live.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready_before is not None and ready_before.get("status") == "True":
        # The previous analysis stays Ready (routers serve it) until this one is labelled:
        # Ready at a generation means that generation's domains label every point.
        conditions = [dict(ready_before) if c.get("type") == "Ready" else c for c in conditions]
    else:
        conditions = set_condition(
            conditions,
            "Ready",
            "Unknown",
            "Labeling",
            message,
            observed_generation=generation,
            now=now,
        )
    conditions = set_condition(
        conditions,
        "Labeled",
        "False",
        "LabelingRunning",
        message,
        observed_generation=generation,
        now=now,
    )
    status.update(
        {
            "phase": "Labeling",
            "conditions": conditions,
            "message": message,
            "labeling": {
                "enabled": True,
                "job": job_name,
                "plan": plan.name,
                "workers": parsed.labeling_workers,
                "ranges": len(plan.ranges),
                **labeling_progress([None] * len(plan.ranges), total=plan.total, now=0.0),
            },
        }
    )
    patch.status.update(status)
    kopf.info(body, reason="Labeling", message=message)


def _job_outcome(job: Mapping[str, Any]) -> tuple[str, str]:
    """("running" | "succeeded" | "failed", the failure's reason and message)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded", ""
        if condition.get("type") == "Failed":
            return "failed", f"{condition.get('reason', 'Failed')}: {condition.get('message', '')}"
    return "running", ""


def _labeling_blocking(
    parsed: DomainMapSpec,
    configs: list[ClusterConfig],
    context: OperatorContext,
    labeling: Mapping[str, Any],
    *,
    final: bool,
    owner: str,
) -> dict[str, Any]:
    """The workers' progress as status fields; once the Job is done, the exact count of
    points carrying this version's label too, and the catalog says the labels are written
    (routers serve the new domains from then on)."""
    fleet = context.fleet_factory(configs)
    try:
        source = fleet.get(parsed.source_cluster)
        store = LabelingProgressStore(source)
        ranges = int(labeling.get("ranges") or 0)
        progress = labeling_progress(
            store.progress(str(labeling["plan"]), ranges),
            total=int(labeling.get("total") or 0),
            now=time.time(),
        )
        if final:
            plan = store.load_plan(str(labeling["plan"]))
            total = source.count(plan.collection)
            todo = unlabeled_filter(plan.version, plan.version_key)
            progress["total"] = total
            progress["labeled"] = total - source.count(plan.collection, count_filter=todo)
            catalog = fleet.get(parsed.catalog_cluster)
            mark_labelled(catalog, parsed.catalog_collection, owner, plan.version)
        return progress
    finally:
        fleet.close()


async def follow_labeling(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """While Labeling: copy the workers' progress into the status; when the Job is done, go
    Ready (and specialize, when asked) or say why it failed."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation, status = body.meta.get("generation"), body.get("status") or {}
    labeling = dict(status.get("labeling") or {})
    job_name = str(labeling["job"])
    try:
        parsed = parse_domainmap_spec(body.spec, name=name, defaults=context.spec_defaults)
        job = await api.get_json(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}")
    except api.NotFound:
        failure = _Failure(
            "LabelingJobMissing",
            f"the labeling Job {job_name} disappeared; change the spec to label again",
            None,
        )
        _report_labeling_failure(body, patch, failure, generation, context)
        return
    except (SpecError, api.KubernetesApiError):
        return  # a new spec is analysed by the change handlers; the API is retried next tick
    outcome, detail = _job_outcome(job)
    try:
        clusters = dict.fromkeys([parsed.source_cluster, parsed.catalog_cluster])
        configs = await resolve_clusters(
            [parsed.cluster(c) for c in clusters], namespace, policy=context.credential_policy
        )
        progress = await asyncio.to_thread(
            _labeling_blocking,
            parsed,
            configs,
            context,
            labeling,
            final=outcome == "succeeded",
            owner=owner_of(namespace, name),
        )
    except (QdrantError, api.KubernetesApiError) as error:
        if outcome == "running":
            return  # progress is best effort; the Job's outcome decides
        logger.warning("labeling of %s/%s: cannot read its progress: %s", namespace, name, error)
        progress = {}
    labeling.update(progress)
    summary = (
        f"labelled {labeling.get('labeled', 0):,} of {labeling.get('total', 0):,} points "
        f"({labeling.get('workersDone', 0)} of {labeling.get('ranges', 0)} range(s) done, "
        f"{labeling.get('pointsPerSecond', 0.0):,.0f} points/s)"
    )
    if outcome == "running":
        patch.status["labeling"] = labeling
        patch.status["message"] = f"Job {job_name}: {summary}"
        return
    if outcome == "failed":
        patch.status["labeling"] = labeling
        failure = _Failure(
            "LabelingFailed",
            f"the labeling Job {job_name} failed ({detail.strip(': ')}); {summary}; the labels "
            "written stay; see the Job's logs, fix, and change the spec to label again",
            None,
        )
        _report_labeling_failure(body, patch, failure, generation, context)
        return
    now = context.clock()
    conditions = status.get("conditions") or []
    analyzed: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Analyzed"), {})
    message = str(analyzed.get("message") or summary)
    conditions = set_condition(
        conditions, "Ready", "True", "Analyzed", message, observed_generation=generation, now=now
    )
    conditions = set_condition(
        conditions,
        "Labeled",
        "True",
        "Labeled",
        f"Job {job_name}: {summary}",
        observed_generation=generation,
        now=now,
    )
    ready = {"phase": "Ready", "conditions": conditions, "labeling": labeling, "message": ""}
    patch.status.update(ready)
    kopf.info(body, reason="Labeled", message=f"Job {job_name}: {summary}")
    if parsed.specialize == "auto":
        with contextlib.suppress(api.KubernetesApiError):
            await api.patch_status(GROUP, VERSION, PLURAL, namespace, name, ready)
        await _specialize_domains(body, parsed, status.get("domains") or [], context)


def _report_labeling_failure(
    body: kopf.Body,
    patch: kopf.Patch,
    failure: _Failure,
    generation: int | None,
    context: OperatorContext,
) -> None:
    now = context.clock()
    failed = failed_status(
        body.get("status"), failure.reason, failure.message, generation=generation, now=now
    )
    failed["conditions"] = set_condition(
        failed["conditions"],
        "Labeled",
        "False",
        failure.reason,
        failure.message,
        observed_generation=generation,
        now=now,
    )
    patch.status.update(failed)
    kopf.event(body, type="Warning", reason=failure.reason, message=failure.message)


async def cleanup_domainmap(
    body: kopf.Body,
    context: OperatorContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Remove what the operator created: catalog entries, and labels when asked."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    try:
        parsed = parse_domainmap_spec(body.spec, name=name, defaults=context.spec_defaults)
    except SpecError:
        logger.info("DomainMap %s/%s had an invalid spec: nothing was created", namespace, name)
        return
    try:
        configs = await resolve_clusters(
            parsed.clusters, namespace, policy=context.credential_policy
        )
        await asyncio.to_thread(
            _cleanup_blocking,
            parsed,
            configs,
            namespace,
            name,
            context,
            _labeling_record(body.get("status") or {}),
        )
    except (QdrantError, api.KubernetesApiError) as error:
        raise kopf.TemporaryError(f"cleanup failed: {error}", delay=30) from None
    kopf.info(
        body,
        reason="CleanedUp",
        message=f"catalog entries removed from {parsed.catalog_collection}"
        + ("; labels removed" if parsed.remove_labels_on_delete else ""),
    )


def _labeling_record(status: Mapping[str, Any]) -> tuple[str, int] | None:
    """The plan name and range count of the status's labeling run, if it had one."""
    labeling = status.get("labeling") or {}
    if not labeling.get("plan"):
        return None
    return str(labeling["plan"]), int(labeling.get("ranges") or 0)


def _cleanup_blocking(
    parsed: DomainMapSpec,
    configs: list[ClusterConfig],
    namespace: str,
    name: str,
    context: OperatorContext,
    labeling: tuple[str, int] | None = None,
) -> None:
    fleet = context.fleet_factory(configs)
    try:
        if labeling is not None:
            with contextlib.suppress(CollectionNotFound):
                LabelingProgressStore(fleet.get(parsed.source_cluster)).clear(*labeling)
        delete_catalog(
            fleet.get(parsed.catalog_cluster), parsed.catalog_collection, owner_of(namespace, name)
        )
        if parsed.remove_labels_on_delete:
            with contextlib.suppress(CollectionNotFound):
                remove_labels(fleet.get(parsed.source_cluster), parsed.source_collection)
    finally:
        fleet.close()


def context_from(memo: MutableMapping[str, Any]) -> OperatorContext:
    context = memo.get("context")
    if not isinstance(context, OperatorContext):
        context = OperatorContext()
        memo["context"] = context
    return context
