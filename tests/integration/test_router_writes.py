"""The versioned write path through the router, over real HTTP with the official client.

Every check reads the clusters directly (the engine, not the router) to see
where each point really is, at which version, and with which label.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.contracts.moves import MovePhase
from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY, TOMBSTONE_KEY
from librarian.core.hlc import decode_version
from librarian.storage.fleet import Fleet
from librarian.storage.port import PointId, PointRecord

from .router_support import (
    FlakyPort,
    Library,
    RouterThread,
    build_embedded_library,
    client_of,
    library_with_flaky_west,
    live_copies,
    make_state,
    moving,
    near,
)

pytestmark = pytest.mark.timeout(300)

NOW_MS = 1_790_000_000_000


class Wall:
    """An injected wall clock in milliseconds."""

    def __init__(self, ms: int = NOW_MS) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def library(tmp_path: Path) -> Iterator[tuple[Library, FlakyPort]]:
    with library_with_flaky_west(tmp_path) as built:
        yield built


def _copies(built: Library, ids: list[PointId]) -> dict[PointId, list[tuple[str, dict[str, Any]]]]:
    """Every copy of each id in every home (tombstones included), read from the engines."""
    found: dict[PointId, list[tuple[str, dict[str, Any]]]] = {i: [] for i in ids}
    for route in built.definition.domains:
        port = built.fleet.get(route.cluster)
        inner = getattr(port, "inner", port)
        for record in inner.retrieve(route.collection, ids, with_vectors=False):
            found[record.id].append((route.domain_id, record.payload))
    return found


def test_concurrent_writers_of_the_same_ids_in_different_domains_converge(library) -> None:
    """Two clients write the same 150 ids at once, each into another domain: none is lost,
    none is left twice, and each ends with the write of the highest version."""
    built, _ = library
    ids = list(range(5000, 5150))
    with RouterThread(make_state(built)) as router:
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def writer(name: str, domain: int) -> None:
            try:
                with closing(client_of(router)) as client:
                    barrier.wait()
                    for i in ids:
                        client.upsert(
                            "library",
                            [
                                models.PointStruct(
                                    id=i, vector=near(built, domain, i), payload={"w": name}
                                )
                            ],
                        )
            except BaseException as error:  # noqa: BLE001 - reported by the test thread
                errors.append(error)

        threads = [
            threading.Thread(target=writer, args=("a", 0)),
            threading.Thread(target=writer, args=("b", 2)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        copies = _copies(built, ids)
        for i in ids:
            live = live_copies(copies[i])
            assert len(live) == 1, f"id {i}: {copies[i]}"
            domain, payload = live[0]
            assert payload[LABEL_KEY] == domain
            assert payload["w"] in ("a", "b")
            newest = max(p[POINT_VERSION_KEY] for _, p in copies[i])
            assert payload[POINT_VERSION_KEY] == newest  # the highest version won
        with closing(client_of(router)) as client:
            got = client.retrieve("library", ids)
            assert sorted(r.id for r in got) == ids
            assert all(set(r.payload or {}) == {"w"} for r in got)  # no library keys leak


def test_every_write_stamps_label_and_version_and_payload_updates_keep_them(library) -> None:
    built, _ = library
    wall = Wall()
    state = make_state(built, wall_ms=wall, node_id=9)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        client.upsert(
            "library",
            [models.PointStruct(id=7001, vector=near(built, 2, 1), payload={"a": 1, "b": 2})],
        )

        def stored() -> dict[str, Any]:
            [(domain, payload)] = live_copies(_copies(built, [7001])[7001])
            assert domain == "d2"
            assert payload[LABEL_KEY] == "d2"
            return payload

        first = stored()[POINT_VERSION_KEY]
        assert decode_version(first).node == 9
        steps = [
            lambda: client.set_payload("library", {"c": 3}, points=[7001]),
            lambda: client.set_payload("library", {"inner": 1}, points=[7001], key="nested"),
            lambda: client.overwrite_payload("library", {"only": True}, points=[7001]),
            lambda: client.delete_payload("library", ["only"], points=[7001]),
            lambda: client.set_payload("library", {"z": 1}, points=[7001]),
            lambda: client.clear_payload("library", points_selector=[7001]),
        ]
        expected = [
            {"a": 1, "b": 2, "c": 3},
            {"a": 1, "b": 2, "c": 3, "nested": {"inner": 1}},
            {"only": True},
            {},
            {"z": 1},
            {},
        ]
        versions = [first]
        for step, payload in zip(steps, expected, strict=True):
            wall.ms += 1
            step()
            now = stored()
            versions.append(now[POINT_VERSION_KEY])
            assert {k: v for k, v in now.items() if not k.startswith("librarian_")} == payload
            [record] = client.retrieve("library", [7001])
            assert record.payload == payload
        assert versions == sorted(versions)
        assert len(set(versions)) == len(versions)


def test_payload_by_filter_and_batch_operations(library) -> None:
    built, _ = library
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        client.upsert(
            "library",
            [
                models.PointStruct(id=8000 + d, vector=near(built, d, d), payload={"tag": "t"})
                for d in range(3)
            ],
        )
        tagged = models.Filter(
            must=[models.FieldCondition(key="tag", match=models.MatchValue(value="t"))]
        )
        client.set_payload("library", {"seen": True}, points=tagged)
        got = {r.id: r.payload for r in client.retrieve("library", [8000, 8001, 8002])}
        assert all(p == {"tag": "t", "seen": True} for p in got.values())
        client.batch_update_points(
            "library",
            [
                models.UpsertOperation(
                    upsert=models.PointsList(
                        points=[models.PointStruct(id=8100, vector=near(built, 1, 5), payload={})]
                    )
                ),
                models.SetPayloadOperation(
                    set_payload=models.SetPayload(payload={"k": 1}, points=[8100])
                ),
                models.DeleteOperation(delete=models.PointIdsList(points=[8000])),
                models.UpdateVectorsOperation(
                    update_vectors=models.UpdateVectors(
                        points=[models.PointVectors(id=8001, vector=near(built, 2, 9))]
                    )
                ),
            ],
        )
        got = {r.id: r.payload for r in client.retrieve("library", [8000, 8001, 8100])}
        assert got == {8001: {"tag": "t", "seen": True}, 8100: {"k": 1}}
        copies = _copies(built, [8001])[8001]
        assert [d for d, _ in live_copies(copies)] == ["d1"]  # changed in place, in its domain
        [changed] = client.retrieve("library", [8001], with_vectors=True)
        assert np.allclose(changed.vector, near(built, 2, 9), atol=1e-6)
        with pytest.raises(UnexpectedResponse) as refused:
            client.delete_vectors("library", vectors=[""], points=[8001])
        assert refused.value.status_code == 400
        assert b"Delete the points" in refused.value.content


@pytest.mark.parametrize(
    "payload", [{LABEL_KEY: "d0"}, {POINT_VERSION_KEY: 1}, {TOMBSTONE_KEY: True}]
)
def test_reserved_keys_are_refused_with_a_400(library, payload: dict[str, Any]) -> None:
    built, _ = library
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        for write in (
            lambda: client.upsert(
                "library", [models.PointStruct(id=1, vector=near(built, 0, 0), payload=payload)]
            ),
            lambda: client.set_payload("library", payload, points=[1]),
        ):
            with pytest.raises(UnexpectedResponse) as refused:
                write()
            assert refused.value.status_code == 400
            assert b"reserved by the library" in refused.value.content


def test_a_delete_leaves_a_tombstone_no_older_write_or_read_gets_past(library) -> None:
    built, _ = library
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        client.upsert("library", [models.PointStruct(id=9000, vector=near(built, 0, 1))])
        [(_, before)] = live_copies(_copies(built, [9000])[9000])
        total = client.count("library").count
        client.delete("library", points_selector=[9000])
        [(domain, tombstone)] = _copies(built, [9000])[9000]
        assert tombstone[TOMBSTONE_KEY] is True
        assert tombstone[POINT_VERSION_KEY] > before[POINT_VERSION_KEY]
        assert client.retrieve("library", [9000]) == []
        assert client.count("library").count == total - 1
        hits = client.query_points("library", query=near(built, 0, 1), limit=5).points
        assert 9000 not in [h.id for h in hits]
        # a write that was sent before the delete and arrives late (an older version) is refused
        route = built.definition.domains[0]
        late = PointRecord(9000, near(built, 0, 1), {POINT_VERSION_KEY: before[POINT_VERSION_KEY]})
        older = models.Filter(
            should=[
                models.FieldCondition(
                    key=POINT_VERSION_KEY, range=models.Range(lt=before[POINT_VERSION_KEY])
                ),
                models.IsEmptyCondition(is_empty=models.PayloadField(key=POINT_VERSION_KEY)),
            ]
        )
        built.fleet.get("east").upsert(route.collection, [late], update_filter=older)
        assert client.retrieve("library", [9000]) == []
        # a new write through the router brings it back, as a newer version
        client.upsert("library", [models.PointStruct(id=9000, vector=near(built, 0, 2))])
        assert [r.id for r in client.retrieve("library", [9000])] == [9000]
        assert domain == "d0"


def test_a_search_whose_nearest_points_are_tombstones_answers_the_live_points(library) -> None:
    """Deleted points keep their vectors in their homes (as tombstones): a search around
    them ranks the live points exactly as one collection without them does, scores included,
    whether the search is exact or not, with and without a filter."""
    built, _ = library
    query = near(built, 0, 7)
    reference = QdrantClient(":memory:")
    reference.create_collection(
        "ref", vectors_config=models.VectorParams(size=len(query), distance=models.Distance.COSINE)
    )
    reference.upsert(
        "ref",
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in built.points],
    )
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        nearest = [h.id for h in client.query_points("library", query=query, limit=6).points]
        client.delete("library", points_selector=nearest)
        reference.delete("ref", points_selector=nearest)
        copies = _copies(built, nearest)
        assert all(payload[TOMBSTONE_KEY] is True for c in copies.values() for _, payload in c)
        group = models.Filter(
            must=[models.FieldCondition(key="group", match=models.MatchAny(any=["g0", "g1"]))]
        )
        for exact, query_filter in [(False, None), (True, None), (False, group), (True, group)]:
            params = models.SearchParams(exact=exact)
            got = client.query_points(
                "library", query=query, limit=8, search_params=params, query_filter=query_filter
            ).points
            want = reference.query_points(
                "ref", query=query, limit=8, search_params=params, query_filter=query_filter
            ).points
            assert [h.id for h in got] == [h.id for h in want]
            assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
            assert [h.payload for h in got] == [h.payload for h in want]
            assert not set(nearest) & {h.id for h in got}


def test_a_dead_cluster_does_not_stop_writes_to_the_others_and_its_cleanup_waits(
    library,
) -> None:
    """A point moves from a domain on the dead cluster to one on a live cluster: the write is
    acknowledged, the old copy's removal waits in the outbox, and is done once it is back."""
    built, west = library
    state = make_state(built)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        client.upsert("library", [models.PointStruct(id=9100, vector=near(built, 2, 3))])
        assert [d for d, _ in live_copies(_copies(built, [9100])[9100])] == ["d2"]
        west.mode = "down"
        for i in range(20):  # writes to the live cluster keep working
            client.upsert("library", [models.PointStruct(id=9200 + i, vector=near(built, 0, i))])
        client.upsert("library", [models.PointStruct(id=9100, vector=near(built, 1, 3))])
        summary = state.outbox.summary()
        assert summary["entries"] >= 1
        # west's cleanup, and on east a watch that settles the write again once west answers
        assert summary["clusters"] == ["east", "west"]
        with pytest.raises(UnexpectedResponse) as refused:  # a write that needs west fails
            client.upsert("library", [models.PointStruct(id=9300, vector=near(built, 2, 4))])
        assert refused.value.status_code in (502, 504)
        west.mode = "ok"
        state.breaker.success("west")
        router.run(state.maintain())
        assert state.outbox.summary()["entries"] == 0
        copies = _copies(built, [9100])[9100]
        assert [d for d, _ in live_copies(copies)] == ["d1"]  # the old copy on west is gone
        assert [r.id for r in client.retrieve("library", [9100])] == [9100]


