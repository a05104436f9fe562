"""Conditional writes racing other writes of the same point, step by step.

A conditional upsert (``insert_only``, ``update_only``, ``update_filter``) is decided
on the point's newest copy and written into the home its vector belongs to; a look
after writing finds whether a copy newer than the one decided on landed meanwhile.
Two writers that each give way to the other on seeing the other's copy can leave a
point with no copy at all, or drop an acknowledged write. Each test replays one such
interleaving exactly (:mod:`.stepped_writes`) and checks that every point keeps a
live copy and that what a read serves equals qdrant-client's local mode applying the
acknowledged operations in version order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from librarian.contracts.moves import MovePhase
from librarian.router import RouterState
from librarian.router.conditional import Condition
from librarian.router.library import View
from librarian.router.qdrant_api import ApiError
from librarian.services.home_sync import compare, copy_points, list_versions, remove_superseded
from librarian.storage.port import PointRecord

from .router_support import (
    DIM,
    Library,
    build_embedded_library,
    make_state,
    moving,
    near,
    static_loader,
)
from .stepped_writes import Stepper, live_copy_count, newest_copy, stepped_writes

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 30.0
NEW_ID = 9100


@dataclass
class Race:
    """A library, a router's write path over it run step by step, and the reference."""

    built: Library
    state: RouterState
    reference: QdrantClient
    operations: dict[str, Callable[[QdrantClient], Any]] = field(default_factory=dict)
    stepper: Stepper = field(init=False)
    view: View = field(init=False)

    def start(
        self,
        name: str,
        write: Callable[[], Awaitable[Any]],
        on_reference: Callable[[QdrantClient], Any],
    ) -> None:
        self.stepper.start(name, write)
        self.operations[name] = on_reference

    def upsert(
        self, name: str, point: models.PointStruct, condition: Condition | None = None
    ) -> None:
        record = PointRecord(point.id, point.vector, dict(point.payload or {}))  # type: ignore[arg-type]
        self.start(
            name,
            lambda: self.stepper.writes.upsert(self.view, [record], TIMEOUT, condition),
            lambda c: c.upsert(
                "library",
                [point],
                update_filter=condition.update_filter if condition else None,
                update_mode=condition.update_mode if condition else None,
            ),
        )

    def assert_as_reference(self, ids: list[int]) -> None:
        """Every id keeps at most one live copy, the acknowledged operations applied to the
        reference in version order leave what a read of the library serves."""
        acknowledged = [n for n in self.operations if self.stepper.acknowledged(n)]
        order = sorted(acknowledged, key=self.stepper.position)
        for name in order:
            self.operations[name](self.reference)
        expected = {r.id: r for r in self.reference.retrieve("library", ids, with_vectors=True)}
        for point_id in ids:
            assert live_copy_count(self.built, point_id) <= 1, point_id
            served = newest_copy(self.built, point_id)
            want = expected.get(point_id)
            if want is None:
                assert served is None, (point_id, order, served)
                continue
            assert served is not None, (point_id, order, "no copy left")
            payload, vector = served
            assert payload == want.payload, (point_id, order)
            np.testing.assert_allclose(vector, want.vector, atol=1e-5)  # type: ignore[arg-type]


def _reference(built: Library) -> QdrantClient:
    """Local mode holding the library's points in one collection."""
    reference = QdrantClient(":memory:")
    reference.create_collection(
        "library", models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    reference.upsert(
        "library",
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in built.points],  # type: ignore[arg-type]
    )
    return reference


@pytest.fixture
def race(tmp_path: Path) -> Iterator[Race]:
    built = build_embedded_library(tmp_path)
    reference = _reference(built)
    state = make_state(built)
    try:
        yield Race(built, state, reference)
    finally:
        state.upstream.close()
        built.fleet.close()


async def _stepped(race: Race) -> None:
    race.stepper, race.view = await stepped_writes(race.state)


