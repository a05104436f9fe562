"""The kopf handlers: thin wiring from Kubernetes events to the operator's work.

Why this exists: kopf needs decorated functions; everything they do lives in
:mod:`librarian.operator.domainmap`, :mod:`librarian.operator.specialization` and
:mod:`librarian.operator.rebalance`. Importing this module registers the handlers.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from librarian.contracts.api import GROUP, VERSION
from librarian.contracts.metadata import FINALIZER, RETRY_ANNOTATION
from librarian.kube.client import Credentials, remember_credentials
from librarian.kube.credentials import to_pem
from librarian.operator import fleet, rebalance, specialization
from librarian.operator.domainmap import (
    PLURAL,
    analysis_due,
    analysis_in_flight,
    analyze_domainmap,
    cleanup_domainmap,
    context_from,
    fleet_change_pending,
    fleet_changed,
    follow_analysis,
    follow_labeling,
    labeling_in_flight,
    retry_domainmap,
)

__all__ = [
    "FLEET_CHECK_INTERVAL_S",
    "SERVER_URL_ENV",
    "TIMER_TICK_S",
    "configure",
    "credentials_from",
    "domainmap_analysis_watch",
    "domainmap_changed",
    "domainmap_deleted",
    "domainmap_fleet_changed",
    "domainmap_labeling_watch",
    "domainmap_reanalysis",
    "domainmap_resumed",
    "domainmap_retry",
    "fleet_changed_handler",
    "fleet_check",
    "login",
    "rebalance_tick",
    "specialization_changed",
    "specialization_job_watch",
    "specialization_resumed",
]

Logger = logging.Logger | logging.LoggerAdapter[Any]

TIMER_TICK_S = float(os.environ.get("LIBRARIAN_TIMER_TICK_SECONDS", "10"))
"""How often the re-analysis timer checks whether a DomainMap's interval has passed."""

FLEET_CHECK_INTERVAL_S = float(os.environ.get("LIBRARIAN_FLEET_CHECK_SECONDS", "300"))
"""How often each QdrantFleet's clusters are checked again for reachability."""

SERVER_URL_ENV = "LIBRARIAN_KUBERNETES_SERVER"
"""When set, the operator talks to this API server URL without credentials (the emulator)."""


def credentials_from(info: kopf.ConnectionInfo) -> Credentials:
    """kopf's login as the client's credentials: the operator's own calls use the same login."""
    return Credentials(
        server=info.server,
        namespace=info.default_namespace or "default",
        token=info.token,
        scheme=info.scheme or "Bearer",
        username=info.username,
        password=info.password,
        ca_file=os.fsdecode(info.ca_path) if info.ca_path else None,
        ca_data=to_pem(info.ca_data) if info.ca_data else None,
        certificate_file=os.fsdecode(info.certificate_path) if info.certificate_path else None,
        key_file=os.fsdecode(info.private_key_path) if info.private_key_path else None,
        certificate_data=to_pem(info.certificate_data) if info.certificate_data else None,
        key_data=to_pem(info.private_key_data) if info.private_key_data else None,
        insecure=bool(info.insecure),
    )


