"""Goal 0, capacity (hard): clusters above ``capacity_usage`` of their memory or disk shed domains.

Why this exists: a cluster out of memory fails every domain it serves, so
this goal runs first and no other goal may undo it; every move of every goal
also keeps its target within the limit (:meth:`PlanState.fits`). Per cluster,
fullest first, it moves the smallest domain that frees enough room (or the
largest one, when none does alone) to the allowed target that stays
healthiest, until the cluster is within its limit or nothing more can move.
"""

from __future__ import annotations

import math

from librarian.core.planner.moves import PRIORITY_CAPACITY
from librarian.core.planner.state import Context, Pick, PlanState, Run, excess

__all__ = ["capacity_goal"]


def capacity_goal(state: PlanState, run: Run, ctx: Context) -> None:
    """Move domains off every cluster above the capacity limit, fullest cluster first."""
    usage = ctx.thresholds.capacity_usage

    def over(cluster: str) -> tuple[float, float]:
        cap = state.caps[cluster]
        need_memory = (
            state.memory[cluster] - usage * cap.memory_bytes
            if cap.memory_bytes is not None
            else 0.0
        )
        need_disk = (
            state.disk[cluster] - usage * cap.disk_bytes if cap.disk_bytes is not None else 0.0
        )
        return max(need_memory, 0.0), max(need_disk, 0.0)

    def worst(cluster: str) -> float:
        cap = state.caps[cluster]
        shares = [
            used / total
            for used, total in (
                (state.memory[cluster], cap.memory_bytes),
                (state.disk[cluster], cap.disk_bytes),
            )
            if total
        ]
        return max(shares, default=0.0)

    for cluster in sorted(state.names, key=lambda c: (-worst(c), c)):
        while True:
            need_memory, need_disk = over(cluster)
            if need_memory <= 0 and need_disk <= 0:
                break
            if run.moves_left <= 0:
                run.defer(
                    f"capacity:{cluster}",
                    f"cluster {cluster!r} stays above {usage:.0%} of its capacity: the run "
                    "already holds max_moves_per_run moves",
                )
                break
            candidates = [d for d in state.members(cluster) if ctx.movable(run, d)]
            enough = sorted(
                (
                    d
                    for d in candidates
                    if state.by_id[d].memory_bytes >= need_memory
                    and state.by_id[d].disk_bytes >= need_disk
                ),
                key=lambda d: (state.by_id[d].points, state.by_id[d].qps, d),
            )
            rest = sorted(
                (d for d in candidates if d not in enough),
                key=lambda d: (
                    -(state.by_id[d].memory_bytes + state.by_id[d].disk_bytes),
                    state.by_id[d].points,
                    d,
                ),
            )
            chosen: Pick | None = None
            for domain in enough + rest:
                d = state.by_id[domain]
                targets = [t for t in state.names if ctx.target_ok(state, domain, t)]
                if not targets:
                    continue
                why = run.blocked(d.points)
                if why is not None:
                    run.defer(
                        domain,
                        f"moving {domain} ({d.points:,} points) off {cluster!r} to free capacity "
                        f"is held back: {why}",
                    )
                    continue
                target = min(
                    targets,
                    key=lambda t: (
                        not ctx.latency_ok(state, domain, t),
                        excess(state.loads_after(domain, t), ctx.goal)[0],
                        worst(t),
                        t,
                    ),
                )
                resource = "memory" if need_memory > 0 else "disk"
                limit = (
                    state.caps[cluster].memory_bytes
                    if resource == "memory"
                    else state.caps[cluster].disk_bytes
                )
                used = state.memory[cluster] if resource == "memory" else state.disk[cluster]
                share = used / limit if limit else math.inf
                chosen = Pick(
                    domain,
                    cluster,
                    target,
                    d.points,
                    f"capacity: {cluster!r} uses {share:.0%} of its {resource} (limit "
                    f"{usage:.0%}); moving {domain} ({d.points:,} points) to {target!r} frees room",
                    PRIORITY_CAPACITY,
                )
                break
            if chosen is None:
                run.defer(
                    f"capacity:{cluster}",
                    f"cluster {cluster!r} stays above {usage:.0%} of its capacity: no movable "
                    "domain fits on an allowed cluster within the run's limits; grow the cluster "
                    "or add one to the fleet",
                )
                break
            run.take(state, chosen)
