"""Goal 1, latency: clusters whose p95 exceeds their limit shed query load.

Why this exists: a cluster answering slower than its limit (its healthy p95
plus the allowed degradation) hurts every query of its domains. By the
latency model (:mod:`librarian.core.planner.moves`) this goal finds how much
query load the cluster may keep, then moves, best queries/s per point first,
domains to targets that stay within their own limit, until the model expects
the cluster within its limit. Without a ``max_qps`` there is no model: the
cluster is brought down to the fleet's mean load, and targets are kept within
the balance goal.
"""

from __future__ import annotations

from functools import partial

from librarian.core.planner.moves import PRIORITY_LATENCY
from librarian.core.planner.state import (
    EPS,
    Choice,
    Context,
    Pick,
    PlanState,
    Run,
    excess,
    pick_key,
)

__all__ = ["latency_goal"]


def latency_goal(state: PlanState, run: Run, ctx: Context) -> None:
    """Relieve every cluster over its latency limit, the furthest over first."""
    before_loads = state.loads()
    mean_load = sum(before_loads.values()) / len(before_loads) if before_loads else 0.0
    for cluster, p95, limit in _violating(state, ctx):
        target_qps = _target_qps(state, run, cluster, p95, limit, mean_load)
        if target_qps is not None:
            _relieve(state, run, ctx, cluster, target_qps, p95, limit)


def _violating(state: PlanState, ctx: Context) -> list[tuple[str, float, float]]:
    """(cluster, p95, limit) of the clusters over their limit, the furthest over first."""
    violating = []
    for cluster in state.names:
        limit, p95 = ctx.limits.get(cluster), state.p95(cluster)
        if limit is not None and p95 is not None and p95 > limit:
            violating.append((p95 - limit, cluster, p95, limit))
    return [(c, p95, limit) for _, c, p95, limit in sorted(violating, key=lambda v: (-v[0], v[1]))]


def _target_qps(
    state: PlanState, run: Run, cluster: str, p95: float, limit: float, mean_load: float
) -> float | None:
    """The queries/s ``cluster`` may keep; None (the reason deferred) when moving cannot help."""
    cap = state.caps[cluster]
    if cap.max_qps:
        before_u = state.before_u[cluster] or 0.0
        allowed_u = 1.0 - p95 * (1.0 - before_u) / limit
        if allowed_u <= 0:
            run.defer(
                f"latency:{cluster}",
                f"cluster {cluster!r} is over its {limit:.0f} ms latency limit even without "
                "load (by the latency model): moving domains would not fix it; check the "
                "cluster and its collection configs",
            )
            return None
        return allowed_u * cap.max_qps
    target_qps = mean_load * state.scale[cluster]  # no model: aim at the mean load
    if state.qps[cluster] <= target_qps + EPS:
        run.defer(
            f"latency:{cluster}",
            f"cluster {cluster!r} is over its {limit:.0f} ms latency limit at no more "
            "than the fleet's mean load: moving domains would not fix it; set its "
            "maxQueriesPerSecond, check the cluster and its collection configs",
        )
        return None
    return target_qps


def _relieve(
    state: PlanState,
    run: Run,
    ctx: Context,
    cluster: str,
    target_qps: float,
    p95: float,
    limit: float,
) -> None:
    """Move load off ``cluster`` until it is down to ``target_qps`` or the model expects it
    within ``limit``, or until no allowed move is left."""
    cap = state.caps[cluster]
    while True:
        need = state.qps[cluster] - target_qps
        modelled = state.p95(cluster)
        if need <= EPS or (cap.max_qps and modelled is not None and modelled <= limit):
            return
        choice = _candidates(state, run, ctx, cluster, need, p95, limit)
        held = choice.held_back()
        if held is not None:
            domain, why = held
            run.defer(
                domain,
                f"moving {domain} ({state.by_id[domain].points:,} points) off {cluster!r} "
                f"to relieve its latency is held back: {why}",
            )
        best = choice.best
        if best is None:
            run.defer(
                f"latency:{cluster}",
                f"cluster {cluster!r} stays over its {limit:.0f} ms latency limit: no "
                "allowed move takes load to a cluster that stays healthy within the run's "
                "limits",
            )
            return
        run.take(state, best[1])
        ctx.relieved.add(cluster)


def _candidates(
    state: PlanState, run: Run, ctx: Context, cluster: str, need: float, p95: float, limit: float
) -> Choice:
    """Every allowed move of a domain of ``cluster`` to a target that stays healthy."""
    choice = Choice()
    for domain in state.members(cluster):
        if not ctx.movable(run, domain):
            continue
        d = state.by_id[domain]
        if d.qps <= 0:
            continue
        for target in state.names:
            if not ctx.target_ok(state, domain, target) or not ctx.latency_ok(
                state, domain, target
            ):
                continue
            after = state.loads_after(domain, target)
            excess_after, level = excess(after, ctx.goal)
            if not state.caps[target].max_qps and after[target] > level + EPS:
                continue  # no model for its latency: keep it within the balance goal
            score = min(d.qps, need) / max(d.points, 1)
            choice.offer(
                pick_key(score, d.points, excess_after, domain, target),
                domain,
                run.blocked(d.points),
                partial(_latency_pick, state, domain, target, p95, limit),
            )
    return choice


def _latency_pick(state: PlanState, domain: str, target: str, p95: float, limit: float) -> Pick:
    d, source = state.by_id[domain], state.home[domain]
    return Pick(
        domain,
        source,
        target,
        d.points,
        f"latency: {source!r} answers at p95 {p95:.0f} ms, over its limit {limit:.0f} ms; "
        f"moving {domain} ({d.qps:.1f} queries/s, {d.points:,} points) to {target!r} takes "
        "load off it",
        PRIORITY_LATENCY,
    )
