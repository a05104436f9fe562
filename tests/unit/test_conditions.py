"""Conditions: transitions, observedGeneration, ordering and change detection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from librarian.operator.conditions import (
    get_condition,
    is_true,
    parse_timestamp,
    set_condition,
    status_changed,
    timestamp,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_gets_all_fields() -> None:
    conditions = set_condition([], "Ready", "True", "Analyzed", "ok", observed_generation=3, now=T0)
    assert conditions == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Analyzed",
            "message": "ok",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 3,
        }
    ]


def test_transition_time_moves_only_when_status_flips() -> None:
    first = set_condition([], "Ready", "True", "Analyzed", "a", observed_generation=1, now=T0)
    same = set_condition(first, "Ready", "True", "Reanalyzed", "b", observed_generation=2, now=T1)
    assert same[0]["lastTransitionTime"] == timestamp(T0)
    assert same[0]["observedGeneration"] == 2
    assert same[0]["message"] == "b"
    flipped = set_condition(
        same, "Ready", "False", "ClusterUnreachable", "c", observed_generation=2, now=T1
    )
    assert flipped[0]["lastTransitionTime"] == timestamp(T1)


def test_other_conditions_are_kept_and_ready_comes_first() -> None:
    conditions = set_condition([], "Drifted", "False", "Stable", "", observed_generation=1, now=T0)
    conditions = set_condition(
        conditions, "Ready", "True", "Analyzed", "", observed_generation=1, now=T0
    )
    assert [c["type"] for c in conditions] == ["Ready", "Drifted"]
    assert is_true(conditions, "Ready")
    assert not is_true(conditions, "Drifted")
    assert get_condition(conditions, "Missing") is None


def test_reason_must_be_camel_case() -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        set_condition([], "Ready", "False", "bad reason", "", observed_generation=1, now=T0)


def test_status_changed() -> None:
    assert not status_changed({"phase": "Ready", "x": 1}, {"phase": "Ready"})
    assert status_changed({"phase": "Ready"}, {"phase": "Failed"})
    assert status_changed(None, {"phase": "Ready"})


def test_timestamps_round_trip() -> None:
    assert parse_timestamp(timestamp(T0)) == T0
    assert parse_timestamp("garbage") is None
    assert parse_timestamp(None) is None
