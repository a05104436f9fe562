"""Migration: copy, catch up and verify by version under dual writes, clean up — and killed at
20 random points, resumed."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY
from librarian.core.collection_spec import with_source_vectors
from librarian.core.hlc import encode_version
from librarian.core.tuning import DomainStats, tune_collection
from librarian.services.migration import (
    CHECKPOINT_COLLECTION,
    Checkpoint,
    CheckpointStore,
    MigrationFailed,
    MigrationPlan,
    clean_old_home,
    migrate,
    same_point,
)
from librarian.services.versioning import (
    ids_filter,
    is_tombstone,
    older_than,
    stamped,
    tombstone_payload,
    version_of,
)
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointId, PointRecord, QdrantPort
from librarian.storage.vectors import vectors_equal

from .conftest import make_points
from .vector_shapes import (
    SHAPED_SPEC,
    TEXT_DIM,
    reference_collection,
    reference_points,
    reference_vectors,
    shaped_points,
)

DOMAIN, OTHER = "d-alpha", "d-beta"
WALL_MS = 1_750_000_000_000
FENCE = encode_version(WALL_MS + 60_000, 0, 0)  # the routers' dual writes began here


def _no_sleep(_: float) -> None:
    pass


def _version(point_id: int, wall_ms: int = WALL_MS, node: int = 1) -> int:
    return encode_version(wall_ms + point_id, 0, node)


def _fill_versioned(port: QdrantPort, n: int = 300) -> list[PointRecord]:
    """Like :func:`_fill`, every point written through the library before the move (< FENCE)."""
    port.create_collection("source", CollectionSpec(vector_size=8))
    points = [
        PointRecord(
            id=p.id,
            vector=p.vector,
            payload=stamped(
                p.payload, version=_version(int(p.id)), label=DOMAIN if int(p.id) % 3 else OTHER
            ),
        )
        for p in make_points(n)
    ]
    for start in range(0, n, 1000):
        port.upsert("source", points[start : start + 1000])
    port.create_collection("target", CollectionSpec(vector_size=8))
    return [p for p in points if p.payload[LABEL_KEY] == DOMAIN]


def _states(port: QdrantPort, collection: str) -> dict[Any, int]:
    """The domain's live points by id and version (a tombstone counts as absent)."""
    return {
        i: version_of(p.payload)
        for i, p in _all(port, collection).items()
        if p.payload.get(LABEL_KEY) == DOMAIN and not is_tombstone(p.payload)
    }


def _set_phase(port: QdrantPort, phase: str, name: str = "default/alpha") -> None:
    store = CheckpointStore(port)
    current = store.load(name)
    assert current is not None
    store.save(name, replace(current, phase=phase))  # type: ignore[arg-type]


class Wrapped:
    """A port that passes every call through to ``inner`` (tests override some); ``overlap``
    makes the migration pipeline its copy in threads (the engine adapter is thread-safe)."""

    def __init__(self, inner: QdrantPort, *, overlap: bool | None = None) -> None:
        self.inner = inner
        if overlap is not None:
            self.calls_overlap = overlap

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _fill(port: QdrantPort, n: int = 300) -> list[PointRecord]:
    port.create_collection("source", CollectionSpec(vector_size=8))
    points = [
        PointRecord(
            id=p.id,
            vector=p.vector,
            payload={**p.payload, LABEL_KEY: DOMAIN if int(p.id) % 3 else OTHER},
        )
        for p in make_points(n)
    ]
    port.upsert("source", points)
    port.create_collection("target", CollectionSpec(vector_size=8))
    return [p for p in points if p.payload[LABEL_KEY] == DOMAIN]


def _all(port: QdrantPort, collection: str) -> dict[Any, PointRecord]:
    found: dict[Any, PointRecord] = {}
    offset = None
    while True:
        page, offset = port.scroll(collection, limit=500, offset=offset)
        found.update({p.id: p for p in page})
        if offset is None:
            return found


def _plan(**changes: Any) -> MigrationPlan:
    base: dict[str, Any] = dict(
        name="default/alpha",
        source_collection="source",
        target_collection="target",
        domain_id=DOMAIN,
        batch_size=16,
        workers=3,
        verify_sample=50,
    )
    base.update(changes)
    return MigrationPlan(**base)


