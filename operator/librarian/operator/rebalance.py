"""What the operator does for one RebalancePolicy at each tick: analyse, propose, approve, move.

Why this exists: the kopf timer stays thin. A tick reads the policy's
library (its DomainMap, where each domain is served now), advances the moves
in flight, applies what the user asked through the approval annotation
(``librarian.dev/rebalance=approve|refresh|stop``, as Strimzi's
KafkaRebalance), and when the analysis interval has passed measures the load
(routers + collection sizes), forecasts it, plans a proposal and — in
``auto`` mode, or once approved — starts its moves within the constraints.
Everything it decides is written to the status with conditions and Events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import kopf

from librarian.contracts.api import GROUP, REBALANCEPOLICIES, VERSION
from librarian.contracts.router_keys import caller_key
from librarian.core.load import DomainLoad
from librarian.core.planner import next_window_start
from librarian.core.rebalancing import Analysis, PolicyAnalysis, analyse_policy, judged_fleet
from librarian.kube import client as api
from librarian.kube.fleet_access import resolve_clusters
from librarian.kube.fleets import FleetNotFound, load_domainmap_spec
from librarian.kube.policy_spec import PolicySpec, effective_capacities, parse_policy_spec
from librarian.kube.serving import home_collection, serving_specializations
from librarian.kube.spec import DomainMapSpec, SpecError
from librarian.operator import rebalance_metrics as metrics
from librarian.operator.conditions import ConditionStatus, set_condition, timestamp
from librarian.operator.context import OperatorContext
from librarian.operator.load_source import LoadSourceUnreachable, RouterLoad, fetch_router_load
from librarian.operator.move_record import InvalidMoveRecord, MoveRecord, MoveState
from librarian.operator.moves import (
    OWNER_LABEL,
    MoveTarget,
    advance_move,
    start_move,
)
from librarian.operator.policy_state import (
    APPROVAL_ANNOTATION,
    Approval,
    analysis_due,
    append_history,
    moves_from_proposal,
    moves_to_start,
    parse_approval,
    policy_phase,
)
from librarian.operator.policy_status import (
    history_from_status,
    history_status,
    ledger_from_status,
    ledger_status,
    load_status,
    proposal_status,
)
from librarian.operator.router_ref import RouterNotFound, router_urls
from librarian.services.domain_homes import DomainHome, measure_homes
from librarian.storage.errors import QdrantError
from librarian.storage.fleet import ClusterConfig

PLURAL = REBALANCEPOLICIES
HISTORY_SAMPLES = 144  # a day and a half at the default 15-minute interval
Logger = logging.Logger | logging.LoggerAdapter[Any]
ConditionValue = tuple[ConditionStatus, str, str]  # status, reason, message


class PolicyFailed(Exception):
    """The tick could not analyse; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class LibraryView:
    """The policy's library now: the DomainMap and where each domain is served."""

    spec: DomainMapSpec
    domains: Mapping[str, Mapping[str, Any]]  # id -> DomainMap status entry
    homes: dict[str, dict[str, Any]]  # id -> cluster, collection, specialization, owned, baseline
    clusters: list[ClusterConfig]


