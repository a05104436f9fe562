"""Labeling a source collection in parallel over id ranges, resumable, with progress on record.

Why this exists: labeling every point of a large collection (scroll with
vectors, then a payload write) takes hours at 100M points; it runs in a Job
of several workers instead of the operator's process. The operator writes a
*plan* — the domains and the id ranges, one per worker — next to the
migrations' checkpoints on the source cluster; each worker labels its range
page by page and records, after each page is written, the offset where it
resumes. A worker killed mid-way starts again from its last committed page
(rewriting at most that page, which is idempotent), never from the start.

Id ranges: Qdrant scrolls in id order, unsigned integer ids first (by value),
then UUIDs (by their 128-bit value), and a scroll may start at any id, held or
not. Ranges are cut at ids of a random sample of the collection, ordered that
way (:func:`id_order`); a worker scrolls from its range's first id and stops
at the first id at or past the next range's. This works for both id kinds and
for collections mixing them, costs no pass over the ids (a sample is read
anyway for discovery), and stays correct when the cut ids are deleted
meanwhile (a cut is a position in the order, not a point that must exist);
filters on ids cannot express a range (``has_id`` takes a list).

Writes are the payload-only ``set_payload`` labeling always used, now
conditional: a point is labelled only where its stored point version is still
the one the page was read at, so a point the router rewrote meanwhile (newer
version, its own label) keeps its label, and a point deleted meanwhile is not
brought back (a payload write never creates a point, and a tombstone stays a
tombstone). Re-labeling a point with the same domain changes nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY, VERSION_KEY
from librarian.core.discovery import Domain, assign
from librarian.core.unrouted import domain_for_unrouted
from librarian.services.labeling import unlabeled_filter
from librarian.services.migration import CHECKPOINT_COLLECTION
from librarian.services.versioning import ensure_version_index, version_of
from librarian.storage.collection_config import create_if_missing
from librarian.storage.errors import QdrantError
from librarian.storage.port import CollectionSpec, PointId, PointRecord, QdrantPort

__all__ = [
    "IdRange",
    "LabelingPlan",
    "LabelingProgressStore",
    "NoLabelingPlan",
    "RangeProgress",
    "WorkerInterrupted",
    "id_order",
    "label_range",
    "labeling_name",
    "plan_labeling",
    "split_ids",
]

_NAMESPACE = uuid.UUID("5d1b7c1e-8f0a-4a8e-9c55-3f2d4b6e7a10")


class NoLabelingPlan(QdrantError):
    """A worker found no plan under its name (the operator writes it before the Job)."""


class WorkerInterrupted(RuntimeError):
    """Raised by a ``should_stop`` hook to stop a worker between two pages (as a kill would)."""


def labeling_name(owner: str, version: int) -> str:
    """The plan's name: one per DomainMap (``namespace/name``) and analysis version."""
    return f"{owner}@v{version}"


def id_order(point_id: PointId) -> tuple[int, int]:
    """The position of ``point_id`` in Qdrant's scroll order: integers, then UUIDs."""
    if isinstance(point_id, int):
        return (0, point_id)
    return (1, uuid.UUID(str(point_id)).int)


@dataclass(frozen=True)
class IdRange:
    """The ids from ``start`` (inclusive; ``None``: the first) to ``end`` (exclusive;
    ``None``: past the last) in scroll order."""

    start: PointId | None = None
    end: PointId | None = None

    def before_end(self, point_id: PointId) -> bool:
        return self.end is None or id_order(point_id) < id_order(self.end)


