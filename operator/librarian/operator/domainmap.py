"""What the operator does for one DomainMap: analyse, label, report; retry; and clean up.

Why this exists: the kopf handlers stay thin — they pass the object here. This
module parses the spec, resolves API keys, starts the analysis Job (sampling
and discovery run there, not in the operator) and then the labeling Job,
follows both into the status, retries a failed Job a few times, and turns
every outcome (success, bad spec, missing Secret, unreachable cluster,
missing source, a failed Job) into a status with a typed condition and an
Event. It decides what may pass (retry later) and what needs the user (a
permanent error), and never puts a secret in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import kopf

from librarian.contracts.api import DOMAINMAPS, GROUP, VERSION
from librarian.contracts.metadata import (
    DOMAIN_LABEL,
    DOMAINMAP_LABEL,
    FLEET_ANNOTATION,
    RETRY_ANNOTATION,
)
from librarian.core.collection_spec import RoutingVectorError, routing_vector_name
from librarian.core.discovery import DiscoveryError
from librarian.core.placement import place_domains
from librarian.kube import client as api
from librarian.kube.fleet_access import CredentialRefused, resolve_clusters
from librarian.kube.fleets import FleetNotFound, load_domainmap_spec
from librarian.kube.naming import kubernetes_name
from librarian.kube.spec import (
    DomainMapSpec,
    SpecDefaults,
    SpecError,
    domainmap_interval,
    fleet_ref_of,
)
from librarian.operator import discovery_metrics
from librarian.operator.analysis import (
    analysis_job,
    analysis_job_name,
    analysis_request,
    needs_secret,
    retry_hint,
)
from librarian.operator.conditions import parse_timestamp, set_condition, timestamp
from librarian.operator.context import OperatorContext
from librarian.operator.domainmap_status import (
    analyzed_status,
    cluster_source_conditions,
    failed_status,
    progress_status,
)
from librarian.operator.job_pods import job_outcome, show_stalled
from librarian.operator.labeling import labeling_job, labeling_progress
from librarian.services.analysis_job import AnalysisProgress, AnalysisStore
from librarian.services.catalog import (
    CatalogHead,
    claim_publication,
    delete_catalog,
    discard_publication,
    mark_labelled,
    read_head,
)
from librarian.services.labeling import remove_labels, unlabeled_filter
from librarian.services.labeling_job import LabelingProgressStore
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
    "analysis_in_flight",
    "analyze_domainmap",
    "cleanup_domainmap",
    "context_from",
    "fleet_change_pending",
    "fleet_changed",
    "follow_analysis",
    "follow_labeling",
    "labeling_in_flight",
    "owner_of",
    "retry_domainmap",
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

    Not while this generation's analysis or labeling Job runs: their timers follow them."""
    if status.get("observedGeneration") == generation and labeling_in_flight(status):
        return False
    if (
        analysis_in_flight(status)
        and (status.get("analysis") or {}).get("generation") == generation
    ):
        return False
    if status.get("observedGeneration") != generation or status.get("phase") != "Ready":
        return True
    last = parse_timestamp(status.get("lastAnalysisTime"))
    try:
        interval = domainmap_interval(spec, defaults)
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


async def _load_spec(body: kopf.Body, context: OperatorContext) -> DomainMapSpec:
    """The DomainMap's spec with its clusters (from its QdrantFleet, or inline)."""
    return await load_domainmap_spec(
        body.spec,
        namespace=body.meta.namespace or "default",
        name=body.meta.name or "",
        defaults=context.spec_defaults,
    )


