"""A RebalancePolicy's bookkeeping as pure functions: approvals, moves in flight, history, phase.

Why this exists: the handlers must stay thin and the rules that protect the
data must be testable without Kubernetes — when an analysis is due, what an
approval annotation means, which planned moves may start now (never more in
flight than allowed, waves in order), how a move's record advances, how much
history is kept, and the human phase. No clock here: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from librarian.contracts.metadata import APPROVAL_ANNOTATION
from librarian.operator.conditions import parse_timestamp, timestamp

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
    "update_move",
]

APPROVAL_ACTIONS = ("approve", "refresh", "stop")

IN_FLIGHT = ("Copying", "Switching", "Cleaning")
"""A move in one of these states holds a migration slot."""
FINISHED = ("Done", "RolledBack", "Cancelled")

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
) -> list[dict[str, Any]]:
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
            {
                "domain": move["domain"],
                "source": move["source"],
                "target": move["target"],
                "points": int(move.get("points", 0)),
                "wave": int(move.get("wave", 0)),
                "reason": move.get("reason", ""),
                "proposal": proposal.get("id"),
                "oldHome": {"cluster": home["cluster"], "collection": home["collection"]},
                "oldSpecialization": home.get("specialization"),
                "oldSpecializationOwned": bool(home.get("owned")),
                "state": "Pending",
                "createdAt": timestamp(now),
            }
        )
    return records


def moves_to_start(moves: Sequence[Mapping[str, Any]], max_concurrent: int) -> list[int]:
    """Indexes of pending moves that may start now, lowest wave first.

    Never lets more than ``max_concurrent`` moves be in flight, and a later
    wave starts only when no move of an earlier wave is pending or in flight.
    """
    busy = sum(1 for m in moves if m.get("state") in IN_FLIGHT)
    open_waves = [int(m.get("wave", 0)) for m in moves if m.get("state") in ("Pending", *IN_FLIGHT)]
    if not open_waves:
        return []
    wave = min(open_waves)
    chosen: list[int] = []
    for index, move in enumerate(moves):
        if busy + len(chosen) >= max(1, max_concurrent):
            break
        if move.get("state") == "Pending" and int(move.get("wave", 0)) == wave:
            chosen.append(index)
    return chosen


def update_move(
    move: Mapping[str, Any], state: str, message: str, *, now: datetime, **fields: Any
) -> dict[str, Any]:
    """A new record with ``state`` and ``message``; the time of the change is kept per state."""
    updated = {**move, **fields, "state": state, "message": message}
    stamp = timestamp(now)
    key = {
        "Copying": "startedAt",
        "Switching": "switchedAt",
        "Cleaning": "cleaningAt",
    }.get(state, "finishedAt")
    if move.get("state") != state:
        updated[key] = stamp
    return updated


def append_history(
    history: Sequence[Mapping[str, Any]],
    finished: Sequence[Mapping[str, Any]],
    *,
    limit: int = HISTORY_LIMIT,
) -> list[dict[str, Any]]:
    """The newest ``limit`` finished moves, newest last."""
    return [dict(h) for h in [*history, *finished]][-limit:]


def policy_phase(
    *,
    mode: str,
    moves: Sequence[Mapping[str, Any]],
    proposal: Mapping[str, Any] | None,
    balanced: bool,
    stopped: bool,
) -> str:
    """The human summary: Executing, AwaitingApproval, ProposalReady, Balanced or Observing."""
    if any(m.get("state") in ("Pending", *IN_FLIGHT) for m in moves):
        return "Executing"
    executable = bool(proposal) and any(
        m.get("executable", True) and m.get("target") for m in (proposal or {}).get("moves") or []
    )
    if executable and not stopped:
        if mode == "approve":
            return "AwaitingApproval"
        return "ProposalReady"
    return "Balanced" if balanced else "Observing"
