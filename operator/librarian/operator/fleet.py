"""What the operator does for one QdrantFleet: check it, report each cluster, and tell its users.

Why this exists: a QdrantFleet defines a namespace's Qdrant clusters once and
DomainMaps name it in ``spec.fleetRef``. The operator validates the fleet with
the DomainMap's own cluster parser, checks that each cluster answers with its
credential (under the same credential rules, with a short timeout, on every
change and on a slow timer) and reports it in ``status.clusters`` and a
``Ready`` condition. When the fleet is created or changes, each DomainMap of
the namespace that names it is annotated with the fleet's generation (its
metadata, never its spec); the DomainMap controller analyses such a DomainMap
again once, with the new clusters. Status is patched only when it changed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import kopf

from librarian.contracts.api import DOMAINMAPS, GROUP, QDRANTFLEETS, VERSION
from librarian.contracts.metadata import FLEET_ANNOTATION
from librarian.kube import client as api
from librarian.kube.fleet_access import CredentialRefused, resolve_clusters
from librarian.kube.spec import ClusterRef, SpecError, fleet_ref_of, parse_fleet_spec
from librarian.operator.conditions import set_condition, status_changed
from librarian.operator.context import OperatorContext
from librarian.storage.errors import AuthenticationFailed, QdrantError
from librarian.storage.fleet import ClusterConfig, FleetConfigError

__all__ = [
    "PLURAL",
    "REACHABILITY_TIMEOUT_S",
    "check_fleet",
    "notify_domainmaps",
]

PLURAL = QDRANTFLEETS

REACHABILITY_TIMEOUT_S = 5.0
"""The longest one cluster's reachability check may take (a cluster's own timeout, if less)."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


async def check_fleet(
    body: kopf.Body, patch: kopf.Patch, context: OperatorContext, logger: Logger
) -> None:
    """Validate the fleet and check each cluster; patch ``status`` when it changed."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation = body.meta.get("generation")
    current = body.get("status") or {}
    now = context.clock()
    try:
        refs = parse_fleet_spec(body.spec, name=name)
    except SpecError as error:
        message = "invalid spec: " + "; ".join(error.problems)
        desired: dict[str, Any] = {
            "phase": "Failed",
            "clusterCount": len(body.spec.get("clusters") or []),
            "clusters": [],
            "message": message,
            "observedGeneration": generation,
            "conditions": set_condition(
                current.get("conditions"),
                "Ready",
                "False",
                "InvalidSpec",
                message,
                observed_generation=generation,
                now=now,
            ),
        }
        if status_changed(current, desired):
            patch.status.update(desired)
            kopf.warn(body, reason="InvalidSpec", message=message)
        return
    # All at once: a fleet of slow clusters takes one timeout, not one per cluster.
    reports = list(await asyncio.gather(*(_reachability(r, namespace, context) for r in refs)))
    unreachable = [r for r in reports if not r["reachable"]]
    if unreachable:
        reason = "ClusterUnreachable"
        message = "; ".join(f"{r['name']}: {r['message']}" for r in unreachable)
    else:
        reason, message = "Reachable", f"all {len(reports)} cluster(s) answer"
    desired = {
        "phase": "Ready" if not unreachable else "Degraded",
        "clusterCount": len(reports),
        "clusters": reports,
        "message": "" if not unreachable else message,
        "observedGeneration": generation,
        "conditions": set_condition(
            current.get("conditions"),
            "Ready",
            "False" if unreachable else "True",
            reason,
            message,
            observed_generation=generation,
            now=now,
        ),
    }
    if status_changed(current, desired):
        patch.status.update(desired)
        for report in unreachable:
            logger.warning("QdrantFleet %s/%s: %s", namespace, name, report["message"])


async def _reachability(
    ref: ClusterRef, namespace: str, context: OperatorContext
) -> dict[str, Any]:
    """One cluster's entry in ``status.clusters``: reachable, reason and message (no secret)."""
    report: dict[str, Any] = {"name": ref.name}
    if ref.embedded is not None and not await asyncio.to_thread(Path(ref.embedded).exists):
        # A target the operator has not placed a collection on yet (the engine makes its
        # storage on the first one): nothing to ask, nothing wrong. A DomainMap whose source
        # is there says SourceNotFound.
        return {
            **report,
            "reachable": True,
            "reason": "Reachable",
            "message": f"embedded storage {ref.embedded} is empty: it is made when a "
            "collection is first placed there",
        }
    try:
        (config,) = await resolve_clusters([ref], namespace, policy=context.credential_policy)
        timeout = min(config.timeout_s, REACHABILITY_TIMEOUT_S)
        probe = replace(config, retries=0, timeout_s=timeout, existing_only=True)
        await asyncio.wait_for(asyncio.to_thread(_ping, probe, context), timeout + 1.0)
    except CredentialRefused as error:
        return {**report, "reachable": False, "reason": error.rule, "message": str(error)}
    except api.SecretNotFound as error:
        return {**report, "reachable": False, "reason": "SecretNotFound", "message": str(error)}
    except AuthenticationFailed as error:
        reason, message = "AuthenticationFailed", str(error)
    except TimeoutError:
        reason, message = "ClusterUnreachable", f"no answer within {REACHABILITY_TIMEOUT_S:g}s"
    except (QdrantError, FleetConfigError, OSError) as error:
        reason, message = "ClusterUnreachable", str(error)
    except api.KubernetesApiError as error:
        reason, message = "KubernetesApiError", str(error)
    else:
        where = ref.url or f"embedded storage {ref.embedded}"
        return {**report, "reachable": True, "reason": "Reachable", "message": f"{where} answers"}
    return {**report, "reachable": False, "reason": reason, "message": message}


def _ping(config: ClusterConfig, context: OperatorContext) -> None:
    fleet = context.fleet_factory([config])
    try:
        fleet.get(config.name).ping()
    finally:
        fleet.close()


async def notify_domainmaps(body: kopf.Body, logger: Logger) -> list[str]:
    """Annotate each DomainMap of the fleet's namespace that names it with the fleet's
    generation (metadata only); the names annotated now."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    generation = str(body.meta.get("generation") or "")
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{DOMAINMAPS}"
    try:
        listing = await api.get_json(base)
    except api.KubernetesApiError as error:
        raise kopf.TemporaryError(f"cannot list DomainMaps: {error}", delay=10) from None
    notified = []
    for item in listing.get("items") or []:
        if fleet_ref_of(item.get("spec") or {}) != name:
            continue
        meta = item.get("metadata") or {}
        if (meta.get("annotations") or {}).get(FLEET_ANNOTATION) == generation:
            continue
        patch = {"metadata": {"annotations": {FLEET_ANNOTATION: generation}}}
        try:
            await api.patch_object(f"{base}/{meta.get('name')}", patch)
        except api.NotFound:
            continue  # deleted meanwhile
        except api.KubernetesApiError as error:
            raise kopf.TemporaryError(f"cannot annotate DomainMaps: {error}", delay=10) from None
        notified.append(str(meta.get("name")))
    if notified:
        logger.info(
            "QdrantFleet %s/%s generation %s: DomainMaps %s will use it",
            namespace,
            name,
            generation,
            ", ".join(notified),
        )
    return notified