async def _record_cluster_source(
    body: kopf.Body, patch: kopf.Patch, context: OperatorContext, attempt: list[int | None]
) -> None:
    """Set the Deprecated condition (inline clusters) on top of whatever the handler patched,
    and, when an analysis was attempted (``attempt`` holds the fleet generation it read, None
    when the fleet could not be read), ``status.fleet``."""
    fleet_ref = fleet_ref_of(body.spec)
    source = None if body.spec.get("clusters") else fleet_ref
    conditions = patch.status.get("conditions")
    if conditions is None:
        namespace, name = body.meta.namespace or "default", body.meta.name or ""
        current = (body.get("status") or {}).get("conditions") or []
        wanted = ("True", "InlineClusters") if source is None else ("False", "FleetRef")
        deprecated: Mapping[str, Any] = next(
            (c for c in current if c.get("type") == "Deprecated"), {}
        )
        if (deprecated.get("status"), deprecated.get("reason")) != wanted:
            live = await _live_status(namespace, name, body.get("status") or {})
            conditions = live.get("conditions") or []
    if conditions is not None:
        patch.status["conditions"] = cluster_source_conditions(
            conditions,
            fleet_ref=source,
            generation=body.meta.get("generation"),
            now=context.clock(),
        )
    if fleet_ref is not None and attempt:
        recorded = dict(patch.status.get("fleet") or {})
        patch.status["fleet"] = {**recorded, "name": fleet_ref, "generation": attempt[0]}


async def analyze_domainmap(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Start the DomainMap's analysis Job for its generation (replacing one of an older
    generation); :func:`follow_analysis` takes it from there."""
    attempt: list[int | None] = []
    try:
        await _analyze_domainmap(body, patch, context, logger, attempt, force=False)
    finally:
        await _record_cluster_source(body, patch, context, attempt)


def fleet_change_pending(
    spec: Mapping[str, Any], annotations: Mapping[str, str], status: Mapping[str, Any]
) -> bool:
    """Has the QdrantFleet this DomainMap names changed since its last analysis read it?

    The fleet's controller sets :data:`FLEET_ANNOTATION` to the fleet's generation; it is
    pending unless the last analysis read that generation or it was handled already."""
    value = annotations.get(FLEET_ANNOTATION)
    if not value or fleet_ref_of(spec) is None or spec.get("clusters"):
        return False
    fleet = status.get("fleet") or {}
    return value not in (str(fleet.get("handled")), str(fleet.get("generation")))


async def fleet_changed(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """The fleet was created or changed: analyse again with its clusters (the running
    analysis Job, if any, is replaced, as a new spec would replace it)."""
    value = body.metadata.annotations.get(FLEET_ANNOTATION)
    patch.status["fleet"] = {"handled": value}
    kopf.info(
        body,
        reason="FleetChanged",
        message=f"QdrantFleet {fleet_ref_of(body.spec)!r} is at generation {value}: "
        "analysing with its clusters",
    )
    attempt: list[int | None] = []
    try:
        await _analyze_domainmap(body, patch, context, logger, attempt, force=True)
    finally:
        await _record_cluster_source(body, patch, context, attempt)


async def _analyze_domainmap(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    attempt: list[int | None],
    *,
    force: bool,
) -> None:
    """Analyse (see :func:`analyze_domainmap`; ``force``: even if this generation was);
    ``attempt`` gets the fleet generation an attempted analysis read."""
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
        parsed = await _load_spec(body, context)
    except SpecError as error:
        message = "invalid spec: " + "; ".join(error.problems)
        _fail(body, patch, _Failure("InvalidSpec", message, None), generation=generation, now=now)
        return
    except FleetNotFound as error:
        # Retried; creating the fleet also annotates this DomainMap (see fleet_changed).
        attempt.append(None)
        _fail(
            body, patch, _Failure("FleetNotFound", str(error), 30.0), generation=generation, now=now
        )
        return
    except api.KubernetesApiError as error:
        message = f"cannot read the QdrantFleet of spec.fleetRef: {error}"
        _fail(
            body,
            patch,
            _Failure("KubernetesApiError", message, 30.0),
            generation=generation,
            now=now,
        )
        return
    async with context.lock(owner_of(namespace, name)):
        live = await _live_status(namespace, name, body.get("status") or {})
        if force:
            attempt.append(parsed.fleet_generation)
            await _start_analysis(body, patch, parsed, live, context, attempt=1)
            return
        if live.get("observedGeneration") == generation and _analysed_within(
            live, now, parsed.interval_s
        ):
            # Another handler (change, resume or timer) analysed this generation while this
            # one waited for the lock: analysing again would only bump the version.
            logger.info(
                "DomainMap %s/%s already analysed at generation %s", namespace, name, generation
            )
            return
        running = live.get("analysis") or {}
        if analysis_in_flight(live) and running.get("generation") == generation:
            return  # this generation's Job runs: the analysis timer follows it
        attempt.append(parsed.fleet_generation)
        await _start_analysis(body, patch, parsed, live, context, attempt=1)


async def _start_analysis(
    body: kopf.Body,
    patch: kopf.Patch,
    parsed: DomainMapSpec,
    live: Mapping[str, Any],
    context: OperatorContext,
    *,
    attempt: int,
) -> None:
    """Write the request, claim the catalog for it and create the analysis Job; an older
    analysis Job is deleted and can no longer publish."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation, now = body.meta.get("generation"), context.clock()
    try:  # the credential rules first: a refused key says so, whatever else is missing
        configs = await resolve_clusters(
            parsed.clusters, namespace, policy=context.credential_policy
        )
    except Exception as error:  # noqa: BLE001 - classified below; unknown ones re-raised
        _fail(body, patch, _classify(error, parsed), generation=generation, now=now)
        return
    blocked = needs_secret(parsed, [parsed.source_cluster, parsed.catalog_cluster])
    if blocked is not None:
        message = (
            f"cluster {blocked.name!r} takes its API key from the operator's environment "
            "(apiKeyEnv); the analysis Job needs apiKeySecretRef"
        )
        _fail(
            body,
            patch,
            _Failure("AnalysisNeedsSecret", message, None),
            generation=generation,
            now=now,
        )
    previous = dict(live.get("analysis") or {})
    serial = int(previous.get("jobs") or 0) + 1 if previous.get("generation") == generation else 1
    job_name = analysis_job_name(name, generation, serial)
    version = int(live.get("version") or 0) + 1
    owner = owner_of(namespace, name)
    old_job = str(previous.get("job") or "")
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    try:
        await asyncio.to_thread(
            _prepare_analysis_blocking,
            parsed,
            configs,
            context,
            owner=owner,
            job_name=job_name,
            version=version,
            generation=generation,
            replaced=old_job if old_job and old_job != job_name else None,
            previous_labeling=_labeling_record(live),
        )
        if old_job and old_job != job_name:  # it can no longer publish: it goes
            with contextlib.suppress(api.NotFound):
                await api.delete_object(f"{jobs}/{old_job}")
        labeling_job_now = (live.get("labeling") or {}).get("job")
        if labeling_in_flight(live) and labeling_job_now:  # its plan is gone: so is its Job
            with contextlib.suppress(api.NotFound):
                await api.delete_object(f"{jobs}/{labeling_job_now}")
        job = analysis_job(
            body={"metadata": {"name": name, "namespace": namespace, "uid": body.meta.uid}},
            parsed=parsed,
            job_name=job_name,
            image=context.image,
            pod=context.job_pod,
        )
        await api.create_object(jobs, job)
    except Exception as error:  # noqa: BLE001 - classified below; unknown ones re-raised
        _fail(body, patch, _classify(error, parsed), generation=generation, now=context.clock())
        return
    message = f"Job {job_name} samples {parsed.source_collection} and discovers its domains"
    status = progress_status(live, "Analyzing", message, generation=generation, now=now)
    status["analysis"] = {
        "job": job_name,
        "generation": generation,
        "version": version,
        "attempt": attempt,
        "jobs": serial,
        "retryAt": None,
        "lastFailure": previous.get("lastFailure") if attempt > 1 else None,
        **AnalysisProgress(sample_target=parsed.sample_size).as_status(),
    }
    patch.status.update(status)
    kopf.info(body, reason="Analyzing", message=message)


