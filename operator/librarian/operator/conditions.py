"""Status conditions in the Kubernetes API conventions, as small pure functions.

Why this exists: every custom resource reports typed conditions (``type``,
``status``, ``reason``, ``message``, ``lastTransitionTime``,
``observedGeneration``) plus a human ``phase``. Computing them in one place
keeps handlers thin and the rules consistent: ``lastTransitionTime`` moves only
when a condition's status flips, and a status patch is sent only when
something actually changed. No clock here: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "Condition",
    "ConditionStatus",
    "get_condition",
    "is_true",
    "parse_timestamp",
    "set_condition",
    "status_changed",
    "timestamp",
]

ConditionStatus = Literal["True", "False", "Unknown"]
Condition = dict[str, Any]


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as the API server writes it."""
    return now.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    observed_generation: int | None,
    now: datetime,
) -> list[Condition]:
    """A new list with condition ``type_`` set; others are kept as they are."""
    if not reason or not reason[0].isupper() or not reason.isalnum():
        raise ValueError(f"condition reason must be CamelCase, got {reason!r}")
    result: list[Condition] = []
    found = False
    for existing in conditions or ():
        if existing.get("type") != type_:
            result.append(dict(existing))
            continue
        found = True
        moved = existing.get("status") != status
        result.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": timestamp(now)
                if moved or not existing.get("lastTransitionTime")
                else existing["lastTransitionTime"],
                "observedGeneration": observed_generation,
            }
        )
    if not found:
        result.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": timestamp(now),
                "observedGeneration": observed_generation,
            }
        )
    return sorted(result, key=lambda c: (c["type"] != "Ready", str(c["type"])))


def get_condition(
    conditions: Sequence[Mapping[str, Any]] | None, type_: str
) -> Mapping[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def status_changed(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """True when patching ``desired`` onto ``current`` would change anything."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())