def _point(
    built: Library, point_id: int, domain: int, tag: str, **payload: Any
) -> models.PointStruct:
    return models.PointStruct(
        id=point_id, vector=near(built, domain, sum(map(ord, tag))), payload={"tag": tag, **payload}
    )


INSERT_ONLY = Condition(update_mode=models.UpdateMode.INSERT_ONLY)


async def test_two_insert_only_writes_that_see_each_other_keep_the_point(race: Race) -> None:
    """Both decide the point is absent and write it into different homes; each then sees
    the other's copy. The later one (by version) finds the earlier landed between its
    decision and its write; the earlier one finds a newer conditional copy. Neither may
    leave the point without a copy: one of the two inserts stands."""
    await _stepped(race)
    race.upsert("first", _point(race.built, NEW_ID, 0, "first"), INSERT_ONLY)
    race.upsert("second", _point(race.built, NEW_ID, 2, "second"), INSERT_ONLY)
    step = race.stepper
    assert await step.run("first", "write")  # decided: absent; took the lower version
    assert await step.run("second", "write")  # decided: absent
    assert await step.run("first", "recheck")  # its copy is down
    assert await step.run("second", "recheck")  # its copy is down too
    await step.run("first", "look", 2)  # sees the second's copy, newer
    await step.run("second", "look", 2)  # sees the first's copy
    await step.finish("second", "first")
    assert step.acknowledged("first")
    assert step.acknowledged("second")
    race.assert_as_reference([NEW_ID])


IF_OPEN = Condition(
    update_filter=models.Filter(
        must=[models.FieldCondition(key="open", match=models.MatchValue(value=True))]
    )
)


async def _open_point(race: Race, point_id: int, domain: int) -> None:
    """``point_id`` written open (through the write path, so it carries a version)."""
    point = _point(race.built, point_id, domain, "opened", open=True)
    record = PointRecord(point_id, point.vector, dict(point.payload or {}))  # type: ignore[arg-type]
    await race.stepper.writes.upsert(race.view, [record], TIMEOUT)
    race.reference.upsert("library", [point])


async def test_a_decision_made_on_a_replaced_copy_is_made_again_not_taken_back(
    race: Race,
) -> None:
    """The earlier writer closes the point and is done before the later one, decided on the
    open copy, looks after writing: the later one's filter no longer matches, so its copy
    must go, and only for a copy newer than it (the closing write's, given a new version)."""
    await _stepped(race)
    await _open_point(race, NEW_ID, 0)
    race.upsert("close", _point(race.built, NEW_ID, 1, "closed", open=False), IF_OPEN)
    race.upsert("late", _point(race.built, NEW_ID, 2, "late", open=True), IF_OPEN)
    step = race.stepper
    assert await step.run("close", "write")
    assert await step.run("late", "write")  # decided on the open copy too
    await step.finish("close")  # written, settled, acknowledged
    await step.finish("late")  # its copy landed, then it finds the closed one in between
    assert step.acknowledged("close")
    assert step.acknowledged("late")
    race.assert_as_reference([NEW_ID])
    served = newest_copy(race.built, NEW_ID)
    assert served is not None
    assert served[0]["tag"] == "closed"
    assert (
        len(race.stepper.writers["late"].ticks) == 2
    )  # its write, then the closed copy's new version


async def test_a_conditional_and_a_plain_write_that_see_each_other_keep_both_acknowledged(
    race: Race,
) -> None:
    """A plain upsert and a conditional one, decided on the same copy, land in different
    homes and each sees the other: the plain one is made again after the conditional
    (a newer, merged copy), the conditional one decides again on the plain one's copy."""
    await _stepped(race)
    await _open_point(race, NEW_ID, 0)
    race.upsert("plain", _point(race.built, NEW_ID, 1, "plain", open=True))
    race.upsert("conditional", _point(race.built, NEW_ID, 2, "conditional", open=False), IF_OPEN)
    step = race.stepper
    assert await step.run("plain", "write")
    assert await step.run("conditional", "write")
    assert await step.run("plain", "settle")  # its copy is down
    assert await step.run("conditional", "recheck")  # its copy is down too
    await step.run("plain", "look", 2)  # saw the conditional's newer copy: made again
    await step.run("conditional", "look", 2)  # saw the plain copy in between: decides again
    await step.finish("conditional", "plain")
    assert step.acknowledged("plain")
    assert step.acknowledged("conditional")
    race.assert_as_reference([NEW_ID])