async def read_library(
    namespace: str, policy: PolicySpec, name: str, context: OperatorContext
) -> LibraryView:
    try:
        domain_map = await api.get_json(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/domainmaps/{policy.domain_map}"
        )
    except api.NotFound:
        raise PolicyFailed(
            "DomainMapNotFound",
            f"DomainMap {namespace}/{policy.domain_map} does not exist; create it or fix "
            "spec.domainMap",
        ) from None
    try:
        dm_spec = await load_domainmap_spec(
            domain_map.get("spec") or {},
            namespace=namespace,
            name=policy.domain_map,
            defaults=context.spec_defaults,
        )
    except SpecError as error:
        raise PolicyFailed(
            "DomainMapInvalid", f"DomainMap {policy.domain_map} is invalid: {error}"
        ) from None
    except FleetNotFound as error:
        raise PolicyFailed("FleetNotFound", str(error)) from None
    domains = {d["id"]: d for d in (domain_map.get("status") or {}).get("domains") or []}
    if not domains:
        raise PolicyFailed(
            "DomainMapNotAnalyzed", f"DomainMap {policy.domain_map} has no domains yet"
        )
    unknown = sorted({c.name for c in policy.capacities} - {c.name for c in dm_spec.clusters})
    if unknown:
        raise PolicyFailed(
            "InvalidSpec",
            f"spec.capacity names {', '.join(unknown)}, not clusters of DomainMap "
            f"{policy.domain_map} ({', '.join(c.name for c in dm_spec.clusters)})",
        )
    listing = await api.get_json(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/clusterspecializations"
    )
    homes: dict[str, dict[str, Any]] = {}
    serving_now = serving_specializations(listing.get("items") or [], policy.domain_map)
    for domain in domains:
        serving = serving_now.get(domain)
        if serving is None:
            homes[domain] = {
                "cluster": dm_spec.source_cluster,
                "collection": dm_spec.source_collection,
            }
            continue
        status = serving["status"]
        labels = (serving.get("metadata") or {}).get("labels") or {}
        homes[domain] = {
            "cluster": serving["spec"]["target"]["cluster"],
            "collection": home_collection(serving),
            "specialization": serving["metadata"]["name"],
            "owned": labels.get(OWNER_LABEL) == name,
            "baselineRecall": (status.get("validation") or {}).get("recallAt10"),
        }
    clusters = await resolve_clusters(dm_spec.clusters, namespace, policy=context.credential_policy)
    return LibraryView(dm_spec, domains, homes, clusters)


def _footprints(context: OperatorContext, library: LibraryView) -> dict[str, Any]:
    fleet = context.fleet_factory(library.clusters)
    try:
        return measure_homes(
            fleet, {d: DomainHome(h["cluster"], h["collection"]) for d, h in library.homes.items()}
        )
    finally:
        fleet.close()


def _domain_loads(
    library: LibraryView, traffic: RouterLoad, footprints: Mapping[str, Any]
) -> list[DomainLoad]:
    loads = []
    for domain, home in library.homes.items():
        seen = traffic.domains.get(domain)
        size = footprints.get(domain)
        loads.append(
            DomainLoad(
                domain=domain,
                cluster=home["cluster"],
                qps=seen.qps if seen else 0.0,
                p95_ms=seen.p95_ms if seen else None,
                points=size.points if size else 0,
                memory_bytes=size.memory_bytes if size else 0,
                disk_bytes=size.disk_bytes if size else 0,
                recall=traffic.estimated_recall,
                baseline_recall=home.get("baselineRecall"),
            )
        )
    return loads


async def analyse(
    policy: PolicySpec,
    library: LibraryView,
    status: Mapping[str, Any],
    context: OperatorContext,
    *,
    namespace: str = "default",
) -> Analysis:
    """Measure (routers, collections), then the pure analysis of :mod:`librarian.core.rebalancing`.

    The routers are the policy's routerUrls and the Service its routerRef names (in
    ``namespace``, the policy's, unless the ref says otherwise); ``namespace`` (the policy's
    and its DomainMap's) also names the library to a router serving several.
    """
    urls = await router_urls(
        policy.router_urls, policy.router_ref, namespace, service_url=context.service_url
    )
    traffic = await fetch_router_load(
        urls, api_key=caller_key(), library=f"{namespace}/{policy.domain_map}"
    )
    footprints = await asyncio.to_thread(_footprints, context, library)
    domains, capacities = judged_fleet(
        _domain_loads(library, traffic, footprints),
        [c.name for c in library.spec.clusters],
        effective_capacities(policy.capacities, library.spec.clusters),
        policy.constraints.excluded_clusters,
    )
    memory = PolicyAnalysis(
        strategy=policy.strategy,
        thresholds=policy.thresholds,
        constraints=policy.constraints,
        horizon_s=policy.horizon_s if policy.prediction else None,
        history=history_from_status(status.get("loadHistory")),
        ledger=ledger_from_status((status.get("prediction") or {}).get("ledger")),
        max_samples=HISTORY_SAMPLES,
    )
    return analyse_policy(domains, capacities, memory, now=context.clock())


