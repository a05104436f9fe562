"""Violations the history scenario found, each reduced to a few deterministic steps.

A test still marked ``xfail(strict=True)`` fails on the current product, with
the reason: once it is fixed the test passes, the strict mark turns that into a
failure, and the mark is removed; the others hold the fixes. The scenario
(``test_history_scenario.py``) sees these as ``duplicate`` copies, ``stale``
or ``stale_read`` reads, a final value written only by updates, or a move
whose homes differ by (id, version).

Each test reads every copy of the point from the engines (not the router).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.contracts.moves import MovePhase
from librarian.contracts.payload import POINT_VERSION_KEY, TOMBSTONE_KEY
from librarian.router.library import CollectionHome
from librarian.services.migration import MigrationPlan, migrate
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, QdrantPort

from .router_support import (
    DIM,
    FailsOnce,
    FlakyPort,
    HeldCall,
    Library,
    RouterThread,
    build_embedded_library,
    client_of,
    library_with_flaky_west,
    live_copies,
    make_state,
    moving,
    near,
    static_loader,
)

pytestmark = pytest.mark.timeout(120)

X = 4242


@pytest.fixture
def library(tmp_path: Path) -> Iterator[tuple[Library, FlakyPort]]:
    with library_with_flaky_west(tmp_path) as built:
        yield built


def _put(client: QdrantClient, built: Library, domain: int, payload: dict[str, Any]) -> None:
    point = models.PointStruct(id=X, vector=near(built, domain), payload=payload)
    client.upsert("library", [point])


def _copies(built: Library, *homes: CollectionHome) -> list[tuple[str, dict[str, Any]]]:
    """Every copy of X (tombstones included) in the library's homes and ``homes``."""
    every = [r.home for r in built.definition.domains] + list(homes)
    found = []
    for home in every:
        port = built.fleet.get(home.cluster)
        inner = getattr(port, "inner", port)
        for record in inner.retrieve(home.collection, [X], with_vectors=False):
            found.append((home.collection, record.payload))
    return found


def _west_back(state: Any, west: FlakyPort) -> None:
    """West answers again and its circuit is closed; the outbox is not drained yet."""
    west.mode = "ok"
    state.breaker.success("west")


def _is_tombstone(collection: str, payload: Any, **kwargs: Any) -> bool:
    """Is this overwrite of the payload a tombstone?"""
    return payload.get(TOMBSTONE_KEY) is True


def test_a_deleted_point_is_not_served_from_an_older_copy_still_awaiting_cleanup(
    library,
) -> None:
    """X lives in d2 (west). West is down while X is rewritten into d0 (east) and deleted:
    east holds the tombstone (v3), the removal of west's copy (v1) waits in the outbox.
    West comes back; before the outbox is drained, a retrieve serves west's v1."""
    built, west = library
    state = make_state(built)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        _put(client, built, 2, {"w": "first"})
        west.mode = "down"
        _put(client, built, 0, {"w": "second"})
        client.delete("library", points_selector=models.PointIdsList(points=[X]))
        assert len(state.outbox) >= 1
        _west_back(state, west)
        assert client.retrieve("library", [X]) == []  # the delete was acknowledged


def test_a_payload_update_does_not_keep_alive_a_copy_awaiting_removal(library) -> None:
    """X lives in d2 (west, v1). West is down while X is rewritten into d0 (east, v2); the
    removal of west's v1 is queued. West comes back and, before the outbox is drained, a
    payload update finds both live copies and raises both to v3; the drained removal
    (of copies older than v2) leaves west's copy: X is live in two homes for good."""
    built, west = library
    state = make_state(built)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        _put(client, built, 2, {"w": "first"})
        west.mode = "down"
        _put(client, built, 0, {"w": "second"})
        _west_back(state, west)
        client.set_payload("library", {"k": 1}, points=[X])
        router.run(state.maintain())
        assert len(state.outbox) == 0
        live = live_copies(_copies(built))
        assert [c for c, _ in live] == ["library-d0"], live


class _Gate:
    """Holds the next upsert into one collection until released, as a hung cluster would,
    then applies it (the caller has long given up)."""

    def __init__(self, inner: QdrantPort, collection: str) -> None:
        self.inner = inner
        self.collection = collection
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.applied = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert(self, collection: str, points: Any, **kwargs: Any) -> None:
        if not (self.armed and collection == self.collection):
            self.inner.upsert(collection, points, **kwargs)
            return
        self.armed = False
        self.entered.set()
        assert self.release.wait(60), "the held upsert was never released"
        try:
            self.inner.upsert(collection, points, **kwargs)
        finally:
            self.applied.set()