async def test_a_conditional_write_racing_a_delete_leaves_what_their_order_says(
    race: Race,
) -> None:
    """``update_only`` decided on a live copy; a delete lands its tombstone between that
    decision and the write's look after writing, in another home."""
    await _stepped(race)
    await _open_point(race, NEW_ID, 0)
    update_only = Condition(update_mode=models.UpdateMode.UPDATE_ONLY)
    race.upsert("update", _point(race.built, NEW_ID, 2, "updated"), update_only)
    race.start(
        "delete",
        lambda: race.stepper.writes.delete(
            race.view, models.PointIdsList(points=[NEW_ID]), TIMEOUT
        ),
        lambda c: c.delete("library", [NEW_ID]),
    )
    step = race.stepper
    assert await step.run("delete", "look")
    assert await step.run("update", "write")  # decided: the point exists
    await step.finish("delete")  # a newer version: it looked after the update decided
    await step.finish("update")
    assert step.acknowledged("update")
    assert step.acknowledged("delete")
    race.assert_as_reference([NEW_ID])


async def test_two_filtered_writes_that_see_each_other_keep_one_serial_order(race: Race) -> None:
    """Both decided on the open copy. The later one (by version) looks after writing first
    and finds the earlier one's copy in between: it decides again, its copy left in place.
    The earlier one then finds the later one's newer copy and gives way to it. The later
    one's earlier try stands (nothing but its own copy is newer than what it decided
    on); the earlier one decides again on it, and closes the point after it."""
    await _stepped(race)
    await _open_point(race, NEW_ID, 0)
    race.upsert("closing", _point(race.built, NEW_ID, 1, "closing", open=False), IF_OPEN)
    race.upsert("keeping", _point(race.built, NEW_ID, 2, "keeping", open=True), IF_OPEN)
    step = race.stepper
    assert await step.run("closing", "write")
    assert await step.run("keeping", "write")
    assert await step.run("closing", "recheck")
    assert await step.run("keeping", "recheck")
    assert await step.run("keeping", "look", 2)  # found the closing copy: decides again
    assert await step.run("closing", "look", 2)  # gave way to the keeping copy
    await step.finish("keeping", "closing")
    assert step.acknowledged("closing")
    assert step.acknowledged("keeping")
    race.assert_as_reference([NEW_ID])
    served = newest_copy(race.built, NEW_ID)
    assert served is not None
    assert served[0]["tag"] == "closing"


async def test_a_conditional_write_racing_a_vector_change_keeps_one_serial_order(
    race: Race,
) -> None:
    """A vector change in place of the open copy, newer than a conditional write decided on
    the same copy and written into another home: each finds the other's copy."""
    await _stepped(race)
    await _open_point(race, NEW_ID, 0)
    race.upsert("conditional", _point(race.built, NEW_ID, 2, "conditional", open=True), IF_OPEN)
    vectors = [models.PointVectors(id=NEW_ID, vector=near(race.built, 0, 77))]
    race.start(
        "vectors",
        lambda: race.stepper.writes.update_vectors(
            race.view, models.UpdateVectors(points=vectors), TIMEOUT
        ),
        lambda c: c.update_vectors("library", vectors),
    )
    step = race.stepper
    assert await step.run("conditional", "write")
    assert await step.run("vectors", "settle")  # changed in place, at a newer version
    assert await step.run("conditional", "recheck")  # its copy is down
    await step.run("vectors", "look", 2)  # finds the conditional copy between
    await step.run("conditional", "look", 2)  # finds the newer change: gives way
    await step.finish("vectors", "conditional")
    assert step.acknowledged("vectors")
    assert step.acknowledged("conditional")
    race.assert_as_reference([NEW_ID])


