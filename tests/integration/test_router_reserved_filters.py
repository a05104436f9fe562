"""A client's filter may not name the library's own payload keys; its own keys are answered.

The library keeps keys of its own on every point (domain label, versions, the
partition) and hides them: one collection holding the client's points has no
such keys, so a filter on them would answer differently through the library.
Over real HTTP with the official client, every kind of read and write that
takes a filter is refused with a 400 naming the key, and the same requests on
the client's own keys answer as qdrant-client's local mode holding the same
points in one collection. A pass-through collection is the client's own: a key
there with a reserved name is theirs to filter on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.contracts.payload import LABEL_KEY, PARTITION_KEY, POINT_VERSION_KEY
from librarian.storage.port import CollectionSpec, PointRecord

from .router_support import (
    DIM,
    Library,
    RouterThread,
    build_embedded_library,
    client_of,
    make_state,
    near,
)

pytestmark = pytest.mark.timeout(300)


def _on(key: str, value: Any = "d0") -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key=key, match=models.MatchValue(value=value))]
    )


RESERVED_FILTERS = {
    "label": _on(LABEL_KEY),
    "version-is-empty": models.Filter(
        must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=POINT_VERSION_KEY))]
    ),
    "partition-array": _on(f"{PARTITION_KEY}[]", "p1"),
    "nested": models.Filter(
        should=[
            models.Filter(must=[_on("group", "g1"), _on(f"{LABEL_KEY}.inner", 1)]),
        ]
    ),
}
OWN = _on("group", "g1")


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Library]:
    library = build_embedded_library(tmp_path)
    try:
        yield library
    finally:
        library.fleet.close()


def _reference(points: list[PointRecord]) -> QdrantClient:
    reference = QdrantClient(":memory:")
    reference.create_collection(
        "library", models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    reference.upsert(
        "library",
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points],  # type: ignore[arg-type]
    )
    return reference


def _requests(vector: list[float]) -> dict[str, Callable[[QdrantClient, models.Filter], Any]]:
    """Every client call that takes a filter, on the collection ``library``."""
    return {
        "query": lambda c, f: c.query_points("library", query=vector, query_filter=f, limit=5),
        "prefetch": lambda c, f: c.query_points(
            "library",
            prefetch=[models.Prefetch(query=vector, filter=f, limit=20)],
            query=vector,
            limit=5,
        ),
        "search-groups": lambda c, f: c.query_points_groups(
            "library", query=vector, group_by="group", query_filter=f, limit=2, group_size=2
        ),
        "scroll": lambda c, f: c.scroll("library", scroll_filter=f, limit=5),
        "count": lambda c, f: c.count("library", count_filter=f, exact=True),
        "facet": lambda c, f: c.facet("library", key="group", facet_filter=f, exact=True),
        "delete": lambda c, f: c.delete("library", points_selector=models.FilterSelector(filter=f)),
        "set-payload": lambda c, f: c.set_payload("library", {"seen": True}, points=f),
    }


def test_a_filter_naming_the_librarys_keys_is_refused_and_nothing_changes(built: Library) -> None:
    vector = near(built, 0)
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        before = client.count("library", exact=True).count
        for request, call in _requests(vector).items():
            for name, flt in RESERVED_FILTERS.items():
                with pytest.raises(UnexpectedResponse) as refused:
                    call(client, flt)
                assert refused.value.status_code == 400, (request, name)
                error = refused.value.content.decode()
                assert "reserved by the library" in error, (request, name)
                assert "filter on the client's own keys" in error, (request, name)
        assert client.count("library", exact=True).count == before  # the delete did nothing
        [point] = client.retrieve("library", [built.points[0].id])
        assert "seen" not in (point.payload or {})  # nor the payload update


def test_the_same_requests_on_the_clients_own_keys_answer_as_one_collection(
    built: Library,
) -> None:
    vector = near(built, 0)
    reference = _reference(built.points)
    # (faceting needs a payload index, which local mode does not keep: not compared here)
    writes = ("delete", "set-payload", "facet")
    reads = {k: v for k, v in _requests(vector).items() if k not in writes}
    with RouterThread(make_state(built)) as router, closing(client_of(router)) as client:
        for request, call in reads.items():
            got, want = call(client, OWN), call(reference, OWN)
            if request in ("query", "prefetch"):
                assert [(p.id, round(p.score, 4)) for p in got.points] == [
                    (p.id, round(p.score, 4)) for p in want.points
                ], request
            elif request == "scroll":
                assert [p.id for p in got[0]] == [p.id for p in want[0]], request
            elif request == "search-groups":
                assert [g.id for g in got.groups] == [g.id for g in want.groups], request
            else:
                assert got == want, request


def test_a_pass_through_collection_may_filter_on_a_key_of_that_name(built: Library) -> None:
    """The client's own collection, served beside the library: its keys are its own."""
    east = built.fleet.get("east")
    east.create_collection("plain", CollectionSpec(vector_size=DIM))
    points = [
        PointRecord(p.id, p.vector, {**p.payload, LABEL_KEY: "mine" if i % 2 else "theirs"})
        for i, p in enumerate(built.points[:20])
    ]
    east.upsert("plain", points)
    reference = QdrantClient(":memory:")
    reference.create_collection(
        "plain", models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    reference.upsert(
        "plain",
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points],  # type: ignore[arg-type]
    )
    state = make_state(built, passthrough=frozenset({"plain"}))
    with RouterThread(state) as router, closing(client_of(router)) as client:
        flt = _on(LABEL_KEY, "mine")
        assert client.count("plain", count_filter=flt, exact=True).count == 10
        got = client.query_points("plain", query=near(built, 0), query_filter=flt, limit=5)
        want = reference.query_points("plain", query=near(built, 0), query_filter=flt, limit=5)
        assert [p.id for p in got.points] == [p.id for p in want.points]
