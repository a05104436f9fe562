"""A RebalancePolicy's bookkeeping as pure functions: approvals, moves in flight, history, phase.

Why this exists: the handlers must stay thin and the rules that protect the
data must be testable without Kubernetes — when an analysis is due, what an
approval annotation means, which planned moves may start now (never more in
flight than allowed, waves in order), how much history is kept, and the
human phase (a move's own states: :mod:`librarian.operator.move_record`). No clock here: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from librarian.contracts.metadata import APPROVAL_ANNOTATION
from librarian.operator.conditions import parse_timestamp, timestamp
from librarian.operator.move_record import FINISHED, IN_FLIGHT, MoveRecord, MoveState
from librarian.services.domain_homes import DomainHome

__all__ = [
    "APPROVAL_ANNOTATION",
    "FINISHED",
    "IN_FLIGHT",
    "Approval",
    "analysis_due",
    "append_history",
    "moves_from_proposal",
    "moves_to_start",
    "parse_approval",
    "policy_phase",
]

APPROVAL_ACTIONS = ("approve", "refresh", "stop")

HISTORY_LIMIT = 20


@dataclass(frozen=True)
class Approval:
    """What the user asked with the annotation; ``error`` when the value is unknown."""

    action: str | None
    error: str | None = None


def parse_approval(annotations: Mapping[str, str] | None) -> Approval:
    value = (annotations or {}).get(APPROVAL_ANNOTATION)
    if value is None:
        return Approval(None)
    action = value.strip().lower()
    if action in APPROVAL_ACTIONS:
        return Approval(action)
    return Approval(
        None,
        f"annotation {APPROVAL_ANNOTATION}={value!r} is unknown; accepted: "
        f"{', '.join(APPROVAL_ACTIONS)}",
    )


def analysis_due(
    status: Mapping[str, Any],
    *,
    generation: int | None,
    interval_s: float,
    now: datetime,
    refresh: bool = False,
    retry_s: float = 30.0,
) -> bool:
    """A new generation, a refresh request, the interval passed — or a failed try to retry.

    A failed analysis (a load source or cluster unreachable) is retried after
    ``min(interval, retry_s)``, not at every tick.
    """
    if refresh or status.get("observedGeneration") != generation:
        return True
    if status.get("analysisFailed"):
        attempt = parse_timestamp(status.get("lastAttempt"))
        return attempt is None or (now - attempt).total_seconds() >= min(interval_s, retry_s)
    last = parse_timestamp(status.get("lastAnalysis"))
    return last is None or (now - last).total_seconds() >= interval_s


def moves_from_proposal(
    proposal: Mapping[str, Any], homes: Mapping[str, Mapping[str, Any]], *, now: datetime
) -> list[MoveRecord]:
    """The executable moves of a proposal as move records in state ``Pending``.

    ``homes`` maps a domain id to where it is served now (``cluster``,
    ``collection``, ``specialization``, ``owned`` when this policy created
    that specialization); a move whose domain is no longer where
    the proposal assumed is left out (the next analysis re-plans it).
    """
    records = []
    for move in proposal.get("moves") or []:
        if not move.get("executable", True) or not move.get("target"):
            continue
        home = homes.get(move["domain"])
        if home is None or home.get("cluster") != move["source"]:
            continue
        records.append(
            MoveRecord(
                domain=str(move["domain"]),
                source=str(move["source"]),
                target=str(move["target"]),
                points=int(move.get("points", 0)),
                wave=int(move.get("wave", 0)),
                reason=str(move.get("reason", "")),
                proposal=proposal.get("id"),
                old_home=DomainHome(str(home["cluster"]), str(home["collection"])),
                old_specialization=home.get("specialization"),
                old_specialization_owned=bool(home.get("owned")),
                created_at=timestamp(now),
            )
        )
    return records


def moves_to_start(moves: Sequence[MoveRecord], max_concurrent: int) -> list[int]:
    """Indexes of pending moves that may start now, lowest wave first.

    Never lets more than ``max_concurrent`` moves be in flight, and a later
    wave starts only when no move of an earlier wave is pending or in flight.
    """
    busy = sum(1 for m in moves if m.state.in_flight)
    open_waves = [m.wave for m in moves if m.state.open]
    if not open_waves:
        return []
    wave = min(open_waves)
    chosen: list[int] = []
    for index, move in enumerate(moves):
        if busy + len(chosen) >= max(1, max_concurrent):
            break
        if move.state == MoveState.PENDING and move.wave == wave:
            chosen.append(index)
    return chosen


def append_history(
    history: Sequence[Mapping[str, Any]],
    finished: Sequence[MoveRecord],
    *,
    limit: int = HISTORY_LIMIT,
) -> list[dict[str, Any]]:
    """The newest ``limit`` finished moves (status form), newest last."""
    return [dict(h) for h in [*history, *(m.to_status() for m in finished)]][-limit:]


def policy_phase(
    *,
    mode: str,
    moves: Sequence[MoveRecord],
    proposal: Mapping[str, Any] | None,
    balanced: bool,
    stopped: bool,
) -> str:
    """The human summary: Executing, AwaitingApproval, ProposalReady, Balanced or Observing."""
    if any(m.state.open for m in moves):
        return "Executing"
    executable = bool(proposal) and any(
        m.get("executable", True) and m.get("target") for m in (proposal or {}).get("moves") or []
    )
    if executable and not stopped:
        if mode == "approve":
            return "AwaitingApproval"
        return "ProposalReady"
    return "Balanced" if balanced else "Observing"