def _proposal_status(
    analysis: Analysis, previous: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any] | None:
    proposal = analysis.proposal
    if proposal is None:
        return None
    created = (
        previous.get("createdAt")
        if previous and previous.get("id") == proposal.id
        else timestamp(now)
    )
    return {
        **proposal_status(proposal),
        "id": proposal.id,
        "createdAt": created,
        "basedOn": analysis.based_on,
    }


def _prediction_status(policy: PolicySpec, analysis: Analysis) -> dict[str, Any]:
    result: dict[str, Any] = {
        "enabled": policy.prediction,
        "horizonSeconds": policy.horizon_s,
        "mape": analysis.ledger.mape,
        "ledger": ledger_status(analysis.ledger),
    }
    if analysis.predicted is not None:
        result["maxMeanRatio"] = round(analysis.predicted.max_mean_ratio, 3)
        result["violations"] = [v.message for v in analysis.predicted.violations]
    return result


def _where(body: kopf.Body, policy: PolicySpec, library: LibraryView) -> MoveTarget:
    return MoveTarget(
        namespace=body.meta.namespace or "default",
        policy=body.meta.name or "",
        domain_map=policy.domain_map,
        source_cluster=library.spec.source_cluster,
        source_collection=library.spec.source_collection,
        execution_strategy=policy.execution_strategy,
        grace_s=policy.grace_s,
        clusters=library.clusters,
        catalog=(library.spec.catalog_cluster, library.spec.catalog_collection)
        if library.spec.catalog_collection
        else None,
        vector=library.spec.source_vector or "",
    )


def _record_finished(namespace: str, name: str, finished: Sequence[MoveRecord]) -> None:
    for move in finished:
        outcome = {MoveState.DONE: "done", MoveState.ROLLED_BACK: "rolled_back"}.get(
            move.state, "cancelled"
        )
        metrics.MOVES.labels(namespace, name, outcome).inc()
        if move.state == MoveState.DONE:
            metrics.POINTS_MOVED.labels(namespace, name).inc(move.points)


def _conditions(
    request: _Read,
    now: datetime,
    ready: ConditionValue | None,
    balanced: ConditionValue | None,
    pending: ConditionValue,
) -> list[dict[str, Any]]:
    conditions = request.status.get("conditions") or []
    for kind, value in (("Ready", ready), ("Balanced", balanced), ("ProposalPending", pending)):
        if value is None:
            continue
        state, reason, message = value
        conditions = set_condition(
            conditions,
            kind,
            state,
            reason,
            message,
            observed_generation=request.generation,
            now=now,
        )
    return list(conditions)


@dataclass(frozen=True)
class _Problem:
    """Why a policy cannot run at all (its spec, or rebalancing switched off)."""

    reason: str
    message: str


@dataclass(frozen=True)
class _Read:
    """What a tick reads from the policy object, before it calls any API."""

    body: kopf.Body
    status: Mapping[str, Any]
    generation: int | None
    policy: PolicySpec | _Problem
    approval: Approval
    due: bool

    @property
    def idle(self) -> bool:
        """Nothing to move, ask, analyse or report: the tick calls no API."""
        if isinstance(self.policy, _Problem):
            return _reported(self.status, self.generation, self.policy.message)
        asked = self.approval.action or self.approval.error
        return not (self.due or self.status.get("moves") or asked)


