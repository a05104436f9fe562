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
from librarian.operator.conditions import parse_timestamp
from librarian.operator.context import OperatorContext
from librarian.operator.domainmap_status import analyzed_status, failed_status, progress_status
from librarian.services.analysis import analyze_collection, publish_domains
from librarian.services.catalog import delete_catalog, read_catalog
from librarian.services.labeling import remove_labels
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
    """True when the DomainMap has not been analysed at this generation or its interval passed."""
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
                    _analyze_blocking, parsed, configs, namespace, name, version, context, reporter
                ),
                timeout=context.analysis_timeout_s,
            )
        except Exception as error:  # noqa: BLE001 - classified below; unknown ones re-raised
            _fail(body, patch, _classify(error, parsed), generation=generation, now=context.clock())
            return
    result, previous, sampled, source_points, labeled = outcome
    patterns = discover_patterns(previous, result.domains, drift_threshold=parsed.drift_threshold)
    status = analyzed_status(
        body.get("status"),
        result=result,
        patterns=patterns,
        version=version,
        sampled=sampled,
        source_points=source_points,
        labeled=labeled,
        catalog=(parsed.catalog_cluster, parsed.catalog_collection),
        confidence_threshold=parsed.confidence_threshold,
        generation=generation,
        now=context.clock(),
    )
    status["message"] = ""
    patch.status.update(status)
    kopf.info(
        body,
        reason="Analyzed",
        message=f"{len(result.domains)} domains, confidence {result.confidence:.2f}, "
        f"version {version}; {patterns.summary()}",
    )
    if patterns.drifted:
        kopf.event(body, type="Normal", reason="Drifted", message=patterns.summary())
    if parsed.specialize == "auto":
        # Publish the domains now (kopf writes the patch only after this handler), so the
        # children find their domain at once instead of retrying.
        with contextlib.suppress(api.KubernetesApiError):
            await api.patch_status(GROUP, VERSION, PLURAL, namespace, name, status)
        await _specialize_domains(body, parsed, result.domains, context)
    if result.confidence < parsed.confidence_threshold:
        kopf.warn(
            body,
            reason="LowConfidence",
            message=f"confidence {result.confidence:.2f} is below "
            f"{parsed.confidence_threshold:.2f}",
        )
    logger.info("DomainMap %s/%s analysed: %d domains", namespace, name, len(result.domains))


async def _specialize_domains(
    body: kopf.Body, parsed: DomainMapSpec, domains: Sequence[Domain], context: OperatorContext
) -> None:
    """Create (idempotently) one owned ClusterSpecialization per domain."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    strategies = dict(parsed.specialization_targets)
    placement = place_domains(
        {d.id: d.size for d in domains}, [cluster for cluster, _ in parsed.specialization_targets]
    )
    created = 0
    for domain in domains:
        cluster = placement[domain.id]
        spec: dict[str, Any] = {
            "domainMap": name,
            "domain": domain.id,
            "target": {"cluster": cluster},
        }
        if strategies.get(cluster):
            spec["strategy"] = strategies[cluster]
        child = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterSpecialization",
            "metadata": {
                "name": kubernetes_name(name, domain.name),
                "namespace": namespace,
                "labels": {DOMAINMAP_LABEL: name, DOMAIN_LABEL: domain.id},
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
) -> tuple[Any, list[Domain], int, int, int | None]:
    fleet = context.fleet_factory(configs)
    try:
        source = fleet.get(parsed.source_cluster)
        catalog = fleet.get(parsed.catalog_cluster)
        owner = owner_of(namespace, name)
        previous = [e.to_domain() for e in read_catalog(catalog, parsed.catalog_collection, owner)]
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
            thresholds=parsed.thresholds,
            on_stage=lambda stage: reporter.report("Analyzing", stage),
            vector=vector,
        )
        report = publish_domains(
            source,
            parsed.source_collection,
            catalog,
            parsed.catalog_collection,
            owner,
            outcome.result,
            version,
            label=parsed.labeling_enabled,
            batch_size=parsed.labeling_batch_size,
            on_progress=lambda done, total: reporter.report(
                "Labeling",
                f"labelled {done:,} of {total:,} points",
                {"labeling": {"labeled": done, "total": total, "enabled": True}},
            ),
            vector=vector,
        )
        labeled = report.labeled if report is not None else None
        return outcome.result, previous, outcome.sampled, outcome.source_points, labeled
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
        await asyncio.to_thread(_cleanup_blocking, parsed, configs, namespace, name, context)
    except (QdrantError, api.KubernetesApiError) as error:
        raise kopf.TemporaryError(f"cleanup failed: {error}", delay=30) from None
    kopf.info(
        body,
        reason="CleanedUp",
        message=f"catalog entries removed from {parsed.catalog_collection}"
        + ("; labels removed" if parsed.remove_labels_on_delete else ""),
    )


def _cleanup_blocking(
    parsed: DomainMapSpec,
    configs: list[ClusterConfig],
    namespace: str,
    name: str,
    context: OperatorContext,
) -> None:
    fleet = context.fleet_factory(configs)
    try:
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