def test_moves_exactly_the_domain_and_verifies(port: QdrantPort) -> None:
    expected = _fill(port)
    progress: list[tuple[str, int, int]] = []
    report = migrate(port, port, _plan(), on_progress=lambda *a: progress.append(a))
    assert report.verified
    assert report.phase == "verified"
    assert report.copied == len(expected) == report.target_count == report.source_count
    moved = _all(port, "target")
    assert set(moved) == {p.id for p in expected}
    assert all(same_point(p, moved[p.id]) for p in expected)
    assert port.count("source") == 300  # no cleanup asked
    assert progress
    assert progress[-1][0] == "copying"
    again = migrate(port, port, _plan())  # idempotent
    assert again.phase == "verified"
    assert port.count("target") == len(expected)


def test_cleanup_waits_for_the_grace_period_and_removes_only_copied_points(
    port: QdrantPort,
) -> None:
    expected = _fill(port)
    clock = {"t": 100.0}
    report = migrate(port, port, _plan(cleanup=True, grace_s=60), now=lambda: clock["t"])
    assert report.phase == "verified"
    assert report.cleanup_due_in_s == pytest.approx(60)
    assert port.count("source") == 300
    clock["t"] = 161.0
    report = migrate(port, port, _plan(cleanup=True, grace_s=60), now=lambda: clock["t"])
    assert report.phase == "done"
    assert report.removed_from_source == len(expected)
    assert port.count("source") == 300 - len(expected)
    assert port.count("target") == len(expected)


def test_writes_during_the_move_are_caught_up(port: QdrantPort) -> None:
    expected = _fill(port)

    class Writer:
        """Moves point 3 into the domain behind the scroll and deletes point 2, on the first upsert."""

        done = False

        def __init__(self, inner: QdrantPort) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def upsert(self, collection: str, points: Any, **options: Any) -> None:
            self.inner.upsert(collection, points, **options)
            if collection == "target" and not Writer.done:
                Writer.done = True
                late = make_points(1, start=5000)[0]
                self.inner.upsert(
                    "source",
                    [
                        PointRecord(
                            id=3, vector=late.vector, payload={LABEL_KEY: DOMAIN, "late": True}
                        )
                    ],
                )
                self.inner.delete_points("source", ids=[2])

    writer = Writer(port)
    report = migrate(writer, writer, _plan())  # type: ignore[arg-type]
    assert report.verified
    assert any("caught up" in n for n in report.notes)
    moved = _all(port, "target")
    source = {p.id for p in _all(port, "source").values() if p.payload.get(LABEL_KEY) == DOMAIN}
    assert set(moved) == source
    assert 3 in moved
    assert 2 not in moved
    assert len(moved) == len(expected)  # +1 late, -1 deleted


def test_verification_failure_touches_nothing(port: QdrantPort) -> None:
    """Same version, other contents (found by the content sample): checked again, never
    rewritten, then named; nothing is deleted."""
    _fill(port)
    migrate(port, port, _plan())
    tampered = [1, 4, 5, 7, 8, 10, 11]
    port.set_payload("target", {"tampered": True}, tampered)
    _set_phase(port, "verifying")
    pauses: list[float] = []
    with pytest.raises(MigrationFailed, match=r"7 point\(s\) differ") as failed:
        migrate(port, port, _plan(cleanup=True, verify_sample=200), sleep=pauses.append)
    assert failed.value.differing == tuple(tampered)
    assert len(pauses) == 4  # five checks, a pause before each but the first
    state = CheckpointStore(port).load("default/alpha")
    assert state is not None
    assert (state.phase, state.differing, state.differing_count) == (
        "verifying",
        tuple(tampered),
        7,
    )
    assert port.count("source") == 300
    assert all(p.payload.get("tampered") for p in port.retrieve("target", tampered))