def test_a_timed_out_write_that_lands_late_leaves_no_second_copy(tmp_path: Path) -> None:
    """Client A writes X into d2 (west); west holds the write past the router's timeout
    (A gets a 504: unknown). Client B writes X into d0 (east): its look finds no copy on
    west, so nothing is to be removed. Then west applies A's write: X is live in two homes,
    with no cleanup pending."""
    built = build_embedded_library(tmp_path)
    gate = _Gate(built.fleet.get("west"), "library-d2")
    built.fleet = Fleet.of_ports({"east": built.fleet.get("east"), "west": gate})  # type: ignore[dict-item]
    state = make_state(built, settings={"timeout": 0.5}, settle_timeout_s=0.5)
    try:
        with RouterThread(state) as router, closing(client_of(router)) as client:
            gate.armed = True
            with pytest.raises(UnexpectedResponse) as timed_out:
                _put(client, built, 2, {"w": "a"})
            assert timed_out.value.status_code == 504
            assert gate.entered.is_set()
            _put(client, built, 0, {"w": "b"})
            gate.release.set()
            assert gate.applied.wait(30)
            router.run(state.maintain())
            live = live_copies(_copies(built))
            assert [c for c, _ in live] == ["library-d0"], live
    finally:
        gate.release.set()
        built.fleet.close()


def test_a_payload_update_racing_a_delete_does_not_bring_the_point_back(
    tmp_path: Path,
) -> None:
    """X (v1) lives in d0. A delete looks (v1), takes v2 and is held before its tombstone
    lands; a payload update looks (v1 still live), takes v3, sets it and its payload and is
    acknowledged; then the tombstone (where older than v2) finds v3 and does nothing. Both
    were acknowledged and overlapped: in either order X ends absent, yet it is live."""
    built = build_embedded_library(tmp_path)
    held = HeldCall(built.fleet.get("east"), "overwrite_payload", when=_is_tombstone)
    built.fleet = Fleet.of_ports({"east": held, "west": built.fleet.get("west")})  # type: ignore[dict-item]
    state = make_state(built)
    try:
        with RouterThread(state) as router, closing(client_of(router)) as client:
            _put(client, built, 0, {"w": "first"})
            held.armed = True
            deleted: list[BaseException | None] = []

            def delete() -> None:
                try:
                    with closing(client_of(router)) as other:
                        other.delete("library", points_selector=models.PointIdsList(points=[X]))
                    deleted.append(None)
                except BaseException as error:  # noqa: BLE001 - reported by the test thread
                    deleted.append(error)

            deleting = threading.Thread(target=delete)
            deleting.start()
            assert held.entered.wait(30)
            client.set_payload("library", {"k": 1}, points=[X])
            held.release.set()
            deleting.join(30)
            assert deleted == [None]  # the delete was acknowledged
            assert live_copies(_copies(built)) == []
            assert client.retrieve("library", [X]) == []
    finally:
        held.release.set()
        built.fleet.close()


class _RacingSource:
    """The move's source: once a scroll has returned a page holding X, ``race`` runs (a
    client's write through the router) before the migration copies that page."""

    def __init__(self, inner: QdrantPort, race: Callable[[], None]) -> None:
        self.inner = inner
        self.race: Callable[[], None] | None = race

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def scroll(self, collection: str, **kwargs: Any) -> Any:
        page, offset = self.inner.scroll(collection, **kwargs)
        if self.race is not None and any(p.id == X for p in page):
            race, self.race = self.race, None
            race()
        return page, offset


def _version(copies: list[tuple[str, dict[str, Any]]], collection: str) -> Any:
    found = [(p.get(POINT_VERSION_KEY), TOMBSTONE_KEY in p) for c, p in copies if c == collection]
    return found[0] if found else None