def split_ids(ids: Iterable[PointId], parts: int) -> tuple[IdRange, ...]:
    """At most ``parts`` contiguous ranges covering every id, cut at quantiles of ``ids``
    (a sample of the collection) so each range holds about as many points.

    Fewer ranges come back when the sample has fewer distinct ids than ``parts``.
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    ordered = sorted(set(ids), key=id_order)
    cuts: list[PointId] = []
    for index in range(1, parts):
        position = index * len(ordered) // parts
        if 0 < position < len(ordered) and (not cuts or cuts[-1] != ordered[position]):
            cuts.append(ordered[position])
    bounds: list[PointId | None] = [None, *cuts, None]
    return tuple(IdRange(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1))


@dataclass(frozen=True)
class LabelingPlan:
    """What every worker of one labeling run shares: the domains (in the analysis's order),
    the ranges, and where to label."""

    name: str
    collection: str
    version: int
    domains: tuple[Domain, ...]
    ranges: tuple[IdRange, ...]
    total: int  # points in the collection when the plan was made
    vector: str = ""  # the dense vector labels are computed from ("": the unnamed one)
    label_key: str = LABEL_KEY
    version_key: str = VERSION_KEY

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "collection": self.collection,
                "version": self.version,
                "domains": [
                    {
                        "id": d.id,
                        "name": d.name,
                        "centroid": [float(x) for x in d.centroid],
                        "radius": d.radius,
                        "size": d.size,
                        "cohesion": d.cohesion,
                        "keywords": list(d.keywords),
                        "parent": d.parent,
                    }
                    for d in self.domains
                ],
                "ranges": [[r.start, r.end] for r in self.ranges],
                "total": self.total,
                "vector": self.vector,
                "label_key": self.label_key,
                "version_key": self.version_key,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> LabelingPlan:
        data = json.loads(text)
        domains = tuple(
            Domain(
                id=str(d["id"]),
                name=str(d["name"]),
                centroid=np.asarray(d["centroid"], dtype=np.float32),
                radius=float(d["radius"]),
                size=int(d["size"]),
                cohesion=float(d["cohesion"]),
                keywords=tuple(d["keywords"]),
                parent=d.get("parent"),
            )
            for d in data["domains"]
        )
        return cls(
            name=str(data["name"]),
            collection=str(data["collection"]),
            version=int(data["version"]),
            domains=domains,
            ranges=tuple(IdRange(start, end) for start, end in data["ranges"]),
            total=int(data["total"]),
            vector=str(data.get("vector") or ""),
            label_key=str(data.get("label_key") or LABEL_KEY),
            version_key=str(data.get("version_key") or VERSION_KEY),
        )


def plan_labeling(
    port: QdrantPort,
    collection: str,
    domains: Sequence[Domain],
    *,
    name: str,
    version: int,
    workers: int,
    sample_ids: Iterable[PointId] | None = None,
    sample_size: int = 2048,
    vector: str = "",
) -> LabelingPlan:
    """A plan of ``workers`` ranges cut at ``sample_ids`` (a random sample of the collection's
    ids; read here when not given)."""
    if sample_ids is None:
        sample_ids = [p.id for p in port.sample(collection, sample_size, with_payload=False)]
    return LabelingPlan(
        name=name,
        collection=collection,
        version=version,
        domains=tuple(domains),
        ranges=split_ids(sample_ids, max(1, workers)),
        total=port.count(collection),
        vector=vector,
    )


@dataclass(frozen=True)
class RangeProgress:
    """Where one worker stands: the id to resume from, what it labelled, and when."""

    offset: PointId | None = None  # None before the first page: the range's start
    labeled: int = 0  # points this range's labeling wrote (over every attempt)
    scanned: int = 0  # points read (not yet labelled with this version when read)
    skipped: int = 0  # points rewritten or deleted between the read and the write: left so
    done: bool = False
    started_at: float | None = None
    updated_at: float | None = None
    attempts: int = 0


class LabelingProgressStore:
    """Plans and per-range progress as points of the migrations' checkpoint collection."""

    def __init__(self, port: QdrantPort, collection: str = CHECKPOINT_COLLECTION) -> None:
        self._port = port
        self._collection = collection
        self._exists = False

    def _id(self, key: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, key))

    def _ensure(self) -> None:
        if not self._exists:
            create_if_missing(self._port, self._collection, CollectionSpec(vector_size=1))
        self._exists = True

    def _load(self, key: str) -> dict[str, Any] | None:
        if not self._port.collection_exists(self._collection):
            return None
        found = self._port.retrieve(self._collection, [self._id(key)], with_vectors=False)
        return found[0].payload if found else None

    def _save(self, key: str, payload: Mapping[str, Any]) -> None:
        self._ensure()
        point = PointRecord(id=self._id(key), vector=[1.0], payload=dict(payload))
        self._port.upsert(self._collection, [point])

    def save_plan(self, plan: LabelingPlan) -> None:
        """Store ``plan`` and forget any progress recorded under its name (a fresh run)."""
        self.clear(plan.name, len(plan.ranges))
        self._save(f"labeling:{plan.name}", {"labeling": plan.name, "plan": plan.to_json()})

    def load_plan(self, name: str) -> LabelingPlan:
        payload = self._load(f"labeling:{name}")
        if payload is None:
            raise NoLabelingPlan(
                self._port.cluster,
                f"no labeling plan named {name!r} in {self._collection}; the operator "
                "writes it before it starts the labeling Job",
                collection=self._collection,
            )
        return LabelingPlan.from_json(str(payload["plan"]))

    def load_range(self, name: str, index: int) -> RangeProgress | None:
        payload = self._load(f"labeling:{name}:range:{index}")
        if payload is None:
            return None
        data = json.loads(str(payload["progress"]))
        known = {f for f in RangeProgress.__dataclass_fields__}
        return RangeProgress(**{k: v for k, v in data.items() if k in known})

    def save_range(self, name: str, index: int, progress: RangeProgress) -> None:
        self._save(
            f"labeling:{name}:range:{index}",
            {"labeling": name, "range": index, "progress": json.dumps(asdict(progress))},
        )

    def progress(self, name: str, ranges: int) -> list[RangeProgress | None]:
        """Every range's progress (``None`` where its worker has not recorded any yet)."""
        if not self._port.collection_exists(self._collection):
            return [None] * ranges
        keys = [self._id(f"labeling:{name}:range:{i}") for i in range(ranges)]
        found = {
            p.id: p.payload for p in self._port.retrieve(self._collection, keys, with_vectors=False)
        }
        result: list[RangeProgress | None] = []
        known = {f for f in RangeProgress.__dataclass_fields__}
        for key in keys:
            payload = found.get(key)
            if payload is None:
                result.append(None)
                continue
            data = json.loads(str(payload["progress"]))
            result.append(RangeProgress(**{k: v for k, v in data.items() if k in known}))
        return result

    def clear(self, name: str, ranges: int) -> None:
        """Remove the plan ``name`` and the progress of its ``ranges``."""
        if not self._port.collection_exists(self._collection):
            return
        keys = [f"labeling:{name}", *(f"labeling:{name}:range:{i}" for i in range(ranges))]
        self._port.delete_points(self._collection, ids=[self._id(k) for k in keys])