def _prepare_analysis_blocking(
    parsed: DomainMapSpec,
    configs: list[ClusterConfig],
    context: OperatorContext,
    *,
    owner: str,
    job_name: str,
    version: int,
    generation: int | None,
    replaced: str | None,
    previous_labeling: tuple[str, int] | None,
) -> None:
    """Check the source, store the request and claim the catalog for ``job_name``."""
    fleet = context.fleet_factory(configs)
    try:
        source = fleet.get(parsed.source_cluster)
        catalog = fleet.get(parsed.catalog_cluster)
        spec = source.collection_info(parsed.source_collection).spec
        vector = routing_vector_name(spec, parsed.source_vector)
        if source.count(parsed.source_collection) == 0:
            raise EmptySource(
                source.cluster,
                "the source collection is empty; load points before discovery",
                collection=parsed.source_collection,
            )
        store = AnalysisStore(source)
        store.save_request(
            analysis_request(
                parsed,
                owner=owner,
                job_name=job_name,
                version=version,
                generation=generation,
                vector=vector,
            )
        )
        claim_publication(
            catalog,
            parsed.catalog_collection,
            owner,
            job_name,
            spec.dense_vectors()[vector].size,
        )
        if replaced is not None:  # its entries and request go; it cannot publish any more
            discard_publication(catalog, parsed.catalog_collection, owner, replaced)
            store.clear(replaced)
        if previous_labeling is not None:  # an older analysis's plan and progress go
            LabelingProgressStore(source).clear(*previous_labeling)
    finally:
        fleet.close()