@pytest.mark.parametrize("racing", ["upsert", "delete"])
def test_a_write_during_the_copy_is_not_undone_by_the_copy(library, racing: str) -> None:
    """X (v1) lives in d2 on west. The move of d2 to east is in dualWrite; the migration
    scrolls a page holding X, then a client rewrites X (v2, both homes) or deletes it
    (tombstone v2 on west: east holds no copy yet), then the page is copied to east.
    After the copy the two homes must hold X at one version; once reads switch to the new
    home, the client must see its write.

    Verification is off: it compares a sample (256 points of a domain that may hold
    millions), which X is taken to be outside of."""
    built, _ = library
    east = built.fleet.get("east")
    east.create_collection("library-d2-new", CollectionSpec(vector_size=DIM))
    state = make_state(built)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        _put(client, built, 2, {"w": "old"})
        state.config.loader = static_loader(moving(built, MovePhase.DUAL_WRITE))
        router.run(state.reload())

        def race() -> None:
            if racing == "upsert":
                _put(client, built, 2, {"w": "new"})
            else:
                client.delete("library", points_selector=models.PointIdsList(points=[X]))

        west = built.fleet.get("west").inner  # type: ignore[attr-defined]
        plan = MigrationPlan("d2-to-east", "library-d2", "library-d2-new", "d2", verify=False)
        migrate(_RacingSource(west, race), east, plan)  # type: ignore[arg-type]
        copies = _copies(built, CollectionHome("east", "library-d2-new"))
        old, new = _version(copies, "library-d2"), _version(copies, "library-d2-new")
        assert old is not None
        assert old == new, f"old home {old}, new home {new} (version, tombstone)"
        state.config.loader = static_loader(moving(built, MovePhase.SWITCHED))
        router.run(state.reload())
        seen = [r.payload for r in client.retrieve("library", [X])]
        assert seen == ([{"w": "new"}] if racing == "upsert" else [])


def _client_thread(
    router: RouterThread,
    outcomes: dict[str, BaseException | None],
    name: str,
    action: Callable[[QdrantClient], Any],
) -> threading.Thread:
    """``action`` with a client of its own, in a started thread; ``outcomes[name]`` says how
    it ended (None: answered 2xx)."""

    def run() -> None:
        try:
            with closing(client_of(router)) as other:
                action(other)
            outcomes[name] = None
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            outcomes[name] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_delete_racing_a_write_into_another_domain_leaves_no_live_copy_behind_its_tombstone(
    tmp_path: Path,
) -> None:
    """X (v1) lives in d2 (west). A write of X into d0 (east) takes v2 and is held before it
    lands; a delete looks (east holds nothing yet), takes v3 and is held before its tombstone
    lands on west; the write lands on east and, looking at west, finds v1 to remove, held in
    turn; the tombstone lands (v3), then the removal (of copies older than v2) spares it.
    Both were acknowledged, the delete last: X must be absent everywhere, not live on east
    behind west's tombstone (served as absent only until tombstones are compacted)."""
    built = build_embedded_library(tmp_path)
    east_write = HeldCall(built.fleet.get("east"), "upsert")
    west_tombstone = HeldCall(built.fleet.get("west"), "overwrite_payload")
    west_removal = HeldCall(west_tombstone, "delete_points")
    built.fleet = Fleet.of_ports({"east": east_write, "west": west_removal})  # type: ignore[dict-item]
    state = make_state(built)
    outcomes: dict[str, BaseException | None] = {}

    def in_thread(name: str, action: Callable[[QdrantClient], Any]) -> threading.Thread:
        return _client_thread(router, outcomes, name, action)

    holds = (east_write, west_tombstone, west_removal)
    try:
        with RouterThread(state) as router, closing(client_of(router)) as client:
            _put(client, built, 2, {"w": "first"})
            east_write.armed = True
            writing = in_thread("write", lambda c: _put(c, built, 0, {"w": "second"}))
            assert east_write.entered.wait(30)
            west_tombstone.armed = True
            deleting = in_thread(
                "delete",
                lambda c: c.delete("library", points_selector=models.PointIdsList(points=[X])),
            )
            assert west_tombstone.entered.wait(30)
            west_removal.armed = True
            east_write.release.set()
            assert west_removal.entered.wait(30)
            west_tombstone.release.set()
            deleting.join(30)
            west_removal.release.set()
            writing.join(30)
            assert outcomes == {"write": None, "delete": None}
            copies = _copies(built)
            assert live_copies(copies) == [], copies
            assert client.retrieve("library", [X]) == []
    finally:
        for hold in holds:
            hold.release.set()
        built.fleet.close()