def test_the_outbox_survives_a_restart_and_refuses_writes_when_full(
    library, tmp_path: Path
) -> None:
    built, west = library
    path = tmp_path / "outbox.db"
    state = make_state(built, outbox_path=str(path), outbox_max_entries=4)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        for i in range(3):
            client.upsert("library", [models.PointStruct(id=9400 + i, vector=near(built, 2, i))])
        west.mode = "down"
        for i in range(2):
            client.upsert("library", [models.PointStruct(id=9400 + i, vector=near(built, 0, i))])
        with pytest.raises(UnexpectedResponse) as refused:
            client.upsert("library", [models.PointStruct(id=9402, vector=near(built, 0, 2))])
        assert refused.value.status_code == 503
        assert b"outbox" in refused.value.content
    restarted = make_state(built, outbox_path=str(path))
    assert restarted.outbox.summary()["entries"] == 4  # two writes: a cleanup and a watch each
    west.mode = "ok"
    with RouterThread(restarted) as router:
        router.run(restarted.maintain())
        assert restarted.outbox.summary()["entries"] == 0
    copies = _copies(built, [9400, 9401, 9402])
    assert [d for d, _ in live_copies(copies[9400])] == ["d0"]
    assert [d for d, _ in live_copies(copies[9401])] == ["d0"]
    assert [d for d, _ in live_copies(copies[9402])] == ["d2"]  # refused: left where it was


