"""Migration: copy, catch up, verify, clean up — and killed at 20 random points, resumed."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from librarian.contracts.payload import LABEL_KEY
from librarian.services.migration import (
    CheckpointStore,
    MigrationFailed,
    MigrationPlan,
    migrate,
    same_point,
)
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

from .conftest import make_points

DOMAIN, OTHER = "d-alpha", "d-beta"


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

        def upsert(self, collection: str, points: Any) -> None:
            self.inner.upsert(collection, points)
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
    _fill(port)
    migrate(port, port, _plan())
    port.set_payload("target", {"tampered": True}, [1, 4, 5, 7, 8, 10, 11])
    store = CheckpointStore(port)
    store.save("default/alpha", store.load("default/alpha").__class__(phase="verifying"))  # type: ignore[union-attr]
    with pytest.raises(MigrationFailed, match="sampled points differ"):
        migrate(port, port, _plan(cleanup=True, verify_sample=200))
    assert port.count("source") == 300


class Killed(Exception):
    pass


class Flaky:
    """A port that dies on its ``fail_at``-th call; an upsert dies half-way through."""

    def __init__(self, inner: QdrantPort, fail_at: int) -> None:
        self.inner = inner
        self.calls = 0
        self.fail_at = fail_at
        self.operations: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("cluster", "close"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            self.operations.append(name)
            if self.calls == self.fail_at:
                if name == "upsert" and len(args) > 1 and len(args[1]) > 1:
                    attribute(args[0], list(args[1])[: len(args[1]) // 2])  # mid-batch
                raise Killed(f"killed during {name}")
            return attribute(*args, **kwargs)

        return call


def test_killed_at_20_random_points_and_resumed(tmp_path: Path) -> None:
    """Every kill (between batches, mid-batch, verifying, cleaning) then a restart ends exact."""
    rng = random.Random(20)
    probe = EmbeddedQdrant("probe", tmp_path / "probe")
    expected = _fill(probe)
    counter = Flaky(probe, fail_at=-1)
    migrate(counter, counter, _plan(cleanup=True))  # type: ignore[arg-type]
    total_calls = counter.calls
    probe.close()
    kill_points = sorted(rng.sample(range(1, total_calls + 1), 20))
    phases_hit: set[str] = set()
    for run, fail_at in enumerate(kill_points):
        port = EmbeddedQdrant("edge", tmp_path / f"run{run}")
        _fill(port)
        flaky = Flaky(port, fail_at)
        with pytest.raises(Killed):
            migrate(flaky, flaky, _plan(cleanup=True))  # type: ignore[arg-type]
        phases_hit.add(flaky.operations[-1])
        state = CheckpointStore(port).load("default/alpha")
        if state is None or state.phase not in ("cleaning", "done"):
            assert port.count("source") == 300, f"source touched before verification (run {run})"
        report = migrate(port, port, _plan(cleanup=True))
        assert report.phase == "done", run
        assert report.verified, run
        moved = _all(port, "target")
        assert set(moved) == {p.id for p in expected}, run  # none lost, none extra
        assert all(same_point(p, moved[p.id]) for p in expected), run
        remaining = _all(port, "source")
        assert all(p.payload[LABEL_KEY] == OTHER for p in remaining.values()), run
        assert len(remaining) == 300 - len(expected), run
        port.close()
    assert {"upsert", "scroll", "retrieve"} <= phases_hit
