"""Versioned points: the filters that make writes conditional, and the keys every write stamps.

Why this exists: the router, migrations and labeling all decide what to do with
a point by its version (:data:`~librarian.contracts.payload.POINT_VERSION_KEY`)
and whether it is a tombstone (:data:`~librarian.contracts.payload.TOMBSTONE_KEY`).
The rules are few and must be the same everywhere:

- a write of version ``v`` replaces a stored point only where the stored version
  is older (or absent: points written around the library count as version 0);
- a cleanup removes a copy only where its version is older than the write that
  superseded it;
- a tombstone is a point whose payload holds only its label, its version and the
  tombstone flag; reads never return it, copies carry it like any other point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qdrant_client.http import models

from librarian.contracts.payload import (
    LABEL_KEY,
    MERGED_KEY,
    POINT_VERSION_KEY,
    RESERVED_KEYS,
    TOMBSTONE_KEY,
)
from librarian.storage.port import PointId, QdrantPort

__all__ = [
    "and_filters",
    "ensure_version_index",
    "ids_filter",
    "is_merged",
    "is_tombstone",
    "live_filter",
    "older_than",
    "reserved_in",
    "stamped",
    "tombstone_filter",
    "tombstone_payload",
    "user_payload",
    "version_at_most",
    "version_is",
    "version_of",
]


def version_of(payload: Mapping[str, Any] | None) -> int:
    """The point version a payload carries (0 for a point written around the library)."""
    value = (payload or {}).get(POINT_VERSION_KEY)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def is_tombstone(payload: Mapping[str, Any] | None) -> bool:
    return (payload or {}).get(TOMBSTONE_KEY) is True


def user_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The payload without the library's reserved keys (what a client wrote)."""
    return {k: v for k, v in (payload or {}).items() if k not in RESERVED_KEYS}


def reserved_in(payload: Mapping[str, Any] | None) -> list[str]:
    """The reserved keys a client's payload tries to set (sorted)."""
    return sorted(set(payload or {}) & set(RESERVED_KEYS))


def stamped(
    payload: Mapping[str, Any], *, version: int, label: str | None, merged: bool = False
) -> dict[str, Any]:
    """``payload`` with the version (and the domain label, when there is one) of a write;
    ``merged`` marks a change made in place on the copy it found."""
    result = dict(payload)
    result[POINT_VERSION_KEY] = version
    if label is not None:
        result[LABEL_KEY] = label
    if merged:
        result[MERGED_KEY] = True
    return result


def is_merged(payload: Mapping[str, Any] | None) -> bool:
    return (payload or {}).get(MERGED_KEY) is True


def tombstone_payload(*, version: int, label: str | None) -> dict[str, Any]:
    """The whole payload of a tombstone: nothing of what the client wrote survives a delete."""
    return stamped({TOMBSTONE_KEY: True}, version=version, label=label)


def older_than(version: int) -> models.Filter:
    """Points whose stored version is older than ``version`` (or that have none)."""
    return models.Filter(
        should=[
            models.FieldCondition(key=POINT_VERSION_KEY, range=models.Range(lt=version)),
            models.IsEmptyCondition(is_empty=models.PayloadField(key=POINT_VERSION_KEY)),
        ]
    )


def version_at_most(version: int) -> models.Filter:
    """Points whose stored version is ``version`` or older (or that have none)."""
    return models.Filter(
        should=[
            models.FieldCondition(key=POINT_VERSION_KEY, range=models.Range(lte=version)),
            models.IsEmptyCondition(is_empty=models.PayloadField(key=POINT_VERSION_KEY)),
        ]
    )


def version_is(version: int) -> models.Filter:
    """Points whose stored version is exactly ``version``."""
    return models.Filter(
        must=[models.FieldCondition(key=POINT_VERSION_KEY, match=models.MatchValue(value=version))]
    )


def ids_filter(ids: Sequence[PointId]) -> models.Filter:
    return models.Filter(must=[models.HasIdCondition(has_id=list(ids))])


# Tombstones are told by the presence of their key, not its value: both engines agree on
# emptiness, while matching a boolean value is not supported everywhere.
_NO_TOMBSTONE_KEY = models.IsEmptyCondition(is_empty=models.PayloadField(key=TOMBSTONE_KEY))


def tombstone_filter() -> models.Filter:
    """Tombstones only."""
    return models.Filter(must_not=[_NO_TOMBSTONE_KEY])


def live_filter() -> models.Filter:
    """Everything but tombstones."""
    return models.Filter(must=[_NO_TOMBSTONE_KEY])


def and_filters(*filters: models.Filter | None) -> models.Filter | None:
    """All of ``filters`` (``None`` ones ignored); ``None`` when none is left."""
    present = [f for f in filters if f is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return models.Filter(must=list(present))


def ensure_version_index(port: QdrantPort, collection: str) -> None:
    """An integer index on the point version, made when the collection has none: the router
    reads a home's newest version with an ``order_by`` scroll, which needs one."""
    schema = port.collection_info(collection).payload_schema
    if schema.get(POINT_VERSION_KEY) != "integer":
        port.create_payload_index(collection, POINT_VERSION_KEY, models.PayloadSchemaType.INTEGER)
