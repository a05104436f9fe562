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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf

from librarian.contracts.api import GROUP, REBALANCEPOLICIES, VERSION
from librarian.core.forecast import (
    LoadHistory,
    PredictionLedger,
)
from librarian.core.load import DomainLoad
from librarian.core.planner import next_window_start
from librarian.core.rebalancing import Analysis, PolicyAnalysis, analyse_policy, judged_fleet
from librarian.kube import client as api
from librarian.kube.fleet_access import resolve_clusters
from librarian.kube.policy_spec import PolicySpec, parse_policy_spec
from librarian.kube.serving import home_collection, serving_specializations
from librarian.kube.spec import DomainMapSpec, SpecError, parse_domainmap_spec
from librarian.operator import rebalance_metrics as metrics
from librarian.operator.conditions import ConditionStatus, set_condition, timestamp
from librarian.operator.context import OperatorContext
from librarian.operator.load_source import LoadSourceUnreachable, RouterLoad, fetch_router_load
from librarian.operator.moves import (
    OWNER_LABEL,
    MoveTarget,
    advance_move,
    start_move,
)
from librarian.operator.policy_state import (
    APPROVAL_ANNOTATION,
    FINISHED,
    IN_FLIGHT,
    analysis_due,
    append_history,
    moves_from_proposal,
    moves_to_start,
    parse_approval,
    policy_phase,
    update_move,
)
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
        dm_spec = parse_domainmap_spec(
            domain_map.get("spec") or {}, name=policy.domain_map, defaults=context.spec_defaults
        )
    except SpecError as error:
        raise PolicyFailed(
            "DomainMapInvalid", f"DomainMap {policy.domain_map} is invalid: {error}"
        ) from None
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
    clusters = await resolve_clusters(dm_spec.clusters, namespace)
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
    policy: PolicySpec, library: LibraryView, status: Mapping[str, Any], context: OperatorContext
) -> Analysis:
    """Measure (routers, collections), then the pure analysis of :mod:`librarian.core.rebalancing`."""
    traffic = await fetch_router_load(policy.router_urls)
    footprints = await asyncio.to_thread(_footprints, context, library)
    domains, capacities = judged_fleet(
        _domain_loads(library, traffic, footprints),
        [c.name for c in library.spec.clusters],
        policy.capacities,
        policy.constraints.excluded_clusters,
    )
    memory = PolicyAnalysis(
        strategy=policy.strategy,
        thresholds=policy.thresholds,
        constraints=policy.constraints,
        horizon_s=policy.horizon_s if policy.prediction else None,
        history=LoadHistory.from_status(status.get("loadHistory")),
        ledger=PredictionLedger.from_status((status.get("prediction") or {}).get("ledger")),
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
        **proposal.to_status(),
        "id": proposal.id,
        "createdAt": created,
        "basedOn": analysis.based_on,
    }


def _prediction_status(policy: PolicySpec, analysis: Analysis) -> dict[str, Any]:
    result: dict[str, Any] = {
        "enabled": policy.prediction,
        "horizonSeconds": policy.horizon_s,
        "mape": analysis.ledger.mape,
        "ledger": analysis.ledger.to_status(),
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
    )


def _record_finished(namespace: str, name: str, finished: Sequence[Mapping[str, Any]]) -> None:
    for move in finished:
        outcome = {"Done": "done", "RolledBack": "rolled_back"}.get(
            str(move.get("state")), "cancelled"
        )
        metrics.MOVES.labels(namespace, name, outcome).inc()
        if move.get("state") == "Done":
            metrics.POINTS_MOVED.labels(namespace, name).inc(int(move.get("points", 0)))


def _conditions(
    body: kopf.Body,
    status: Mapping[str, Any],
    now: datetime,
    ready: ConditionValue | None,
    balanced: ConditionValue | None,
    pending: ConditionValue,
) -> list[dict[str, Any]]:
    generation = body.meta.get("generation")
    conditions = status.get("conditions") or []
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
            observed_generation=generation,
            now=now,
        )
    return list(conditions)


