"""What a fleet carried hour by hour while its rebalancing moves were still running.

Why this exists: judging a rebalancing policy on the placement "after acting"
assumes moves land the moment they are planned, with the load of the hour
they were planned on. A real policy measures an hour, plans at its end, and
each move switches reads only when its migration finishes; until then the
fleet carries the next hour's load on the old placement. These helpers say
when each move lands, split an hour at those moments and weigh each placement
by the time it served, so ``bench_rebalancing.py`` can judge the goal on what
was carried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from librarian.core.planner import Proposal

__all__ = ["Arrival", "CarriedHour", "Segment", "carried_hour", "landing_times", "split_hour"]


@dataclass(frozen=True)
class Arrival:
    """A move whose reads switch to ``cluster`` at ``at_s`` (seconds on the simulation clock)."""

    at_s: float
    domain: str
    cluster: str


@dataclass(frozen=True)
class Segment:
    """A stretch of ``seconds`` during which ``placement`` (domain -> cluster) served."""

    seconds: float
    placement: Mapping[str, str]


@dataclass(frozen=True)
class CarriedHour:
    """An hour as carried: the time-weighted mean of max/mean cluster load, the seconds
    within the goal, and the worst max/mean of any stretch."""

    mean_ratio: float
    seconds_within: float
    seconds: float
    worst_ratio: float

    @property
    def share_within(self) -> float:
        return self.seconds_within / self.seconds if self.seconds else 1.0


def split_hour(
    placement: Mapping[str, str],
    arrivals: Sequence[Arrival],
    start_s: float,
    end_s: float,
) -> tuple[list[Segment], dict[str, str], list[Arrival]]:
    """The stretches of [start_s, end_s) between arrivals, the placement at ``end_s`` and the
    arrivals still to come.

    An arrival at or before ``start_s`` has landed already (it applies from
    the start); one at or after ``end_s`` is left for a later hour.
    """
    if end_s <= start_s:
        raise ValueError(f"an hour must end after it starts ({start_s} -> {end_s})")
    current = dict(placement)
    segments: list[Segment] = []
    at = start_s
    landing = sorted(arrivals, key=lambda a: a.at_s)
    later = [a for a in landing if a.at_s >= end_s]
    for arrival in (a for a in landing if a.at_s < end_s):
        if arrival.domain not in current:
            raise ValueError(f"a move of {arrival.domain!r}, which is not in the placement")
        when = max(arrival.at_s, start_s)
        if when > at:
            segments.append(Segment(when - at, dict(current)))
            at = when
        current[arrival.domain] = arrival.cluster
    segments.append(Segment(end_s - at, dict(current)))
    return segments, current, later


def carried_hour(
    segments: Sequence[Segment], ratio_of: Callable[[Mapping[str, str]], float], goal: float
) -> CarriedHour:
    """Weigh each stretch's max/mean (``ratio_of`` its placement) by how long it served."""
    total = sum(s.seconds for s in segments)
    if total <= 0:
        raise ValueError("an hour needs at least one stretch of positive length")
    ratios = [(s.seconds, ratio_of(s.placement)) for s in segments if s.seconds > 0]
    return CarriedHour(
        mean_ratio=sum(seconds * ratio for seconds, ratio in ratios) / total,
        seconds_within=sum(seconds for seconds, ratio in ratios if ratio <= goal + 1e-9),
        seconds=total,
        worst_ratio=max(ratio for _, ratio in ratios),
    )


def landing_times(proposal: Proposal, planned_at_s: float, rate: float) -> list[Arrival]:
    """When each executable move of ``proposal`` switches reads: the planner's own timeline
    (waves, start offsets, points / migration rate); a move without one (the naive rule's)
    runs alone, one after the other, at the same rate."""
    arrivals, clock = [], planned_at_s
    for move in proposal.executable_moves:
        if move.duration_s > 0:
            at = planned_at_s + move.start_after_s + move.duration_s
        else:
            clock += move.points / rate
            at = clock
        arrivals.append(Arrival(at, move.domain, move.target or move.source))
    return arrivals
