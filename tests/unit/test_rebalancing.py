"""One policy analysis, pure: which clusters are judged, forecasts, and what is planned on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from librarian.core.forecast import LoadHistory, PredictionLedger
from librarian.core.load import ClusterCapacity, DomainLoad, Thresholds
from librarian.core.planner import Constraints
from librarian.core.rebalancing import (
    PolicyAnalysis,
    analyse_policy,
    judged_fleet,
    projected_loads,
)

NOW = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def _policy(**changes: object) -> PolicyAnalysis:
    values: dict[str, object] = {
        "strategy": "hybrid",
        "thresholds": Thresholds(),
        "constraints": Constraints(excluded_clusters=frozenset({"general"})),
        "horizon_s": None,
        "history": LoadHistory(),
        "ledger": PredictionLedger(),
    }
    values.update(changes)
    return PolicyAnalysis(**values)  # type: ignore[arg-type]


def test_an_excluded_cluster_counts_only_while_it_carries_queries() -> None:
    domains = [
        DomainLoad("a", "fast", qps=5, points=10),
        DomainLoad("b", "fast", qps=5, points=10),
        DomainLoad("idle", "general", qps=0, points=10),
    ]
    clusters = ["general", "fast", "bulk"]
    given = [ClusterCapacity("fast", max_qps=100)]
    judged, capacities = judged_fleet(domains, clusters, given, {"general"})
    assert [d.domain for d in judged] == ["a", "b"]
    assert [c.name for c in capacities] == ["bulk", "fast"]
    assert capacities[1].max_qps == 100
    busy = [*domains[:2], DomainLoad("hot", "general", qps=3, points=10)]
    judged, capacities = judged_fleet(busy, clusters, given, {"general"})
    assert "general" in {c.name for c in capacities}
    assert len(judged) == 3


def test_projected_loads_scale_memory_and_disk_with_points() -> None:
    now = [DomainLoad("a", "fast", qps=4, points=100, memory_bytes=1000, disk_bytes=3000)]
    (later,) = projected_loads(now, {"a": {"qps": 6.5, "points": 150.2}})
    assert (later.qps, later.points, later.memory_bytes, later.disk_bytes) == (6.5, 150, 1500, 4500)
    assert projected_loads(now, {})[0] == now[0]  # no forecast: unchanged
    (floor,) = projected_loads(now, {"a": {"qps": -1.0, "points": -5}})
    assert (floor.qps, floor.points) == (0.0, 0)


def test_within_thresholds_nothing_is_proposed() -> None:
    domains = [DomainLoad("a", "fast", qps=5, points=10), DomainLoad("b", "bulk", qps=5, points=10)]
    capacities = [ClusterCapacity("fast"), ClusterCapacity("bulk")]
    analysis = analyse_policy(domains, capacities, _policy(), now=NOW)
    assert analysis.proposal is None
    assert analysis.based_on == "current"
    assert analysis.history.times_s == (NOW.timestamp(),)


def test_today_imbalanced_is_planned_on_today() -> None:
    domains = [
        DomainLoad("a", "fast", qps=5, points=10),
        DomainLoad("b", "fast", qps=5, points=20),
    ]
    capacities = [ClusterCapacity("fast"), ClusterCapacity("bulk")]
    analysis = analyse_policy(domains, capacities, _policy(), now=NOW)
    assert analysis.proposal is not None
    assert analysis.based_on == "current"
    (move,) = analysis.proposal.moves
    assert (move.domain, move.target) == ("a", "bulk")  # the fewer points


def test_a_growing_domain_is_planned_on_the_forecast_before_it_crosses() -> None:
    capacities = [ClusterCapacity("fast"), ClusterCapacity("bulk")]
    history, ledger = LoadHistory(), PredictionLedger()
    analysis = None
    for hour in range(6):  # a grows 1 q/s per hour; c and b stay
        domains = [
            DomainLoad("a", "fast", qps=4 + 1.0 * hour, points=10),
            DomainLoad("c", "fast", qps=1, points=5),
            DomainLoad("b", "bulk", qps=6, points=10),
        ]
        policy = _policy(horizon_s=6 * 3600.0, history=history, ledger=ledger)
        analysis = analyse_policy(domains, capacities, policy, now=NOW + timedelta(hours=hour))
        history, ledger = analysis.history, analysis.ledger
    assert analysis is not None
    assert analysis.predicted is not None
    assert not analysis.report.violations  # today: 9+1 vs 6, within 1.3; in 6 h: 15+1 vs 6
    assert analysis.predicted.violations
    assert analysis.based_on == "forecast"
    assert analysis.proposal is not None
    assert analysis.proposal.moves
    assert analysis.ledger.pending  # the forecasts wait to be scored


def test_a_clock_that_went_back_starts_the_history_again() -> None:
    domains = [DomainLoad("a", "fast", qps=1, points=10)]
    capacities = [ClusterCapacity("fast")]
    first = analyse_policy(domains, capacities, _policy(), now=NOW)
    earlier = NOW - timedelta(minutes=5)
    again = analyse_policy(domains, capacities, _policy(history=first.history), now=earlier)
    assert again.history.times_s == (earlier.timestamp(),)