def _read(body: kopf.Body, context: OperatorContext, now: datetime) -> _Read:
    status: Mapping[str, Any] = body.get("status") or {}
    generation = body.meta.get("generation")
    approval = parse_approval(body.meta.annotations)
    defaults = context.rebalance_defaults
    try:
        policy = parse_policy_spec(body.spec, defaults=defaults)
    except SpecError as error:
        problem = _Problem("InvalidSpec", "invalid spec: " + "; ".join(error.problems))
        return _Read(body, status, generation, problem, approval, due=False)
    if not defaults.enabled:
        problem = _Problem(
            "RebalancingDisabled",
            "adaptive_rebalancing.enabled is false in the operator configuration",
        )
        return _Read(body, status, generation, problem, approval, due=False)
    due = analysis_due(
        status,
        generation=generation,
        interval_s=policy.interval_s,
        now=now,
        refresh=approval.action == "refresh",
    )
    return _Read(body, status, generation, policy, approval, due)


def _reported(status: Mapping[str, Any], generation: int | None, message: str) -> bool:
    """The status already says ``message`` for this generation (so its Event was posted)."""
    return status.get("message") == message and status.get("observedGeneration") == generation


def _invalid(request: _Read, patch: kopf.Patch, reason: str, message: str, now: datetime) -> None:
    """Ready=False with ``reason``; the Warning Event only when the status does not say it yet."""
    conditions = set_condition(
        request.status.get("conditions") or [],
        "Ready",
        "False",
        reason,
        message,
        observed_generation=request.generation,
        now=now,
    )
    if not _reported(request.status, request.generation, message):
        kopf.event(request.body, type="Warning", reason=reason, message=message)
    patch.status.update(
        {
            "phase": "Failed",
            "conditions": conditions,
            "message": message,
            "observedGeneration": request.generation,
        }
    )


