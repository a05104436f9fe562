"""Goal 2, load balance: max/mean cluster load within 1 + ``load_imbalance``, moving few points.

Why this exists: an unbalanced fleet leaves some clusters idle while others
queue. A greedy search over every (domain on an overloaded cluster, target)
pair takes, at each step, the move with the best reduction of the load above
the goal *per point moved*, and stops as soon as the goal is met. A final
check drops, largest first, any move the goal turns out not to need. A second
pass judges moves by the reduction alone; of the two, the plan that meets the
goal with fewer points wins. A move never pushes its target above the goal,
nor the fleet's max/mean above both the goal and where it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial

from librarian.core.planner.moves import PRIORITY_BALANCE
from librarian.core.planner.state import (
    EPS,
    Choice,
    Context,
    Guard,
    Pick,
    PlanState,
    Run,
    excess,
    pick_key,
    ratio,
)

__all__ = ["balance_goal", "balance_pick"]


def balance_pick(state: PlanState, domain: str, target: str, goal: float) -> Pick:
    """The balance move of ``domain`` to ``target``, with its reason in words."""
    d, source = state.by_id[domain], state.home[domain]
    loads, after = state.loads(), state.loads_after(domain, target)
    mean = sum(loads.values()) / len(loads)
    return Pick(
        domain,
        source,
        target,
        d.points,
        f"balance: {source!r} carries {loads[source] / mean:.2f}x the mean load (goal <= "
        f"{goal:.2f}x); moving {domain} ({d.qps:.1f} queries/s, {d.points:,} points) to "
        f"{target!r} leaves it at {after[source] / mean:.2f}x",
        PRIORITY_BALANCE,
    )


def _allowed_pairs(
    state: PlanState, run: Run, ctx: Context, guard: Guard | None, loads: Mapping[str, float]
) -> Iterator[tuple[str, str]]:
    """(domain, target): a movable domain of a cluster above the goal, to an allowed target."""
    _, level = excess(loads, ctx.goal)
    for source in state.names:
        if loads[source] <= level + EPS:
            continue
        for domain in state.members(source):
            if not ctx.movable(run, domain):
                continue
            for target in state.names:
                if not ctx.target_ok(state, domain, target):
                    continue
                if guard is not None and not guard(state, domain, target):
                    continue
                yield domain, target


def _candidates(
    state: PlanState, run: Run, ctx: Context, guard: Guard | None, per_point: bool
) -> Choice:
    """Every allowed move that lowers the load above the goal without breaking it elsewhere."""
    goal = ctx.goal
    loads = state.loads()
    excess_now, level = excess(loads, goal)
    ratio_now = ratio(loads)
    choice = Choice()
    for domain, target in _allowed_pairs(state, run, ctx, guard, loads):
        after = state.loads_after(domain, target)
        excess_after, level_after = excess(after, goal)
        if after[target] > level_after + EPS:
            continue  # never push the target above the goal
        if ratio(after) > max(ratio_now, goal) + EPS:
            continue  # nor the fleet's max/mean (clusters of unequal size)
        gain = excess_now - excess_after
        if gain <= EPS * max(level, 1.0):
            continue
        points = state.by_id[domain].points
        score = gain / max(points, 1) if per_point else gain
        choice.offer(
            pick_key(score, points, after[target], domain, target),
            domain,
            run.blocked(points),
            partial(balance_pick, state, domain, target, goal),
        )
    return choice


def _balance_pass(
    state: PlanState, run: Run, ctx: Context, guard: Guard | None, per_point: bool
) -> bool:
    """Greedy balance moves; True when the goal is met."""
    while True:
        excess_now, level = excess(state.loads(), ctx.goal)
        if excess_now <= EPS * max(level, 1.0):
            return True
        choice = _candidates(state, run, ctx, guard, per_point)
        held = choice.held_back()
        if held is not None:
            domain, why = held
            run.defer(
                domain,
                f"moving {domain} ({state.by_id[domain].points:,} points) for balance is held "
                f"back: {why}",
            )
        best = choice.best
        if best is None:
            return False
        run.take(state, best[1])


def _replay(
    state: PlanState, run: Run, picks: Sequence[Pick], ctx: Context, guard: Guard | None
) -> tuple[PlanState, Run] | None:
    """Balance ``picks`` applied in order from ``state``, if every one is still allowed and
    the goal is met at the end."""
    state, run = state.copy(), run.copy()
    for pick in picks:
        if not ctx.target_ok(state, pick.domain, pick.target) or (
            guard is not None and not guard(state, pick.domain, pick.target)
        ):
            return None
        run.take(state, balance_pick(state, pick.domain, pick.target, ctx.goal))
    excess_left, level = excess(state.loads(), ctx.goal)
    return (state, run) if excess_left <= EPS * max(level, 1.0) else None


def _prune(
    state: PlanState,
    run: Run,
    done_state: PlanState,
    done: Run,
    ctx: Context,
    guard: Guard | None,
) -> tuple[PlanState, Run]:
    """The final check of a greedy pass that met the goal: drop, largest first, every move
    the goal does not need (greedy steps taken early can be made redundant by later ones)."""
    keep = done.picks[len(run.picks) :]
    result = _replay(state, run, keep, ctx, guard)
    if result is None:  # not expected: the pass met the goal with these very moves
        return done_state, done
    for pick in sorted(keep, key=lambda p: (-p.points, p.domain)):
        trial = [p for p in keep if p is not pick]
        replayed = _replay(state, run, trial, ctx, guard)
        if replayed is not None:
            keep, result = trial, replayed
    pruned_state, pruned_run = result
    pruned_run.deferred = {**done.deferred, **pruned_run.deferred}
    return pruned_state, pruned_run


def balance_goal(
    state: PlanState, run: Run, ctx: Context, guard: Guard | None
) -> tuple[PlanState, Run]:
    """The better of a per-point and a per-move greedy pass (goal met, then fewest points),
    each pruned of the moves the goal turns out not to need."""
    outcomes = []
    for per_point in (True, False):
        trial_state, trial_run = state.copy(), run.copy()
        met = _balance_pass(trial_state, trial_run, ctx, guard, per_point)
        if met:
            trial_state, trial_run = _prune(state, run, trial_state, trial_run, ctx, guard)
        added = trial_run.picks[len(run.picks) :]
        outcomes.append(
            (
                (
                    not met,
                    0.0 if met else ratio(trial_state.loads()),
                    sum(p.points for p in added),
                    len(added),
                ),
                trial_state,
                trial_run,
                met,
            )
        )
    _, best_state, best_run, met = min(outcomes, key=lambda o: o[0])
    if not met and len(state.names) > 1:
        left = ratio(best_state.loads())
        best_run.defer(
            "balance",
            f"the balance goal max/mean <= {ctx.goal:.2f} is not reached by this run: the best "
            f"allowed moves leave {left:.2f} (limits, pinned domains, excluded clusters, "
            "capacity or domains too hot to place)",
        )
    return best_state, best_run
