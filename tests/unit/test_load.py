"""Load analysis: cluster figures, balance, every kind of violation, advice and bad input."""

from __future__ import annotations

import math

import pytest

from librarian.core.load import (
    ClusterCapacity,
    DomainLoad,
    LoadError,
    Thresholds,
    analyze_load,
)

GiB = 2**30

CAPACITIES = [
    ClusterCapacity("fast", memory_bytes=10 * GiB, disk_bytes=100 * GiB, max_qps=200.0),
    ClusterCapacity("bulk", memory_bytes=4 * GiB, max_qps=100.0, baseline_p95_ms=20.0),
    ClusterCapacity("spare"),  # no domain: counts with load 0
]
DOMAINS = [
    DomainLoad("d0", "fast", qps=120.0, p95_ms=30.0, points=1_000, memory_bytes=1 * GiB),
    DomainLoad("d1", "fast", qps=40.0, p95_ms=10.0, points=3_000, memory_bytes=2 * GiB),
    DomainLoad("d2", "bulk", qps=90.0, p95_ms=200.0, points=5_000, memory_bytes=int(3.6 * GiB)),
    DomainLoad("d3", "bulk", qps=0.0, points=10, memory_bytes=0, recall=0.70, baseline_recall=0.95),
    DomainLoad("d4", "other", qps=10.0, points=100, recall=0.90, baseline_recall=0.95),
]


@pytest.fixture
def report():
    return analyze_load(DOMAINS, CAPACITIES)


def test_cluster_figures(report) -> None:
    assert [c.name for c in report.clusters] == ["fast", "bulk", "spare", "other"]
    fast, bulk, spare, other = report.clusters
    assert fast.qps == 160.0
    assert fast.load == pytest.approx(0.8)
    assert fast.p95_ms == pytest.approx((120 * 30 + 40 * 10) / 160)  # qps-weighted
    assert fast.points == 4_000
    assert fast.domains == ("d0", "d1")
    assert fast.memory_bytes == 3 * GiB
    assert fast.memory_usage == pytest.approx(0.3)
    assert fast.disk_usage == 0.0
    assert bulk.load == pytest.approx(0.9)
    assert bulk.memory_usage == pytest.approx(0.9)
    assert bulk.disk_usage is None  # no disk capacity known
    assert bulk.p95_ms == pytest.approx(200.0)  # d3 has no latency figure
    assert spare.qps == 0
    assert spare.load == 0
    assert spare.p95_ms is None
    assert spare.domains == ()
    # No max_qps declared: judged against the mean declared one (150), same unit as the others.
    assert other.load == pytest.approx(10 / 150)
    assert report.cluster("bulk") is bulk
    with pytest.raises(KeyError, match="known: fast, bulk, spare, other"):
        report.cluster("nowhere")


def test_balance_counts_every_cluster_including_empty_ones(report) -> None:
    loads = [0.8, 0.9, 0.0, 10 / 150]
    assert report.max_mean_ratio == pytest.approx(max(loads) / (sum(loads) / 4))
    assert report.imbalance == pytest.approx(report.max_mean_ratio - 1)
    even = analyze_load(
        [DomainLoad("x", "a", qps=5), DomainLoad("y", "b", qps=5)],
        [ClusterCapacity("a"), ClusterCapacity("b")],
    )
    assert even.max_mean_ratio == pytest.approx(1.0)
    assert not even.violations
    with_spare = analyze_load(
        [DomainLoad("x", "a", qps=5), DomainLoad("y", "b", qps=5)],
        [ClusterCapacity("a"), ClusterCapacity("b"), ClusterCapacity("c")],
    )
    assert with_spare.max_mean_ratio == pytest.approx(1.5)
    idle = analyze_load([DomainLoad("x", "a"), DomainLoad("y", "b")], [])
    assert idle.max_mean_ratio == 1.0
    assert idle.imbalance == 0.0
    assert not idle.violations
    assert analyze_load([], []).max_mean_ratio == 1.0
    raw = analyze_load([DomainLoad("x", "a", qps=50)], [ClusterCapacity("a"), ClusterCapacity("b")])
    assert [c.load for c in raw.clusters] == [50.0, 0.0]  # nothing declared: raw queries/s
    alone = analyze_load([DomainLoad("x", "a", qps=50)], [])
    assert alone.max_mean_ratio == 1.0
    assert not alone.violations


def test_violations_of_every_kind(report) -> None:
    kinds = {(v.kind, v.subject): v for v in report.violations}
    assert set(kinds) == {
        ("load_imbalance", "fleet"),
        ("latency_degradation", "bulk"),
        ("capacity", "bulk"),
        ("accuracy_drop", "d3"),
    }
    imbalance = kinds["load_imbalance", "fleet"]
    assert imbalance.value == pytest.approx(report.imbalance)
    assert imbalance.threshold == 0.3
    assert "cluster 'bulk' carries 2.04x the mean cluster load" in imbalance.message
    assert "goal max/mean <= 1.30" in imbalance.message
    latency = kinds["latency_degradation", "bulk"]
    assert latency.value == pytest.approx(200.0)
    assert latency.threshold == pytest.approx(120.0)
    assert latency.message == (
        "cluster 'bulk' answers at p95 200 ms, 80 ms over its limit of 120 ms "
        "(its baseline 20 ms + 100 ms)"
    )
    capacity = kinds["capacity", "bulk"]
    assert capacity.value == pytest.approx(0.9)
    assert capacity.threshold == 0.85
    assert "uses 90% of its memory" in capacity.message
    assert "85% limit" in capacity.message
    accuracy = kinds["accuracy_drop", "d3"]
    assert accuracy.value == pytest.approx(0.25)
    assert accuracy.threshold == 0.1
    assert "recall 0.70, 0.25 below its baseline 0.95" in accuracy.message
    # d4 dropped 0.05 only: within the 0.1 allowed.
    assert ("accuracy_drop", "d4") not in kinds