class _RaceAfterRead:
    """Once armed, the next read of whole payloads (not the write path's look at versions)
    returns, then ``race`` runs before the caller sees the answer."""

    def __init__(self, inner: QdrantPort) -> None:
        self.inner = inner
        self.race: Callable[[], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def retrieve(self, collection: str, ids: Any, **kwargs: Any) -> Any:
        found = self.inner.retrieve(collection, ids, **kwargs)
        if self.race is not None and kwargs.get("with_payload", True) is True and found:
            race, self.race = self.race, None
            race()
        return found


def test_a_vector_update_keeps_a_payload_change_acknowledged_while_it_ran(
    tmp_path: Path,
) -> None:
    """X lives in d0 with {"w": "first"}. A vector update reads X; before it writes, a client
    sets {"k": 1} and is acknowledged. The vector update must not write back the payload it
    read: X ends with the new vector and {"w": "first", "k": 1}."""
    built = build_embedded_library(tmp_path)
    racing = _RaceAfterRead(built.fleet.get("east"))
    built.fleet = Fleet.of_ports({"east": racing, "west": built.fleet.get("west")})  # type: ignore[dict-item]
    state = make_state(built)
    try:
        with RouterThread(state) as router, closing(client_of(router)) as client:
            _put(client, built, 0, {"w": "first"})

            def set_key() -> None:
                with closing(client_of(router)) as other:
                    other.set_payload("library", {"k": 1}, points=[X])

            racing.race = set_key
            moved = near(built, 0, seed=7)
            client.update_vectors("library", points=[models.PointVectors(id=X, vector=moved)])
            assert racing.race is None, "the race never ran"
            [point] = client.retrieve("library", [X], with_vectors=True)
            assert point.payload == {"w": "first", "k": 1}
            assert np.allclose(point.vector, moved, atol=1e-6)
            assert len(live_copies(_copies(built))) == 1
    finally:
        built.fleet.close()


def test_a_delete_whose_tombstone_only_waits_in_the_outbox_is_not_acknowledged(
    tmp_path: Path,
) -> None:
    """X lives in d0 (east). A delete finds it there, but east stops answering before the
    tombstone lands: the tombstone waits in the outbox. Acknowledged, the delete would be
    undone for readers once east answers and until the outbox is drained (a read then finds
    only east's live copy). It answers 502 instead, and is completed from the outbox."""
    built = build_embedded_library(tmp_path)
    failing = FailsOnce(built.fleet.get("east"), "overwrite_payload", when=_is_tombstone)
    built.fleet = Fleet.of_ports({"east": failing, "west": built.fleet.get("west")})  # type: ignore[dict-item]
    state = make_state(built)
    try:
        with RouterThread(state) as router, closing(client_of(router)) as client:
            _put(client, built, 0, {"w": "first"})
            failing.armed = True
            with pytest.raises(UnexpectedResponse) as refused:
                client.delete("library", points_selector=models.PointIdsList(points=[X]))
            assert refused.value.status_code == 502
            assert b"completed when they answer" in refused.value.content
            assert len(state.outbox) >= 1
            state.breaker.success("east")
            router.run(state.maintain())
            assert len(state.outbox) == 0
            assert live_copies(_copies(built)) == []
            assert client.retrieve("library", [X]) == []
    finally:
        built.fleet.close()


def test_a_timed_out_write_that_lands_after_its_home_changed_hands_is_still_settled(
    tmp_path: Path,
) -> None:
    """Client A's write of X into d0 (east) is held past the router's timeout (504): its
    landing is watched. B writes X into d0 too, newer; the outbox is drained (A's version
    is not there: still watched). C writes X into d2 (west), which removes B's copy from
    east. Then east applies A's write, into an empty slot: the watch must settle it (C's
    newer copy wins), or X stays live in two homes."""
    built = build_embedded_library(tmp_path)
    gate = _Gate(built.fleet.get("east"), "library-d0")
    built.fleet = Fleet.of_ports({"east": gate, "west": built.fleet.get("west")})  # type: ignore[dict-item]
    state = make_state(built, settings={"timeout": 0.5}, settle_timeout_s=0.5)
    try:
        with RouterThread(state) as router, closing(client_of(router)) as client:
            gate.armed = True
            with pytest.raises(UnexpectedResponse) as timed_out:
                _put(client, built, 0, {"w": "a"})
            assert timed_out.value.status_code == 504
            assert gate.entered.is_set()
            state.breaker.success("east")
            _put(client, built, 0, {"w": "b"})
            router.run(state.maintain())
            _put(client, built, 2, {"w": "c"})
            gate.release.set()
            assert gate.applied.wait(30)
            state.breaker.success("east")
            router.run(state.maintain())
            live = live_copies(_copies(built))
            assert [(c, p["w"]) for c, p in live] == [("library-d2", "c")], live
            assert [p.payload for p in client.retrieve("library", [X])] == [{"w": "c"}]
    finally:
        gate.release.set()
        built.fleet.close()


def test_a_payload_update_racing_a_write_into_another_domain_leaves_one_copy(
    tmp_path: Path,
) -> None:
    """X (v1) lives in d1 (east). A write of X into d0 takes v2 and is held before it lands;
    a payload update looks (d0 holds nothing yet), takes v3 and is held before it lands on
    d1; the write lands on d0 and, looking, finds v1 on d1 to remove, held in turn; the
    update lands on d1 (v3). Both are acknowledged: X must not end live in two homes (the
    write's copy and the update's, made on the copy the write replaced)."""
    built = build_embedded_library(tmp_path)
    held_write = HeldCall(built.fleet.get("east"), "upsert")
    held_update = HeldCall(held_write, "set_payload")
    held_removal = HeldCall(held_update, "delete_points")
    built.fleet = Fleet.of_ports({"east": held_removal, "west": built.fleet.get("west")})  # type: ignore[dict-item]
    state = make_state(built)
    outcomes: dict[str, BaseException | None] = {}

    def in_thread(name: str, action: Callable[[QdrantClient], Any]) -> threading.Thread:
        return _client_thread(router, outcomes, name, action)

    holds = (held_write, held_update, held_removal)
    try:
        with RouterThread(state) as router, closing(client_of(router)) as client:
            _put(client, built, 1, {"w": "first"})
            held_write.armed = True
            writing = in_thread("write", lambda c: _put(c, built, 0, {"w": "second"}))
            assert held_write.entered.wait(30)
            held_update.armed = True
            updating = in_thread("update", lambda c: c.set_payload("library", {"k": 1}, points=[X]))
            assert held_update.entered.wait(30)
            held_removal.armed = True
            held_write.release.set()
            assert held_removal.entered.wait(30)
            held_update.release.set()
            updating.join(30)
            held_removal.release.set()
            writing.join(30)
            assert outcomes == {"write": None, "update": None}
            live = live_copies(_copies(built))
            assert len(live) == 1, live
            [(collection, payload)] = live
            assert collection == "library-d0"
            assert payload["w"] == "second"  # the write, then the update made on it
            assert [p.payload for p in client.retrieve("library", [X])] == [{"w": "second", "k": 1}]
    finally:
        for hold in holds:
            hold.release.set()
        built.fleet.close()


def test_a_write_that_lost_to_a_newer_one_yields_even_if_its_cluster_fails_meanwhile(
    tmp_path: Path,
) -> None:
    """Client A's write of X into d0 (east) takes v1 and is held before it lands; B writes X
    into d2 (west) at v2 and is acknowledged (east held nothing yet). A lands, finds B's
    newer copy and yields: it removes its own copy, but east fails that call. A answers
    502; its copy must still go (from the outbox), not stay live beside B's."""
    built = build_embedded_library(tmp_path)
    held = HeldCall(built.fleet.get("east"), "upsert")
    failing = FailsOnce(held, "delete_points")
    built.fleet = Fleet.of_ports({"east": failing, "west": built.fleet.get("west")})  # type: ignore[dict-item]
    state = make_state(built)
    outcomes: dict[str, BaseException | None] = {}
    try:
        with RouterThread(state) as router, closing(client_of(router)) as client:
            held.armed = True
            writing = _client_thread(router, outcomes, "a", lambda c: _put(c, built, 0, {"w": "a"}))
            assert held.entered.wait(30)
            _put(client, built, 2, {"w": "b"})
            failing.armed = True
            held.release.set()
            writing.join(30)
            error = outcomes["a"]
            assert isinstance(error, UnexpectedResponse), error
            assert error.status_code == 502
            state.breaker.success("east")
            router.run(state.maintain())
            live = live_copies(_copies(built))
            assert [(c, p["w"]) for c, p in live] == [("library-d2", "b")], live
    finally:
        held.release.set()
        built.fleet.close()
