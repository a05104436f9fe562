"""The planner's entry point: one strategy's goals, in priority order, then the schedule.

Why this exists: a strategy is a choice of goals (see the package's
docstring), and whatever the strategy, the goals run in the same order on
the same state, a lower goal never undoing a higher one, and the chosen
moves are scheduled the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from librarian.core.load import ClusterCapacity, LoadReport, Thresholds, analyze_load
from librarian.core.planner.advice import advice
from librarian.core.planner.balance import balance_goal
from librarian.core.planner.capacity import capacity_goal
from librarian.core.planner.consolidation import consolidation_goal
from librarian.core.planner.constraints import Constraints, PlanError, as_utc
from librarian.core.planner.latency import latency_goal
from librarian.core.planner.moves import Move
from librarian.core.planner.proposal import Proposal, build_proposal, complete_fleet
from librarian.core.planner.schedule import schedule, within_window
from librarian.core.planner.state import Context, PlanState, Run

__all__ = ["STRATEGIES", "plan_rebalance"]

STRATEGIES = ("load_based", "latency_based", "capacity_based", "domain_based", "hybrid")

_DEFAULT_THRESHOLDS = Thresholds()
_DEFAULT_CONSTRAINTS = Constraints()


def plan_rebalance(
    report: LoadReport,
    capacities: Sequence[ClusterCapacity],
    *,
    strategy: str = "hybrid",
    thresholds: Thresholds = _DEFAULT_THRESHOLDS,
    constraints: Constraints = _DEFAULT_CONSTRAINTS,
    now: datetime,
) -> Proposal:
    """A proposal for ``report``'s fleet under ``strategy`` within ``constraints``.

    ``before`` is the load of ``report.domains`` re-analysed with these
    capacities and thresholds, so before and after compare like for like.
    Raises :class:`PlanError` for an unknown strategy or bad arguments.
    """
    if strategy not in STRATEGIES:
        raise PlanError(
            f"unknown rebalancing strategy {strategy!r}; accepted: {', '.join(STRATEGIES)}"
        )
    if not isinstance(thresholds, Thresholds) or not isinstance(constraints, Constraints):
        raise PlanError("thresholds and constraints must be Thresholds and Constraints values")
    now = as_utc(now)
    caps, names = complete_fleet(report, capacities)
    before = analyze_load(report.domains, caps, thresholds)
    state = PlanState(before.domains, {c.name: c for c in caps}, names)
    ctx = Context(
        thresholds=thresholds,
        constraints=constraints,
        limits={c.name: c.latency_limit_ms for c in before.clusters},
    )
    run = Run(constraints.max_moves_per_run, constraints.max_points_per_run)
    advised: list[Move] = []
    if strategy in ("capacity_based", "hybrid"):
        capacity_goal(state, run, ctx)
    if strategy in ("latency_based", "hybrid"):
        latency_goal(state, run, ctx)
    if strategy == "load_based":
        state, run = balance_goal(state, run, ctx, None)
    if strategy == "hybrid":
        state, run = balance_goal(state, run, ctx, ctx.hybrid_guard)
    if strategy == "domain_based":
        consolidation_goal(state, run, ctx)
    if strategy in ("domain_based", "hybrid"):
        advised = advice(state, ctx, before)

    moves, late, starts_at = within_window(schedule(run.picks, constraints), constraints, now)
    deferred = [*run.deferred.values(), *late]
    return build_proposal(
        strategy, [*moves, *advised], before, caps, thresholds, deferred, starts_at
    )