def analysis_in_flight(status: Mapping[str, Any]) -> bool:
    """Whether the DomainMap's analysis Job runs (the analysis timer follows it only then)."""
    return status.get("phase") == "Analyzing" and bool((status.get("analysis") or {}).get("job"))


def _analysis_blocking(
    parsed: DomainMapSpec,
    configs: list[ClusterConfig],
    context: OperatorContext,
    job_name: str,
    owner: str,
) -> tuple[AnalysisProgress | None, CatalogHead | None]:
    """The Job's recorded progress, and the catalog's head (what is published)."""
    fleet = context.fleet_factory(configs)
    try:
        progress = AnalysisStore(fleet.get(parsed.source_cluster)).load_progress(job_name)
        head = read_head(fleet.get(parsed.catalog_cluster), parsed.catalog_collection, owner)
        return progress, head
    finally:
        fleet.close()


async def follow_analysis(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """While Analyzing: copy the Job's progress into ``status.analysis``; once it has
    published, fill the status from its report and start labeling (or go Ready); a failed
    Job is retried (:class:`RetryPolicy`), then reported."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation, status = body.meta.get("generation"), body.get("status") or {}
    analysis = dict(status.get("analysis") or {})
    if analysis.get("generation") != generation:
        return  # a new spec: the change handler replaces the Job
    try:
        parsed = await _load_spec(body, context)
    except (SpecError, api.KubernetesApiError):
        return  # reported by the change handlers
    async with context.lock(owner_of(namespace, name)):
        live = await _live_status(namespace, name, status)
        if (
            not analysis_in_flight(live)
            or (live.get("analysis") or {}).get("job") != analysis["job"]
        ):
            return  # another handler moved on meanwhile
        await _follow_analysis_locked(body, patch, parsed, live, context, logger)


async def _follow_analysis_locked(
    body: kopf.Body,
    patch: kopf.Patch,
    parsed: DomainMapSpec,
    live: Mapping[str, Any],
    context: OperatorContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation, now = body.meta.get("generation"), context.clock()
    analysis = dict(live.get("analysis") or {})
    job_name = str(analysis["job"])
    retry_at = parse_timestamp(analysis.get("retryAt"))
    if retry_at is not None:
        if now >= retry_at:
            await _start_analysis(
                body, patch, parsed, live, context, attempt=int(analysis.get("attempt") or 1) + 1
            )
        return
    try:
        job = await api.get_json(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}")
        outcome, detail = job_outcome(job)
    except api.NotFound:
        outcome, detail = "missing", f"the analysis Job {job_name} disappeared"
    except api.KubernetesApiError:
        return  # the API is retried next tick
    try:
        clusters = [parsed.source_cluster, parsed.catalog_cluster]
        configs = await resolve_clusters(
            [parsed.cluster(c) for c in dict.fromkeys(clusters)],
            namespace,
            policy=context.credential_policy,
        )
        progress, head = await asyncio.to_thread(
            _analysis_blocking, parsed, configs, context, job_name, owner_of(namespace, name)
        )
    except (QdrantError, api.KubernetesApiError) as error:
        if outcome == "running":
            return  # progress is best effort; the Job's outcome decides
        logger.warning("analysis of %s/%s: cannot read its outcome: %s", namespace, name, error)
        progress, head = None, None
    if progress is not None:
        analysis.update(progress.as_status())
    published = head is not None and head.publication == job_name
    if outcome == "running" and not published:
        stalled = await show_stalled(body, patch, namespace, job_name, now)
        message = f"Job {job_name}: {analysis.get('message') or 'starting'}"
        patch.status["analysis"] = analysis
        patch.status["message"] = stalled.message if stalled else message
        return
    if published and head is not None:
        await _analysis_published(body, patch, parsed, live, analysis, head, context, logger)
        return
    if outcome == "succeeded":
        detail = f"it ended without publishing ({analysis.get('message') or 'no progress'})"
    reason = "AnalysisJobMissing" if outcome == "missing" else "AnalysisFailed"
    _job_failed(
        body,
        patch,
        context,
        kind="analysis",
        record=analysis,
        reason=reason,
        detail=f"the analysis Job {job_name} failed ({detail.strip(': ')})"
        if outcome != "missing"
        else detail,
        generation=generation,
    )


def _job_failed(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    *,
    kind: str,
    record: dict[str, Any],
    reason: str,
    detail: str,
    generation: int | None,
) -> None:
    """A failed (or vanished) analysis or labeling Job: another Job after a delay while
    retries are left (``status.<kind>.retryAt``), else the failure with how to retry."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    now = context.clock()
    attempt = int(record.get("attempt") or 1)
    delay = context.job_retry.delay_s(attempt)
    record["lastFailure"] = detail
    condition = "Analyzed" if kind == "analysis" else "Labeled"
    if delay is not None:
        retry_at = now + timedelta(seconds=delay)
        record["retryAt"] = timestamp(retry_at)
        message = (
            f"{detail}; attempt {attempt} of {context.job_retry.retries + 1}: another Job "
            f"starts at {timestamp(retry_at)}"
        )
        conditions = set_condition(
            (body.get("status") or {}).get("conditions") or [],
            condition,
            "False",
            f"{reason}Retrying" if reason.endswith("Failed") else "JobRetrying",
            message,
            observed_generation=generation,
            now=now,
        )
        patch.status.update({kind: record, "message": message, "conditions": conditions})
        kopf.event(body, type="Warning", reason=reason, message=message)
        return
    record["retryAt"] = None
    message = (
        f"{detail}; {attempt} attempt(s) failed, no retry is left; {retry_hint(namespace, name)}"
    )
    patch.status[kind] = record
    failure = _Failure(reason, message, None)
    _report_job_failure(body, patch, failure, condition, generation, context)


async def _analysis_published(
    body: kopf.Body,
    patch: kopf.Patch,
    parsed: DomainMapSpec,
    live: Mapping[str, Any],
    analysis: dict[str, Any],
    head: CatalogHead,
    context: OperatorContext,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """The Job published: the status takes the report's fields; labeling starts (or the
    DomainMap is Ready)."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation = body.meta.get("generation")
    report = head.report
    version = head.version
    labeling = report.get("labeling")
    status = analyzed_status(
        live,
        report=report,
        version=version,
        labeled=0 if labeling else None,
        catalog=(parsed.catalog_cluster, parsed.catalog_collection),
        confidence_threshold=parsed.confidence_threshold,
        generation=generation,
        now=context.clock(),
    )
    status["message"] = ""
    status["analysis"] = {**analysis, "phase": "Published", "retryAt": None}
    patterns = report.get("patterns") or {}
    kopf.info(
        body,
        reason="Analyzed",
        message=f"{report['domainCount']} domains, confidence {report['confidence']:.2f}, "
        f"version {version}; {patterns.get('summary') or 'first analysis'}",
    )
    discovery_metrics.record_analysis(namespace, name, report)
    if patterns.get("drifted"):
        kopf.event(body, type="Normal", reason="Drifted", message=str(patterns.get("summary")))
    if float(report["confidence"]) < parsed.confidence_threshold:
        kopf.warn(
            body,
            reason="LowConfidence",
            message=f"confidence {report['confidence']:.2f} is below "
            f"{parsed.confidence_threshold:.2f}",
        )
    if labeling:
        await _start_labeling(
            body,
            patch,
            parsed,
            status,
            live,
            context,
            plan=str(labeling["plan"]),
            ranges=int(labeling["ranges"]),
            total=int(labeling["total"]),
            version=version,
            attempt=1,
        )
        return
    patch.status.update(status)
    if parsed.specialize == "auto":
        # Publish the domains now (kopf writes the patch only after this handler), so the
        # children find their domain at once instead of retrying.
        with contextlib.suppress(api.KubernetesApiError):
            await api.patch_status(GROUP, VERSION, PLURAL, namespace, name, status)
        await _specialize_domains(body, parsed, status["domains"], context)
    logger.info("DomainMap %s/%s analysed: %d domains", namespace, name, report["domainCount"])


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


def labeling_in_flight(status: Mapping[str, Any]) -> bool:
    """Whether the DomainMap's labeling Job runs (the labeling timer follows it only then)."""
    return status.get("phase") == "Labeling" and bool((status.get("labeling") or {}).get("job"))


async def _start_labeling(
    body: kopf.Body,
    patch: kopf.Patch,
    parsed: DomainMapSpec,
    status: dict[str, Any],
    live: Mapping[str, Any],
    context: OperatorContext,
    *,
    plan: str,
    ranges: int,
    total: int,
    version: int,
    attempt: int,
) -> None:
    """Create the labeling Job of ``plan``; the status says Labeling until it is done."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation, now = body.meta.get("generation"), context.clock()
    blocked = needs_secret(parsed, [parsed.source_cluster])
    if blocked is not None:
        message = (
            f"cluster {blocked.name!r} takes its API key from the operator's environment "
            "(apiKeyEnv); the labeling Job needs apiKeySecretRef"
        )
        _fail(
            body,
            patch,
            _Failure("LabelingNeedsSecret", message, None),
            generation=generation,
            now=now,
        )
    before = dict(live.get("labeling") or {})
    previous = before.get("job")
    same_plan = before.get("plan") == plan
    serial = int(before.get("jobs") or 1) + 1 if same_plan and previous else 1
    job = labeling_job(
        body={"metadata": {"name": name, "namespace": namespace, "uid": body.meta.uid}},
        parsed=parsed,
        plan_name=plan,
        version=version,
        image=context.image,
        pod=context.job_pod,
        serial=serial,
    )
    job_name = str(job["metadata"]["name"])
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    try:
        if previous and previous != job_name:  # an older Job (or analysis) is not wanted now
            with contextlib.suppress(api.NotFound):
                await api.delete_object(f"{jobs}/{previous}")
        await api.create_object(jobs, job)
    except api.KubernetesApiError as error:
        _fail(body, patch, _classify(error, parsed), generation=generation, now=now)
    message = (
        f"Job {job_name} labels {total:,} points with {parsed.labeling_workers} "
        f"worker(s) over {ranges} id range(s)"
    )
    conditions = status.get("conditions") or live.get("conditions") or []
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
                "plan": plan,
                "version": version,
                "workers": parsed.labeling_workers,
                "ranges": ranges,
                "attempt": attempt,
                "jobs": serial,
                "retryAt": None,
                "lastFailure": before.get("lastFailure") if attempt > 1 else None,
                **labeling_progress([None] * ranges, total=total, now=0.0),
            },
        }
    )
    patch.status.update(status)
    kopf.info(body, reason="Labeling", message=message)


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
    Ready (and specialize, when asked); a failed Job is retried (:class:`RetryPolicy`), then
    reported."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation, status = body.meta.get("generation"), body.get("status") or {}
    labeling = dict(status.get("labeling") or {})
    job_name = str(labeling["job"])
    try:
        parsed = await _load_spec(body, context)
    except (SpecError, api.KubernetesApiError):
        return  # a new spec is analysed by the change handlers
    retry_at = parse_timestamp(labeling.get("retryAt"))
    if retry_at is not None:
        if context.clock() >= retry_at:
            await _restart_labeling(body, patch, parsed, status, context, manual=False)
        return
    try:
        job = await api.get_json(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}")
        outcome, detail = job_outcome(job)
    except api.NotFound:
        outcome, detail = "missing", f"the labeling Job {job_name} disappeared"
    except api.KubernetesApiError:
        return  # the API is retried next tick
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
        stalled = await show_stalled(body, patch, namespace, job_name, context.clock())
        patch.status["labeling"] = labeling
        patch.status["message"] = stalled.message if stalled else f"Job {job_name}: {summary}"
        return
    if outcome in ("failed", "missing"):
        failed = outcome == "failed"
        _job_failed(
            body,
            patch,
            context,
            kind="labeling",
            record=labeling,
            reason="LabelingFailed" if failed else "LabelingJobMissing",
            detail=(
                f"the labeling Job {job_name} failed ({detail.strip(': ')}); {summary}; the "
                "labels written stay"
                if failed
                else f"{detail}; {summary}"
            ),
            generation=generation,
        )
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


async def _restart_labeling(
    body: kopf.Body,
    patch: kopf.Patch,
    parsed: DomainMapSpec,
    status: Mapping[str, Any],
    context: OperatorContext,
    *,
    manual: bool,
) -> None:
    """Another labeling Job for the same plan: its workers resume their ranges where the
    failed one left them."""
    labeling = dict(status.get("labeling") or {})
    attempt = 1 if manual else int(labeling.get("attempt") or 1) + 1
    current = {k: v for k, v in status.items() if k != "phase"}
    await _start_labeling(
        body,
        patch,
        parsed,
        dict(current),
        status,
        context,
        plan=str(labeling["plan"]),
        ranges=int(labeling.get("ranges") or 0),
        total=int(labeling.get("total") or 0),
        version=int(labeling.get("version") or status.get("version") or 0),
        attempt=attempt,
    )


async def retry_domainmap(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    value: str | None,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """The user asked for a retry (:data:`RETRY_ANNOTATION` set to ``value``): a DomainMap
    whose analysis or labeling Job failed after its retries runs it again, with fresh
    retries; anything else is left as it is. Each value is honoured once."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    status = body.get("status") or {}
    if not value or status.get("retryHandled") == value:
        return
    patch.status["retryHandled"] = value
    reason = _ready_reason(status)
    if status.get("phase") != "Failed" or reason not in _RETRYABLE:
        logger.info(
            "DomainMap %s/%s: retry %r asked, nothing failed to retry", namespace, name, value
        )
        return
    try:
        parsed = await _load_spec(body, context)
    except (SpecError, api.KubernetesApiError):
        return
    kopf.info(body, reason="Retrying", message=f"retry asked ({RETRY_ANNOTATION}={value})")
    if reason in ("LabelingFailed", "LabelingJobMissing"):
        await _restart_labeling(body, patch, parsed, status, context, manual=True)
        return
    async with context.lock(owner_of(namespace, name)):
        await _start_analysis(body, patch, parsed, status, context, attempt=1)


_RETRYABLE = frozenset(
    {"AnalysisFailed", "AnalysisJobMissing", "LabelingFailed", "LabelingJobMissing"}
)


def _ready_reason(status: Mapping[str, Any]) -> str:
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    return str(ready.get("reason") or "")


def _report_job_failure(
    body: kopf.Body,
    patch: kopf.Patch,
    failure: _Failure,
    condition: str,
    generation: int | None,
    context: OperatorContext,
) -> None:
    now = context.clock()
    failed = failed_status(
        body.get("status"), failure.reason, failure.message, generation=generation, now=now
    )
    failed["conditions"] = set_condition(
        failed["conditions"],
        condition,
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
    discovery_metrics.forget(namespace, name)
    try:
        parsed = await _load_spec(body, context)
    except SpecError:
        logger.info("DomainMap %s/%s had an invalid spec: nothing was created", namespace, name)
        return
    except FleetNotFound as error:
        # Deletion must not hang on a fleet deleted first: say what is left behind.
        kopf.warn(
            body,
            reason="FleetNotFound",
            message=f"{error}; the catalog entries of this DomainMap (and its labels) stay",
        )
        return
    except api.KubernetesApiError as error:
        raise kopf.TemporaryError(f"cleanup failed: {error}", delay=30) from None
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
            (body.get("status") or {}).get("analysis", {}).get("job"),
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
    analysis: str | None = None,
) -> None:
    fleet = context.fleet_factory(configs)
    try:
        if labeling is not None:
            with contextlib.suppress(CollectionNotFound):
                LabelingProgressStore(fleet.get(parsed.source_cluster)).clear(*labeling)
        if analysis:
            with contextlib.suppress(CollectionNotFound):
                AnalysisStore(fleet.get(parsed.source_cluster)).clear(str(analysis))
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