def test_recommendations_say_what_to_do(report) -> None:
    text = "\n".join(report.recommendations)
    assert "move query load off 'bulk'" in text
    assert "toward 'spare'" in text
    assert "declare max_qps (maxQueriesPerSecond) for 'spare', 'other' too" in text
    assert "bring its p95 under 120 ms" in text
    assert "free memory on 'bulk'" in text
    assert "re-labels the points that drifted out of domain 'd3'" in text
    assert not analyze_load([DomainLoad("x", "a", qps=1)], [ClusterCapacity("a")]).recommendations


def test_latency_without_a_baseline_is_measured_from_the_fastest_cluster() -> None:
    domains = [
        DomainLoad("x", "a", qps=10, p95_ms=15.0),
        DomainLoad("y", "b", qps=10, p95_ms=140.0),
        DomainLoad("z", "c", qps=10, p95_ms=100.0),
    ]
    report = analyze_load(domains, [])
    assert [c.latency_limit_ms for c in report.clusters] == [115.0, 115.0, 115.0]
    [violation] = [v for v in report.violations if v.kind == "latency_degradation"]
    assert violation.subject == "b"
    assert "the fleet's fastest cluster + 100 ms" in violation.message
    stricter = analyze_load(domains, [], Thresholds(latency_degradation_ms=50.0))
    assert {v.subject for v in stricter.violations if v.kind == "latency_degradation"} == {"b", "c"}
    # One cluster has nothing to compare with.
    assert analyze_load(domains[1:2], []).clusters[0].latency_limit_ms is None


def test_disk_capacity_and_queries_above_max_qps() -> None:
    report = analyze_load(
        [DomainLoad("x", "a", qps=150, disk_bytes=95)],
        [ClusterCapacity("a", disk_bytes=100, max_qps=100)],
    )
    [violation] = report.violations
    assert violation.kind == "capacity"
    assert "of its disk" in violation.message
    assert any("150% of its 100 queries/s" in r for r in report.recommendations)


def test_thresholds_change_the_verdict() -> None:
    domains = [DomainLoad("x", "a", qps=14), DomainLoad("y", "b", qps=6)]
    assert analyze_load(domains, []).violations  # 1.4 > 1.3
    assert not analyze_load(domains, [], Thresholds(load_imbalance=0.5)).violations


@pytest.mark.parametrize(
    ("domains", "capacities", "message"),
    [
        ([DomainLoad("x", "a", qps=-1)], [], r"domain 'x' qps is -1; accepted: a number >= 0"),
        ([DomainLoad("x", "a", qps=math.nan)], [], r"domain 'x' qps is nan"),
        ([DomainLoad("x", "a"), DomainLoad("x", "b")], [], r"domain 'x' is listed twice"),
        ([DomainLoad("", "a")], [], r"domain entry 0 has no domain id"),
        ([DomainLoad("x", "")], [], r"domain 'x' has no cluster"),
        ([DomainLoad("x", "a", points=-5)], [], r"points is -5; accepted: a whole number >= 0"),
        ([DomainLoad("x", "a", p95_ms=-2.0)], [], r"p95_ms is -2.0"),
        ([DomainLoad("x", "a", recall=1.5)], [], r"recall is 1.5; accepted: a share"),
        ([], [ClusterCapacity("a"), ClusterCapacity("a")], r"'a' has two capacity entries"),
        ([], [ClusterCapacity("a", max_qps=0)], r"max_qps is 0; accepted: a number > 0"),
        ([], [ClusterCapacity("a", memory_bytes=-1)], r"memory_bytes is -1"),
        ([], [ClusterCapacity("")], r"capacity entry 0 has no cluster name"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(domains, capacities, message) -> None:
    with pytest.raises(LoadError, match=message):
        analyze_load(domains, capacities)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"load_imbalance": -0.1}, r"load_imbalance=-0.1 is not accepted: use a number >= 0"),
        ({"accuracy_drop": 1.5}, r"accuracy_drop=1.5 .* between 0 and 1"),
        ({"capacity_usage": 0.0}, r"capacity_usage=0.0 .* in \(0, 1\]"),
        ({"capacity_usage": 1.2}, r"capacity_usage=1.2"),
        ({"latency_degradation_ms": math.inf}, r"latency_degradation_ms=inf"),
    ],
)
def test_bad_thresholds(kwargs, message) -> None:
    with pytest.raises(LoadError, match=message):
        Thresholds(**kwargs)
    assert issubclass(LoadError, ValueError)
