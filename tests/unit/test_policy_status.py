"""The policy's status writer: exactly the dicts the status shows, JSON-safe, read back whole."""

from __future__ import annotations

import json
import math

import pytest

from librarian.core.forecast import LoadHistory, PredictionLedger
from librarian.core.load import ClusterCapacity, DomainLoad, analyze_load
from librarian.core.planner import Constraints, Move, parse_window
from librarian.operator.policy_status import (
    history_from_status,
    history_status,
    ledger_from_status,
    ledger_status,
    load_status,
    load_summary,
    move_status,
    proposal_status,
)
from tests.unit.test_forecast import T0
from tests.unit.test_load import CAPACITIES, DOMAINS
from tests.unit.test_planner import huge_domain_fleet, plan

# -- load -----------------------------------------------------------------------------------------


def test_load_status_is_json_safe_camel_case() -> None:
    report = analyze_load(DOMAINS, CAPACITIES)
    status = load_status(report)
    json.dumps(status)
    assert status["maxMeanRatio"] == round(report.max_mean_ratio, 4)
    bulk = status["clusters"][1]
    assert bulk["name"] == "bulk"
    assert bulk["memoryUsage"] == 0.9
    assert bulk["p95Ms"] == 200.0
    assert bulk["latencyLimitMs"] == 120.0
    assert bulk["diskUsage"] is None
    assert {v["kind"] for v in status["violations"]} == {
        "load_imbalance",
        "latency_degradation",
        "capacity",
        "accuracy_drop",
    }
    assert status["domains"][0] == {
        "domain": "d0",
        "cluster": "fast",
        "qps": 120.0,
        "p95Ms": 30.0,
        "points": 1000,
        "recall": None,
    }
    assert status["recommendations"] == list(report.recommendations)


# -- proposal -------------------------------------------------------------------------------------


def test_proposal_status() -> None:
    domains, caps = huge_domain_fleet()
    first = plan(domains, caps, strategy="load_based")
    status = proposal_status(first)
    json.dumps(status)
    assert status["id"] == first.id
    assert status["strategy"] == "load_based"
    assert status["pointsMoved"] == first.points_moved
    assert status["startsAt"] is None
    assert status["before"]["maxMeanRatio"] == round(first.before.max_mean_ratio, 4)
    assert status["after"]["violations"] == len(first.after.violations)
    assert set(status["moves"][0]) == {
        "domain",
        "source",
        "target",
        "points",
        "kind",
        "reason",
        "priority",
        "wave",
        "startAfterSeconds",
        "durationSeconds",
        "executable",
    }
    windows = (parse_window("Sat 01:00-05:00"),)
    timed = plan(domains, caps, constraints=Constraints(maintenance_windows=windows))
    assert proposal_status(timed)["startsAt"] == "2024-06-08T01:00:00Z"


def test_move_status_and_load_summary_round_for_reading() -> None:
    move = Move("x", "a", "b", 1_234, "move", "why", 2, 1, 1.23456, 0.24680)
    assert move_status(move) == {
        "domain": "x",
        "source": "a",
        "target": "b",
        "points": 1_234,
        "kind": "move",
        "reason": "why",
        "priority": 2,
        "wave": 1,
        "startAfterSeconds": 1.235,
        "durationSeconds": 0.247,
        "executable": True,
    }
    report = analyze_load(
        [DomainLoad("x", "a", qps=2.0, p95_ms=12.3456, points=7, memory_bytes=1)],
        [ClusterCapacity("a", memory_bytes=3, max_qps=3.0), ClusterCapacity("b")],
    )
    assert load_summary(report) == {
        "maxMeanRatio": 2.0,
        "imbalance": 1.0,
        "violations": 1,
        "violationKinds": ["load_imbalance"],
        "clusters": {
            "a": {
                "load": 0.6667,
                "qps": 2.0,
                "p95Ms": 12.35,
                "points": 7,
                "memoryUsage": 0.3333,
                "diskUsage": None,
            },
            "b": {
                "load": 0.0,
                "qps": 0.0,
                "p95Ms": None,
                "points": 0,
                "memoryUsage": None,
                "diskUsage": None,
            },
        },
    }


# -- history --------------------------------------------------------------------------------------


