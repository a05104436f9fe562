"""Moving one domain's points to its specialized collection: copy, catch up, verify, clean up.

Why this exists: a domain move must never lose or duplicate a point, whatever
moment the process dies at. The safe order is the one data-moving systems use:

1. **copy** — a filtered scroll of the source (points labelled with the domain)
   in id order; each round reads ``workers`` pages and upserts them in
   parallel, and only then advances the checkpoint. A restart resumes from
   the last checkpoint and re-upserts at most one round: upserts by id are
   idempotent, so nothing is duplicated.
2. **catch up** — an id-level diff (ids only, no vectors) copies points that
   landed behind the scroll while it ran and removes from the target what the
   source deleted meanwhile. Updates to already-copied points are caught by
   the sampled verification only.
3. **verify** — counts equal, and a deterministic sample of ids compared
   vector- and payload-exact.
4. **clean up** (optional, after ``grace_s``) — delete from the source only
   ids that are verified present in the target; until verification passed, the
   source is never written to.

The checkpoint lives in a small collection on the target cluster, so a
restarted Job on another node resumes where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY
from librarian.services.labeling import domain_filter
from librarian.storage.errors import QdrantError
from librarian.storage.port import CollectionSpec, PointId, PointRecord, QdrantPort

Phase = Literal["copying", "catching_up", "verifying", "verified", "cleaning", "done"]
CHECKPOINT_COLLECTION = "librarian-migrations"
_NAMESPACE = uuid.UUID("0b5e4f0e-2c41-4c59-8a0a-7d0c3b1f6e21")


class MigrationFailed(QdrantError):
    """Verification found a difference; nothing was deleted."""


class _CountsDiffer(Exception):
    """Source and target counts differ at verification: catch up again."""


@dataclass(frozen=True)
class MigrationPlan:
    """What to move and how."""

    name: str  # unique per migration, e.g. the ClusterSpecialization's namespace/name
    source_collection: str
    target_collection: str
    domain_id: str
    label_key: str = LABEL_KEY
    batch_size: int = 1000
    workers: int = 4
    verify: bool = True
    verify_sample: int = 256
    cleanup: bool = False
    grace_s: float = 0.0


@dataclass(frozen=True)
class Checkpoint:
    """Where a migration stands (stored in the target cluster)."""

    phase: Phase = "copying"
    offset: PointId | None = None
    copied: int = 0
    source_count: int = 0
    target_count: int = 0
    verified_sample: int = 0
    verified_at: float | None = None
    removed_from_source: int = 0


@dataclass(frozen=True)
class MigrationReport:
    """The outcome, as reported into the ClusterSpecialization status."""

    phase: Phase
    copied: int
    source_count: int
    target_count: int
    verified: bool
    verified_sample: int
    removed_from_source: int
    cleanup_due_in_s: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


ProgressCallback = Callable[[str, int, int], None]


class CheckpointStore:
    """Checkpoints as points of a tiny collection (vector size 1) on a cluster."""

    def __init__(self, port: QdrantPort, collection: str = CHECKPOINT_COLLECTION) -> None:
        self._port = port
        self._collection = collection

    def _id(self, name: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, name))

    def load(self, name: str) -> Checkpoint | None:
        if not self._port.collection_exists(self._collection):
            return None
        found = self._port.retrieve(self._collection, [self._id(name)], with_vectors=False)
        if not found:
            return None
        return Checkpoint(**json.loads(found[0].payload["checkpoint"]))

    def save(self, name: str, checkpoint: Checkpoint) -> None:
        if not self._port.collection_exists(self._collection):
            self._port.create_collection(self._collection, CollectionSpec(vector_size=1))
        self._port.upsert(
            self._collection,
            [
                PointRecord(
                    id=self._id(name),
                    vector=[1.0],
                    payload={"migration": name, "checkpoint": json.dumps(asdict(checkpoint))},
                )
            ],
        )

    def clear(self, name: str) -> None:
        if self._port.collection_exists(self._collection):
            self._port.delete_points(self._collection, ids=[self._id(name)])


def same_point(a: PointRecord, b: PointRecord) -> bool:
    """Same id, payload exactly equal, vectors equal within float32 round-trip precision."""
    if a.id != b.id or a.payload != b.payload:
        return False
    if a.vector is None or b.vector is None:
        return a.vector == b.vector
    return len(a.vector) == len(b.vector) and bool(
        np.allclose(a.vector, b.vector, rtol=0, atol=1e-6)
    )


def migrate(
    source: QdrantPort,
    target: QdrantPort,
    plan: MigrationPlan,
    *,
    checkpoints: CheckpointStore | None = None,
    now: Callable[[], float] | None = None,
    on_progress: ProgressCallback | None = None,
) -> MigrationReport:
    """Run (or resume) ``plan``; returns where it ended. Safe to call again at any time."""
    store = checkpoints or CheckpointStore(target)
    clock = now or (lambda: 0.0)
    selector = domain_filter(plan.domain_id, plan.label_key)
    state = store.load(plan.name) or Checkpoint()
    notes: list[str] = []

    def save(new: Checkpoint) -> Checkpoint:
        store.save(plan.name, new)
        return new

    target_ids: set[PointId] | None = None
    if state.phase == "copying":
        fresh = state.offset is None and state.copied == 0
        if fresh and target.count(plan.target_collection) == 0:
            target_ids = set()  # the target holds exactly what this run writes
        state = _copy(source, target, plan, selector, state, save, on_progress, target_ids)
        state = save(replace(state, phase="catching_up"))
    state = _catch_up_and_verify(
        source, target, plan, selector, state, save, clock, target_ids, notes
    )
    if state.phase == "verified" and plan.cleanup:
        verified_at = state.verified_at if state.verified_at is not None else clock()
        due = verified_at + plan.grace_s - clock()
        if due > 0:
            return _report(state, plan, cleanup_due_in_s=due, notes=notes)
        state = save(replace(state, phase="cleaning"))
    if state.phase == "cleaning":
        removed = _clean_source(source, target, plan, selector, on_progress)
        state = save(
            replace(state, phase="done", removed_from_source=state.removed_from_source + removed)
        )
    return _report(state, plan, notes=notes)


def _catch_up_and_verify(
    source: QdrantPort,
    target: QdrantPort,
    plan: MigrationPlan,
    selector: models.Filter,
    state: Checkpoint,
    save: Callable[[Checkpoint], Checkpoint],
    clock: Callable[[], float],
    target_ids: set[PointId] | None,
    notes: list[str],
) -> Checkpoint:
    """Catch up with writes made during the copy, then verify; writes racing it send it back.

    Raises :class:`MigrationFailed` when three rounds could not settle.
    """
    known_ids: set[PointId] | None = None
    for _attempt in range(3):
        if state.phase == "catching_up":
            fixed, known_ids = _catch_up(source, target, plan, selector, target_ids)
            target_ids = None  # only valid right after the copy
            state = replace(state, source_count=len(known_ids))
            if fixed:
                notes.append(f"caught up {fixed} point(s) written or deleted during the copy")
            state = save(replace(state, phase="verifying" if plan.verify else "verified"))
        if state.phase != "verifying":
            break
        try:
            state = save(_verify(source, target, plan, selector, state, clock, known_ids))
        except _CountsDiffer:
            state = save(replace(state, phase="catching_up"))
    if state.phase in ("catching_up", "verifying"):
        raise MigrationFailed(
            target.cluster,
            "the source keeps changing faster than the move can catch up; pause writes to "
            f"domain {plan.domain_id!r} or retry later; the source was not touched",
            collection=plan.target_collection,
        )
    return state


def _report(
    state: Checkpoint,
    plan: MigrationPlan,
    *,
    cleanup_due_in_s: float | None = None,
    notes: Sequence[str] = (),
) -> MigrationReport:
    verified = state.phase in ("verified", "cleaning", "done") and plan.verify
    return MigrationReport(
        phase=state.phase,
        copied=state.copied,
        source_count=state.source_count,
        target_count=state.target_count,
        verified=verified,
        verified_sample=state.verified_sample,
        removed_from_source=state.removed_from_source,
        cleanup_due_in_s=cleanup_due_in_s,
        notes=tuple(notes),
    )


def _copy(
    source: QdrantPort,
    target: QdrantPort,
    plan: MigrationPlan,
    selector: models.Filter,
    state: Checkpoint,
    save: Callable[[Checkpoint], Checkpoint],
    on_progress: ProgressCallback | None,
    written: set[PointId] | None = None,
) -> Checkpoint:
    """The copy; ``written`` (when given) collects the ids upserted in this run."""
    total = state.source_count
    if not total and on_progress is not None:  # the total only serves progress reports
        total = source.count(plan.source_collection, count_filter=selector)
    offset, copied = state.offset, state.copied
    workers = max(1, plan.workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while True:
            pages: list[list[PointRecord]] = []
            next_offset = offset
            for _ in range(workers):
                page, next_offset = source.scroll(
                    plan.source_collection,
                    limit=plan.batch_size,
                    offset=next_offset,
                    scroll_filter=selector,
                    with_vectors=True,
                    with_payload=True,
                )
                if page:
                    pages.append(page)
                if next_offset is None:
                    break
            for result in pool.map(lambda p: target.upsert(plan.target_collection, p), pages):
                del result
            copied += sum(len(p) for p in pages)
            if written is not None:
                written.update(point.id for page in pages for point in page)
            offset = next_offset
            if offset is None:
                return replace(state, offset=None, copied=copied, source_count=total)
            state = save(replace(state, offset=offset, copied=copied, source_count=total))
            if on_progress:
                on_progress("copying", copied, total)


def _ids(port: QdrantPort, collection: str, flt: models.Filter | None) -> set[PointId]:
    ids: set[PointId] = set()
    offset: PointId | None = None
    while True:
        page, offset = port.scroll(
            collection,
            limit=2000,
            offset=offset,
            scroll_filter=flt,
            with_vectors=False,
            with_payload=False,
        )
        ids.update(p.id for p in page)
        if offset is None:
            return ids


def _catch_up(
    source: QdrantPort,
    target: QdrantPort,
    plan: MigrationPlan,
    selector: models.Filter,
    target_ids: set[PointId] | None = None,
) -> tuple[int, set[PointId]]:
    """Id-level diff (ids only, no vectors): copy what is missing, drop what the source lost.

    Returns how many points were fixed and the source's ids of the domain.
    """
    in_source = _ids(source, plan.source_collection, selector)
    in_target = target_ids if target_ids is not None else _ids(target, plan.target_collection, None)
    missing = sorted(in_source - in_target, key=str)
    for start in range(0, len(missing), plan.batch_size):
        batch = source.retrieve(plan.source_collection, missing[start : start + plan.batch_size])
        target.upsert(plan.target_collection, batch)
    extra = sorted(in_target - in_source, key=str)
    if extra:
        target.delete_points(plan.target_collection, ids=extra)
    return len(missing) + len(extra), in_source


def _sample_ids(ids: Sequence[PointId], size: int, name: str) -> list[PointId]:
    ranked = sorted(ids, key=lambda i: hashlib.sha1(f"{name}/{i}".encode()).hexdigest())
    return ranked[:size]


def _verify(
    source: QdrantPort,
    target: QdrantPort,
    plan: MigrationPlan,
    selector: models.Filter,
    state: Checkpoint,
    clock: Callable[[], float],
    known_ids: set[PointId] | None = None,
) -> Checkpoint:
    # Ids listed by the catch-up moments ago stand for the source's count (one scan less).
    source_count = (
        len(known_ids)
        if known_ids is not None
        else source.count(plan.source_collection, count_filter=selector)
    )
    target_count = target.count(plan.target_collection)
    if source_count != target_count:
        raise _CountsDiffer()
    universe = (
        known_ids if known_ids is not None else _ids(source, plan.source_collection, selector)
    )
    sample = _sample_ids(
        sorted(universe, key=str),
        plan.verify_sample,
        plan.name,
    )
    originals = {p.id: p for p in source.retrieve(plan.source_collection, sample)}
    copies = {p.id: p for p in target.retrieve(plan.target_collection, sample)}
    different = [i for i in sample if i not in copies or not same_point(originals[i], copies[i])]
    if different:
        raise MigrationFailed(
            target.cluster,
            f"verification failed: {len(different)} of {len(sample)} sampled points differ "
            f"(e.g. id {different[0]!r}); the source was not touched",
            collection=plan.target_collection,
        )
    return replace(
        state,
        phase="verified",
        source_count=source_count,
        target_count=target_count,
        verified_sample=len(sample),
        verified_at=clock(),
    )


def _clean_source(
    source: QdrantPort,
    target: QdrantPort,
    plan: MigrationPlan,
    selector: models.Filter,
    on_progress: ProgressCallback | None,
) -> int:
    removed = 0
    offset: PointId | None = None
    while True:
        page, offset = source.scroll(
            plan.source_collection,
            limit=plan.batch_size,
            offset=offset,
            scroll_filter=selector,
            with_vectors=False,
            with_payload=False,
        )
        ids = [p.id for p in page]
        present = {
            p.id
            for p in target.retrieve(
                plan.target_collection, ids, with_vectors=False, with_payload=False
            )
        }
        safe = [i for i in ids if i in present]  # never delete what the target does not hold
        if safe:
            source.delete_points(plan.source_collection, ids=safe)
            removed += len(safe)
        if on_progress:
            on_progress("cleaning", removed, removed)
        if offset is None:
            return removed
