"""A vector change in place whose marked copy a concurrent move removes before the vectors land.

The router changes a point's vectors in two steps on its home: mark the copy with the
change's version, then update the vectors of the copies holding that mark. A move of
the same point by another client may remove the marked copy between the two steps;
the change must then give the remaining points their vectors and leave the removed
one removed, not fail the client's request with the engine's "no point" refusal.
"""

from __future__ import annotations

from typing import Any

import pytest

from librarian.contracts.payload import POINT_VERSION_KEY
from librarian.router.changes import _vectors_where_marked
from librarian.storage.errors import InvalidRequest
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

VERSION = 7


class RemovesBeforeUpdate:
    """A port on which a concurrent move removes ``victim`` just before each vector update."""

    def __init__(self, port: QdrantPort, victim: int) -> None:
        self._port = port
        self.victim = victim
        self.updates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)

    def update_vectors(self, collection: str, points: Any, **kwargs: Any) -> None:
        self.updates += 1
        self._port.delete_points(collection, ids=[self.victim])
        self._port.update_vectors(collection, points, **kwargs)


def _collection(port: QdrantPort) -> None:
    port.create_collection("c", CollectionSpec(vector_size=2, distance="Cosine"))
    port.upsert(
        "c",
        [
            PointRecord(i, [1.0, float(i)], {POINT_VERSION_KEY: VERSION if i < 4 else 1})
            for i in range(1, 6)
        ],
    )


def test_a_marked_copy_removed_before_the_vectors_land_is_left_removed(port: QdrantPort) -> None:
    _collection(port)
    racing = RemovesBeforeUpdate(port, victim=2)
    change = [PointRecord(i, [0.0, 1.0 + i]) for i in (1, 2, 3)]
    _vectors_where_marked("c", change, VERSION)(racing)  # type: ignore[arg-type]
    held = {r.id: r for r in port.retrieve("c", [1, 2, 3, 4, 5], with_vectors=True)}
    assert set(held) == {1, 3, 4, 5}  # the removed copy stays removed
    for point_id in (1, 3):
        vector = held[point_id].vector
        assert vector is not None
        assert pytest.approx(vector, rel=1e-5) == _unit([0.0, 1.0 + point_id])
    assert pytest.approx(held[4].vector, rel=1e-5) == _unit([1.0, 4.0])  # not in the change
    assert racing.updates == 2  # asked again once, for the copies still marked


def test_only_copies_holding_the_mark_are_changed(port: QdrantPort) -> None:
    _collection(port)
    change = [PointRecord(i, [0.0, 1.0]) for i in (3, 4)]  # 4 holds another version
    _vectors_where_marked("c", change, VERSION)(port)
    held = {r.id: r for r in port.retrieve("c", [3, 4], with_vectors=True)}
    assert pytest.approx(held[3].vector, rel=1e-5) == [0.0, 1.0]
    assert pytest.approx(held[4].vector, rel=1e-5) == _unit([1.0, 4.0])


def test_a_refusal_while_every_point_is_held_is_raised(port: QdrantPort) -> None:
    _collection(port)
    wrong = [PointRecord(1, [1.0, 2.0, 3.0])]  # a 3-d vector in a 2-d collection
    with pytest.raises(InvalidRequest):
        _vectors_where_marked("c", wrong, VERSION)(port)


def _unit(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector]
