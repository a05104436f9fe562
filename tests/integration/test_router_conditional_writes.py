"""Conditional writes (``update_filter``, ``update_mode``) on a library collection, over real HTTP.

Every write is made through the router with the official client and the same
write on qdrant-client's local mode holding the same points in one collection
(the independent reference); the points read back through the router must
equal the reference's. The library's own states are covered too: deleted
points (tombstones), points whose newest copy is in another home than an older
copy still awaiting removal, batches, a cluster that does not answer, and two
clients racing a conditional and an unconditional write of the same ids, whose
result must be that of some serial order of their operations.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.contracts.moves import MovePhase
from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY
from librarian.storage.port import CollectionSpec, PointId, PointRecord

from .router_support import (
    DIM,
    FlakyPort,
    Library,
    RouterThread,
    client_of,
    library_with_flaky_west,
    live_copies,
    make_state,
    moving,
    near,
    static_loader,
)

pytestmark = pytest.mark.timeout(300)

MODES = [
    None,
    models.UpdateMode.UPSERT,
    models.UpdateMode.INSERT_ONLY,
    models.UpdateMode.UPDATE_ONLY,
]
GROUP_1 = models.Filter(
    must=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))]
)


@dataclass
class Served:
    built: Library
    west: FlakyPort
    reference: QdrantClient


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with library_with_flaky_west(tmp_path) as (built, west):
        reference = QdrantClient(":memory:")
        reference.create_collection(
            "library", models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
        reference.upsert("library", _structs(built.points))
        yield Served(built, west, reference)


def _structs(points: Sequence[PointRecord]) -> list[models.PointStruct]:
    return [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points]  # type: ignore[arg-type]


def _domain_of(built: Library, point_id: PointId) -> int:
    for index, route in enumerate(built.definition.domains):
        port = built.fleet.get(route.cluster)
        if port.retrieve(route.collection, [point_id], with_vectors=False):
            return index
    raise AssertionError(f"point {point_id} is in no domain")


def _same_as_reference(client: QdrantClient, reference: QdrantClient, ids: list[int]) -> None:
    got = {r.id: r for r in client.retrieve("library", ids, with_vectors=True)}
    expected = {r.id: r for r in reference.retrieve("library", ids, with_vectors=True)}
    assert sorted(got) == sorted(expected)
    for point_id, record in expected.items():
        assert got[point_id].payload == record.payload, point_id
        np.testing.assert_allclose(got[point_id].vector, record.vector, atol=1e-5)  # type: ignore[arg-type]


def _both(
    client: QdrantClient, reference: QdrantClient, write: Callable[[QdrantClient], Any]
) -> None:
    write(reference)
    write(client)


def _copies(built: Library, point_id: PointId) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for route in built.definition.domains:
        port = built.fleet.get(route.cluster)
        for record in port.retrieve(route.collection, [point_id], with_vectors=False):
            found.append((route.domain_id, record.payload))
    return found


def _new_points(built: Library, ids: list[int], *, seed: int, tag: str) -> list[PointRecord]:
    """Points with new vectors (each near the domain after its own: moving the existing ones)
    and new payloads, half of them in group g1."""
    return [
        PointRecord(
            i, near(built, (k + 1) % 3, seed * 100 + k), {"n": i, "group": f"g{k % 2}", "tag": tag}
        )
        for k, i in enumerate(ids)
    ]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "no-mode" if m is None else m.value)
@pytest.mark.parametrize("with_filter", [False, True], ids=["no-filter", "filter"])
def test_upsert_modes_and_filters_answer_as_local_mode(
    served: Served, mode: models.UpdateMode | None, with_filter: bool
) -> None:
    built, reference = served.built, served.reference
    existing = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # groups g1..g0 mixed
    deleted = [20, 21, 22, 23]
    absent = [5000, 5001, 5002, 5003]
    ids = existing + deleted + absent
    update_filter = GROUP_1 if with_filter else None
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        _both(client, reference, lambda c: c.delete("library", deleted))
        points = _structs(_new_points(built, ids, seed=1, tag="conditional"))
        _both(
            client,
            reference,
            lambda c: c.upsert("library", points, update_filter=update_filter, update_mode=mode),
        )
        _same_as_reference(client, reference, ids)
        assert client.count("library").count == reference.count("library").count
        # the written points are where an upsert places them: one live copy each
        for point_id in ids:
            assert len(live_copies(_copies(built, point_id))) <= 1, point_id
    written = [r.id for r in reference.retrieve("library", ids) if r.payload.get("tag")]
    skipped = [i for i in ids if i not in written]
    assert written
    assert skipped or mode in (None, models.UpdateMode.UPSERT)


@pytest.mark.parametrize("mode", MODES[1:], ids=lambda m: m.value)
def test_upsert_modes_on_an_allowlisted_collection_answer_as_local_mode(
    served: Served, mode: models.UpdateMode
) -> None:
    """A plain collection of the default cluster (one collection, its engine decides) takes
    ``update_mode`` and ``update_filter`` as Qdrant does."""
    built, reference = served.built, served.reference
    east = built.fleet.get("east")
    east.create_collection("plain", CollectionSpec(vector_size=DIM))
    east.upsert("plain", built.points[:12])
    reference.create_collection(
        "plain", models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    reference.upsert("plain", _structs(built.points[:12]))
    ids = [p.id for p in built.points[6:12]] + [7000, 7001]
    state = make_state(built, passthrough=frozenset({"plain"}))
    with RouterThread(state) as router, closing(client_of(router)) as client:
        for update_filter in (None, GROUP_1):
            tag = f"{mode.value}-{update_filter is not None}"
            points = _structs(_new_points(built, ids, seed=3, tag=tag))

            def write(
                c: QdrantClient,
                points: list[models.PointStruct] = points,
                update_filter: models.Filter | None = update_filter,
            ) -> None:
                c.upsert("plain", points, update_filter=update_filter, update_mode=mode)

            _both(client, reference, write)
            every = [p.id for p in built.points[:12]] + [7000, 7001]
            got = {r.id: r.payload for r in client.retrieve("plain", every)}
            want = {r.id: r.payload for r in reference.retrieve("plain", every)}
            assert got == want, tag
    assert east.count("plain") == reference.count("plain").count


def test_the_newest_copy_decides_not_an_older_one_awaiting_removal(served: Served) -> None:
    """An older copy of a point still in another home (as a write leaves it until its
    settling reaches that home) neither decides the filter nor makes a deleted point exist."""
    built, reference = served.built, served.reference
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        home = _domain_of(built, 30)
        other = (home + 1) % 3
        moved = models.PointStruct(id=30, vector=near(built, other, 7), payload={"group": "g2"})
        _both(client, reference, lambda c: c.upsert("library", [moved]))
        _both(client, reference, lambda c: c.delete("library", [31]))
        # older copies put back where they were: live, in group g1, below the newest version
        for point_id in (30, 31):
            newest = max(p.get(POINT_VERSION_KEY, 0) for _, p in _copies(built, point_id))
            old = next(p for p in built.points if p.id == point_id)
            route = built.definition.domains[(home + 2) % 3]
            stale = {"group": "g1", POINT_VERSION_KEY: newest - 1, LABEL_KEY: route.domain_id}
            built.fleet.get(route.cluster).upsert(
                route.collection, [PointRecord(point_id, old.vector, stale)]
            )
        assert len(live_copies(_copies(built, 30))) == 2
        assert len(live_copies(_copies(built, 31))) == 1  # the tombstone is newer
        again = [
            models.PointStruct(id=i, vector=near(built, 0, 40 + i), payload={"tag": "again"})
            for i in (30, 31)
        ]
        # g1 matches only the older copy of 30: not written; 31 does not exist: not updated
        for write in (
            lambda c: c.upsert("library", again[:1], update_filter=GROUP_1),
            lambda c: c.upsert("library", again[1:], update_mode=models.UpdateMode.UPDATE_ONLY),
        ):
            _both(client, reference, write)
            _same_as_reference(client, reference, [30, 31])
        assert client.retrieve("library", [31]) == []
        # insert_only: 30 exists (its newest copy), 31 does not (its newest copy is deleted)
        _both(
            client,
            reference,
            lambda c: c.upsert("library", again, update_mode=models.UpdateMode.INSERT_ONLY),
        )
        _same_as_reference(client, reference, [30, 31])
        assert [r.payload for r in client.retrieve("library", [31])] == [{"tag": "again"}]


def test_batch_operations_and_update_vectors_with_update_filter(served: Served) -> None:
    built, reference = served.built, served.reference
    ids = list(range(40, 60))
    group = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(lt=50))])
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        news = _structs(_new_points(built, [*ids, 7000, 7001], seed=3, tag="batch"))
        vectors = [
            models.PointVectors(id=i, vector=near(built, k % 3, 500 + k)) for k, i in enumerate(ids)
        ]
        operations: list[models.UpdateOperation] = [
            models.UpsertOperation(
                upsert=models.PointsList(
                    points=news[:10], update_mode=models.UpdateMode.UPDATE_ONLY
                )
            ),
            models.UpsertOperation(
                upsert=models.PointsList(points=news[10:], update_filter=GROUP_1)
            ),
            models.UpdateVectorsOperation(
                update_vectors=models.UpdateVectors(points=vectors, update_filter=group)
            ),
            models.UpsertOperation(
                upsert=models.PointsBatch(
                    batch=models.Batch(
                        ids=[7000, 41], vectors=[near(built, 1, 9), near(built, 2, 9)]
                    ),
                    update_mode=models.UpdateMode.INSERT_ONLY,
                )
            ),
        ]
        _both(client, reference, lambda c: c.batch_update_points("library", operations))
        _same_as_reference(client, reference, [*ids, 7000, 7001])
        # update_vectors on its own: only the points that match change
        more = [
            models.PointVectors(id=i, vector=near(built, (k + 2) % 3, 900 + k))
            for k, i in enumerate(ids)
        ]
        _both(client, reference, lambda c: c.update_vectors("library", more, update_filter=GROUP_1))
        _same_as_reference(client, reference, ids)


def test_conditional_writes_over_grpc_answer_as_local_mode(served: Served) -> None:
    built, reference = served.built, served.reference
    ids = [1, 2, 3, 4, 20, 6000]
    with RouterThread(make_state(built), grpc=True) as router:
        client = QdrantClient(
            url=router.url,
            grpc_port=router.grpc_port,
            prefer_grpc=True,
            timeout=30,
            check_compatibility=False,
        )
        with closing(client):
            _both(client, reference, lambda c: c.delete("library", [20]))
            points = _structs(_new_points(built, ids, seed=9, tag="grpc"))
            for kwargs in (
                {"update_mode": models.UpdateMode.INSERT_ONLY},
                {"update_filter": GROUP_1, "update_mode": models.UpdateMode.UPDATE_ONLY},
            ):
                _both(client, reference, lambda c: c.upsert("library", points, **kwargs))  # type: ignore[arg-type]  # noqa: B023
                _same_as_reference(client, reference, ids)


def test_during_a_move_a_conditional_write_reaches_both_homes(served: Served) -> None:
    """While d2 is copied to a new home, both homes take a conditional write, decided on the
    newest copy (the new home lags: it holds nothing yet)."""
    built, reference = served.built, served.reference
    state = make_state(built)
    state.config.loader = static_loader(moving(built, MovePhase.DUAL_WRITE))
    in_d2 = [p.id for p in built.points if _domain_of(built, p.id) == 2][:6]
    with RouterThread(state) as router, closing(client_of(router)) as client:
        points = [
            models.PointStruct(id=i, vector=near(built, 2, 60 + k), payload={"tag": "moving"})
            for k, i in enumerate([*in_d2, 9900])
        ]
        for kwargs in (
            {"update_filter": GROUP_1},
            {"update_mode": models.UpdateMode.INSERT_ONLY},
        ):
            _both(client, reference, lambda c: c.upsert("library", points, **kwargs))  # type: ignore[arg-type]  # noqa: B023
            _same_as_reference(client, reference, [*in_d2, 9900])
    west, east = built.fleet.get("west"), built.fleet.get("east")
    written = [
        i for i in [*in_d2, 9900] if reference.retrieve("library", [i])[0].payload.get("tag")
    ]
    assert 9900 in written
    assert len(written) < len(in_d2) + 1  # the filter kept some
    for point_id in written:
        [old] = west.retrieve("library-d2", [point_id], with_vectors=False)
        [new] = east.retrieve("library-d2-new", [point_id], with_vectors=False)
        assert old.payload == new.payload
        assert old.payload["tag"] == "moving"


def test_a_filter_on_the_librarys_own_keys_or_a_malformed_condition_is_a_400(
    served: Served,
) -> None:
    built = served.built
    with RouterThread(make_state(built)) as router:
        for path, body in (
            (
                "points",
                {
                    "points": [{"id": 1, "vector": near(built, 0), "payload": {}}],
                    "update_filter": {"must": [{"key": LABEL_KEY, "match": {"value": "d0"}}]},
                },
            ),
            (
                "points/vectors",
                {
                    "points": [{"id": 1, "vector": near(built, 0)}],
                    "update_filter": {"must_not": [{"is_empty": {"key": POINT_VERSION_KEY}}]},
                },
            ),
        ):
            response = httpx.put(
                f"{router.url}/collections/library/{path}?wait=true", json=body, timeout=30
            )
            assert response.status_code == 400, response.text
            assert "reserved by the library" in response.json()["status"]["error"]
        point = {"id": 1, "vector": near(built, 0), "payload": {}}
        for malformed in (
            {"points": [point], "update_mode": "overwrite"},
            {"points": [point], "update_filter": {"must": [{"key": "n", "near": 1}]}},
        ):
            response = httpx.put(
                f"{router.url}/collections/library/points?wait=true", json=malformed, timeout=30
            )
            assert response.status_code == 400, response.text
            assert "Format error in JSON body" in response.json()["status"]["error"]
    assert _copies(built, 1)[0][1].get(POINT_VERSION_KEY) is None  # unchanged


def test_a_cluster_that_does_not_answer_refuses_the_write_and_changes_nothing(
    served: Served,
) -> None:
    built, reference = served.built, served.reference
    ids = [1, 2, 3, 4, 5, 6]
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        served.west.mode = "down"
        points = _structs(_new_points(built, ids, seed=5, tag="down"))
        for kwargs in ({"update_filter": GROUP_1}, {"update_mode": models.UpdateMode.INSERT_ONLY}):
            with pytest.raises(UnexpectedResponse) as raised:
                client.upsert("library", points, **kwargs)  # type: ignore[arg-type]
            assert raised.value.status_code == 503
            assert "west" in raised.value.content.decode()
        vectors = [models.PointVectors(id=i, vector=near(built, 0, i)) for i in ids]
        with pytest.raises(UnexpectedResponse) as raised:
            client.update_vectors("library", vectors, update_filter=GROUP_1)
        # as an update_vectors without a filter answers: the cluster is named
        assert raised.value.status_code in (502, 503)
        assert "west" in raised.value.content.decode()
        served.west.mode = "ok"
        _same_as_reference(client, reference, ids)  # nothing written
        _both(client, reference, lambda c: c.upsert("library", points, update_filter=GROUP_1))
        _same_as_reference(client, reference, ids)


# -- two clients racing ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Op:
    """One operation on one id as a client saw it (``ok``: acknowledged, else in doubt)."""

    kind: str  # "open" / "close": unconditional writes; "if_open": conditional; "read"
    token: str | None
    invoked: float
    completed: float
    ok: bool


State = tuple[str, bool] | None  # (token, open) or absent


def _apply(op: _Op, state: State) -> State:
    if op.kind in ("open", "close"):
        assert op.token is not None
        return (op.token, op.kind == "open")
    if op.kind == "if_open":  # update_filter open == true: a point that is closed is kept
        assert op.token is not None
        return (op.token, True) if state is None or state[1] else state
    if op.kind == "insert":
        assert op.token is not None
        return (op.token, True) if state is None else state
    return state


def _serial_order_exists(ops: list[_Op], final: str | None) -> bool:
    """Whether some order of the writes among ``ops`` that respects real time (an
    acknowledged write that completed before another was invoked comes first; one in
    doubt may be left out) ends in the ``final`` token. Depth-first over (placed, state),
    memoized."""
    writes = [op for op in ops if op.kind != "read"]
    n = len(writes)
    required = sum(1 << i for i, op in enumerate(writes) if op.ok)
    seen: set[tuple[int, State]] = set()

    def ready(i: int, placed: int) -> bool:
        return not any(
            not placed >> j & 1 and writes[j].ok and writes[j].completed < writes[i].invoked
            for j in range(n)
            if j != i
        )

    def search(placed: int, state: State) -> bool:
        if (placed, state) in seen:
            return False
        seen.add((placed, state))
        if placed & required == required and (state[0] if state else None) == final:
            return True
        return any(
            search(placed | 1 << i, _apply(writes[i], state))
            for i in range(n)
            if not placed >> i & 1 and ready(i, placed)
        )

    return search(0, None)


def _vanished(ops: list[_Op]) -> list[_Op]:
    """The reads that found no point although a write of it had been acknowledged before
    they were invoked (every operation here writes the point: it never stops existing)."""
    first = min((op.completed for op in ops if op.kind != "read" and op.ok), default=None)
    return [
        op
        for op in ops
        if op.kind == "read" and op.token is None and first is not None and op.invoked > first
    ]


class _Racers:
    """Two clients taking turns on the same ids, each round starting together: one writes
    conditionally (``insert_only``, or ``update_filter`` on ``open``), the other
    unconditionally (a point that is open or closed); each reads the id after its write.
    Every operation is recorded with when it was invoked and when it completed."""

    ROUNDS = 3

    def __init__(self, built: Library, ids: list[int]) -> None:
        self.built = built
        self.ids = ids
        self.history: dict[int, list[_Op]] = {i: [] for i in ids}
        self.errors: list[Exception] = []
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(2)
        self._started = time.monotonic()

    def _now(self) -> float:
        return time.monotonic() - self._started

    def _record(self, point_id: int, op: _Op) -> None:
        with self._lock:
            self.history[point_id].append(op)

    def _point(
        self, point_id: int, token: str, is_open: bool, domain: int
    ) -> list[models.PointStruct]:
        vector = near(self.built, domain, sum(map(ord, token)) + point_id)
        return [
            models.PointStruct(
                id=point_id, vector=vector, payload={"token": token, "open": is_open}
            )
        ]

    def _timed(
        self, client: QdrantClient, point_id: int, kind: str, token: str, call: Callable[[], Any]
    ) -> None:
        invoked = self._now()
        status = 200
        try:
            call()
        except UnexpectedResponse as error:  # overtaken too often: in doubt, not wrong
            status = error.status_code or 0
        if status not in (200, 502, 503):
            raise AssertionError(f"{kind} {token} answered {status}")
        self._record(point_id, _Op(kind, token, invoked, self._now(), status == 200))
        read_from = self._now()
        found = client.retrieve("library", [point_id])
        seen = found[0].payload["token"] if found and found[0].payload else None
        self._record(point_id, _Op("read", seen, read_from, self._now(), True))

    def conditional(self, client: QdrantClient) -> None:
        is_open = models.FieldCondition(key="open", match=models.MatchValue(value=True))
        for r in range(self.ROUNDS):
            for k, point_id in enumerate(self.ids):
                self._barrier.wait(30)
                token = f"c{r}-{point_id}"
                points = self._point(point_id, token, True, (r + k) % 3)
                if (r + k) % 3 == 0:
                    kind, kwargs = "insert", {"update_mode": models.UpdateMode.INSERT_ONLY}
                else:
                    kind, kwargs = "if_open", {"update_filter": models.Filter(must=[is_open])}
                self._timed(
                    client,
                    point_id,
                    kind,
                    token,
                    functools.partial(client.upsert, "library", points, **kwargs),  # type: ignore[arg-type]
                )

    def unconditional(self, client: QdrantClient) -> None:
        for r in range(self.ROUNDS):
            for k, point_id in enumerate(self.ids):
                self._barrier.wait(30)
                token = f"u{r}-{point_id}"
                is_open = (r + k) % 2 == 0
                points = self._point(point_id, token, is_open, (r + k + 1) % 3)
                self._timed(
                    client,
                    point_id,
                    "open" if is_open else "close",
                    token,
                    functools.partial(client.upsert, "library", points),
                )

    def run(self, body: Callable[[QdrantClient], None], client: QdrantClient) -> None:
        try:
            body(client)
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.errors.append(error)
            self._barrier.abort()


def _shown(ops: list[_Op]) -> str:
    return "\n".join(
        f"{op.kind} {op.token} [{op.invoked:.4f}, {op.completed:.4f}] {'ok' if op.ok else '?'}"
        for op in sorted(ops, key=lambda op: op.invoked)
    )


def test_a_conditional_and_an_unconditional_writer_racing_end_as_some_serial_order(
    served: Served,
) -> None:
    """The final state of each id is that of some serial order of the two clients' writes
    that respects real time (a conditional write decided on a copy the other client had
    already replaced would leave a state no such order explains), each id keeps one live
    copy, and no read finds a point missing once a write of it was acknowledged."""
    built = served.built
    ids = [8000 + k for k in range(12)]
    racers = _Racers(built, ids)
    with RouterThread(make_state(built)) as router:
        clients = [client_of(router), client_of(router)]
        threads = [
            threading.Thread(target=racers.run, args=(racers.conditional, clients[0])),
            threading.Thread(target=racers.run, args=(racers.unconditional, clients[1])),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
        assert not racers.errors, racers.errors
        final = {r.id: (r.payload or {})["token"] for r in clients[0].retrieve("library", ids)}
        for client in clients:
            client.close()
    for point_id in ids:
        assert len(live_copies(_copies(built, point_id))) == 1, point_id
        ops = racers.history[point_id]
        assert not _vanished(ops), f"id {point_id} went missing:\n{_shown(ops)}"
        assert _serial_order_exists(ops, final.get(point_id)), (
            f"id {point_id}: no serial order ends in {final.get(point_id)}:\n{_shown(ops)}"
        )


def test_the_serial_order_check_rejects_a_decision_made_on_an_overwritten_copy() -> None:
    """The check of the race above is not vacuous: a conditional write that landed although
    the closing write it overlapped had completed before it was invoked is caught."""
    ops = [
        _Op("open", "u0", 0.0, 1.0, True),
        _Op("close", "u1", 2.0, 3.0, True),
        _Op("if_open", "c0", 3.5, 5.0, True),
        _Op("read", None, 4.0, 4.5, True),
    ]
    assert not _serial_order_exists(ops, "c0")
    assert _serial_order_exists(ops, "u1")
    assert _vanished(ops) == [ops[3]]
    in_doubt = [ops[0], _Op("close", "u1", 2.0, 3.0, False), ops[2]]
    assert _serial_order_exists(in_doubt, "c0")  # a close in doubt may not have happened
