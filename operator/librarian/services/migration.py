"""Moving one domain's points to a new home: copy, catch up and verify by version, clean up.

Why this exists: a domain move must never lose a point, bring back a deleted
one, or overwrite a newer write with an older copy, whatever moment the
process dies at and while routers keep writing. Before the migration starts,
the operator makes every router dual-write the domain (each write goes to the
old home, the source, and to the new one, the target, conditionally on
versions; deletes leave tombstones in both) and hands the migration the
*fence version* F: every write made since has a version >= F. Then:

1. **copy** — the source's selection (the points labelled with the domain,
   tombstones included; for a dedicated source also the points with no label,
   which are stamped with it) is scrolled in id order, the next page read
   while the previous ones are written (in turn where the ports' calls cannot
   overlap), and upserted into the target only over copies older than F, so a
   point the routers already dual-wrote is never overwritten. Without F
   (standalone use) the copy is unconditional. The checkpoint advances past
   written pages (saved at most every ``checkpoint_every_s``); a restart
   resumes there and rewrites a few pages at most, which is idempotent.
2. **catch up** — both homes are listed by (id, version, tombstone) (no
   vectors) and compared (:mod:`librarian.services.home_sync`): points newer in
   the source are copied over their older copies; a point the target holds from
   before F that the source no longer holds was deleted there since and is
   removed where it is still that version; a newer target point is a dual
   write in flight and left alone.
3. **verify** — every id, not a sample, by version: the two maps must be equal
   (a tombstone equals an absent point; the catch-up's own pass is the
   verification when it found nothing to do); contents (vector and payload)
   are compared on a deterministic sample of the ids whose versions agree.
   Differing points are reconciled as in 2 (contents that differ at the same
   version are never rewritten: a two-step update may be half-way) and checked
   again after a pause (in-flight writes land meanwhile), ``verify_tries``
   checks in all; then :class:`MigrationFailed` names them. Points without a version (written
   straight to a cluster, around the library) and, in a dedicated source,
   without a label are counted and reported: they are copied like any other.
4. **clean up** — :func:`clean_old_home` removes from the source only the
   points whose target copy is at the same or a newer version, each where it is
   still that version. The operator calls it once no router writes the old home
   any more; :func:`migrate` runs it itself (after ``grace_s``) only when the
   plan asks, for standalone use. Until then the source is never written to.

The checkpoint lives in a small collection on the target cluster, so a
restarted Job on another node resumes where the last one stopped.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal, ParamSpec, TypeVar

from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY
from librarian.contracts.reserved import PRODUCT_PREFIX
from librarian.services.home_sync import (
    Difference,
    Listing,
    chunks,
    compare,
    copy_points,
    is_live,
    list_versions,
    packed,
    remove_superseded,
    superseded,
)
from librarian.services.labeling import domain_filter
from librarian.services.placement import Placement, placed_upsert
from librarian.services.versioning import and_filters, live_filter, older_than
from librarian.storage.collection_config import create_if_missing
from librarian.storage.errors import QdrantError
from librarian.storage.port import CollectionSpec, PointId, PointRecord, QdrantPort
from librarian.storage.vectors import vectors_equal

__all__ = [
    "CHECKPOINT_COLLECTION",
    "Checkpoint",
    "CheckpointStore",
    "MigrationFailed",
    "MigrationPlan",
    "MigrationReport",
    "clean_old_home",
    "migrate",
    "same_point",
    "source_selection",
    "target_selection",
]

Phase = Literal["copying", "catching_up", "verifying", "verified", "cleaning", "done"]
CHECKPOINT_COLLECTION = f"{PRODUCT_PREFIX}migrations"
_NAMESPACE = uuid.UUID("0b5e4f0e-2c41-4c59-8a0a-7d0c3b1f6e21")
VERIFY_PAUSE_S = 1.0  # the pause before the n-th check of differing points is n times this
NAMED_IN_MESSAGE = 20  # differing ids a failure message names
KEPT_IN_CHECKPOINT = 1000  # differing ids a checkpoint keeps (their number is kept too)

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class MigrationFailed(QdrantError):
    """Verification found points that differ between the homes; nothing was deleted.

    ``differing`` holds their ids.
    """

    def __init__(
        self,
        cluster: str,
        message: str,
        *,
        collection: str | None = None,
        differing: Iterable[PointId] = (),
    ) -> None:
        super().__init__(cluster, message, collection=collection)
        self.differing: tuple[PointId, ...] = tuple(differing)


@dataclass(frozen=True)
class MigrationPlan:
    """What to move and how."""

    name: str  # unique per migration, e.g. the ClusterSpecialization's namespace/name
    source_collection: str
    target_collection: str
    domain_id: str
    label_key: str = LABEL_KEY
    batch_size: int = 1000
    workers: int = 4  # pages written at once (the next page is read meanwhile)
    verify: bool = True
    verify_sample: int = 256  # points compared vector- and payload-exact
    cleanup: bool = False
    grace_s: float = 0.0
    fence_version: int | None = None  # every dual write since the move began is >= this
    dedicated_source: bool = False  # the source holds only this domain (unlabelled points too)
    verify_tries: int = 5  # checks of differing points before the migration fails
    # While copying, the checkpoint is saved at most this often (0: after every page).
    checkpoint_every_s: float = 1.0


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
    verified_points: int = 0
    unversioned: int = 0
    unlabelled: int = 0
    differing: tuple[PointId, ...] = ()  # the first KEPT_IN_CHECKPOINT of them
    differing_count: int = 0


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
    unversioned: int = 0
    unlabelled: int = 0
    differing: tuple[PointId, ...] = ()
    verified_points: int = 0


ProgressCallback = Callable[[str, int, int], None]
_CHECKPOINT_FIELDS = {f.name for f in fields(Checkpoint)}


class CheckpointStore:
    """Checkpoints as points of a tiny collection (vector size 1) on a cluster."""

    def __init__(self, port: QdrantPort, collection: str = CHECKPOINT_COLLECTION) -> None:
        self._port = port
        self._collection = collection
        self._exists = False

    def _id(self, name: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, name))

    def load(self, name: str) -> Checkpoint | None:
        if not self._port.collection_exists(self._collection):
            return None
        found = self._port.retrieve(self._collection, [self._id(name)], with_vectors=False)
        if not found:
            return None
        data = json.loads(found[0].payload["checkpoint"])
        known = {k: v for k, v in data.items() if k in _CHECKPOINT_FIELDS}
        known["differing"] = tuple(known.get("differing") or ())
        return Checkpoint(**known)

    def save(self, name: str, checkpoint: Checkpoint) -> None:
        if not self._exists:
            create_if_missing(self._port, self._collection, CollectionSpec(vector_size=1))
        self._exists = True
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
    """Same id, payload exactly equal, and every vector equal: the same names, dense vectors and
    multivectors within float32 round-trip precision, sparse vectors index for index."""
    if a.id != b.id or a.payload != b.payload:
        return False
    if a.vector is None or b.vector is None:
        return a.vector is b.vector
    return vectors_equal(a.vector, b.vector, atol=1e-6)


def source_selection(plan: MigrationPlan) -> models.Filter:
    """The source's points of the domain (and, in a dedicated source, those with no label)."""
    labelled = domain_filter(plan.domain_id, plan.label_key)
    if not plan.dedicated_source:
        return labelled
    unlabelled = models.IsEmptyCondition(is_empty=models.PayloadField(key=plan.label_key))
    return models.Filter(should=[labelled, unlabelled])


