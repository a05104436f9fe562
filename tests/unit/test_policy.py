"""A RebalancePolicy's bookkeeping: approvals, analysis timing, which moves start, phases."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from librarian.operator.move_record import MoveRecord, MoveState
from librarian.operator.policy_state import (
    IN_FLIGHT,
    analysis_due,
    append_history,
    moves_from_proposal,
    moves_to_start,
    parse_approval,
    policy_phase,
)
from librarian.services.domain_homes import DomainHome

NOW = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def _move(state: str = "Pending", wave: int = 0, domain: str = "d1") -> MoveRecord:
    return MoveRecord(
        domain=domain,
        source="fast",
        target="bulk",
        old_home=DomainHome("fast", f"p-{domain}"),
        state=MoveState(state),
        wave=wave,
    )


def test_approval_annotation_values() -> None:
    assert parse_approval(None).action is None
    assert parse_approval({"librarian.dev/rebalance": "approve"}).action == "approve"
    assert parse_approval({"librarian.dev/rebalance": " Refresh "}).action == "refresh"
    bad = parse_approval({"librarian.dev/rebalance": "yes"})
    assert bad.action is None
    assert bad.error is not None
    assert "approve, refresh, stop" in bad.error


def test_analysis_due_on_interval_generation_refresh_and_retry() -> None:
    done = {"observedGeneration": 1, "lastAnalysis": "2026-03-07T11:50:00Z"}
    assert not analysis_due(done, generation=1, interval_s=900, now=NOW)
    assert analysis_due(done, generation=1, interval_s=600, now=NOW)
    assert analysis_due(done, generation=2, interval_s=900, now=NOW)
    assert analysis_due(done, generation=1, interval_s=900, now=NOW, refresh=True)
    assert analysis_due({"observedGeneration": 1}, generation=1, interval_s=900, now=NOW)
    failed = {**done, "analysisFailed": True, "lastAttempt": "2026-03-07T11:59:50Z"}
    assert not analysis_due(failed, generation=1, interval_s=900, now=NOW)  # retried after 30 s
    assert analysis_due(failed, generation=1, interval_s=900, now=NOW + timedelta(seconds=30))


def _proposal() -> dict[str, Any]:
    return {
        "id": "abc123",
        "moves": [
            {"domain": "d1", "source": "fast", "target": "bulk", "points": 500, "wave": 0},
            {"domain": "d2", "source": "fast", "target": "general", "points": 90, "wave": 1},
            {"domain": "d3", "source": "fast", "target": None, "points": 9000, "executable": False},
            {"domain": "d4", "source": "bulk", "target": "fast", "points": 10, "wave": 0},
        ],
    }


def test_moves_from_proposal_take_executable_moves_whose_domain_is_still_there() -> None:
    homes: dict[str, dict[str, Any]] = {
        "d1": {"cluster": "fast", "collection": "p-d1", "specialization": "cs-d1"},
        "d2": {"cluster": "fast", "collection": "p-d2", "specialization": "rp-x", "owned": True},
        "d3": {"cluster": "fast", "collection": "p-d3"},
        "d4": {"cluster": "general", "collection": "packages"},  # moved since the proposal
    }
    moves = moves_from_proposal(_proposal(), homes, now=NOW)
    assert [m.domain for m in moves] == ["d1", "d2"]
    assert moves[0].old_home == DomainHome("fast", "p-d1")
    assert moves[0].old_specialization == "cs-d1"
    assert not moves[0].old_specialization_owned
    assert moves[1].old_specialization_owned
    assert all(m.state == MoveState.PENDING and m.proposal == "abc123" for m in moves)
    status = moves[0].to_status()  # the status keeps its camelCase fields
    assert status["oldHome"] == {"cluster": "fast", "collection": "p-d1"}
    assert status["state"] == "Pending"
    assert status["createdAt"] == "2026-03-07T12:00:00Z"


def test_never_more_moves_in_flight_than_allowed_and_waves_in_order() -> None:
    rng = random.Random(7)
    for _ in range(300):
        limit = rng.randint(1, 4)
        moves = [
            _move(rng.choice(["Pending", "Done", *sorted(IN_FLIGHT)]), rng.randint(0, 3))
            for _ in range(rng.randint(0, 12))
        ]
        moves.sort(key=lambda m: m.wave)
        chosen = moves_to_start(moves, limit)
        busy = sum(1 for m in moves if m.state in IN_FLIGHT)
        assert busy + len(chosen) <= max(limit, busy)
        open_waves = [m.wave for m in moves if m.state in ("Pending", *IN_FLIGHT)]
        for index in chosen:
            assert moves[index].state == "Pending"
            assert moves[index].wave == min(open_waves)


def test_moves_to_start_fills_free_slots() -> None:
    moves = [_move("Copying"), *(_move("Pending") for _ in range(3))]
    assert moves_to_start(moves, 1) == []
    assert moves_to_start(moves, 3) == [1, 2]
    assert moves_to_start([_move("Pending", wave=1), _move("Done", wave=0)], 2) == [0]


def test_history_is_bounded_newest_last() -> None:
    history = [{"n": i} for i in range(18)]
    finished = [_move("Done", domain=f"d{i}") for i in (18, 19, 20)]
    kept = append_history(history, finished, limit=20)
    assert len(kept) == 20
    assert kept[0] == {"n": 1}
    assert kept[-1] == finished[-1].to_status()
    assert kept[-1]["domain"] == "d20"


def test_phases() -> None:
    proposal = _proposal()
    common = {"balanced": False, "stopped": False}
    assert policy_phase(mode="auto", moves=[_move("Copying")], proposal=None, **common) == (
        "Executing"
    )
    assert policy_phase(mode="auto", moves=[_move("Pending")], proposal=None, **common) == (
        "Executing"
    )
    assert policy_phase(mode="approve", moves=[], proposal=proposal, **common) == "AwaitingApproval"
    assert policy_phase(mode="observe", moves=[], proposal=proposal, **common) == "ProposalReady"
    advisory = {"moves": [{"domain": "d3", "target": None, "executable": False}]}
    assert policy_phase(mode="approve", moves=[], proposal=advisory, **common) == "Observing"
    assert (
        policy_phase(mode="approve", moves=[], proposal=proposal, balanced=False, stopped=True)
        == "Observing"
    )
    assert policy_phase(mode="auto", moves=[], proposal=None, balanced=True, stopped=False) == (
        "Balanced"
    )