def _invalid(
    body: kopf.Body,
    patch: kopf.Patch,
    status: Mapping[str, Any],
    reason: str,
    message: str,
    now: datetime,
) -> None:
    conditions = set_condition(
        status.get("conditions") or [],
        "Ready",
        "False",
        reason,
        message,
        observed_generation=body.meta.get("generation"),
        now=now,
    )
    if status.get("message") != message or status.get("observedGeneration") != body.meta.get(
        "generation"
    ):
        kopf.event(body, type="Warning", reason=reason, message=message)
    patch.status.update(
        {
            "phase": "Failed",
            "conditions": conditions,
            "message": message,
            "observedGeneration": body.meta.get("generation"),
        }
    )


async def reconcile_policy(
    body: kopf.Body, patch: kopf.Patch, context: OperatorContext, logger: Logger
) -> None:
    """One tick of a RebalancePolicy (see the module docstring)."""
    namespace, name = body.meta.namespace or "default", body.meta.name or ""
    async with context.lock(f"rebalancepolicy/{namespace}/{name}"):
        await _reconcile(body, patch, context, logger, namespace, name)


async def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    logger: Logger,
    namespace: str,
    name: str,
) -> None:
    status: Mapping[str, Any] = body.get("status") or {}
    now = context.clock()
    defaults = context.rebalance_defaults
    try:
        policy = parse_policy_spec(body.spec, defaults=defaults)
    except SpecError as error:
        _invalid(
            body, patch, status, "InvalidSpec", "invalid spec: " + "; ".join(error.problems), now
        )
        return
    if not defaults.enabled:
        _invalid(
            body,
            patch,
            status,
            "RebalancingDisabled",
            "adaptive_rebalancing.enabled is false in the operator configuration",
            now,
        )
        return
    approval = parse_approval(body.meta.annotations)
    due = analysis_due(
        status,
        generation=body.meta.get("generation"),
        interval_s=policy.interval_s,
        now=now,
        refresh=approval.action == "refresh",
    )
    if not (due or status.get("moves") or approval.action or approval.error):
        return  # an idle tick: nothing to move, ask or analyse, so no call to any API
    if approval.error or approval.action:
        patch.metadata.annotations[APPROVAL_ANNOTATION] = None  # handled: removed, as Strimzi does
    if approval.error:
        kopf.event(body, type="Warning", reason="UnknownAnnotation", message=approval.error)
    try:
        library = await read_library(namespace, policy, name, context)
    except (PolicyFailed, api.KubernetesApiError) as error:
        reason = error.reason if isinstance(error, PolicyFailed) else "KubernetesApiError"
        _invalid(body, patch, status, reason, str(error), now)
        return
    where = _where(body, policy, library)
    moves = [dict(m) for m in status.get("moves") or []]
    stopped = bool(status.get("stopped")) and status.get("observedGeneration") == body.meta.get(
        "generation"
    )

    # 1. Moves in flight advance one step.
    for index, move in enumerate(moves):
        if move.get("state") in IN_FLIGHT:
            try:
                moves[index] = await advance_move(body, move, where, context)
            except api.KubernetesApiError as error:
                moves[index] = {**move, "message": f"waiting: {error}"}

    # 2. What the user asked.
    proposal_status = status.get("proposal")
    if approval.action == "stop":
        for index, move in enumerate(moves):
            if move.get("state") == "Pending":
                moves[index] = update_move(move, "Cancelled", "stopped by the user", now=now)
        stopped = True
        kopf.info(body, reason="Stopped", message="no new moves start until the next approval")
    elif approval.action == "approve":
        stopped = False
        if proposal_status and not any(m.get("state") in ("Pending", *IN_FLIGHT) for m in moves):
            moves += moves_from_proposal(proposal_status, library.homes, now=now)
            kopf.info(
                body, reason="Approved", message=f"proposal {proposal_status.get('id')} approved"
            )
        else:
            kopf.event(
                body,
                type="Warning",
                reason="NothingToApprove",
                message="no proposal waits for approval (or moves are still running)",
            )

    # 3. Analysis when due.
    update: dict[str, Any] = {}
    analysed, failure = None, None
    if due:
        try:
            analysed = await analyse(policy, library, status, context)
        except (LoadSourceUnreachable, QdrantError) as error:
            failure = _analysis_failed(body, status, error)
            update.update({"analysisFailed": True, "lastAttempt": timestamp(now)})
        else:
            proposal_status = _proposal_status(analysed, status.get("proposal"), now)
            _announce(body, analysed, proposal_status, status.get("proposal"))
            update.update(_analysis_status(policy, analysed, proposal_status, now))
            metrics.LOAD_RATIO.labels(namespace, name).set(analysed.report.max_mean_ratio)
            metrics.VIOLATIONS.labels(namespace, name).set(len(analysed.report.violations))
            if analysed.ledger.mape is not None:
                metrics.PREDICTION_MAPE.labels(namespace, name).set(analysed.ledger.mape)

    # 4. Auto mode runs a fresh proposal by itself.
    open_moves = any(m.get("state") in ("Pending", *IN_FLIGHT) for m in moves)
    if (
        analysed is not None
        and policy.mode == "auto"
        and defaults.auto_trigger
        and proposal_status
        and not open_moves
        and not stopped
    ):
        moves += moves_from_proposal(proposal_status, library.homes, now=now)

    # 5. Start what the constraints allow: in flight <= maxConcurrentMigrations, in a window.
    window = next_window_start(policy.constraints.maintenance_windows, now)
    in_window = window is None or window <= now
    if in_window:
        for index in moves_to_start(moves, policy.constraints.max_concurrent_migrations):
            try:
                moves[index] = await start_move(body, moves[index], where, now)
            except api.KubernetesApiError as error:
                moves[index] = {**moves[index], "message": f"waiting: {error}"}

    finished = [m for m in moves if m.get("state") in FINISHED]
    _record_finished(namespace, name, finished)
    remaining = [m for m in moves if m.get("state") not in FINISHED]
    metrics.MOVES_IN_FLIGHT.labels(namespace, name).set(
        sum(1 for m in remaining if m.get("state") in IN_FLIGHT)
    )
    if any(m.get("state") == "Done" for m in finished) and not remaining:
        proposal_status = None  # executed: the next analysis judges the new placement
        update["proposal"] = None
        update["lastAnalysis"] = None  # analyse again at the next tick
    load = update.get("load", status.get("load")) or {}
    violations = [str(v.get("message")) for v in load.get("violations") or []]
    balanced = not violations and bool(load)
    phase = policy_phase(
        mode=policy.mode,
        moves=remaining,
        proposal=proposal_status,
        balanced=balanced,
        stopped=stopped,
    )
    message = _message(phase, remaining, proposal_status, violations, window, in_window, policy)
    ready: ConditionValue | None = ("True", "Analyzed", message)
    if failure is not None:
        ready, message = failure, failure[2]
    elif analysed is None and status.get("analysisFailed"):
        ready, message = None, str(status.get("message") or message)  # still failing
    balance: ConditionValue | None = None
    if load:
        balance = (
            ("True", "WithinThresholds", f"max/mean load {load.get('maxMeanRatio', 0):.2f}")
            if balanced
            else ("False", "ThresholdsViolated", "; ".join(str(v) for v in violations)[:1000])
        )
    pending: ConditionValue = (
        ("True", "AwaitingApproval" if phase == "AwaitingApproval" else "ProposalReady", message)
        if phase in ("AwaitingApproval", "ProposalReady")
        else ("False", "NoProposal", "no proposal waits")
    )
    update.update(
        {
            "phase": phase,
            "message": message,
            "observedGeneration": body.meta.get("generation"),
            "conditions": _conditions(body, status, now, ready, balance, pending),
            "moves": remaining,
            "pendingMoves": len(remaining),
            "stopped": stopped,
            "history": append_history(status.get("history") or [], finished),
        }
    )
    patch.status.update(update)
    if analysed is not None:
        logger.debug("RebalancePolicy %s/%s analysed: %s", namespace, name, message)


def _analysis_failed(
    body: kopf.Body, status: Mapping[str, Any], error: Exception
) -> ConditionValue:
    """The Ready condition of a failed analysis; a Warning Event when the problem is new."""
    reason = (
        "LoadSourceUnreachable"
        if isinstance(error, LoadSourceUnreachable)
        else (type(error).__name__)
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
        "load": analysed.report.to_status(),
        "proposal": proposal,
        "loadHistory": analysed.history.to_status(),
        "prediction": _prediction_status(policy, analysed),
    }


def _message(
    phase: str,
    moves: Sequence[Mapping[str, Any]],
    proposal: Mapping[str, Any] | None,
    violations: Sequence[str],
    window: datetime | None,
    in_window: bool,
    policy: PolicySpec,
) -> str:
    if phase == "Executing":
        running = [m for m in moves if m.get("state") in IN_FLIGHT]
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
