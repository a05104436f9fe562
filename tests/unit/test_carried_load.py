"""The rebalancing benchmark's carried-load helpers: an hour split at the moments moves land,
each placement weighed by the time it served."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from benchmarks.carried_load import Arrival, Segment, carried_hour, landing_times, split_hour
from benchmarks.naive_rebalance import naive_rebalance

from librarian.core.load import analyze_load
from librarian.core.planner import Constraints, plan_rebalance
from tests.unit.test_planner import NOW, huge_domain_fleet

PLACEMENT = {"x": "a", "y": "a", "z": "b"}
QPS = {"x": 30.0, "y": 30.0, "z": 20.0}


def ratio(placement: Mapping[str, str]) -> float:
    """max/mean cluster load over clusters a and b, computed by hand."""
    load = {"a": 0.0, "b": 0.0}
    for domain, cluster in placement.items():
        load[cluster] += QPS[domain]
    return max(load.values()) / (sum(load.values()) / len(load))


def test_an_hour_without_moves_is_one_stretch_of_the_placement() -> None:
    segments, end, later = split_hour(PLACEMENT, [], 0.0, 3600.0)
    assert segments == [Segment(3600.0, PLACEMENT)]
    assert end == PLACEMENT
    assert later == []
    hour = carried_hour(segments, ratio, goal=1.3)
    assert hour.mean_ratio == pytest.approx(60 / 40)
    assert hour.seconds_within == 0.0
    assert hour.share_within == 0.0


def test_moves_switch_the_placement_when_they_land_and_later_ones_wait() -> None:
    arrivals = [Arrival(5400.0, "z", "a"), Arrival(900.0, "y", "b"), Arrival(7300.0, "x", "b")]
    segments, end, later = split_hour(PLACEMENT, arrivals, 3600.0, 7200.0)
    # 'z' lands 30 minutes into the hour (after 'y', which landed before it began).
    assert segments == [
        Segment(1800.0, {"x": "a", "y": "b", "z": "b"}),
        Segment(1800.0, {"x": "a", "y": "b", "z": "a"}),
    ]
    assert end == {"x": "a", "y": "b", "z": "a"}
    assert later == [Arrival(7300.0, "x", "b")]
    hour = carried_hour(segments, ratio, goal=1.3)
    # First half: a carries x (30), b carries y + z (50): 50/40 = 1.25; then a: x + z, b: y.
    assert hour.mean_ratio == pytest.approx(1.25)
    assert hour.seconds_within == pytest.approx(3600.0)
    assert hour.worst_ratio == pytest.approx(1.25)


def test_time_weighs_each_placement() -> None:
    # Balanced (1.25) for the last 15 minutes only: the hour carried 1.5 for 45 minutes.
    segments, _, _ = split_hour(PLACEMENT, [Arrival(2700.0, "y", "b")], 0.0, 3600.0)
    hour = carried_hour(segments, ratio, goal=1.3)
    assert [s.seconds for s in segments] == [2700.0, 900.0]
    assert hour.mean_ratio == pytest.approx(0.75 * 1.5 + 0.25 * 1.25)
    assert hour.share_within == pytest.approx(0.25)
    assert hour.worst_ratio == pytest.approx(1.5)


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="not in the placement"):
        split_hour(PLACEMENT, [Arrival(10.0, "nope", "b")], 0.0, 3600.0)
    with pytest.raises(ValueError, match="must end after"):
        split_hour(PLACEMENT, [], 3600.0, 3600.0)
    with pytest.raises(ValueError, match="positive length"):
        carried_hour([], ratio, goal=1.3)


def test_planned_moves_land_on_the_planners_timeline_one_after_the_other() -> None:
    domains, caps = huge_domain_fleet()
    proposal = plan_rebalance(
        analyze_load(domains, caps),
        caps,
        strategy="load_based",
        constraints=Constraints(migration_points_per_second=100.0),
        now=NOW,
    )
    moves = proposal.executable_moves
    assert len(moves) >= 2
    arrivals = landing_times(proposal, 7200.0, 100.0)
    assert [(a.domain, a.cluster) for a in arrivals] == [(m.domain, m.target) for m in moves]
    # One migration at a time (the default): each lands when the previous ones are done.
    assert [a.at_s for a in arrivals] == pytest.approx(
        [7200.0 + sum(m.points for m in moves[: i + 1]) / 100.0 for i in range(len(moves))]
    )


def test_a_move_without_a_timeline_takes_its_points_at_the_rate() -> None:
    domains, caps = huge_domain_fleet()
    naive = naive_rebalance(analyze_load(domains, caps), caps)
    [move] = naive.executable_moves
    assert move.duration_s == 0.0
    [arrival] = landing_times(naive, 3600.0, 5000.0)
    assert arrival == Arrival(3600.0 + 2_000_000 / 5000.0, "huge", "c")
