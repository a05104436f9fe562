"""One rebalancing move's record: its state, the transitions allowed, and its status form.

Why this exists: a move is a data move, and its record in the policy's
status is what a restarted operator continues from. The states and the order
they follow (copy, switch reads, clean the old home — or roll back, or be
cancelled before it starts) are the safety argument of a move, so they are a
typed state machine here: a table of allowed transitions, and an illegal one
raises instead of writing a record that skips a step. The record reads and
writes the status with the camelCase field names the policy's status has
always had, so a status written before stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from librarian.operator.conditions import parse_timestamp, timestamp
from librarian.services.domain_homes import DomainHome

__all__ = [
    "FINISHED",
    "IN_FLIGHT",
    "OPEN",
    "TRANSITIONS",
    "IllegalTransition",
    "InvalidMoveRecord",
    "MoveRecord",
    "MoveState",
]


class MoveState(StrEnum):
    """Where a move is; the values are what the status shows."""

    PENDING = "Pending"
    COPYING = "Copying"
    SWITCHING = "Switching"
    CLEANING = "Cleaning"
    DONE = "Done"
    ROLLED_BACK = "RolledBack"
    CANCELLED = "Cancelled"

    @property
    def in_flight(self) -> bool:
        """Holds a migration slot."""
        return self in IN_FLIGHT

    @property
    def open(self) -> bool:
        """Not finished: waiting to start or in flight."""
        return self in OPEN

    @property
    def finished(self) -> bool:
        return self in FINISHED


IN_FLIGHT = frozenset({MoveState.COPYING, MoveState.SWITCHING, MoveState.CLEANING})
"""A move in one of these states holds a migration slot."""
OPEN = IN_FLIGHT | {MoveState.PENDING}
FINISHED = frozenset({MoveState.DONE, MoveState.ROLLED_BACK, MoveState.CANCELLED})

TRANSITIONS: Mapping[MoveState, frozenset[MoveState]] = {
    # Not started: it starts (a ClusterSpecialization copies the domain) or the user stops it.
    MoveState.PENDING: frozenset({MoveState.COPYING, MoveState.CANCELLED}),
    # Copying: progress, then verified (reads switch) or failed (rolled back, nothing lost).
    MoveState.COPYING: frozenset({MoveState.COPYING, MoveState.SWITCHING, MoveState.ROLLED_BACK}),
    # Switched: after the grace period the old home is cleaned; no way back once reads moved.
    MoveState.SWITCHING: frozenset({MoveState.CLEANING}),
    # Cleaning: waits until the new home is verified to hold the domain, then done.
    MoveState.CLEANING: frozenset({MoveState.CLEANING, MoveState.DONE}),
    MoveState.DONE: frozenset(),
    MoveState.ROLLED_BACK: frozenset(),
    MoveState.CANCELLED: frozenset(),
}
"""The allowed transitions: a state not listed for the current one is illegal."""

_STAMP = {
    MoveState.COPYING: "started_at",
    MoveState.SWITCHING: "switched_at",
    MoveState.CLEANING: "cleaning_at",
}
"""Which time a state records when it is entered (a finished state records ``finished_at``)."""


class IllegalTransition(ValueError):
    """A move was asked to go where its state machine does not lead."""

    def __init__(self, move: MoveRecord, to: MoveState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[move.state])) or "none: it is finished"
        super().__init__(
            f"move of domain {move.domain} cannot go from {move.state} to {to} (allowed: {allowed})"
        )
        self.state, self.to = move.state, to


class InvalidMoveRecord(ValueError):
    """A move record in the status cannot be read."""


@dataclass(frozen=True)
class MoveRecord:
    """A move of ``domain`` from cluster ``source`` to cluster ``target``, and where it is."""

    domain: str
    source: str
    target: str
    old_home: DomainHome
    state: MoveState = MoveState.PENDING
    points: int = 0
    wave: int = 0
    reason: str = ""
    proposal: str | None = None
    old_specialization: str | None = None
    old_specialization_owned: bool = False
    message: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    switched_at: str | None = None
    cleaning_at: str | None = None
    finished_at: str | None = None
    specialization: str | None = None  # the ClusterSpecialization this move created
    new_home: DomainHome | None = None
    removed_from_old_home: int | None = None

    def to(self, state: MoveState, message: str, *, now: datetime, **changes: Any) -> MoveRecord:
        """The record in ``state`` with ``message``; raises :class:`IllegalTransition`.

        Entering a state stamps its time once; staying in a state (progress)
        keeps the time it was entered.
        """
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(self, state)
        if state != self.state:
            changes[_STAMP.get(state, "finished_at")] = timestamp(now)
        return replace(self, state=state, message=message, **changes)

    def noted(self, message: str) -> MoveRecord:
        """The same state with a new message (e.g. waiting for the API to answer)."""
        return replace(self, message=message)

    def with_new_home(self, home: DomainHome) -> MoveRecord:
        return replace(self, new_home=home)

    @property
    def switched_time(self) -> datetime | None:
        return parse_timestamp(self.switched_at)

    def to_status(self) -> dict[str, Any]:
        """The status form (camelCase, unset fields left out)."""
        record: dict[str, Any] = {
            "domain": self.domain,
            "source": self.source,
            "target": self.target,
            "points": self.points,
            "wave": self.wave,
            "reason": self.reason,
            "proposal": self.proposal,
            "oldHome": _home(self.old_home),
            "oldSpecialization": self.old_specialization,
            "oldSpecializationOwned": self.old_specialization_owned,
            "state": str(self.state),
            "message": self.message,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "switchedAt": self.switched_at,
            "cleaningAt": self.cleaning_at,
            "finishedAt": self.finished_at,
            "specialization": self.specialization,
            "newHome": _home(self.new_home) if self.new_home else None,
            "removedFromOldHome": self.removed_from_old_home,
        }
        return {key: value for key, value in record.items() if value is not None}

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> MoveRecord:
        """Read a record the status holds; raises :class:`InvalidMoveRecord` naming the problem."""
        try:
            state = MoveState(raw.get("state", MoveState.PENDING))
        except ValueError:
            raise InvalidMoveRecord(
                f"move of domain {raw.get('domain')!r} has an unknown state {raw.get('state')!r}"
            ) from None
        try:
            return cls(
                domain=str(raw["domain"]),
                source=str(raw["source"]),
                target=str(raw["target"]),
                old_home=_read_home(raw["oldHome"]),
                state=state,
                points=int(raw.get("points") or 0),
                wave=int(raw.get("wave") or 0),
                reason=str(raw.get("reason") or ""),
                proposal=_text(raw.get("proposal")),
                old_specialization=_text(raw.get("oldSpecialization")),
                old_specialization_owned=bool(raw.get("oldSpecializationOwned", False)),
                message=_text(raw.get("message")),
                created_at=_text(raw.get("createdAt")),
                started_at=_text(raw.get("startedAt")),
                switched_at=_text(raw.get("switchedAt")),
                cleaning_at=_text(raw.get("cleaningAt")),
                finished_at=_text(raw.get("finishedAt")),
                specialization=_text(raw.get("specialization")),
                new_home=_read_home(raw["newHome"]) if raw.get("newHome") else None,
                removed_from_old_home=(
                    int(raw["removedFromOldHome"])
                    if raw.get("removedFromOldHome") is not None
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidMoveRecord(
                f"move record {dict(raw)!r} cannot be read: {type(error).__name__} {error}"
            ) from None


def _home(home: DomainHome) -> dict[str, str]:
    return {"cluster": home.cluster, "collection": home.collection}


def _read_home(raw: Mapping[str, Any]) -> DomainHome:
    return DomainHome(str(raw["cluster"]), str(raw["collection"]))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