def test_a_write_whose_settling_cannot_be_queued_keeps_the_point(library) -> None:
    """The outbox fills between a write's first look and its settling (west does not
    answer): the write is refused, but the older copy it already removed from another
    home must not leave the point without a copy (its own copy, newer, stays)."""
    built, west = library
    east = built.fleet.get("east")
    point_id = next(
        p.id for p in built.points if east.retrieve("library-d0", [p.id], with_vectors=False)
    )
    state = make_state(built, outbox_max_entries=1)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        west.mode = "down"
        moved = models.PointStruct(id=point_id, vector=near(built, 1, 5), payload={"tag": "moved"})
        with pytest.raises(UnexpectedResponse) as refused:
            client.upsert("library", [moved])
        assert refused.value.status_code == 503
        assert b"outbox" in refused.value.content
        west.mode = "ok"
        state.breaker.success("west")
        live = live_copies(_copies(built, [point_id])[point_id])
        assert live, "the point was left without a copy"
        # in doubt, so either the write or the copy it replaced, and served as such
        [record] = client.retrieve("library", [point_id])
        assert record.payload in (
            {"tag": "moved"},
            next(p.payload for p in built.points if p.id == point_id),
        )


def test_tombstones_are_compacted_after_their_retention(library) -> None:
    built, _ = library
    wall = Wall()
    state = make_state(built, wall_ms=wall, tombstone_retention_s=60.0)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        client.upsert("library", [models.PointStruct(id=9500, vector=near(built, 1, 1))])
        client.delete("library", points_selector=[9500])
        router.run(state.maintain())
        assert len(_copies(built, [9500])[9500]) == 1  # still needed
        wall.ms += 61_000
        router.run(state.maintain())
        assert _copies(built, [9500])[9500] == []