ProgressCallback = Callable[[RangeProgress], None]


def _read_unchanged(points: Sequence[PointRecord]) -> models.Filter:
    """The points of ``points`` whose stored version is still the one they were read at."""
    by_version: dict[int, list[PointId]] = {}
    for point in points:
        by_version.setdefault(version_of(point.payload), []).append(point.id)
    clauses: list[models.Filter] = []
    for version, ids in by_version.items():
        same: models.Condition
        if version == 0:  # written around the library: no version key, or a zero one
            same = models.Filter(
                should=[
                    models.IsEmptyCondition(is_empty=models.PayloadField(key=POINT_VERSION_KEY)),
                    models.FieldCondition(key=POINT_VERSION_KEY, match=models.MatchValue(value=0)),
                ]
            )
        else:
            same = models.FieldCondition(
                key=POINT_VERSION_KEY, match=models.MatchValue(value=version)
            )
        clauses.append(models.Filter(must=[models.HasIdCondition(has_id=list(ids)), same]))
    if len(clauses) == 1:
        return clauses[0]
    return models.Filter(should=list(clauses))


def _chosen_domains(
    plan: LabelingPlan, page: Sequence[PointRecord]
) -> dict[str, list[PointRecord]]:
    """Each point's domain: the nearest centroid by its dense vector, or where its id hashes
    when it lacks that vector (as the router places it)."""
    domains = list(plan.domains)
    chosen: dict[str, list[PointRecord]] = {}
    dense = [(p, p.dense(plan.vector)) for p in page]
    routed = [(p, v) for p, v in dense if v is not None]
    if routed:
        vectors = np.asarray([v for _, v in routed], dtype=np.float32)
        for (point, _), index in zip(routed, assign(vectors, domains), strict=True):
            chosen.setdefault(domains[int(index)].id, []).append(point)
    domain_ids = [d.id for d in domains]
    for point, vector in dense:
        if vector is None:
            chosen.setdefault(domain_for_unrouted(point.id, domain_ids), []).append(point)
    return chosen