def test_a_checkpoint_saved_before_versions_loads_with_the_new_fields_at_defaults(
    port: QdrantPort,
) -> None:
    store = CheckpointStore(port)
    store.save("old/job", Checkpoint(phase="verified", copied=7, differing=(3,)))
    [record], _ = port.scroll(CHECKPOINT_COLLECTION, limit=10)
    older = {
        "phase": "verified",
        "offset": None,
        "copied": 7,
        "source_count": 7,
        "target_count": 7,
        "verified_sample": 7,
        "verified_at": 1.0,
        "removed_from_source": 0,
        "written_by_a_later_release": True,  # ignored, not an error
    }
    port.set_payload(CHECKPOINT_COLLECTION, {"checkpoint": json.dumps(older)}, [record.id])
    loaded = store.load("old/job")
    assert loaded == Checkpoint(
        phase="verified",
        copied=7,
        source_count=7,
        target_count=7,
        verified_sample=7,
        verified_at=1.0,
    )
    assert (loaded.differing, loaded.verified_points, loaded.unversioned) == ((), 0, 0)


# ---------------------------------------------------------------------- dual writes


def _dual_write(port: QdrantPort, homes: Sequence[str], record: PointRecord) -> None:
    """What a router writes during the move: each home only over an older copy."""
    version = version_of(record.payload)
    for home in homes:
        port.upsert(home, [record], update_filter=older_than(version))


class DualWritingRouter(Wrapped):
    """Writes to the moving domain while the copy runs — just before the copy writes its
    ``at``-th page, so that page is in hand, read before the writes — and watches that no
    copy ever takes a dual-written point in the target back to an older version."""

    def __init__(self, inner: QdrantPort, at: int, writes: Any, *, overlap: bool) -> None:
        super().__init__(inner, overlap=overlap)
        self.pages_written = 0
        self.at = at
        self.writes = writes
        self.dual: dict[PointId, int] = {}  # ids dual-written to the target, and their version
        self.regressions: list[PointId] = []
        self.readers: set[str] = set()  # the threads that read pages

    def scroll(self, collection: str, **options: Any) -> Any:
        if collection == "source" and options.get("with_vectors", True):
            self.readers.add(threading.current_thread().name)
        return self.inner.scroll(collection, **options)

    def upsert(self, collection: str, points: Any, **options: Any) -> None:
        if collection == "target":
            self.pages_written += 1
            if self.pages_written == self.at:
                self.writes(self)
        self.inner.upsert(collection, points, **options)
        if collection == "target" and self.dual:
            held = self.inner.retrieve("target", list(self.dual), with_vectors=False)
            self.regressions += [p.id for p in held if version_of(p.payload) < self.dual[p.id]]


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "pipelined"])
def test_dual_writes_during_the_copy_end_with_both_homes_equal_by_version(
    port: QdrantPort, overlap: bool
) -> None:
    """While the copy runs, routers dual-write (versions >= F) updates and deletes, and writes
    made before F land in the source only: the homes end equal by (id, version), no dual write
    is ever overwritten by an older copy, and no deleted point is alive in the target — with
    reads and writes in turn, and pipelined in threads."""
    expected = _fill_versioned(port, 300)
    ids = sorted(int(p.id) for p in expected)
    written, read, ahead = ids[:16], ids[16:32], ids[32:]  # pages of 16 as the second is written
    rewritten = written[:3] + read[:3] + ahead[:3] + [10_001]
    deleted = written[3:5] + read[3:5] + ahead[3:5]
    late = written[5:8] + read[5:8] + ahead[5:8] + [10_002]  # before F, in the source only
    compacted = written[8]  # deleted in the source before F, its tombstone compacted since
    forgotten = read[8]  # deleted through the routers, then compacted in the source only
    vector = make_points(1, start=77)[0].vector
    dual_version = {i: FENCE + 1 + n for n, i in enumerate(rewritten + deleted + [forgotten])}
    late_version = {i: _version(i, WALL_MS + 30_000, node=2) for i in late}

    def writes(router: DualWritingRouter) -> None:
        for i in rewritten:
            payload = stamped({"text": "dual"}, version=dual_version[i], label=DOMAIN)
            _dual_write(port, ["source", "target"], PointRecord(i, vector, payload))
            router.dual[i] = dual_version[i]
        for i in [*deleted, forgotten]:
            payload = tombstone_payload(version=dual_version[i], label=DOMAIN)
            _dual_write(port, ["source", "target"], PointRecord(i, vector, payload))
            router.dual[i] = dual_version[i]
        for i in late:
            payload = stamped({"text": "late"}, version=late_version[i], label=DOMAIN)
            _dual_write(port, ["source"], PointRecord(i, vector, payload))
        port.delete_points("source", ids=[compacted, forgotten])

    router = DualWritingRouter(port, at=2, writes=writes, overlap=overlap)
    plan = _plan(workers=3 if overlap else 1, fence_version=FENCE)
    report = migrate(router, router, plan, sleep=_no_sleep)  # type: ignore[arg-type]
    assert router.pages_written > 2
    assert any(name.startswith("migration-read") for name in router.readers) == overlap
    assert report.verified
    assert any("caught up" in n for n in report.notes)
    source, target = _states(port, "source"), _states(port, "target")
    assert source == target
    assert report.verified_points >= len(target)
    assert router.regressions == []  # never an older copy over a dual write
    moved = _all(port, "target")
    assert all(moved[i].payload["text"] == "dual" for i in rewritten)
    assert all(version_of(moved[i].payload) == dual_version[i] for i in rewritten)
    assert all(i not in moved or is_tombstone(moved[i].payload) for i in deleted)
    assert {i: version_of(moved[i].payload) for i in late} == late_version
    assert compacted not in moved
    assert is_tombstone(moved[forgotten].payload)  # a tombstone equals an absent point: kept
    assert report.source_count == report.target_count == len(target)


