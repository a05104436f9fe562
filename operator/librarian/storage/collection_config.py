"""Applying a tuned collection config to a cluster: create, patch, or report what cannot be.

Why this exists: a specialization's config must actually reach the target.
A new collection is created with it; an existing one gets its mutable fields
patched; a change to an immutable field (vector size, distance, shard number)
is never silently ignored — it is reported as needing a new collection and a
migration, and nothing is changed. Creating a collection that several
processes may create at once (the operator's record collections, shared by
every DomainMap on a cluster) treats "it already exists" as done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from librarian.core.collection_spec import ConfigChange, diff_specs
from librarian.storage.errors import CollectionExists, InvalidRequest
from librarian.storage.port import CollectionSpec, QdrantPort

Action = Literal["created", "updated", "unchanged", "needs_migration"]


@dataclass(frozen=True)
class ApplyOutcome:
    """What applying the config did (or, for immutable changes, refused to do)."""

    action: Action
    changes: tuple[ConfigChange, ...] = ()
    immutable: tuple[ConfigChange, ...] = ()

    def describe(self) -> str:
        if self.action == "needs_migration":
            fields = ", ".join(f"{c.field} {c.current} -> {c.desired}" for c in self.immutable)
            return f"immutable fields differ ({fields}): needs a new collection and a migration"
        if self.action == "updated":
            return "patched " + ", ".join(c.field for c in self.changes)
        return self.action


def create_if_missing(port: QdrantPort, collection: str, spec: CollectionSpec) -> bool:
    """Create ``collection`` unless it exists; True when this call created it.

    Another process creating it at the same moment is not an error: the
    collection exists, which is what the caller wanted.
    """
    if port.collection_exists(collection):
        return False
    try:
        port.create_collection(collection, spec)
    except CollectionExists:
        return False
    return True


def apply_collection_config(
    port: QdrantPort, collection: str, desired: CollectionSpec
) -> ApplyOutcome:
    """Create ``collection`` with ``desired``, or bring an existing one to it where possible."""
    if create_if_missing(port, collection, desired):
        return ApplyOutcome("created")
    current = port.collection_info(collection).spec
    if current is None:
        raise InvalidRequest(
            port.cluster, "the collection's configuration cannot be read", collection=collection
        )
    mutable, immutable = diff_specs(current, desired)
    if immutable:
        return ApplyOutcome("needs_migration", tuple(mutable), tuple(immutable))
    if not mutable:
        return ApplyOutcome("unchanged")
    port.update_collection(collection, desired)
    return ApplyOutcome("updated", tuple(mutable))