def test_a_later_write_wins_even_from_a_router_whose_clock_is_behind(library) -> None:
    built, _ = library
    ahead = make_state(built, wall_ms=Wall(NOW_MS + 60_000), node_id=1)
    behind = make_state(built, wall_ms=Wall(NOW_MS), node_id=2)
    with (
        RouterThread(ahead) as first,
        RouterThread(behind) as second,
        closing(client_of(first)) as one,
        closing(client_of(second)) as two,
    ):
        one.upsert(
            "library", [models.PointStruct(id=9600, vector=near(built, 0, 1), payload={"w": 1})]
        )
        two.upsert(
            "library", [models.PointStruct(id=9600, vector=near(built, 2, 1), payload={"w": 2})]
        )
        [(domain, payload)] = live_copies(_copies(built, [9600])[9600])
        assert (domain, payload["w"]) == ("d2", 2)
        assert [r.payload for r in one.retrieve("library", [9600])] == [{"w": 2}]


def test_during_a_move_writes_reach_both_homes_and_the_status_says_which_phase(library) -> None:
    from .router_support import static_loader

    built, _ = library
    definition = moving(built, MovePhase.DUAL_WRITE)
    state = make_state(built)
    state.config.loader = static_loader(definition)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        import httpx

        status = httpx.get(f"{router.url}/librarian/status").json()["result"]
        assert status["fences"] == {"d2-to-east": "dualWrite"}
        client.upsert("library", [models.PointStruct(id=9700, vector=near(built, 2, 7))])
        client.set_payload("library", {"k": 1}, points=[9700])
        west = built.fleet.get("west").inner  # type: ignore[attr-defined]
        east = built.fleet.get("east")
        [old] = west.retrieve("library-d2", [9700], with_vectors=False)
        [new] = east.retrieve("library-d2-new", [9700], with_vectors=False)
        assert old.payload == new.payload
        assert old.payload["k"] == 1
        assert old.payload[LABEL_KEY] == "d2"
        client.delete("library", points_selector=[9700])
        for port, collection in ((west, "library-d2"), (east, "library-d2-new")):
            [tomb] = port.retrieve(collection, [9700], with_vectors=False)
            assert tomb.payload[TOMBSTONE_KEY] is True
        # reads come from the old home only: a point only in the new home is not seen
        east.upsert("library-d2-new", [PointRecord(9701, near(built, 2, 8), {})])
        assert client.retrieve("library", [9701]) == []