def _in_flight(port: QdrantPort, homes: Sequence[str], vector: list[float] | None) -> None:
    """A dual write (an update of point 1 and a new point 1000) that reached ``homes`` only."""
    for i in (1, 1000):
        payload = stamped({"text": "in flight"}, version=FENCE + 5, label=DOMAIN)
        _dual_write(port, homes, PointRecord(i, vector, payload))


@pytest.mark.parametrize("lands", [True, False], ids=["lands", "never-lands"])
def test_a_dual_write_that_reached_the_target_only_is_checked_again(
    port: QdrantPort, lands: bool
) -> None:
    """Verification leaves a newer target point alone and checks it again after a pause: it
    passes once the router's write reaches the source, or fails naming the ids (in the
    exception and the checkpoint) when it never does — nothing deleted either way."""
    _fill_versioned(port)
    vector = make_points(1, start=55)[0].vector

    class Router(Wrapped):
        started = False

        def scroll(self, collection: str, **options: Any) -> Any:
            if collection == "source" and not Router.started:
                Router.started = True
                _in_flight(port, ["target"], vector)
            return self.inner.scroll(collection, **options)

    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if lands and len(pauses) == 2:
            _in_flight(port, ["source"], vector)

    router = Router(port)
    plan = _plan(fence_version=FENCE)
    if not lands:
        with pytest.raises(MigrationFailed, match=r"2 point\(s\) differ.*first ids: 1, 1000"):
            migrate(router, router, plan, sleep=pause)  # type: ignore[arg-type]
        assert failed_ids(port) == (1, 1000)
        assert len(pauses) == plan.verify_tries - 1
        assert port.count("source") == 300
        held = {p.id: version_of(p.payload) for p in port.retrieve("target", [1, 1000])}
        assert held == {1: FENCE + 5, 1000: FENCE + 5}  # the newer writes were kept
        return
    report = migrate(router, router, plan, sleep=pause)  # type: ignore[arg-type]
    assert report.verified
    assert len(pauses) == 2
    assert pauses == sorted(pauses)  # longer each time
    assert _states(port, "source") == _states(port, "target")
    assert _states(port, "target")[1000] == FENCE + 5


def failed_ids(port: QdrantPort) -> tuple[PointId, ...]:
    state = CheckpointStore(port).load("default/alpha")
    assert state is not None
    assert state.differing_count == len(state.differing)
    return state.differing


def test_verification_by_version_finds_one_differing_point_among_thousands(
    port: QdrantPort,
) -> None:
    """With no content sample at all, one target point at another version among 3,000 is found:
    an older one is copied again, a newer one (that the source never got) is named."""
    expected = _fill_versioned(port, 4500)
    plan = _plan(batch_size=500, verify_sample=0, fence_version=FENCE)
    assert migrate(port, port, plan, sleep=_no_sleep).verified
    older, newer = expected[1234], expected[2345]
    port.set_payload(
        "target",
        {POINT_VERSION_KEY: version_of(older.payload) - 1, "text": "corrupted"},
        [older.id],
    )
    _set_phase(port, "verifying")
    report = migrate(port, port, plan, sleep=_no_sleep)
    assert report.verified
    assert report.verified_points == len(expected)
    assert same_point(older, port.retrieve("target", [older.id])[0])
    port.set_payload("target", {POINT_VERSION_KEY: FENCE + 9}, [newer.id])
    _set_phase(port, "verifying")
    with pytest.raises(MigrationFailed) as failed:
        migrate(port, port, plan, sleep=_no_sleep)
    assert failed.value.differing == (newer.id,)
    assert failed_ids(port) == (newer.id,)


