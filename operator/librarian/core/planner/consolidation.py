"""Goal 3, domains: co-locate small cold domains on one cluster so the clusters they sat on are freed.

Why this exists: a cluster that only serves a few small domains nobody asks
much of costs a whole cluster. With the ``domain_based`` strategy this goal
moves all the domains of such a cluster onto one other cluster (the one
already holding the most cold domains, then the best balanced), as long as
the receiver stays within capacity and within the balance goal, and the run
has the moves and points for the whole cluster. (``hybrid`` leaves it out:
it works against balance.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from librarian.core.planner.moves import PRIORITY_DOMAIN
from librarian.core.planner.state import EPS, Context, Pick, PlanState, Run, excess

__all__ = ["COLD_SHARE", "consolidation_goal"]

COLD_SHARE = 0.5
"""A domain is cold when it gets less than this share of the mean domain's queries/s."""

ColdSmall = Callable[[str], bool]


def consolidation_goal(state: PlanState, run: Run, ctx: Context) -> None:
    """Free every cluster that holds only small cold domains, smallest first, when one
    receiver can take them all."""
    cold_small = _cold_small_rule(state)
    if cold_small is None:
        return
    freed: set[str] = set()
    receivers: set[str] = set()
    for source in _cold_clusters(state, cold_small):
        if source in receivers:
            continue
        domains = state.members(source)
        if any(not ctx.movable(run, d) for d in domains):
            continue
        target = _receiver(state, ctx, source, domains, freed, cold_small)
        if target is not None and _free(state, run, source, target, domains):
            freed.add(source)
            receivers.add(target)


def _cold_small_rule(state: PlanState) -> ColdSmall | None:
    """Whether a domain is small (at most the median points) and cold (see :data:`COLD_SHARE`);
    None when nothing can be consolidated (one cluster, no domain, no load figures)."""
    ids = list(state.by_id)
    if len(state.names) < 2 or not ids:
        return None
    mean_qps = sum(state.by_id[d].qps for d in ids) / len(ids)
    if mean_qps <= 0:
        return None  # no load figures: nothing says which domains are cold
    sizes = sorted(state.by_id[d].points for d in ids)
    median = sizes[len(sizes) // 2]

    def cold_small(domain: str) -> bool:
        d = state.by_id[domain]
        return d.qps <= COLD_SHARE * mean_qps and d.points <= median

    return cold_small


def _cold_clusters(state: PlanState, cold_small: ColdSmall) -> list[str]:
    """The clusters holding only small cold domains, fewest points first."""
    sources = [
        c for c in state.names if state.members(c) and all(cold_small(d) for d in state.members(c))
    ]
    return sorted(sources, key=lambda c: (sum(state.by_id[d].points for d in state.members(c)), c))


def _with_all(
    state: PlanState, domains: Sequence[str], target: str, usage: float
) -> PlanState | None:
    """The state with every one of ``domains`` moved to ``target``; None if one does not fit."""
    trial = state.copy()
    for domain in domains:
        if not trial.fits(domain, target, usage):
            return None
        trial.move(domain, target)
    return trial


def _receiver(
    state: PlanState,
    ctx: Context,
    source: str,
    domains: Sequence[str],
    freed: Collection[str],
    cold_small: ColdSmall,
) -> str | None:
    """The cluster to take all of ``source``'s domains: most cold domains, then best balanced."""
    options = []
    for target in state.names:
        if (
            target in (source, *freed)
            or target in ctx.constraints.excluded_clusters
            or not state.members(target)
        ):
            continue
        trial = _with_all(state, domains, target, ctx.thresholds.capacity_usage)
        if trial is None:
            continue
        excess_after, level = excess(trial.loads(), ctx.goal)
        if trial.loads()[target] > level + EPS:
            continue  # freeing a cluster must not break the balance goal
        cold_there = sum(1 for d in state.members(target) if cold_small(d))
        options.append((-cold_there, excess_after, trial.loads()[target], target))
    return min(options)[3] if options else None


def _free(state: PlanState, run: Run, source: str, target: str, domains: Sequence[str]) -> bool:
    """Move every one of ``domains`` from ``source`` to ``target``, if the run has room for all."""
    points = sum(state.by_id[d].points for d in domains)
    if run.moves_left < len(domains) or (run.points_left is not None and points > run.points_left):
        run.defer(
            f"free:{source}",
            f"freeing cluster {source!r} ({len(domains)} moves, {points:,} points) is held "
            "back: it needs more moves or points than the run has left",
        )
        return False
    for domain in sorted(domains):
        d = state.by_id[domain]
        run.take(
            state,
            Pick(
                domain,
                source,
                target,
                d.points,
                f"domains: co-locate small cold domain {domain} ({d.qps:.2f} queries/s, "
                f"{d.points:,} points) with the cold domains on {target!r} to free cluster "
                f"{source!r}",
                PRIORITY_DOMAIN,
            ),
        )
    return True