async def reconcile_policy(
    body: kopf.Body, patch: kopf.Patch, context: OperatorContext, logger: Logger
) -> None:
    """One tick of a RebalancePolicy (see the module docstring)."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    try:
        async with context.lock(f"rebalancepolicy/{namespace}/{name}"):
            await _tick(body, patch, context, logger, namespace, name)
    finally:
        metrics.TICKS.labels(namespace, name).inc()


async def _tick(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    logger: Logger,
    namespace: str,
    name: str,
) -> None:
    """Judge on kopf's body whether there is work, then work on the policy as the API holds it.

    kopf hands a timer the body its watch stream delivered last, which can lag
    behind what the previous tick wrote (a slow stream, kopf retrying another
    patch of the object). Acting on it would report a problem again, handle
    an approval again, or advance a move from a state it already left. Ticks
    of one policy run one after another and kopf applies a tick's status
    before the next tick starts, so a re-read holds everything earlier ticks
    wrote: every Event below is posted by the one tick whose status records it.
    An idle tick (judged on either) calls no API at all.
    """
    now = context.clock()
    if _read(body, context, now).idle:
        return
    try:
        raw = await api.get_json(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}")
    except api.NotFound:
        return  # deleted meanwhile
    except api.KubernetesApiError as error:
        logger.debug("RebalancePolicy %s/%s not re-read, next tick: %s", namespace, name, error)
        return
    request = _read(kopf.Body(cast(kopf.RawBody, raw)), context, now)
    if not request.idle:
        await _reconcile(request, patch, context, logger, namespace, name, now)


async def _claim_approval(request: _Read, namespace: str, name: str, logger: Logger) -> bool:
    """Remove the approval annotation if it still holds what this tick read.

    The removal is conditional (a JSON-patch ``test``): a user who changed it
    meanwhile (``approve`` to ``stop``) is not overwritten, and an annotation
    is acted on by the one tick that removed it. False: leave it to the next tick.
    """
    value = (request.body.meta.annotations or {}).get(APPROVAL_ANNOTATION)
    key = "/metadata/annotations/" + APPROVAL_ANNOTATION.replace("~", "~0").replace("/", "~1")
    try:
        await api.json_patch_object(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
            [{"op": "test", "path": key, "value": value}, {"op": "remove", "path": key}],
        )
    except api.KubernetesApiError as error:
        logger.debug("%s on %s/%s changed or not removable: %s", key, namespace, name, error)
        return False
    return True


@dataclass
class _Work:
    """What one tick changes: the moves, the stop flag, the proposal and the status update."""

    moves: list[MoveRecord]
    stopped: bool
    proposal: Mapping[str, Any] | None
    update: dict[str, Any] = field(default_factory=dict)
    analysed: Analysis | None = None
    failure: ConditionValue | None = None

    @property
    def open(self) -> bool:
        return any(m.state.open for m in self.moves)


async def _reconcile(
    request: _Read,
    patch: kopf.Patch,
    context: OperatorContext,
    logger: Logger,
    namespace: str,
    name: str,
    now: datetime,
) -> None:
    policy = request.policy
    if isinstance(policy, _Problem):
        _invalid(request, patch, policy.reason, policy.message, now)
        return
    approval = request.approval
    if approval.action or approval.error:
        if not await _claim_approval(request, namespace, name, logger):
            return  # it changed since it was read: the next tick reads it again
        if approval.error:
            kopf.event(
                request.body, type="Warning", reason="UnknownAnnotation", message=approval.error
            )
    try:
        moves = [MoveRecord.from_status(m) for m in request.status.get("moves") or []]
        library = await read_library(namespace, policy, name, context)
    except InvalidMoveRecord as error:
        _invalid(request, patch, "InvalidStatus", str(error), now)
        return
    except (PolicyFailed, api.KubernetesApiError) as error:
        reason = error.reason if isinstance(error, PolicyFailed) else "KubernetesApiError"
        _invalid(request, patch, reason, str(error), now)
        return
    stopped = bool(request.status.get("stopped")) and (
        request.status.get("observedGeneration") == request.generation
    )
    work = _Work(moves, stopped, request.status.get("proposal"))
    where = _where(request.body, policy, library)
    await _advance_in_flight(request.body, work, where, context)
    _apply_approval(request.body, approval, work, library, now)
    await _analyse_if_due(request, policy, library, work, context, now)
    _auto_start(policy, context, work, library, now)
    window = await _start_allowed(request.body, policy, work, where, now)
    status = _status(request, policy, work, window, now)
    patch.status.update(status)
    if work.analysed is not None:
        logger.debug("RebalancePolicy %s/%s analysed: %s", namespace, name, status["message"])


async def _advance_in_flight(
    body: kopf.Body, work: _Work, where: MoveTarget, context: OperatorContext
) -> None:
    """1. Moves in flight advance one step."""
    for index, move in enumerate(work.moves):
        if move.state.in_flight:
            try:
                work.moves[index] = await advance_move(body, move, where, context)
            except api.KubernetesApiError as error:
                work.moves[index] = move.noted(f"waiting: {error}")


def _apply_approval(
    body: kopf.Body, approval: Approval, work: _Work, library: LibraryView, now: datetime
) -> None:
    """2. What the user asked: stop (cancel what has not started) or approve the proposal."""
    if approval.action == "stop":
        work.moves = [
            m.to(MoveState.CANCELLED, "stopped by the user", now=now)
            if m.state == MoveState.PENDING
            else m
            for m in work.moves
        ]
        work.stopped = True
        kopf.info(body, reason="Stopped", message="no new moves start until the next approval")
    elif approval.action == "approve":
        work.stopped = False
        if work.proposal and not work.open:
            work.moves += moves_from_proposal(work.proposal, library.homes, now=now)
            kopf.info(
                body, reason="Approved", message=f"proposal {work.proposal.get('id')} approved"
            )
        else:
            kopf.event(
                body,
                type="Warning",
                reason="NothingToApprove",
                message="no proposal waits for approval (or moves are still running)",
            )


async def _analyse_if_due(
    request: _Read,
    policy: PolicySpec,
    library: LibraryView,
    work: _Work,
    context: OperatorContext,
    now: datetime,
) -> None:
    """3. Analysis when due: measure, forecast, propose."""
    if not request.due:
        return
    namespace = request.body.meta.namespace or "default"
    try:
        analysed = await analyse(policy, library, request.status, context, namespace=namespace)
    except (LoadSourceUnreachable, RouterNotFound, QdrantError) as error:
        work.failure = _analysis_failed(request.body, request.status, error)
        work.update.update({"analysisFailed": True, "lastAttempt": timestamp(now)})
        return
    previous = request.status.get("proposal")
    work.analysed = analysed
    work.proposal = _proposal_status(analysed, previous, now)
    _announce(request.body, analysed, work.proposal, previous)
    work.update.update(_analysis_status(policy, analysed, work.proposal, now))
    namespace, name = request.body.meta.namespace or "default", request.body.meta.name or ""
    metrics.LOAD_RATIO.labels(namespace, name).set(analysed.report.max_mean_ratio)
    metrics.VIOLATIONS.labels(namespace, name).set(len(analysed.report.violations))
    if analysed.ledger.mape is not None:
        metrics.PREDICTION_MAPE.labels(namespace, name).set(analysed.ledger.mape)


def _auto_start(
    policy: PolicySpec, context: OperatorContext, work: _Work, library: LibraryView, now: datetime
) -> None:
    """4. Auto mode runs a fresh proposal by itself."""
    fresh = work.analysed is not None and bool(work.proposal)
    auto = policy.mode == "auto" and context.rebalance_defaults.auto_trigger
    if fresh and auto and not work.open and not work.stopped and work.proposal:
        work.moves += moves_from_proposal(work.proposal, library.homes, now=now)


async def _start_allowed(
    body: kopf.Body, policy: PolicySpec, work: _Work, where: MoveTarget, now: datetime
) -> datetime | None:
    """5. Start what the constraints allow: in flight <= maxConcurrentMigrations, in a window.

    Returns when the next maintenance window starts (None: no windows, always allowed).
    """
    window = next_window_start(policy.constraints.maintenance_windows, now)
    if window is not None and window > now:
        return window
    for index in moves_to_start(work.moves, policy.constraints.max_concurrent_migrations):
        try:
            work.moves[index] = await start_move(body, work.moves[index], where, now)
        except api.KubernetesApiError as error:
            work.moves[index] = work.moves[index].noted(f"waiting: {error}")
    return window


def _status(
    request: _Read, policy: PolicySpec, work: _Work, window: datetime | None, now: datetime
) -> dict[str, Any]:
    """6. The status update: finished moves to the history, phase, message and conditions."""
    namespace, name = request.body.meta.namespace or "default", request.body.meta.name or ""
    finished = [m for m in work.moves if m.state.finished]
    _record_finished(namespace, name, finished)
    remaining = [m for m in work.moves if not m.state.finished]
    metrics.MOVES_IN_FLIGHT.labels(namespace, name).set(
        sum(1 for m in remaining if m.state.in_flight)
    )
    if any(m.state == MoveState.DONE for m in finished) and not remaining:
        work.proposal = None  # executed: the next analysis judges the new placement
        work.update["proposal"] = None
        work.update["lastAnalysis"] = None  # analyse again at the next tick
    load = work.update.get("load", request.status.get("load")) or {}
    violations = [str(v.get("message")) for v in load.get("violations") or []]
    balanced = not violations and bool(load)
    phase = policy_phase(
        mode=policy.mode,
        moves=remaining,
        proposal=work.proposal,
        balanced=balanced,
        stopped=work.stopped,
    )
    in_window = window is None or window <= now
    message = _message(phase, remaining, work.proposal, violations, window, in_window, policy)
    ready, message = _ready(request.status, work, message)
    pending: ConditionValue = (
        ("True", "AwaitingApproval" if phase == "AwaitingApproval" else "ProposalReady", message)
        if phase in ("AwaitingApproval", "ProposalReady")
        else ("False", "NoProposal", "no proposal waits")
    )
    return {
        **work.update,
        "phase": phase,
        "message": message,
        "observedGeneration": request.generation,
        "conditions": _conditions(request, now, ready, _balance(load, violations), pending),
        "moves": [m.to_status() for m in remaining],
        "pendingMoves": len(remaining),
        "stopped": work.stopped,
        "history": append_history(request.status.get("history") or [], finished),
    }


def _ready(
    status: Mapping[str, Any], work: _Work, message: str
) -> tuple[ConditionValue | None, str]:
    """The Ready condition (None: leave it) and the status message."""
    if work.failure is not None:
        return work.failure, work.failure[2]
    if work.analysed is None and status.get("analysisFailed"):
        return None, str(status.get("message") or message)  # still failing
    return ("True", "Analyzed", message), message


def _balance(load: Mapping[str, Any], violations: Sequence[str]) -> ConditionValue | None:
    if not load:
        return None
    if not violations:
        return ("True", "WithinThresholds", f"max/mean load {load.get('maxMeanRatio', 0):.2f}")
    return ("False", "ThresholdsViolated", "; ".join(violations)[:1000])


def _analysis_failed(
    body: kopf.Body, status: Mapping[str, Any], error: Exception
) -> ConditionValue:
    """The Ready condition of a failed analysis; a Warning Event when the problem is new."""
    reason = (
        "LoadSourceUnreachable"
        if isinstance(error, LoadSourceUnreachable)
        else (type(error).__name__)  # RouterNotFound, or the QdrantError's kind
    )
    if status.get("message") != str(error):
        kopf.event(body, type="Warning", reason=reason, message=str(error))
    return ("False", reason, str(error))


def _announce(
    body: kopf.Body,
    analysed: Analysis,
    proposal: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None,
) -> None:
    """An Event when a new proposal appears (not again at every analysis)."""
    if not proposal or analysed.proposal is None or proposal["id"] == (previous or {}).get("id"):
        return
    kopf.info(
        body,
        reason="ProposalReady",
        message=f"proposal {proposal['id']}: {len(proposal['moves'])} move(s), "
        f"{proposal['pointsMoved']:,} points, max/mean load "
        f"{analysed.report.max_mean_ratio:.2f} -> {analysed.proposal.after.max_mean_ratio:.2f}"
        + (" (from the forecast)" if analysed.based_on == "forecast" else ""),
    )


def _analysis_status(
    policy: PolicySpec, analysed: Analysis, proposal: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    return {
        "lastAnalysis": timestamp(now),
        "lastAttempt": timestamp(now),
        "analysisFailed": False,
        "load": load_status(analysed.report),
        "proposal": proposal,
        "loadHistory": history_status(analysed.history),
        "prediction": _prediction_status(policy, analysed),
    }


def _message(
    phase: str,
    moves: Sequence[MoveRecord],
    proposal: Mapping[str, Any] | None,
    violations: Sequence[str],
    window: datetime | None,
    in_window: bool,
    policy: PolicySpec,
) -> str:
    if phase == "Executing":
        running = [m for m in moves if m.state.in_flight]
        text = f"{len(running)} move(s) running, {len(moves) - len(running)} waiting"
        if not in_window and window is not None:
            text += f"; next maintenance window starts {timestamp(window)}"
        return text
    if phase == "AwaitingApproval":
        return (
            f"proposal {proposal and proposal.get('id')} waits: kubectl annotate rebalancepolicy "
            f"<name> {APPROVAL_ANNOTATION}=approve"
        )
    if phase == "ProposalReady":
        if policy.mode == "observe":
            return f"proposal {proposal and proposal.get('id')} (observe mode: not executed)"
        return f"proposal {proposal and proposal.get('id')} ready"
    if violations:
        return "; ".join(violations)[:1000]
    return "the library is within its thresholds"


__all__ = ["PolicyFailed", "read_library", "reconcile_policy"]