def test_a_dedicated_source_moves_and_counts_points_written_around_the_library(
    port: QdrantPort,
) -> None:
    port.create_collection("source", CollectionSpec(vector_size=8))
    port.create_collection("target", CollectionSpec(vector_size=8))
    points = make_points(40)

    def payload(i: int) -> dict[str, Any]:
        data: dict[str, Any] = dict(points[i].payload)
        if i < 20 or 32 <= i < 36:  # labelled
            data[LABEL_KEY] = DOMAIN
        elif i >= 36:
            data[LABEL_KEY] = OTHER
        if i < 27 or i >= 36:  # versioned
            data[POINT_VERSION_KEY] = _version(i)
        return data

    port.upsert("source", [PointRecord(p.id, p.vector, payload(int(p.id))) for p in points])
    unlabelled, unversioned = set(range(20, 32)), set(range(27, 36))
    report = migrate(port, port, _plan(dedicated_source=True, fence_version=FENCE), sleep=_no_sleep)
    assert report.verified
    assert (report.unlabelled, report.unversioned) == (12, 9)
    state = CheckpointStore(port).load("default/alpha")
    assert state is not None
    assert (state.unlabelled, state.unversioned) == (12, 9)
    moved = _all(port, "target")
    assert set(moved) == set(range(36))  # the other domain's points stay
    assert all(p.payload[LABEL_KEY] == DOMAIN for p in moved.values())  # labelled now
    assert {i for i, p in moved.items() if POINT_VERSION_KEY not in p.payload} == unversioned
    for i in unlabelled:
        assert {k: v for k, v in moved[i].payload.items() if k != LABEL_KEY} == payload(i)
    # A shared source moves its labelled points only, and counts no unlabelled point.
    port.delete_collection("target")
    port.create_collection("target", CollectionSpec(vector_size=8))
    shared = migrate(port, port, _plan(name="default/shared", fence_version=FENCE), sleep=_no_sleep)
    assert (shared.unlabelled, shared.unversioned) == (0, 4)
    assert set(_all(port, "target")) == set(range(20)) | set(range(32, 36))


def test_clean_old_home_removes_only_what_the_target_holds_as_new_or_newer(
    port: QdrantPort, caplog: pytest.LogCaptureFixture
) -> None:
    expected = _fill_versioned(port, 60)
    by_id = {int(p.id): p for p in expected}
    ids = sorted(by_id)  # the domain's 40 points
    newer, older, missing, deleted_there, gone, raced = (
        ids[0:4],
        ids[4:8],
        ids[8:12],
        ids[12:15],
        ids[15:17],
        ids[17],
    )
    same = ids[18:]
    port.upsert("target", [by_id[i] for i in ids if i not in missing + gone])
    for i in newer:
        port.set_payload("target", {POINT_VERSION_KEY: FENCE + i}, [i])
    for i in older:
        port.set_payload("target", {POINT_VERSION_KEY: _version(i) - 1}, [i])
    for i in deleted_there:  # deleted through a router since: a newer tombstone
        tombstone = tombstone_payload(version=FENCE + i, label=DOMAIN)
        port.overwrite_payload("target", tombstone, points_filter=ids_filter([i]))
    for i in gone:  # deleted in the source (a tombstone); compacted in the target
        tombstone = tombstone_payload(version=FENCE + i, label=DOMAIN)
        port.overwrite_payload("source", tombstone, points_filter=ids_filter([i]))

    class Racing(Wrapped):
        """A write to the source landing between the comparison and the delete."""

        def delete_points(self, collection: str, **options: Any) -> None:
            if collection == "source":
                late = by_id[raced]
                payload = stamped(late.payload, version=FENCE + 999, label=DOMAIN)
                self.inner.upsert("source", [PointRecord(raced, late.vector, payload)])
            self.inner.delete_points(collection, **options)

    with caplog.at_level(logging.WARNING, logger="librarian.services.migration"):
        removed = clean_old_home(Racing(port), port, _plan())  # type: ignore[arg-type]
    assert removed == len(same + newer + deleted_there + gone)
    [warning] = caplog.messages  # the ones the target lacks or holds older are reported
    assert f"kept {len(older + missing)} point(s)" in warning
    assert ", ".join(map(repr, older + missing)) in warning
    left = {i for i, p in _all(port, "source").items() if p.payload[LABEL_KEY] == DOMAIN}
    assert left == set(older + missing) | {raced}
    assert port.count("source") == 20 + len(left)  # the other domain untouched
    assert clean_old_home(port, port, _plan()) == 0  # kept until the target catches up