@dataclass
class _Worker:
    port: QdrantPort
    plan: LabelingPlan
    index: int
    store: LabelingProgressStore
    batch_size: int
    clock: Callable[[], float]
    on_progress: ProgressCallback | None
    should_stop: Callable[[RangeProgress], None] | None
    progress: RangeProgress = field(default_factory=RangeProgress)

    def run(self) -> RangeProgress:
        plan, span = self.plan, self.plan.ranges[self.index]
        stored = self.store.load_range(plan.name, self.index)
        now = self.clock()
        progress = stored or RangeProgress(offset=span.start, started_at=now)
        if progress.done:
            return progress
        progress = replace(progress, attempts=progress.attempts + 1, updated_at=now)
        self.store.save_range(plan.name, self.index, progress)
        todo = unlabeled_filter(plan.version, plan.version_key)
        offset = progress.offset
        while True:
            if self.should_stop is not None:
                self.should_stop(progress)
            page, after = self.port.scroll(
                plan.collection,
                limit=self.batch_size,
                offset=offset,
                scroll_filter=todo,
                with_vectors=True,
                with_payload=[POINT_VERSION_KEY],
            )
            mine = [p for p in page if span.before_end(p.id)]
            finished = after is None or len(mine) < len(page) or not span.before_end(after)
            written = skipped = 0
            for domain_id, points in _chosen_domains(plan, mine).items():
                label = {plan.label_key: domain_id, plan.version_key: plan.version}
                ids = [p.id for p in points]
                self.port.set_payload(
                    plan.collection, label, ids, points_filter=_read_unchanged(points)
                )
                written += len(ids)
            if mine:
                # points rewritten (they keep the router's label) or deleted since the read
                held = self.port.count(
                    plan.collection,
                    count_filter=models.Filter(
                        must=[
                            models.HasIdCondition(has_id=[p.id for p in mine]),
                            models.FieldCondition(
                                key=plan.version_key, match=models.MatchValue(value=plan.version)
                            ),
                        ]
                    ),
                )
                skipped = len(mine) - held
            progress = replace(
                progress,
                offset=None if finished else after,
                labeled=progress.labeled + written - skipped,
                scanned=progress.scanned + len(mine),
                skipped=progress.skipped + skipped,
                done=finished,
                updated_at=self.clock(),
            )
            self.store.save_range(plan.name, self.index, progress)  # the page is committed
            if self.on_progress is not None:
                self.on_progress(progress)
            if finished:
                return progress
            offset = after


def label_range(
    port: QdrantPort,
    plan: LabelingPlan,
    index: int,
    *,
    store: LabelingProgressStore | None = None,
    batch_size: int = 1000,
    clock: Callable[[], float] = time.time,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[RangeProgress], None] | None = None,
) -> RangeProgress:
    """Label range ``index`` of ``plan`` (resuming from its recorded progress); returns where it
    ended. A worker whose index has no range (the sample had fewer distinct ids than workers)
    has nothing to do.

    ``should_stop`` is called before each page with the progress so far; raising
    :class:`WorkerInterrupted` there stops the worker as a kill would.
    """
    if not 0 <= index < len(plan.ranges):
        return RangeProgress(done=True)
    port.create_keyword_index(plan.collection, plan.label_key)
    port.create_keyword_index(plan.collection, plan.version_key)
    ensure_version_index(port, plan.collection)
    worker = _Worker(
        port,
        plan,
        index,
        store or LabelingProgressStore(port),
        max(1, batch_size),
        clock,
        on_progress,
        should_stop,
    )
    return worker.run()