async def test_a_write_out_of_tries_withdraws_a_copy_decided_on_a_replaced_one(
    race: Race, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one try only, the later write finds the closing copy between its decision and
    its own copy and cannot decide again: it answers 503, and its copy (made on a copy
    that was replaced) is withdrawn by giving the closing copy a newer version first, so
    the point never lacks a copy and holds what the acknowledged write left."""
    monkeypatch.setattr("librarian.router.writes.IN_PLACE_TRIES", 1)
    await _stepped(race)
    await _open_point(race, NEW_ID, 0)
    race.upsert("close", _point(race.built, NEW_ID, 1, "closed", open=False), IF_OPEN)
    race.upsert("late", _point(race.built, NEW_ID, 2, "late", open=True), IF_OPEN)
    step = race.stepper
    assert await step.run("close", "write")
    assert await step.run("late", "write")
    await step.finish("close")
    await step.finish("late")
    assert step.acknowledged("close")
    late_error = step.writers["late"].error
    assert isinstance(late_error, ApiError)
    assert late_error.status == 503
    race.assert_as_reference([NEW_ID])
    served = newest_copy(race.built, NEW_ID)
    assert served is not None
    assert served[0]["tag"] == "closed"


async def test_during_a_move_a_withdrawn_decision_and_the_catch_up_leave_both_homes_equal(
    tmp_path: Path,
) -> None:
    """While d2 is copied to a new home (both homes written), the closing write lands in
    d2's old home but the new home misses it; the later write, decided on the open copy,
    finds the closing copy and gives it a newer version where it is. The move's catch-up
    then reconciles from a listing taken before that: it must neither undo the newer
    version nor leave the two homes different."""
    built = build_embedded_library(tmp_path / "lib")
    reference = _reference(built)
    state = make_state(built)
    state.config.loader = static_loader(moving(built, MovePhase.DUAL_WRITE))
    race = Race(built, state, reference)
    try:
        await _stepped(race)
        point_id = NEW_ID
        await _open_point(race, point_id, 2)
        race.upsert("close", _point(built, point_id, 2, "closed", open=False), IF_OPEN)
        race.upsert("late", _point(built, point_id, 0, "late", open=True), IF_OPEN)
        step = race.stepper
        assert await step.run("close", "write")
        assert await step.run("late", "write")
        await step.finish("close")
        west, east = built.fleet.get("west"), built.fleet.get("east")
        # the new home missed the closing write (its copy waits in the outbox)
        east.delete_points("library-d2-new", ids=[point_id])
        listed = (
            list_versions(west, "library-d2", None),
            list_versions(east, "library-d2-new", None),
        )
        await step.finish("late")
        assert step.acknowledged("close")
        assert step.acknowledged("late")
        fence = min(step.writers["close"].ticks)
        difference = compare(listed[0].held, listed[1].held, fence=fence)
        assert point_id in difference.copy  # the new home lacks it: the catch-up copies it
        copy_points(
            west,
            "library-d2",
            east,
            "library-d2-new",
            difference.copy,
            as_copied=lambda record: record,
            batch=100,
        )
        remove_superseded(east, "library-d2-new", difference.remove, batch=100)
        race.assert_as_reference([point_id])
        [old] = west.retrieve("library-d2", [point_id], with_vectors=False)
        [new] = east.retrieve("library-d2-new", [point_id], with_vectors=False)
        assert old.payload == new.payload
        assert old.payload["tag"] == "closed"
    finally:
        state.upstream.close()
        built.fleet.close()