def test_a_router_that_cannot_renew_its_registration_refuses_writes_not_reads(
    library, monkeypatch: pytest.MonkeyPatch
) -> None:
    from librarian.router.registration import Registration

    built, _ = library
    outcome = {"fail": False}

    async def renew(*args: Any, **kwargs: Any) -> None:
        if outcome["fail"]:
            from librarian.kube.errors import ApiUnreachable

            raise ApiUnreachable("cannot reach the Kubernetes API")

    monkeypatch.setattr("librarian.router.registration.renew_lease", renew)
    clock = {"now": 0.0}
    state = make_state(built)
    state.registration = Registration("ns", "packages", "r0", monotonic=lambda: clock["now"])
    with RouterThread(state) as router, closing(client_of(router)) as client:
        point = models.PointStruct(id=9800, vector=near(built, 0, 1))
        with pytest.raises(UnexpectedResponse) as refused:
            client.upsert("library", [point])
        assert refused.value.status_code == 503
        router.run(state.register())
        client.upsert("library", [point])
        outcome["fail"] = True
        clock["now"] += 60
        router.run(state.register())
        with pytest.raises(UnexpectedResponse) as refused:
            client.upsert("library", [point])
        assert b"could not renew" in refused.value.content
        assert [r.id for r in client.retrieve("library", [9800])] == [9800]  # reads go on


class _HeldUpserts:
    """Delegates to a real port; holds upserts while ``hold`` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert(self, *args: Any, **kwargs: Any) -> None:
        if self.hold:
            self.entered.set()
            assert self.release.wait(60), "the held upsert was never released"
        self.inner.upsert(*args, **kwargs)


def test_a_new_move_phase_is_acknowledged_only_after_older_writes_ended(
    library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that started before the router learnt of a move writes one home only: the
    Lease must not say the router writes both homes until that write has ended."""
    from librarian.router.registration import Registration

    from .router_support import static_loader

    built, _ = library
    reported: list[dict[str, str]] = []

    async def renew(*args: Any, **kwargs: Any) -> None:
        reported.append(dict(args[3]))

    monkeypatch.setattr("librarian.router.registration.renew_lease", renew)
    held = _HeldUpserts(built.fleet.get("west"))
    built.fleet = Fleet.of_ports({"east": built.fleet.get("east"), "west": held})  # type: ignore[dict-item]
    state = make_state(built, settings={"timeout": 30}, fence_wait_s=0.2)
    state.registration = Registration("ns", "packages", "r0", monotonic=lambda: 0.0)
    with RouterThread(state) as router, closing(client_of(router)) as client:
        router.run(state.register())
        assert reported[-1] == {}
        held.hold = True
        writer = threading.Thread(
            target=lambda: client.upsert(
                "library", [models.PointStruct(id=9900, vector=near(built, 2, 1))]
            )
        )
        writer.start()
        assert held.entered.wait(30)
        state.config.loader = static_loader(moving(built, MovePhase.DUAL_WRITE))
        assert router.run(state.reload())
        router.run(state.register())  # the held write still runs: the old phases are kept
        assert reported[-1] == {}
        held.hold = False
        held.release.set()
        writer.join(30)
        router.run(state.register())
        assert reported[-1] == {"d2-to-east": "dualWrite"}


def test_during_a_move_a_write_the_second_home_misses_reaches_it_when_it_is_back(
    tmp_path: Path,
) -> None:
    """Domain d2 moves from west to east; east is down: writes to d2 are acknowledged (west,
    its own home, holds them) and east gets them from the outbox once it answers again."""
    from .router_support import static_loader

    built = build_embedded_library(tmp_path)
    east = FlakyPort(built.fleet.get("east"))
    built.fleet = Fleet.of_ports({"east": east, "west": built.fleet.get("west")})  # type: ignore[dict-item]
    try:
        state = make_state(built)
        state.config.loader = static_loader(moving(built, MovePhase.DUAL_WRITE))
        with RouterThread(state) as router, closing(client_of(router)) as client:
            east.mode = "down"
            client.upsert("library", [models.PointStruct(id=9950, vector=near(built, 2, 5))])
            assert "copy" in [c.kind.value for c in state.outbox.pending()]
            assert east.inner.retrieve("library-d2-new", [9950]) == []
            east.mode = "ok"
            state.breaker.success("east")
            router.run(state.maintain())
            assert state.outbox.summary()["entries"] == 0
            [copy] = east.inner.retrieve("library-d2-new", [9950], with_vectors=False)
            [original] = built.fleet.get("west").retrieve("library-d2", [9950], with_vectors=False)
            assert copy.payload == original.payload
    finally:
        built.fleet.close()
