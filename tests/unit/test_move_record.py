"""A move's state machine: every transition, legal and illegal, and the status form it keeps."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from librarian.operator.move_record import (
    IllegalTransition,
    InvalidMoveRecord,
    MoveRecord,
    MoveState,
)
from librarian.services.domain_homes import DomainHome

NOW = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
S = MoveState

LEGAL = {
    (S.PENDING, S.COPYING),  # started
    (S.PENDING, S.CANCELLED),  # stopped before it started
    (S.COPYING, S.COPYING),  # progress of the copy
    (S.COPYING, S.SWITCHING),  # verified: reads switch
    (S.COPYING, S.ROLLED_BACK),  # the copy failed: nothing lost
    (S.SWITCHING, S.CLEANING),  # the grace period passed
    (S.CLEANING, S.CLEANING),  # waiting for the new home to be verified
    (S.CLEANING, S.DONE),
}


def _move(state: MoveState = S.PENDING) -> MoveRecord:
    return MoveRecord(
        domain="d1",
        source="fast",
        target="bulk",
        old_home=DomainHome("fast", "packages-d1"),
        state=state,
        points=500,
        proposal="abc123",
    )


@pytest.mark.parametrize(
    ("start", "end"), list(itertools.product(MoveState, MoveState)), ids=lambda s: str(s)
)
def test_every_transition_is_allowed_or_refused(start: MoveState, end: MoveState) -> None:
    move = _move(start)
    if (start, end) in LEGAL:
        moved = move.to(end, "why", now=NOW)
        assert (moved.state, moved.message) == (end, "why")
        assert move.state == start  # records are values: the old one is unchanged
    else:
        with pytest.raises(IllegalTransition) as caught:
            move.to(end, "why", now=NOW)
        assert (caught.value.state, caught.value.to) == (start, end)
        assert f"from {start} to {end}" in str(caught.value)


def test_finished_moves_go_nowhere() -> None:
    for state in (S.DONE, S.ROLLED_BACK, S.CANCELLED):
        assert state.finished
        assert not state.open
        assert not state.in_flight
        with pytest.raises(IllegalTransition, match="none: it is finished"):
            _move(state).to(S.COPYING, "again", now=NOW)
    assert [s for s in MoveState if s.in_flight] == [S.COPYING, S.SWITCHING, S.CLEANING]
    assert [s for s in MoveState if s.open] == [S.PENDING, S.COPYING, S.SWITCHING, S.CLEANING]


def test_each_state_stamps_its_time_once() -> None:
    later = NOW + timedelta(minutes=5)
    copying = _move().to(S.COPYING, "copying", now=NOW, specialization="x")
    assert copying.started_at == "2026-03-07T12:00:00Z"
    assert copying.specialization == "x"
    again = copying.to(S.COPYING, "still", now=later)
    assert again.started_at == "2026-03-07T12:00:00Z"
    assert again.message == "still"
    switching = again.to(S.SWITCHING, "verified", now=later)
    assert switching.switched_at == "2026-03-07T12:05:00Z"
    assert switching.switched_time == later
    cleaning = switching.to(S.CLEANING, "cleaning", now=later + timedelta(minutes=1))
    assert cleaning.cleaning_at == "2026-03-07T12:06:00Z"
    done = cleaning.to(S.DONE, "ok", now=later, removed_from_old_home=500)
    assert done.finished_at == "2026-03-07T12:05:00Z"
    assert done.removed_from_old_home == 500
    rolled = copying.to(S.ROLLED_BACK, "failed", now=later)
    assert rolled.finished_at == "2026-03-07T12:05:00Z"
    noted = copying.noted("waiting: the API did not answer")
    assert noted.state == S.COPYING
    assert noted.started_at == copying.started_at


def test_the_status_form_round_trips_with_camel_case_names() -> None:
    full = replace(
        _move(S.DONE),
        wave=2,
        reason="cluster fast over its threshold",
        old_specialization="cs-d1",
        old_specialization_owned=True,
        message="done",
        created_at="2026-03-07T11:00:00Z",
        started_at="2026-03-07T11:01:00Z",
        switched_at="2026-03-07T11:02:00Z",
        cleaning_at="2026-03-07T11:03:00Z",
        finished_at="2026-03-07T11:04:00Z",
        specialization="balance-d1-bulk-abc123",
        new_home=DomainHome("bulk", "packages-d1-bulk"),
        removed_from_old_home=500,
    )
    status = full.to_status()
    assert status == {
        "domain": "d1",
        "source": "fast",
        "target": "bulk",
        "points": 500,
        "wave": 2,
        "reason": "cluster fast over its threshold",
        "proposal": "abc123",
        "oldHome": {"cluster": "fast", "collection": "packages-d1"},
        "oldSpecialization": "cs-d1",
        "oldSpecializationOwned": True,
        "state": "Done",
        "message": "done",
        "createdAt": "2026-03-07T11:00:00Z",
        "startedAt": "2026-03-07T11:01:00Z",
        "switchedAt": "2026-03-07T11:02:00Z",
        "cleaningAt": "2026-03-07T11:03:00Z",
        "finishedAt": "2026-03-07T11:04:00Z",
        "specialization": "balance-d1-bulk-abc123",
        "newHome": {"cluster": "bulk", "collection": "packages-d1-bulk"},
        "removedFromOldHome": 500,
    }
    assert MoveRecord.from_status(status) == full


def test_a_record_written_as_a_plain_dict_before_is_read() -> None:
    written = {
        "domain": "d7",
        "source": "general",
        "target": "fast",
        "points": 12,
        "wave": 0,
        "reason": "",
        "proposal": None,
        "oldHome": {"cluster": "general", "collection": "packages"},
        "oldSpecialization": None,
        "oldSpecializationOwned": False,
        "state": "Copying",
        "createdAt": "2026-03-07T11:00:00Z",
        "message": "ClusterSpecialization x copies the domain",
        "startedAt": "2026-03-07T11:00:00Z",
        "specialization": "x",
    }
    move = MoveRecord.from_status(written)
    assert move.state == S.COPYING
    assert move.old_home == DomainHome("general", "packages")
    assert move.to_status() == {k: v for k, v in written.items() if v is not None}


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"domain": "d1", "state": "Teleporting"}, "unknown state 'Teleporting'"),
        ({"domain": "d1", "source": "a", "target": "b", "state": "Pending"}, "KeyError"),
        (
            {
                "domain": "d1",
                "source": "a",
                "target": "b",
                "oldHome": {"cluster": "a", "collection": "c"},
                "points": "many",
            },
            "ValueError",
        ),
    ],
)
def test_an_unreadable_record_says_why(raw: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidMoveRecord, match=words):
        MoveRecord.from_status(raw)
