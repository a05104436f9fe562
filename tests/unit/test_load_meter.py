"""The router's per-domain load figures: totals, rates over a sliding window, p95, homes."""

from __future__ import annotations

import json

import pytest

from librarian.router.load import LoadMeter


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _domain(snapshot: dict, domain_id: str) -> dict:
    return next(d for d in snapshot["domains"] if d["id"] == domain_id)


def _cluster(snapshot: dict, name: str) -> dict:
    return next(c for c in snapshot["clusters"] if c["name"] == name)


def test_empty_meter_reports_empty_lists() -> None:
    clock = FakeClock()
    snapshot = LoadMeter(window_s=30, clock=clock).snapshot()
    assert snapshot == {"uptimeSeconds": 0.0, "windowSeconds": 30.0, "domains": [], "clusters": []}


def test_qps_over_a_full_window() -> None:
    clock = FakeClock()
    meter = LoadMeter(window_s=10, clock=clock)
    clock.advance(20)  # up longer than the window
    for _ in range(10):  # 5 calls a second to d0, 1 a second to d1, for 10 seconds
        for _ in range(5):
            meter.record("d0", "east", 0.01, True)
        meter.record("d1", "west", 0.01, True)
        clock.advance(1)
    clock.advance(-0.5)  # still inside the last second that got calls
    snapshot = meter.snapshot()
    assert _domain(snapshot, "d0")["qps"] == pytest.approx(5.0)
    assert _domain(snapshot, "d1")["qps"] == pytest.approx(1.0)
    assert _domain(snapshot, "d0")["queries"] == 50
    assert _cluster(snapshot, "east")["qps"] == pytest.approx(5.0)
    assert snapshot["uptimeSeconds"] == pytest.approx(29.5)
    json.dumps(snapshot)  # JSON-safe


def test_qps_is_over_uptime_while_the_router_is_younger_than_the_window() -> None:
    clock = FakeClock()
    meter = LoadMeter(window_s=60, clock=clock)
    for _ in range(20):
        meter.record("d0", "east", 0.002, True)
    clock.advance(4)
    assert _domain(meter.snapshot(), "d0")["qps"] == pytest.approx(5.0)  # 20 calls in 4 s
    clock.advance(36)
    assert _domain(meter.snapshot(), "d0")["qps"] == pytest.approx(0.5)  # 20 calls in 40 s


def test_the_first_calls_do_not_read_as_a_huge_rate() -> None:
    clock = FakeClock()
    meter = LoadMeter(window_s=60, clock=clock)
    clock.advance(0.001)
    meter.record("d0", "east", 0.002, True)
    assert _domain(meter.snapshot(), "d0")["qps"] == pytest.approx(1.0)


def test_p95_latency_in_milliseconds() -> None:
    clock = FakeClock()
    meter = LoadMeter(window_s=60, clock=clock)
    for ms in range(1, 101):  # 1 ms .. 100 ms
        meter.record("d0", "east", ms / 1000, True)
    meter.record("d1", "east", 0.5, True)
    snapshot = meter.snapshot()
    assert _domain(snapshot, "d0")["p95Ms"] == pytest.approx(95.05, abs=0.01)
    assert _domain(snapshot, "d1")["p95Ms"] == pytest.approx(500.0)
    # the cluster's percentile is over the calls of all its domains
    assert 95.0 < _cluster(snapshot, "east")["p95Ms"] < 500.0


def test_latencies_kept_are_bounded_to_the_most_recent() -> None:
    clock = FakeClock()
    meter = LoadMeter(window_s=60, clock=clock)
    for _ in range(1000):
        meter.record("d0", "east", 1.0, True)
    for _ in range(600):
        meter.record("d0", "east", 0.001, True)
    assert _domain(meter.snapshot(), "d0")["p95Ms"] == pytest.approx(1.0)


def test_errors_count_as_queries_but_not_in_latency() -> None:
    clock = FakeClock()
    meter = LoadMeter(window_s=60, clock=clock)
    meter.record("d0", "east", 0.004, True)
    meter.record("d0", "east", 9.0, False)
    meter.record("d0", "east", 0.0, False)
    clock.advance(1)
    d0 = _domain(meter.snapshot(), "d0")
    assert (d0["queries"], d0["errors"]) == (3, 2)
    assert d0["qps"] == pytest.approx(3.0)
    assert d0["p95Ms"] == pytest.approx(4.0)


def test_window_sliding_forgets_old_calls_but_keeps_totals() -> None:
    clock = FakeClock()
    meter = LoadMeter(window_s=10, clock=clock)
    for _ in range(30):
        meter.record("d0", "east", 0.2, True)
    clock.advance(5)
    meter.record("d1", "east", 0.01, True)
    clock.advance(5.5)  # d0's calls are now older than the window, d1's are not
    snapshot = meter.snapshot()
    d0, d1 = _domain(snapshot, "d0"), _domain(snapshot, "d1")
    assert d0["qps"] == 0.0
    assert d0["p95Ms"] is None
    assert d0["queries"] == 30
    assert d1["qps"] == pytest.approx(0.1)
    assert d1["p95Ms"] == pytest.approx(10.0)
    assert _cluster(snapshot, "east")["p95Ms"] == pytest.approx(10.0)
    clock.advance(1000)  # the ring buckets are reused, never double counted
    meter.record("d0", "east", 0.003, True)
    snapshot = meter.snapshot()
    assert _domain(snapshot, "d0")["qps"] == pytest.approx(0.1)
    assert _domain(snapshot, "d0")["queries"] == 31


def test_a_domain_is_reported_under_its_current_cluster() -> None:
    clock = FakeClock()
    meter = LoadMeter(window_s=60, clock=clock)
    for _ in range(4):
        meter.record("d0", "east", 0.01, True)
    meter.record("d1", "east", 0.01, True)
    meter.record("d0", "west", 0.01, True)  # d0 moved to west
    clock.advance(1)
    snapshot = meter.snapshot()
    assert _domain(snapshot, "d0")["cluster"] == "west"
    assert _domain(snapshot, "d0")["queries"] == 5
    assert _cluster(snapshot, "west")["queries"] == 5
    assert _cluster(snapshot, "east")["queries"] == 1


def test_track_declares_domains_and_moves_them_at_once() -> None:
    clock = FakeClock()
    meter = LoadMeter(window_s=60, clock=clock)
    meter.record("d0", "east", 0.01, True)
    meter.track({"d0": "west", "d2": "east"})
    snapshot = meter.snapshot()
    assert [(d["id"], d["cluster"], d["queries"]) for d in snapshot["domains"]] == [
        ("d0", "west", 1),
        ("d2", "east", 0),
    ]
    assert _domain(snapshot, "d2")["p95Ms"] is None
    assert [c["name"] for c in snapshot["clusters"]] == ["east", "west"]


@pytest.mark.parametrize("window", [0.0, 0.5, -3.0, float("nan"), float("inf")])
def test_a_window_shorter_than_a_second_is_refused(window: float) -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        LoadMeter(window_s=window)