def target_selection(plan: MigrationPlan) -> models.Filter:
    """The target's points of the domain (every copy and every dual write carries the label)."""
    return domain_filter(plan.domain_id, plan.label_key)


def _as_copied(plan: MigrationPlan) -> Callable[[PointRecord], PointRecord | None]:
    """A source point as the target is to hold it; ``None`` when it is not in the selection."""

    def copied(point: PointRecord) -> PointRecord | None:
        label = point.payload.get(plan.label_key)
        if label == plan.domain_id:
            return point
        if not label and plan.dedicated_source:  # written around the library: labelled now
            return PointRecord(
                point.id, point.vector, {**point.payload, plan.label_key: plan.domain_id}
            )
        return None

    return copied


def _in_target(plan: MigrationPlan, point: PointRecord) -> bool:
    return bool(point.payload.get(plan.label_key) == plan.domain_id)


def _sample_ids(ids: Iterable[PointId], size: int, name: str) -> list[PointId]:
    """A deterministic sample: the same ids for the same migration, whatever their order."""
    salt = zlib.crc32(name.encode())

    def rank(point_id: PointId) -> int:
        if isinstance(point_id, int):  # a multiplicative hash: cheap, and well spread
            return ((point_id ^ salt) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        return zlib.crc32(point_id.encode(), salt) << 32

    return heapq.nsmallest(size, ids, key=rank)


@dataclass
class _Pass:
    """One full comparison of the two homes."""

    source: Listing
    target: Listing
    difference: Difference

    @property
    def compared(self) -> int:
        """How many ids were compared (those in either home)."""
        source = self.source.held
        return len(source) + sum(1 for i in self.target.held if i not in source)


def migrate(
    source: QdrantPort,
    target: QdrantPort,
    plan: MigrationPlan,
    *,
    checkpoints: CheckpointStore | None = None,
    now: Callable[[], float] | None = None,
    on_progress: ProgressCallback | None = None,
    sleep: Callable[[float], None] | None = None,
    placement: Placement | None = None,
) -> MigrationReport:
    """Run (or resume) ``plan``; returns where it ended. Safe to call again at any time.

    With ``placement`` (a target placed by partition) every point is written marked with its
    partition: its partition field, or under its shard key on a home sharded so.

    Raises :class:`MigrationFailed` when points still differ after
    ``plan.verify_tries`` checks (the checkpoint records them; nothing is deleted).
    """
    run = _Migration(
        source,
        target,
        plan,
        checkpoints or CheckpointStore(target),
        now or (lambda: 0.0),
        on_progress,
        sleep if sleep is not None else time.sleep,
        placement,
    )
    return run.run()


class _Migration:
    """One run of a plan: the phases, each resumable from the checkpoint."""

    def __init__(
        self,
        source: QdrantPort,
        target: QdrantPort,
        plan: MigrationPlan,
        store: CheckpointStore,
        clock: Callable[[], float],
        on_progress: ProgressCallback | None,
        sleep: Callable[[float], None],
        placement: Placement | None = None,
    ) -> None:
        self.source, self.target, self.plan = source, target, plan
        self.placement = placement
        self.store, self.clock, self.on_progress, self.sleep = store, clock, on_progress, sleep
        self.source_selection = source_selection(plan)
        self.target_selection = target_selection(plan)
        self.as_copied = _as_copied(plan)
        self.notes: list[str] = []
        self.sampled = 0  # points compared by contents in the last sample
        self.saved_at = time.monotonic()  # when the copy last saved its checkpoint

    def save(self, state: Checkpoint) -> Checkpoint:
        self.store.save(self.plan.name, state)
        return state

    def run(self) -> MigrationReport:
        plan = self.plan
        state = self.store.load(plan.name) or Checkpoint()
        if state.phase == "copying":
            state = self.save(replace(self.copy(state), phase="catching_up"))
        if state.phase == "catching_up":
            state = self.catch_up(state)
        if state.phase == "verifying":
            state = self.verify(state)
        if state.phase == "verified" and plan.cleanup:
            verified_at = state.verified_at if state.verified_at is not None else self.clock()
            due = verified_at + plan.grace_s - self.clock()
            if due > 0:
                return self.report(state, cleanup_due_in_s=due)
            state = self.save(replace(state, phase="cleaning"))
        if state.phase == "cleaning":
            removed, kept = _clean_old_home(self.source, self.target, plan)
            if kept:
                self.notes.append(_kept_note(kept))
            state = self.save(
                replace(
                    state, phase="done", removed_from_source=state.removed_from_source + removed
                )
            )
        return self.report(state)

    def report(
        self, state: Checkpoint, *, cleanup_due_in_s: float | None = None
    ) -> MigrationReport:
        verified = state.phase in ("verified", "cleaning", "done") and self.plan.verify
        return MigrationReport(
            phase=state.phase,
            copied=state.copied,
            source_count=state.source_count,
            target_count=state.target_count,
            verified=verified,
            verified_sample=state.verified_sample,
            removed_from_source=state.removed_from_source,
            cleanup_due_in_s=cleanup_due_in_s,
            notes=tuple(self.notes),
            unversioned=state.unversioned,
            unlabelled=state.unlabelled,
            differing=state.differing,
            verified_points=state.verified_points,
        )

    # ------------------------------------------------------------------ copy

    def copy(self, state: Checkpoint) -> Checkpoint:
        """Copy the selection page by page from the checkpoint's offset; the next page is read
        while up to ``workers`` pages are written, and the checkpoint advances past a page once
        it and every page before it are written.

        Where a port's calls cannot overlap (the embedded engine keeps the interpreter lock
        through each call), threads would only add hand-offs: the same loop then runs its
        reads and writes in turn, in this thread.
        """
        plan = self.plan
        condition = older_than(plan.fence_version) if plan.fence_version is not None else None
        total = state.source_count
        if not total and self.on_progress is not None:  # the total only serves progress reports
            total = self.source.count(plan.source_collection, count_filter=self.source_selection)
        workers = max(1, plan.workers)

        def read(offset: PointId | None) -> tuple[list[PointRecord], PointId | None]:
            return self.source.scroll(
                plan.source_collection,
                limit=plan.batch_size,
                offset=offset,
                scroll_filter=self.source_selection,
                with_vectors=True,
                with_payload=True,
            )

        def write(page: list[PointRecord]) -> None:
            if plan.dedicated_source:  # the selection's unlabelled points get the label
                page = [p for p in map(self.as_copied, page) if p is not None]
            placed_upsert(
                self.target, plan.target_collection, page, self.placement, update_filter=condition
            )

        overlap = _calls_overlap(self.source) and _calls_overlap(self.target)
        workers = workers if overlap else 1
        written: deque[tuple[Future[None], PointId | None, int]] = deque()
        with (
            _executor(overlap, 1, "migration-read") as reader,
            _executor(overlap, workers, "migration-write") as writers,
        ):
            ahead: Future[tuple[list[PointRecord], PointId | None]] | None
            ahead = reader.submit(read, state.offset)
            while ahead is not None:
                page, offset = ahead.result()
                ahead = None
                if offset is not None and overlap:  # read the next page while this is written
                    ahead = reader.submit(read, offset)
                written.append((writers.submit(write, page), offset, len(page)))
                while written and (len(written) >= workers or offset is None):
                    state = self._page_written(state, written.popleft(), total)
                if offset is not None and not overlap:  # in turn: one page in memory at a time
                    ahead = reader.submit(read, offset)
        return replace(state, offset=None, source_count=total)

    def _page_written(
        self, state: Checkpoint, page: tuple[Future[None], PointId | None, int], total: int
    ) -> Checkpoint:
        done, offset, size = page
        done.result()
        state = replace(state, offset=offset, copied=state.copied + size, source_count=total)
        due = time.monotonic() >= self.saved_at + self.plan.checkpoint_every_s
        if offset is not None and due:  # the last page: the phase changes next, with its save
            state = self.save(state)
            self.saved_at = time.monotonic()
        if self.on_progress:
            self.on_progress("copying", state.copied, total)
        return state

    # ------------------------------------------------------------------ catch up, verify

    def full_pass(self) -> _Pass:
        """Both homes listed by (id, version, tombstone), and compared."""
        plan = self.plan
        label_key = plan.label_key if plan.dedicated_source else None
        source = list_versions(
            self.source, plan.source_collection, self.source_selection, label_key=label_key
        )
        target = list_versions(self.target, plan.target_collection, self.target_selection)
        difference = compare(source.held, target.held, fence=plan.fence_version)
        return _Pass(source, target, difference)

    def reconcile(self, difference: Difference) -> int:
        """Copy what the source holds newer, remove what it deleted; returns how many."""
        plan = self.plan
        copied = copy_points(
            self.source,
            plan.source_collection,
            self.target,
            plan.target_collection,
            difference.copy,
            as_copied=self.as_copied,
            batch=plan.batch_size,
            placement=self.placement,
        )
        removed = remove_superseded(
            self.target, plan.target_collection, difference.remove, batch=plan.batch_size
        )
        return copied + removed

    def catch_up(self, state: Checkpoint) -> Checkpoint:
        """Reconcile what changed in the source while the copy ran; verified at once when
        nothing did (this pass compared every point by version)."""
        checked = self.full_pass()
        state = _counted(state, checked)
        fixed = self.reconcile(checked.difference)
        if fixed:
            self.notes.append(f"caught up {fixed} point(s) written or deleted during the copy")
        if not self.plan.verify:
            differing = checked.difference.leave
            return self.save(_differing(replace(state, phase="verified"), differing))
        if not checked.difference:
            unequal = self.sample_contents(checked)
            if not unequal:
                return self.save(self.verified(state, checked))
        return self.save(replace(state, phase="verifying"))

    def verify(self, state: Checkpoint) -> Checkpoint:
        """Every point by version, a sample by contents; differing points reconciled and
        checked again after a pause, ``verify_tries`` checks in all."""
        plan = self.plan
        checked = self.full_pass()
        state = _counted(state, checked)
        difference = compare(
            checked.source.held,
            checked.target.held,
            fence=plan.fence_version,
            unequal=self.sample_contents(checked),
        )
        tries = max(1, plan.verify_tries)
        for attempt in range(1, tries + 1):
            if not difference:
                return self.save(self.verified(state, checked, rechecked=attempt > 1))
            if attempt == tries:
                break
            state = self.save(_differing(state, difference.ids))
            self.reconcile(difference)
            self.sleep(VERIFY_PAUSE_S * attempt)
            difference = self.recheck(difference.ids)
        ids = difference.ids
        self.save(_differing(state, ids))
        named = ", ".join(repr(i) for i in ids[:NAMED_IN_MESSAGE])
        raise MigrationFailed(
            self.target.cluster,
            f"verification failed: {len(ids)} point(s) differ between source and target after "
            f"{tries} check(s) (first ids: {named}); nothing was deleted from the source",
            collection=plan.target_collection,
            differing=ids,
        )

    def verified(self, state: Checkpoint, checked: _Pass, *, rechecked: bool = False) -> Checkpoint:
        """The verified checkpoint; counts are the full pass's, or counted again when points
        were reconciled after it."""
        plan = self.plan
        source_count, target_count = checked.source.live, checked.target.live
        if rechecked:
            source_count = self.source.count(
                plan.source_collection, count_filter=_live(self.source_selection)
            )
            target_count = self.target.count(
                plan.target_collection, count_filter=_live(self.target_selection)
            )
        return replace(
            _differing(state, ()),
            phase="verified",
            source_count=source_count,
            target_count=target_count,
            verified_points=checked.compared,
            verified_sample=self.sampled,
            verified_at=self.clock(),
        )

    def sample_contents(self, checked: _Pass) -> list[PointId]:
        """Ids of a deterministic sample of the live points whose versions agree, whose
        contents (vector, payload) differ or that are gone from either home since."""
        target = checked.target.held
        agreed = (i for i, h in checked.source.held.items() if is_live(h) and target.get(i) == h)
        sample = _sample_ids(agreed, self.plan.verify_sample, self.plan.name)
        self.sampled = len(sample)
        if not sample:
            return []
        originals = {p.id: p for p in self.source.retrieve(self.plan.source_collection, sample)}
        copies = {p.id: p for p in self.target.retrieve(self.plan.target_collection, sample)}
        return [i for i in sample if not self._same(originals.get(i), copies.get(i))]

    def _same(self, original: PointRecord | None, copy: PointRecord | None) -> bool:
        expected = self.as_copied(original) if original is not None else None
        if expected is not None and self.placement is not None and self.placement.by_field:
            [expected] = self.placement.marked([expected])  # the copy carries its partition
        return expected is not None and copy is not None and same_point(expected, copy)

    def recheck(self, ids: Sequence[PointId]) -> Difference:
        """``ids`` compared again, one by one: versions, and contents where they agree."""
        plan = self.plan
        source: dict[PointId, int] = {}
        target: dict[PointId, int] = {}
        unequal: list[PointId] = []
        for part in chunks(ids, plan.batch_size):
            originals = {
                p.id: p
                for p in self.source.retrieve(plan.source_collection, part)
                if self.as_copied(p) is not None
            }
            copies = {
                p.id: p
                for p in self.target.retrieve(plan.target_collection, part)
                if _in_target(plan, p)
            }
            source.update({i: packed(p.payload) for i, p in originals.items()})
            target.update({i: packed(p.payload) for i, p in copies.items()})
            unequal += [
                i
                for i in part
                if i in originals
                and i in copies
                and is_live(source[i])
                and source[i] == target[i]
                and not self._same(originals[i], copies[i])
            ]
        return compare(source, target, fence=plan.fence_version, unequal=unequal)


def _calls_overlap(port: QdrantPort) -> bool:
    """Whether calls to ``port`` from several threads run at once (see the storage port)."""
    return bool(getattr(port, "calls_overlap", True))


class _InPlace(Executor):
    """An executor that runs each task at once, in the caller's thread."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        done: Future[T] = Future()
        done.set_result(fn(*args, **kwargs))
        return done


def _executor(overlap: bool, workers: int, name: str) -> Executor:
    if overlap:
        return ThreadPoolExecutor(workers, thread_name_prefix=name)
    return _InPlace()


def _live(selection: models.Filter) -> models.Filter:
    combined = and_filters(selection, live_filter())
    assert combined is not None
    return combined


def _counted(state: Checkpoint, checked: _Pass) -> Checkpoint:
    return replace(
        state,
        source_count=checked.source.live,
        target_count=checked.target.live,
        unversioned=checked.source.unversioned,
        unlabelled=checked.source.unlabelled,
    )


def _differing(state: Checkpoint, ids: Sequence[PointId]) -> Checkpoint:
    return replace(state, differing=tuple(ids[:KEPT_IN_CHECKPOINT]), differing_count=len(ids))


# ---------------------------------------------------------------------- cleanup


def clean_old_home(source: QdrantPort, target: QdrantPort, plan: MigrationPlan) -> int:
    """Remove the domain from the source where the target holds it at the same or a newer
    version; returns how many points were removed.

    Both homes are compared by (id, version) again first. A source point is
    removed only where it is still at most the version its target copy holds
    (a conditional delete), so a point the target lacks or holds older — and a
    write to the source made meanwhile — is kept; kept points are logged.
    """
    removed, kept = _clean_old_home(source, target, plan)
    if kept:
        log.warning("migration %s: %s", plan.name, _kept_note(kept))
    return removed


def _clean_old_home(
    source: QdrantPort, target: QdrantPort, plan: MigrationPlan
) -> tuple[int, list[PointId]]:
    label_key = plan.label_key if plan.dedicated_source else None
    old = list_versions(source, plan.source_collection, source_selection(plan), label_key=label_key)
    new = list_versions(target, plan.target_collection, target_selection(plan))
    removable, kept = superseded(old.held, new.held)
    removed = remove_superseded(source, plan.source_collection, removable, batch=plan.batch_size)
    return removed, kept


def _kept_note(kept: Sequence[PointId]) -> str:
    named = ", ".join(repr(i) for i in kept[:NAMED_IN_MESSAGE])
    return (
        f"kept {len(kept)} point(s) in the source that the target lacks or holds older "
        f"(first ids: {named}); a later cleanup removes them once the target has caught up"
    )