class Killed(Exception):
    pass


class Flaky:
    """A port that dies on the ``n``-th call of the operation ``fail_at`` = (name, n) names; an
    upsert dies half-way through. Counting per operation keeps a kill point on the same step
    when a pipelined copy interleaves its reads and writes differently from run to run."""

    def __init__(
        self, inner: QdrantPort, fail_at: tuple[str, int] | None, *, overlap: bool = False
    ) -> None:
        self.inner = inner
        self.calls_overlap = overlap
        self.calls: Counter[str] = Counter()
        self.fail_at = fail_at
        self.killed_during: str | None = None
        self._lock = threading.Lock()  # the copy may call from several threads

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("cluster", "close"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
                dies = (name, self.calls[name]) == self.fail_at
            if dies:
                self.killed_during = name
                if name == "upsert" and len(args) > 1 and len(args[1]) > 1:
                    attribute(args[0], list(args[1])[: len(args[1]) // 2])  # mid-batch
                raise Killed(f"killed during {name}")
            return attribute(*args, **kwargs)

        return call


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "pipelined"])
def test_killed_at_20_random_points_and_resumed(tmp_path: Path, overlap: bool) -> None:
    """Every kill (between batches, mid-batch, verifying, cleaning) then a restart ends exact."""
    rng = random.Random(20)
    plan = _plan(cleanup=True, fence_version=FENCE, checkpoint_every_s=0)
    probe = EmbeddedQdrant("probe", tmp_path / "probe")
    expected = _fill_versioned(probe)
    counter = Flaky(probe, fail_at=None, overlap=overlap)
    migrate(counter, counter, plan)  # type: ignore[arg-type]
    probe.close()
    every_call = [(name, n) for name, count in counter.calls.items() for n in range(1, count + 1)]
    must_hit = ("upsert", "scroll", "retrieve")
    kill_points = [rng.choice([c for c in every_call if c[0] == name]) for name in must_hit]
    kill_points += rng.sample([c for c in every_call if c not in kill_points], 20 - len(must_hit))
    phases_hit: set[str] = set()
    for run, fail_at in enumerate(kill_points):
        port = EmbeddedQdrant("edge", tmp_path / f"run{run}")
        _fill_versioned(port)
        flaky = Flaky(port, fail_at, overlap=overlap)
        with pytest.raises(Killed):
            migrate(flaky, flaky, plan)  # type: ignore[arg-type]
        assert flaky.killed_during == fail_at[0], run
        phases_hit.add(flaky.killed_during)
        state = CheckpointStore(port).load("default/alpha")
        if state is None or state.phase not in ("cleaning", "done"):
            assert port.count("source") == 300, f"source touched before verification (run {run})"
        report = migrate(port, port, plan)
        assert report.phase == "done", run
        assert report.verified, run
        moved = _all(port, "target")
        assert set(moved) == {p.id for p in expected}, run  # none lost, none extra
        assert all(same_point(p, moved[p.id]) for p in expected), run
        remaining = _all(port, "source")
        assert all(p.payload[LABEL_KEY] == OTHER for p in remaining.values()), run
        assert len(remaining) == 300 - len(expected), run
        port.close()
    assert {"upsert", "scroll", "retrieve"} <= phases_hit, phases_hit


# ----------------------------------------------------------------- every vector shape


def _fill_shaped(port: QdrantPort, n: int = 120) -> list[PointRecord]:
    """A source of points with named dense, sparse and multivectors (some lacking some), and a
    home made as a specialization makes it: tuned on the routing vector, the source's layout."""
    port.create_collection("source", SHAPED_SPEC)
    points = [
        replace(
            p,
            payload=stamped(
                p.payload, version=_version(int(p.id)), label=DOMAIN if int(p.id) % 3 else OTHER
            ),
        )
        for p in shaped_points(n, seed=11)
    ]
    port.upsert("source", points)
    tuned = tune_collection(
        DomainStats(points=n, dimension=TEXT_DIM, distance="Cosine"), "latency"
    ).collection
    port.create_collection("target", with_source_vectors(tuned, SHAPED_SPEC, "text"))
    return [p for p in points if p.payload[LABEL_KEY] == DOMAIN]


def test_a_move_copies_every_vector_of_every_point(port: QdrantPort) -> None:
    expected = _fill_shaped(port)
    home = port.collection_info("target").spec
    assert home.layout() == SHAPED_SPEC.layout()
    assert home.vectors["text"].hnsw is not None
    assert home.vectors["text"].hnsw.m == 32  # the latency profile, on the routing vector
    report = migrate(port, port, _plan(verify_sample=500))
    assert report.verified
    assert report.copied == len(expected) == report.target_count
    moved = _all(port, "target")
    assert set(moved) == {p.id for p in expected}
    # Compared with an independent reference holding the same points.
    reference = QdrantClient(":memory:")
    reference_collection(reference, "ref")
    reference.upsert("ref", reference_points(expected))
    held = reference_vectors(reference, "ref", [p.id for p in expected])
    for point in expected:
        assert vectors_equal(moved[point.id].vector, held[point.id], atol=1e-5), point.id
        assert moved[point.id].payload == point.payload
    lacking = [
        p.id for p in expected if set(p.vector or {}) != set(SHAPED_SPEC.vectors) | {"keywords"}
    ]
    assert lacking  # some points lack some vectors, and still do in their new home
    assert all(set(moved[i].vector or {}) == set(held[i]) for i in lacking)


@pytest.mark.parametrize(
    "tampered_vector",
    [
        {"keywords": models.SparseVector(indices=[1, 2], values=[0.5, 0.5])},
        {"colbert": [[9.0, 9.0, 9.0]]},
        {"image": [0.0, 0.0, 0.0, 1.0]},
    ],
)
def test_verification_compares_every_vector(port: QdrantPort, tampered_vector: Any) -> None:
    """Same version, one vector changed (sparse, multi or a non-routing dense one): the
    verification names the point and deletes nothing."""
    expected = _fill_shaped(port)
    migrate(port, port, _plan(verify_sample=500))
    victim = expected[0].id
    port.update_vectors("target", [PointRecord(victim, tampered_vector)])
    _set_phase(port, "verifying")
    with pytest.raises(MigrationFailed, match=r"1 point\(s\) differ") as failed:
        migrate(port, port, _plan(cleanup=True, verify_sample=500), sleep=_no_sleep)
    assert failed.value.differing == (victim,)
    assert port.count("source") == 120


def test_same_point_compares_vectors_by_name_and_kind() -> None:
    sparse = models.SparseVector(indices=[3, 1], values=[0.3, 0.1])
    base = PointRecord(1, {"a": [1.0, 2.0], "s": sparse, "m": [[1.0], [2.0]]}, {"k": 1})
    same = PointRecord(
        1,
        {
            "a": [1.0 + 1e-8, 2.0],
            "s": models.SparseVector(indices=[1, 3], values=[0.1, 0.3]),
            "m": [[1.0], [2.0]],
        },
        {"k": 1},
    )
    assert same_point(base, same)
    assert not same_point(base, replace(same, vector={"a": [1.0, 2.0], "s": sparse}))
    assert not same_point(base, replace(same, vector={**same.vector, "m": [[1.0]]}))  # type: ignore[dict-item]
    assert not same_point(
        base,
        replace(same, vector={**same.vector, "s": models.SparseVector(indices=[1], values=[0.1])}),  # type: ignore[dict-item]
    )
    assert not same_point(base, replace(same, vector={**same.vector, "s": [0.1, 0.3]}))  # type: ignore[dict-item]
