"""Groups, facets, counts and the distance matrix of a library, against one collection.

The library's points live in three domains on two clusters, with the
leftovers a library really has: a point with a stale copy in another home
(older version, other payload, a vector that ranks first), and a point
deleted by a tombstone whose older live copy is still in another home. The
reference is independent of the router: qdrant-client's local mode
(``QdrantClient(":memory:")``) holding the library's points (newest copies,
deleted ones left out) in one collection. Every answer goes through real HTTP
with the official clients, sync and async.

The homes are reached through the remote adapter over local mode; ``HOME_KINDS``
names the adapters the library is built on (the embedded engine joins it once it
serves Qdrant's query, facet and scroll requests).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY, TOMBSTONE_KEY
from librarian.router import facets
from librarian.router.library import DomainRoute, LibraryDefinition
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort
from librarian.storage.remote import RemoteQdrant

from .router_support import FlakyPort, RouterThread, make_state

pytestmark = pytest.mark.timeout(300)

DIM = 8
N = 300
HOME_KINDS = ["remote"]
STALE_ID = 7  # newest copy in its own domain; an older copy elsewhere ranks first
DELETED_ID = 11  # a tombstone in one domain; an older live copy elsewhere


@dataclass
class Served:
    fleet: Fleet
    definition: LibraryDefinition
    live: list[PointRecord]  # the library's points as a client wrote them
    domain_of: dict[int, int]


def _port(kind: str, name: str) -> QdrantPort:
    if kind == "remote":
        return RemoteQdrant.connect(name, ":memory:")
    raise ValueError(f"unknown home kind {kind}")


def _payload(i: int, rng: np.random.Generator) -> dict[str, Any]:
    tags = [f"t{int(t)}" for t in rng.choice(6, size=int(rng.integers(0, 4)), replace=False)]
    payload: dict[str, Any] = {
        "n": i,
        "group": f"g{int(rng.integers(0, 9))}",
        "rank": int(rng.integers(0, 5)),
        "owner": int(rng.integers(0, 12)),
        "nested": {"kind": ["a", "b", "c"][i % 3]},
    }
    if tags:
        payload["tags"] = tags
    if i % 17 == 0:
        payload["tags"] = ["t1", "t1", True]  # a value of another type: in no group at all
    return payload


BAND_QUERY = [float(x) for x in np.random.default_rng(99).normal(size=DIM)]


def _band(points: list[PointRecord]) -> None:
    """Bands of points by their closeness to BAND_QUERY: the best 100 share one group, and a few
    points of their own groups are strewn among them, so the best groups for that query lie
    deeper in every home than its first few dozen hits."""
    target = np.asarray(BAND_QUERY) / np.linalg.norm(BAND_QUERY)
    closeness = [float(np.asarray(p.vector) @ target / np.linalg.norm(p.vector)) for p in points]
    for rank, index in enumerate(np.argsort(closeness)[::-1]):
        band = f"b{min(rank // 100 + (rank >= 100) * (rank - 100) // 60, 3)}"
        points[int(index)].payload["band"] = f"rare{rank}" if rank % 40 == 39 else band


def _build(kind: str, layout: str) -> Served:
    """Domains d0, d1 on ``east`` (their own collections, or labelled slices of one shared
    collection when ``layout`` is "labelled"), d2 on ``west``; then the leftovers."""
    rng = np.random.default_rng(13)
    centres = rng.normal(size=(3, DIM)) * 2
    clouds = rng.integers(0, 3, N)
    vectors = centres[clouds] + rng.normal(size=(N, DIM))
    live = [
        PointRecord(i, [float(x) for x in vectors[i]], _payload(i, rng))
        for i in range(N)
        if i != DELETED_ID
    ]
    _band(live)
    east, west = _port(kind, "east"), _port(kind, "west")
    spec = CollectionSpec(vector_size=DIM)
    labelled = layout == "labelled"
    homes: dict[int, tuple[QdrantPort, str]] = {
        0: (east, "library-source" if labelled else "library-d0"),
        1: (east, "library-source" if labelled else "library-d1"),
        2: (west, "library-d2"),
    }
    for port, collection in set(homes.values()):
        port.create_collection(collection, spec)

    def put(domain: int, point: PointRecord, version: int) -> None:
        port, collection = homes[domain]
        payload = {**point.payload, POINT_VERSION_KEY: version}
        if labelled and domain < 2:
            payload[LABEL_KEY] = f"d{domain}"
        port.upsert(collection, [PointRecord(point.id, point.vector, payload)])

    routes = []
    for d in range(3):
        mine = [p for p in live if clouds[int(p.id)] == d]
        for point in mine:
            put(d, point, 10)
        port, collection = homes[d]
        routes.append(
            DomainRoute(
                domain_id=f"d{d}",
                name=f"domain {d}",
                cluster=port.cluster,
                collection=collection,
                centroid=tuple(float(x) for x in centres[d] / np.linalg.norm(centres[d])),
                size=len(mine),
                labelled_slice=labelled and d < 2,
                specialized=not (labelled and d < 2),
                versioned=True,
            )
        )
    other = {0: 2, 1: 2, 2: 0}  # a domain on the other cluster
    stale = {"group": "stale", "tags": ["t9"], "rank": 9, "n": -1}
    put(other[int(clouds[STALE_ID])], PointRecord(STALE_ID, [1.0] * DIM, stale), 3)
    put(
        int(clouds[DELETED_ID]),
        PointRecord(DELETED_ID, [1.0] * DIM, {TOMBSTONE_KEY: True}),
        12,
    )
    ghost = {"group": "ghost", "tags": ["t9"], "rank": 9, "n": -2}
    put(other[int(clouds[DELETED_ID])], PointRecord(DELETED_ID, [-1.0] * DIM, ghost), 4)
    definition = LibraryDefinition(
        name="library", domains=tuple(routes), default_cluster="east", version="v1"
    )
    return Served(
        Fleet.of_ports({"east": east, "west": west}),
        definition,
        live,
        {int(p.id): int(clouds[int(p.id)]) for p in live},
    )


@pytest.fixture(
    scope="module",
    params=[(kind, layout) for kind in HOME_KINDS for layout in ("specialized", "labelled")],
    ids=lambda param: "-".join(param),
)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Served, RouterThread]]:
    library = _build(*request.param)
    west = FlakyPort(library.fleet.get("west"))
    library.fleet = Fleet.of_ports({"east": library.fleet.get("east"), "west": west})
    settings = {"caching": {"enable_result_cache": False}, "routing_strategy": "accuracy_first"}
    with RouterThread(make_state(library, settings=settings)) as router:
        yield library, router
    library.fleet.close()


@pytest.fixture(scope="module")
def reference(served: tuple[Served, RouterThread]) -> Iterator[QdrantClient]:
    _library, _ = served
    local = QdrantClient(":memory:")
    local.create_collection(
        "ref", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    local.upsert(
        "ref",
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in served[0].live],
    )
    yield local
    local.close()


@pytest.fixture(scope="module")
def client(served: tuple[Served, RouterThread]) -> Iterator[QdrantClient]:
    with closing(QdrantClient(url=served[1].url, timeout=60, check_compatibility=False)) as c:
        yield c


def _vector(seed: int) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).normal(size=DIM)]


def _same_groups(ours: models.GroupsResult, theirs: models.GroupsResult) -> None:
    assert [g.id for g in ours.groups] == [g.id for g in theirs.groups]
    for mine, reference_group in zip(ours.groups, theirs.groups, strict=True):
        assert [h.id for h in mine.hits] == [h.id for h in reference_group.hits], mine.id
        assert np.allclose(
            [h.score for h in mine.hits], [h.score for h in reference_group.hits], atol=1e-5
        )
        assert [h.payload for h in mine.hits] == [h.payload for h in reference_group.hits]
        for ours_hit, their_hit in zip(mine.hits, reference_group.hits, strict=True):
            assert (ours_hit.vector is None) == (their_hit.vector is None)
            if ours_hit.vector is not None:
                assert np.allclose(ours_hit.vector, their_hit.vector, atol=1e-6)


# ---------------------------------------------------------------------- groups


GROUP_CASES = [
    ("group", 3, 2, None),
    ("group", 5, 1, None),
    ("tags", 4, 3, None),
    (
        "tags",
        6,
        2,
        models.Filter(must=[models.FieldCondition(key="rank", range=models.Range(gte=2))]),
    ),
    ("rank", 3, 5, None),
    ("nested.kind", 3, 4, None),
    (
        "group",
        2,
        3,
        models.Filter(
            must_not=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))]
        ),
    ),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("group_by", "limit", "group_size", "query_filter"), GROUP_CASES)
def test_groups_rank_and_fill_as_one_collection(
    client: QdrantClient,
    reference: QdrantClient,
    seed: int,
    group_by: str,
    limit: int,
    group_size: int,
    query_filter: models.Filter | None,
) -> None:
    arguments: dict[str, Any] = {
        "query": _vector(seed),
        "group_by": group_by,
        "limit": limit,
        "group_size": group_size,
        "query_filter": query_filter,
        "with_payload": True,
    }
    ours = client.query_points_groups("library", **arguments)
    theirs = reference.query_points_groups("ref", **arguments)
    _same_groups(ours, theirs)


@pytest.mark.parametrize(("limit", "group_size"), [(4, 3), (7, 5), (6, 40)])
def test_groups_found_deep_in_every_home(
    client: QdrantClient, reference: QdrantClient, limit: int, group_size: int
) -> None:
    """The best groups for BAND_QUERY need far more than each home's first hits, and their
    members lie deep too: the homes are asked deeper until the answer is settled."""
    arguments: dict[str, Any] = {
        "query": BAND_QUERY,
        "group_by": "band",
        "limit": limit,
        "group_size": group_size,
        "with_payload": True,
    }
    theirs = reference.query_points_groups("ref", **arguments)
    assert len(theirs.groups) == limit
    _same_groups(client.query_points_groups("library", **arguments), theirs)


@pytest.mark.parametrize("threshold", [0.2, 0.6])
def test_groups_above_a_score_threshold(
    client: QdrantClient, reference: QdrantClient, threshold: float
) -> None:
    arguments: dict[str, Any] = {
        "query": _vector(11),
        "group_by": "tags",
        "limit": 6,
        "group_size": 4,
        "score_threshold": threshold,
        "with_payload": ["n", "tags"],
    }
    _same_groups(
        client.query_points_groups("library", **arguments),
        reference.query_points_groups("ref", **arguments),
    )


def test_a_stale_copy_that_ranks_first_is_not_a_group_member(
    client: QdrantClient, reference: QdrantClient
) -> None:
    arguments: dict[str, Any] = {
        "query": [1.0] * DIM,
        "group_by": "group",
        "limit": 4,
        "group_size": 3,
    }
    ours = client.query_points_groups("library", with_payload=True, **arguments)
    assert "stale" not in [g.id for g in ours.groups]
    assert "ghost" not in [g.id for g in ours.groups]
    shown = [h.payload for g in ours.groups for h in g.hits]
    assert all(p is not None and p["n"] >= 0 for p in shown)  # no leftover copy shown
    assert all(not set(p or {}) & {POINT_VERSION_KEY, TOMBSTONE_KEY} for p in shown)
    _same_groups(ours, reference.query_points_groups("ref", with_payload=True, **arguments))


def test_groups_spread_over_homes_whose_own_best_groups_differ(
    served: tuple[Served, RouterThread], client: QdrantClient, reference: QdrantClient
) -> None:
    """The case the two phases exist for: a home's own best groups are not the library's, and
    the library's groups take their members from several homes."""
    library, _ = served
    query, limit = _vector(2), 3
    theirs = reference.query_points_groups(
        "ref", query=query, group_by="group", limit=limit, group_size=4
    )
    homes_of = [
        {library.domain_of[int(h.id)] // 2 for h in g.hits} for g in theirs.groups
    ]  # cluster of each member: d0, d1 -> 0 (east), d2 -> 1 (west)
    assert any(len(homes) == 2 for homes in homes_of)
    west_only = QdrantClient(":memory:")
    west_only.create_collection(
        "west", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    west_only.upsert(
        "west",
        [
            models.PointStruct(id=p.id, vector=p.vector, payload=p.payload)
            for p in library.live
            if library.domain_of[int(p.id)] == 2
        ],
    )
    own = west_only.query_points_groups(
        "west", query=query, group_by="group", limit=limit, group_size=4
    )
    assert [g.id for g in own.groups] != [g.id for g in theirs.groups]
    ours = client.query_points_groups(
        "library", query=query, group_by="group", limit=limit, group_size=4, with_payload=True
    )
    _same_groups(
        ours,
        reference.query_points_groups(
            "ref", query=query, group_by="group", limit=limit, group_size=4, with_payload=True
        ),
    )


def test_groups_of_recommend_and_id_queries_resolve_the_examples_over_the_library(
    served: tuple[Served, RouterThread], client: QdrantClient, reference: QdrantClient
) -> None:
    library, _ = served
    east_point = next(p.id for p in library.live if library.domain_of[int(p.id)] == 0)
    west_point = next(p.id for p in library.live if library.domain_of[int(p.id)] == 2)
    queries: list[Any] = [
        models.RecommendQuery(
            recommend=models.RecommendInput(positive=[east_point], negative=[west_point])
        ),
        models.RecommendQuery(
            recommend=models.RecommendInput(
                positive=[west_point, _vector(4)], strategy=models.RecommendStrategy.BEST_SCORE
            )
        ),
        west_point,
        models.ContextQuery(context=[models.ContextPair(positive=east_point, negative=west_point)]),
        models.DiscoverQuery(
            discover=models.DiscoverInput(
                target=west_point,
                context=[models.ContextPair(positive=east_point, negative=_vector(12))],
            )
        ),
        models.OrderByQuery(order_by=models.OrderBy(key="n", direction=models.Direction.DESC)),
        models.OrderByQuery(order_by="n"),
    ]
    for query in queries:
        arguments: dict[str, Any] = {
            "query": query,
            "group_by": "group",
            "limit": 3,
            "group_size": 2,
        }
        ours = client.query_points_groups("library", with_payload=True, **arguments)
        theirs = reference.query_points_groups("ref", with_payload=True, **arguments)
        if isinstance(query, models.ContextQuery):  # scores tie a lot: compare the scores only
            assert [h.score for g in ours.groups for h in g.hits] == pytest.approx(
                [h.score for g in theirs.groups for h in g.hits], abs=1e-5
            )
            continue
        _same_groups(ours, theirs)


def test_groups_with_vectors_selected_payload_and_lookup(
    client: QdrantClient, reference: QdrantClient
) -> None:
    arguments: dict[str, Any] = {
        "query": _vector(5),
        "group_by": "owner",
        "limit": 4,
        "group_size": 2,
        "with_payload": models.PayloadSelectorInclude(include=["group", "nested.kind"]),
        "with_vectors": True,
    }
    ours = client.query_points_groups(
        "library",
        with_lookup=models.WithLookup(collection="library", with_payload=["n"]),
        **arguments,
    )
    theirs = reference.query_points_groups(
        "ref", with_lookup=models.WithLookup(collection="ref", with_payload=["n"]), **arguments
    )
    _same_groups(ours, theirs)
    for mine, expected in zip(ours.groups, theirs.groups, strict=True):
        assert np.allclose(
            [h.vector for h in mine.hits], [h.vector for h in expected.hits], atol=1e-6
        )
        assert (mine.lookup is None) == (expected.lookup is None)
        if mine.lookup is not None and expected.lookup is not None:
            assert (mine.lookup.id, mine.lookup.payload) == (
                expected.lookup.id,
                expected.lookup.payload,
            )


def test_legacy_search_and_recommend_groups(
    served: tuple[Served, RouterThread], reference: QdrantClient
) -> None:
    library, router = served
    west_point = next(p.id for p in library.live if library.domain_of[int(p.id)] == 2)
    search = httpx.post(
        f"{router.url}/collections/library/points/search/groups",
        json={
            "vector": _vector(6),
            "group_by": "group",
            "limit": 3,
            "group_size": 2,
            "with_payload": True,
        },
        timeout=60,
    )
    assert search.status_code == 200, search.text
    ours = models.GroupsResult.model_validate(search.json()["result"])
    _same_groups(
        ours,
        reference.query_points_groups(
            "ref", query=_vector(6), group_by="group", limit=3, group_size=2, with_payload=True
        ),
    )
    recommend = httpx.post(
        f"{router.url}/collections/library/points/recommend/groups",
        json={
            "positive": [west_point],
            "group_by": "tags",
            "limit": 3,
            "group_size": 2,
            "with_payload": True,
        },
        timeout=60,
    )
    assert recommend.status_code == 200, recommend.text
    _same_groups(
        models.GroupsResult.model_validate(recommend.json()["result"]),
        reference.query_points_groups(
            "ref",
            query=models.RecommendQuery(recommend=models.RecommendInput(positive=[west_point])),
            group_by="tags",
            limit=3,
            group_size=2,
            with_payload=True,
        ),
    )


def test_async_client_gets_the_same_groups_and_facets(
    served: tuple[Served, RouterThread], reference: QdrantClient
) -> None:
    _, router = served

    async def ask() -> tuple[models.GroupsResult, models.FacetResponse, int]:
        client = AsyncQdrantClient(url=router.url, timeout=60, check_compatibility=False)
        try:
            return await asyncio.gather(
                client.query_points_groups(
                    "library",
                    query=_vector(8),
                    group_by="group",
                    limit=3,
                    group_size=2,
                    with_payload=True,
                ),
                client.facet("library", key="tags", limit=20),
                client.count("library", exact=True),
            )  # type: ignore[return-value]
        finally:
            await client.close()

    groups, facet, count = asyncio.run(ask())
    _same_groups(
        groups,
        reference.query_points_groups(
            "ref", query=_vector(8), group_by="group", limit=3, group_size=2, with_payload=True
        ),
    )
    assert facet.hits == reference.facet("ref", key="tags", limit=20).hits
    assert count.count == reference.count("ref", exact=True).count


def test_concurrent_clients_get_the_same_groups(
    served: tuple[Served, RouterThread], reference: QdrantClient
) -> None:
    _, router = served
    answers: dict[int, models.GroupsResult] = {}
    errors: list[BaseException] = []

    def ask(seed: int) -> None:
        try:
            with closing(QdrantClient(url=router.url, timeout=60, check_compatibility=False)) as c:
                answers[seed] = c.query_points_groups(
                    "library",
                    query=_vector(seed),
                    group_by="tags",
                    limit=3,
                    group_size=2,
                    with_payload=True,
                )
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(20, 26)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    for seed, ours in answers.items():
        _same_groups(
            ours,
            reference.query_points_groups(
                "ref",
                query=_vector(seed),
                group_by="tags",
                limit=3,
                group_size=2,
                with_payload=True,
            ),
        )


BAD_GROUPS = [
    ({"limit": 0}, 422),
    ({"group_size": 0}, 422),
    ({"limit": -1}, 400),
    ({"group_size": -3}, 400),
    ({"group_by": ""}, 400),
    ({"group_by": "a..b"}, 400),
    ({"prefetch": [{"query": [0.1] * DIM, "limit": 5}], "query": {"fusion": "rrf"}}, 400),
    ({"query": {"nearest": [0.1] * DIM, "mmr": {"diversity": 0.5}}}, 400),
    ({"query": 123456}, 404),
]


@pytest.mark.parametrize(("change", "status"), BAD_GROUPS)
def test_bad_group_requests_are_refused_as_qdrant_refuses_them(
    served: tuple[Served, RouterThread], change: dict[str, Any], status: int
) -> None:
    _, router = served
    body = {"query": [0.1] * DIM, "group_by": "group", "limit": 3, "group_size": 2, **change}
    answer = httpx.post(
        f"{router.url}/collections/library/points/query/groups", json=body, timeout=60
    )
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"status", "time"}
    assert answer.json()["status"]["error"]


# ---------------------------------------------------------------------- facets and counts


FACETS = [
    ("group", None, 20),
    ("group", None, 3),
    ("tags", None, 10),
    ("rank", None, 10),
    ("owner", None, 4),
    ("nested.kind", None, 10),
    ("tags", models.Filter(must=[models.FieldCondition(key="rank", range=models.Range(lt=3))]), 5),
]


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize(("key", "facet_filter", "limit"), FACETS)
def test_facets_count_each_point_once_as_one_collection(
    client: QdrantClient,
    reference: QdrantClient,
    key: str,
    facet_filter: models.Filter | None,
    limit: int,
    exact: bool,
) -> None:
    ours = client.facet("library", key=key, facet_filter=facet_filter, limit=limit, exact=exact)
    theirs = reference.facet("ref", key=key, facet_filter=facet_filter, limit=limit, exact=exact)
    assert ours.hits == theirs.hits


def test_a_facet_with_too_many_values_to_rank_exactly_is_refused(
    served: tuple[Served, RouterThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, router = served
    monkeypatch.setattr(facets, "MAX_FACET_VALUES", 3)
    answer = httpx.post(
        f"{router.url}/collections/library/facet", json={"key": "group"}, timeout=60
    )
    assert answer.status_code == 400
    assert "distinct values" in answer.json()["status"]["error"]
    assert "Narrow the filter" in answer.json()["status"]["error"]


@pytest.mark.parametrize(
    "count_filter",
    [
        None,
        models.Filter(
            must=[models.FieldCondition(key="group", match=models.MatchValue(value="g3"))]
        ),
        models.Filter(
            must=[models.FieldCondition(key="tags", match=models.MatchAny(any=["t9", "t2"]))]
        ),
        models.Filter(must=[models.FieldCondition(key="rank", range=models.Range(gte=9))]),
    ],
)
def test_exact_count_counts_each_point_once(
    client: QdrantClient, reference: QdrantClient, count_filter: models.Filter | None
) -> None:
    ours = client.count("library", count_filter=count_filter, exact=True).count
    assert ours == reference.count("ref", count_filter=count_filter, exact=True).count
    estimate = client.count("library", count_filter=count_filter, exact=False).count
    assert estimate >= ours  # the homes' sum: leftover copies included


def test_an_exact_count_too_large_to_list_is_refused_and_the_estimate_answers(
    served: tuple[Served, RouterThread], client: QdrantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, router = served
    monkeypatch.setattr(facets, "MAX_CENSUS_COPIES", 10)
    answer = httpx.post(
        f"{router.url}/collections/library/points/count", json={"exact": True}, timeout=60
    )
    assert answer.status_code == 400
    assert "exact=false" in answer.json()["status"]["error"]
    assert client.count("library", exact=False).count == N + 1  # 299 live, 2 leftovers


def test_a_home_down_fails_exact_reads_instead_of_answering_less(
    served: tuple[Served, RouterThread],
) -> None:
    library, router = served
    west = library.fleet.get("west")
    assert isinstance(west, FlakyPort)
    west.mode = "down"
    try:
        for path, body in [
            ("points/count", {"exact": True}),
            ("facet", {"key": "group"}),
            ("points/query/groups", {"query": [0.1] * DIM, "group_by": "group"}),
            ("points/search/matrix/pairs", {"sample": 5}),
        ]:
            answer = httpx.post(f"{router.url}/collections/library/{path}", json=body, timeout=60)
            assert answer.status_code in (502, 504), (path, answer.text)
            assert (
                "west" in answer.json()["status"]["error"]
                or "library-d2" in answer.json()["status"]["error"]
            )
    finally:
        west.mode = "ok"
        router.state.breaker.success("west")


def test_a_hung_home_times_out_exact_reads(served: tuple[Served, RouterThread]) -> None:
    library, router = served
    west = library.fleet.get("west")
    assert isinstance(west, FlakyPort)
    west.mode = "hung"
    try:
        for path, body in [
            ("points/count", {"exact": True}),
            ("facet", {"key": "tags"}),
            ("points/query/groups", {"query": [0.2] * DIM, "group_by": "tags"}),
        ]:
            answer = httpx.post(
                f"{router.url}/collections/library/{path}?timeout=1", json=body, timeout=60
            )
            assert answer.status_code == 504, (path, answer.text)
    finally:
        west.release()
        assert west.wait_idle(60)
        router.state.breaker.success("west")


# ---------------------------------------------------------------------- distance matrix


def _cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.mark.parametrize(
    "matrix_filter",
    [None, models.Filter(must=[models.FieldCondition(key="rank", range=models.Range(lte=2))])],
)
def test_matrix_pairs_and_offsets_score_the_true_nearest_within_the_sample(
    served: tuple[Served, RouterThread],
    client: QdrantClient,
    reference: QdrantClient,
    matrix_filter: models.Filter | None,
) -> None:
    library, _ = served
    vectors = {int(p.id): p.vector for p in library.live}
    matching = {int(r.id) for r in reference.scroll("ref", scroll_filter=matrix_filter, limit=N)[0]}
    sample, limit = 25, 3
    pairs = client.search_matrix_pairs(
        "library", query_filter=matrix_filter, sample=sample, limit=limit
    )
    offsets = client.search_matrix_offsets(
        "library", query_filter=matrix_filter, sample=sample, limit=limit
    )
    for ids, rows in [
        (
            sorted({int(p.a) for p in pairs.pairs}),
            [(int(p.a), int(p.b), p.score) for p in pairs.pairs],
        ),
        (
            [int(i) for i in offsets.ids],
            [
                (int(offsets.ids[r]), int(offsets.ids[c]), s)
                for r, c, s in zip(
                    offsets.offsets_row, offsets.offsets_col, offsets.scores, strict=True
                )
            ],
        ),
    ]:
        assert len(ids) == sample
        assert len(set(ids)) == sample
        assert set(ids) <= matching  # live points matching the filter: no leftover copy
        assert len(rows) == sample * limit
        for a in ids:
            mine = [(b, s) for x, b, s in rows if x == a]
            assert len(mine) == limit
            assert a not in [b for b, _ in mine]
            for b, score in mine:
                assert score == pytest.approx(_cosine(vectors[a], vectors[b]), abs=1e-5)
            truth = sorted((_cosine(vectors[a], vectors[b]) for b in ids if b != a), reverse=True)
            assert [s for _, s in mine] == pytest.approx(truth[:limit], abs=1e-5)


def test_matrix_of_a_tiny_selection_and_bad_sizes(
    served: tuple[Served, RouterThread], client: QdrantClient
) -> None:
    _, router = served
    only_one = models.Filter(must=[models.HasIdCondition(has_id=[3])])
    assert client.search_matrix_pairs("library", query_filter=only_one, sample=5).pairs == []
    for body, field in [({"sample": 1}, "sample"), ({"limit": 0}, "limit")]:
        answer = httpx.post(
            f"{router.url}/collections/library/points/search/matrix/offsets", json=body, timeout=60
        )
        assert answer.status_code == 422
        assert field in answer.json()["status"]["error"]


def test_an_absurd_matrix_sample_or_group_limit_is_refused_without_asking_for_it(
    served: tuple[Served, RouterThread], reference: QdrantClient
) -> None:
    _, router = served
    answer = httpx.post(
        f"{router.url}/collections/library/points/search/matrix/pairs",
        json={"sample": 10**9},
        timeout=60,
    )
    assert answer.status_code == 400
    assert "smaller sample" in answer.json()["status"]["error"]
    answer = httpx.post(
        f"{router.url}/collections/library/points/query/groups",
        json={"query": [0.1] * DIM, "group_by": "tags", "limit": 10**12},
        timeout=60,
    )
    assert answer.status_code == 400  # the router's own ceiling on any page
    answer = httpx.post(
        f"{router.url}/collections/library/points/query/groups",
        json={"query": [0.1] * DIM, "group_by": "tags", "limit": 10_000},
        timeout=60,
    )
    assert answer.status_code == 200  # every group there is: fewer than asked
    theirs = reference.query_points_groups("ref", query=[0.1] * DIM, group_by="tags", limit=10_000)
    assert [g["id"] for g in answer.json()["result"]["groups"]] == [g.id for g in theirs.groups]


def test_bad_facet_and_refusals_keep_qdrant_error_format(
    served: tuple[Served, RouterThread], client: QdrantClient
) -> None:
    _, router = served
    answer = httpx.post(
        f"{router.url}/collections/library/facet", json={"key": "group", "limit": 0}, timeout=60
    )
    assert answer.status_code == 422
    with pytest.raises(UnexpectedResponse) as refused:
        client.facet("library", key="group", limit=0)
    assert refused.value.status_code == 422


# ---------------------------------------------------------------------- a named distance vector


def _one_point_per_home_library() -> tuple[Served, QdrantClient]:
    """Three homes of one point each, with a named Euclid vector beside the routing one (of the
    same size: the router checks a query's size against the routing vector's): no home ever
    returns two scores, so the order of a query on it comes from its configuration."""
    config = {
        "": models.VectorParams(size=4, distance=models.Distance.COSINE),
        "far": models.VectorParams(size=4, distance=models.Distance.EUCLID),
    }
    reference = QdrantClient(":memory:")
    reference.create_collection("ref", vectors_config=config)
    rng = np.random.default_rng(5)
    clients = {"east": QdrantClient(":memory:"), "west": QdrantClient(":memory:")}
    routes, live = [], []
    for d in range(3):
        cluster = "east" if d < 2 else "west"
        collection = f"tiny-d{d}"
        clients[cluster].create_collection(collection, vectors_config=config)
        vectors = {"": [float(x) for x in rng.normal(size=4)], "far": [float(d * 3), 0.0, 1.0, 0.0]}
        payload = {"group": f"g{d}", "n": d}
        clients[cluster].upsert(
            collection,
            [models.PointStruct(id=d, vector=vectors, payload={**payload, POINT_VERSION_KEY: 1})],
        )
        reference.upsert("ref", [models.PointStruct(id=d, vector=vectors, payload=payload)])
        live.append(PointRecord(d, vectors[""], payload))
        centre = np.asarray(vectors[""]) / np.linalg.norm(vectors[""])
        routes.append(
            DomainRoute(
                f"d{d}",
                f"d{d}",
                cluster,
                collection,
                tuple(map(float, centre)),
                1,
                specialized=True,
                versioned=True,
            )
        )
    fleet = Fleet.of_ports(
        {name: RemoteQdrant(name, client, serialize=True) for name, client in clients.items()}
    )
    definition = LibraryDefinition("tiny", tuple(routes), "east", "v1")
    return Served(fleet, definition, live, {d: d for d in range(3)}), reference


def test_a_named_distance_vector_ranks_lower_first_even_when_no_home_shows_an_order() -> None:
    library, reference = _one_point_per_home_library()
    try:
        with (
            RouterThread(make_state(library)) as router,
            closing(QdrantClient(url=router.url, timeout=60, check_compatibility=False)) as client,
        ):
            arguments: dict[str, Any] = {
                "query": [2.0, 0.0, 1.0, 0.0],
                "using": "far",
                "group_by": "group",
                "limit": 2,
                "group_size": 1,
            }
            ours = client.query_points_groups("tiny", **arguments)
            theirs = reference.query_points_groups("ref", **arguments)
            assert [g.id for g in theirs.groups] == ["g1", "g0"]  # distances 1, then 2
            _same_groups(ours, theirs)
            pairs = client.search_matrix_pairs("tiny", sample=3, limit=1, using="far").pairs
            nearest = {int(p.a): (int(p.b), p.score) for p in pairs}
            assert nearest == {
                0: (1, pytest.approx(3.0)),
                1: (0, pytest.approx(3.0)),
                2: (1, pytest.approx(3.0)),
            }
    finally:
        library.fleet.close()
        reference.close()