def test_history_status_is_compact_json_and_round_trips() -> None:
    history = LoadHistory()
    history = history.append(T0 + 0.5, {"d1": {"qps": 123.456789}}, max_samples=10)
    history = history.append(
        T0 + 900, {"d1": {"qps": math.inf}, "d2": {"points": 1_234_567.0}}, max_samples=10
    )
    status = history_status(history)
    text = json.dumps(status, allow_nan=False)
    assert status == {
        "times": [T0 + 0.5, int(T0) + 900],
        "domains": {"d1": {"qps": [123.5, None]}, "d2": {"points": [None, 1_235_000]}},
    }
    again = history_from_status(json.loads(text))
    assert again.times_s == history.times_s
    assert again.series["d1"]["qps"][0] == 123.5
    assert math.isnan(again.series["d1"]["qps"][1])
    assert again.series["d2"]["points"][1] == 1_235_000.0
    assert history_status(again) == status


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "text",
        [],
        {},
        {"times": "soon", "domains": {}},
        {"times": [1, 2], "domains": []},
        {"times": [1, "x", None, 2, 2, 1, True, 3], "domains": {"d": {"qps": "many"}}},
        {"times": [1, 2], "domains": {"d": None, 5: {"qps": [1]}, "e": {7: [1], "q": [None]}}},
    ],
)
def test_history_from_garbled_status_never_raises(garbage) -> None:
    history = history_from_status(garbage)
    json.dumps(history_status(history), allow_nan=False)
    assert all(len(c) == len(history.times_s) for m in history.series.values() for c in m.values())


def test_history_from_status_drops_bad_times_and_fixes_column_lengths() -> None:
    data = {
        "times": [10, "x", 20, 15, 30],
        "domains": {"d": {"qps": [1, 2, 3, 4, 5, 6, 7], "points": [1, "many"]}, "e": {"qps": []}},
    }
    history = history_from_status(data)
    assert history.times_s == (10.0, 20.0, 30.0)
    assert history.series["d"]["qps"] == (1.0, 3.0, 5.0)
    points = history.series["d"]["points"]
    assert points[0] == 1.0
    assert all(math.isnan(v) for v in points[1:])
    assert "e" not in history.series


# -- ledger ---------------------------------------------------------------------------------------


def test_ledger_status_round_trips_as_json() -> None:
    ledger = PredictionLedger().record({"d2": {"qps": 3.0}}, 400.0)
    ledger = ledger.record({"d1": {"qps": 12.3456789}}, 500.0)
    ledger = ledger.record({"d1": {"points": 1_234_567.0}}, 900.0)
    ledger = ledger.score({"d2": {"qps": 4.0}}, 450.0).record({"d2": {"qps": 4.5}}, 900.0)
    status = ledger_status(ledger)
    text = json.dumps(status, allow_nan=False)
    assert status["mape"] == 0.25
    assert status["errors"] == [0.25]
    assert status["pending"] == [
        {"dueS": 500, "values": {"d1": {"qps": 12.3457}}},
        {"dueS": 900, "values": {"d1": {"points": 1_234_570}, "d2": {"qps": 4.5}}},
    ]
    again = ledger_from_status(json.loads(text))
    assert again.errors == (0.25,)
    assert {(p.domain, p.metric, p.due_s) for p in again.pending} == {
        (p.domain, p.metric, p.due_s) for p in ledger.pending
    }
    assert ledger_status(again) == status
    assert json.dumps(ledger_status(PredictionLedger()), allow_nan=False)


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        42,
        {"pending": "x", "errors": "y"},
        {"pending": [None, {"dueS": "later"}, {"dueS": 5, "values": [1]}], "errors": [None, -1]},
        {"pending": [{"dueS": 5, "values": {"d": {"qps": "x", "ok": 2}, "e": 3, 9: {}}}]},
        {"errors": [0.5, math.nan, math.inf, True, "0.1"]},
    ],
)
def test_ledger_from_garbled_status_never_raises(garbage) -> None:
    ledger = ledger_from_status(garbage)
    json.dumps(ledger_status(ledger), allow_nan=False)
    assert all(math.isfinite(e) and e >= 0 for e in ledger.errors)
    assert all(p.metric == "ok" and p.predicted == 2.0 for p in ledger.pending)