@kopf.on.login()
def login(*, logger: Logger, **kwargs: Any) -> kopf.ConnectionInfo | None:
    server = os.environ.get(SERVER_URL_ENV)
    info: kopf.ConnectionInfo | None
    if server:
        info = kopf.ConnectionInfo(server=server, default_namespace="default")
    else:
        info = kopf.login_with_service_account(
            logger=logger, **kwargs
        ) or kopf.login_with_kubeconfig(logger=logger, **kwargs)
    if info is not None:
        remember_credentials(credentials_from(info))
    return info


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="librarian.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="librarian.dev", key="last-handled-configuration"
    )
    # Log lines at INFO and above become Events: no message anywhere carries a secret.
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def domainmap_changed(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    await analyze_domainmap(body, patch, context_from(memo), logger)


@kopf.on.resume(GROUP, VERSION, PLURAL)
async def domainmap_resumed(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    context = context_from(memo)
    status = body.get("status") or {}
    generation = body.meta.get("generation")
    if analysis_due(body.spec, status, generation, context.clock(), context.spec_defaults):
        await analyze_domainmap(body, patch, context, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_TICK_S, initial_delay=TIMER_TICK_S)
async def domainmap_reanalysis(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    context = context_from(memo)
    status = body.get("status") or {}
    if status.get("phase") in (None, "Analyzing", "Labeling", "Failed", "Pending"):
        return  # the change handlers own first analyses and retries
    generation = body.meta.get("generation")
    if status.get("observedGeneration") != generation:
        return  # a new generation: the update handler analyses it
    if analysis_due(body.spec, status, generation, context.clock(), context.spec_defaults):
        await analyze_domainmap(body, patch, context, logger)


def _analyzing(status: kopf.Status, **_: Any) -> bool:
    """Is a DomainMap's analysis Job running?"""
    return analysis_in_flight(status)


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=TIMER_TICK_S,
    initial_delay=TIMER_TICK_S,
    when=_analyzing,  # only while its analysis Job runs
)
async def domainmap_analysis_watch(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    await follow_analysis(body, patch, context_from(memo), logger)


def _retry_asked(annotations: kopf.Annotations, status: kopf.Status, **_: Any) -> bool:
    """Has a user set the retry annotation to a value not acted on yet?"""
    value = annotations.get(RETRY_ANNOTATION)
    return bool(value) and value != status.get("retryHandled")


# A timer, not a change handler: kopf leaves the annotations of its own prefix out of the
# changes it detects.
@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=TIMER_TICK_S,
    initial_delay=TIMER_TICK_S,
    when=_retry_asked,
)
async def domainmap_retry(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    """A user asked for a retry of the failed analysis or labeling Job."""
    value = body.metadata.annotations.get(RETRY_ANNOTATION)
    await retry_domainmap(body, patch, context_from(memo), value, logger)


def _fleet_changed(
    spec: kopf.Spec, annotations: kopf.Annotations, status: kopf.Status, **_: Any
) -> bool:
    """Has the QdrantFleet a DomainMap names changed since its last analysis read it?"""
    return fleet_change_pending(spec, annotations, status)


# A timer, like the retry: kopf leaves the annotations of its own prefix out of the changes
# it detects. The fleet's handlers set the annotation; this picks it up within a tick.
@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=TIMER_TICK_S,
    initial_delay=TIMER_TICK_S,
    when=_fleet_changed,
)
async def domainmap_fleet_changed(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    """The QdrantFleet of spec.fleetRef was created or changed: analyse with its clusters."""
    await fleet_changed(body, patch, context_from(memo), logger)


@kopf.on.create(GROUP, VERSION, fleet.PLURAL)
@kopf.on.update(GROUP, VERSION, fleet.PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, fleet.PLURAL)
async def fleet_changed_handler(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    """A QdrantFleet appeared or changed: check its clusters, then tell the DomainMaps that
    name it (their change is picked up by :func:`domainmap_fleet_changed`)."""
    await fleet.check_fleet(body, patch, context_from(memo), logger)
    await fleet.notify_domainmaps(body, logger)


@kopf.timer(
    GROUP,
    VERSION,
    fleet.PLURAL,
    interval=FLEET_CHECK_INTERVAL_S,
    initial_delay=FLEET_CHECK_INTERVAL_S,
    idle=FLEET_CHECK_INTERVAL_S,
)
async def fleet_check(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    """Every few minutes: is each cluster of the fleet still reachable with its credential?"""
    await fleet.check_fleet(body, patch, context_from(memo), logger)


def _labeling(status: kopf.Status, **_: Any) -> bool:
    """Is a DomainMap's labeling Job running?"""
    return labeling_in_flight(status)


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=TIMER_TICK_S,
    initial_delay=TIMER_TICK_S,
    when=_labeling,  # only while its labeling Job runs
)
async def domainmap_labeling_watch(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    await follow_labeling(body, patch, context_from(memo), logger)


@kopf.on.create(GROUP, VERSION, specialization.PLURAL)
@kopf.on.update(GROUP, VERSION, specialization.PLURAL, field="spec")
async def specialization_changed(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    await specialization.start_specialization(body, patch, context_from(memo))


@kopf.on.resume(GROUP, VERSION, specialization.PLURAL)
async def specialization_resumed(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    status = body.get("status") or {}
    if status.get("observedGeneration") != body.meta.get("generation"):
        await specialization.start_specialization(body, patch, context_from(memo))


def _in_flight(status: kopf.Status, **_: Any) -> bool:
    """Is a specialization's move under way (fencing, copying, or switching routers)?"""
    return specialization.move_in_flight(status)


@kopf.timer(
    GROUP,
    VERSION,
    specialization.PLURAL,
    interval=TIMER_TICK_S,
    initial_delay=TIMER_TICK_S,
    when=_in_flight,  # only while a move is under way: no idle ticks (and their Events) otherwise
)
async def specialization_job_watch(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    await specialization.advance_move(body, patch, context_from(memo))


@kopf.timer(GROUP, VERSION, rebalance.PLURAL, interval=TIMER_TICK_S, initial_delay=0.1)
async def rebalance_tick(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any
) -> None:
    """Every tick: moves advance, approvals apply, and the analysis runs when its interval passed."""
    await rebalance.reconcile_policy(body, patch, context_from(memo), logger)


@kopf.on.delete(GROUP, VERSION, PLURAL, retries=5)
async def domainmap_deleted(*, body: kopf.Body, memo: Any, logger: Logger, **_: Any) -> None:
    await cleanup_domainmap(body, context_from(memo), logger)
