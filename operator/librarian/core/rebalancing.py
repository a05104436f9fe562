"""One analysis of a rebalancing policy, pure: judge the fleet, forecast, decide what to plan on.

Why this exists: the operator measures (routers, collections) and acts
(ClusterSpecializations); between the two is a decision that must be
testable without either. Which clusters are judged (an excluded one only
while it carries queries), how the load history and the prediction ledger
advance, whether to plan on today's load or on the forecast (the forecast,
when only it crosses a threshold: propose before it happens), and the plan.
No clock: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from librarian.core.forecast import (
    ForecastError,
    LoadHistory,
    PredictionLedger,
    predict_domain_metrics,
)
from librarian.core.load import ClusterCapacity, DomainLoad, LoadReport, Thresholds, analyze_load
from librarian.core.planner import Constraints, Proposal, plan_rebalance

__all__ = ["Analysis", "PolicyAnalysis", "analyse_policy", "judged_fleet", "projected_loads"]


@dataclass(frozen=True)
class PolicyAnalysis:
    """What a policy analyses with: its goals and limits, and what it remembers."""

    strategy: str
    thresholds: Thresholds
    constraints: Constraints
    horizon_s: float | None  # None: no prediction
    history: LoadHistory
    ledger: PredictionLedger
    max_samples: int = 144


@dataclass(frozen=True)
class Analysis:
    report: LoadReport
    proposal: Proposal | None  # None when nothing is wrong (nor will be, by the forecast)
    based_on: str  # "current" or "forecast"
    predicted: LoadReport | None
    history: LoadHistory
    ledger: PredictionLedger


def judged_fleet(
    domains: Sequence[DomainLoad],
    clusters: Sequence[str],
    capacities: Sequence[ClusterCapacity],
    excluded: Collection[str],
) -> tuple[list[DomainLoad], list[ClusterCapacity]]:
    """The domains and clusters judged: every cluster that may receive domains, and an excluded
    one only while it carries queries (its load can be moved off, never onto it; idle, it would
    only lower the mean that the balance goal is measured against)."""
    given = {c.name: c for c in capacities}
    busy = {d.cluster for d in domains if d.qps > 0}
    judged = {name for name in clusters if name not in excluded or name in busy}
    judged_capacities = [given.get(name, ClusterCapacity(name)) for name in sorted(judged)]
    return [d for d in domains if d.cluster in judged], judged_capacities


def projected_loads(
    domains: Sequence[DomainLoad], predictions: Mapping[str, Mapping[str, float]]
) -> list[DomainLoad]:
    """The domains as the forecast sees them (RAM and disk scale with the points)."""
    future = []
    for load in domains:
        values = predictions.get(load.domain) or {}
        points = max(round(values.get("points", load.points)), 0)
        scale = points / load.points if load.points else 1.0
        future.append(
            replace(
                load,
                qps=max(values.get("qps", load.qps), 0.0),
                points=points,
                memory_bytes=int(load.memory_bytes * scale),
                disk_bytes=int(load.disk_bytes * scale),
            )
        )
    return future


def analyse_policy(
    domains: Sequence[DomainLoad],
    capacities: Sequence[ClusterCapacity],
    policy: PolicyAnalysis,
    *,
    now: datetime,
) -> Analysis:
    """Analyse the judged fleet, record it, forecast it, and plan when a threshold is crossed."""
    report = analyze_load(domains, capacities, policy.thresholds)
    now_s = now.timestamp()
    observed = {d.domain: {"qps": d.qps, "points": float(d.points)} for d in domains}
    try:
        history = policy.history.append(now_s, observed, max_samples=policy.max_samples)
    except ForecastError:  # the clock went back: start again rather than mix the times
        history = LoadHistory().append(now_s, observed, max_samples=policy.max_samples)
    ledger = policy.ledger.score(observed, now_s)
    predicted = None
    planned_on, based_on = report, "current"
    if policy.horizon_s is not None:
        forecast = predict_domain_metrics(history, now_s=now_s, horizon_s=policy.horizon_s)
        ledger = ledger.record(forecast, now_s + policy.horizon_s)
        predicted = analyze_load(projected_loads(domains, forecast), capacities, policy.thresholds)
        if not report.violations and predicted.violations:
            planned_on, based_on = predicted, "forecast"
    proposal = None
    if planned_on.violations:
        proposal = plan_rebalance(
            planned_on,
            capacities,
            strategy=policy.strategy,
            thresholds=policy.thresholds,
            constraints=policy.constraints,
            now=now,
        )
        if not proposal.moves and not proposal.deferred:
            proposal = None
    return Analysis(report, proposal, based_on, predicted, history, ledger)
