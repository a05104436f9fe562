"""The official qdrant-client pointed at the router gets what one collection holding every point gives.

The library's three domains live in separate collections on two embedded
clusters; ``reference`` holds all points on one. Both are read through the
router (the reference by pass-through), with the sync and the async client.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from .router_support import DIM, RouterThread, build_embedded_library, make_state

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterThread]:
    library = build_embedded_library(tmp_path_factory.mktemp("library"))
    with RouterThread(
        make_state(
            library,
            settings={"caching": {"enable_result_cache": False}},
            passthrough=frozenset({"reference"}),
        )
    ) as server:
        yield server
    library.fleet.close()


@pytest.fixture(scope="module")
def client(router: RouterThread) -> Iterator[QdrantClient]:
    c = QdrantClient(url=router.url, timeout=30, check_compatibility=False)
    yield c
    c.close()


def _queries(n: int = 12, seed: int = 7) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, DIM))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return [[float(x) for x in row] for row in rows]


def _same(a: list[models.ScoredPoint], b: list[models.ScoredPoint]) -> None:
    assert [p.id for p in a] == [p.id for p in b]
    assert np.allclose([p.score for p in a], [p.score for p in b], atol=1e-5)
    assert [p.payload for p in a] == [p.payload for p in b]


GROUP = models.Filter(
    must=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))]
)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 10},
        {"limit": 5, "offset": 3, "with_vectors": True},
        {"limit": 10, "query_filter": GROUP},
        {"limit": 20, "score_threshold": 0.5, "with_payload": ["n"]},
        {"limit": 7, "with_payload": models.PayloadSelectorExclude(exclude=["text"])},
    ],
)
def test_query_points_matches_one_collection(client: QdrantClient, kwargs: dict) -> None:
    for vector in _queries(6):
        library = client.query_points("library", query=vector, **kwargs).points
        reference = client.query_points("reference", query=vector, **kwargs).points
        _same(library, reference)
        if kwargs.get("with_vectors"):
            assert np.allclose(library[0].vector, reference[0].vector)


def test_query_by_id_batch_and_prefetch_match(client: QdrantClient) -> None:
    _same(
        client.query_points("library", query=17, limit=5).points,
        client.query_points("reference", query=17, limit=5).points,
    )
    vectors = _queries(4)
    requests = [models.QueryRequest(query=v, limit=4, with_payload=True) for v in vectors]
    for a, b in zip(
        client.query_batch_points("library", requests),
        client.query_batch_points("reference", requests),
        strict=True,
    ):
        _same(a.points, b.points)
    prefetch = [
        models.Prefetch(query=vectors[0], limit=30),
        models.Prefetch(query=vectors[1], limit=30),
    ]
    rrf = client.query_points(
        "library", prefetch=prefetch, query=models.FusionQuery(fusion=models.Fusion.RRF), limit=10
    )
    own = client.query_points(
        "reference", prefetch=prefetch, query=models.FusionQuery(fusion=models.Fusion.RRF), limit=10
    )
    # Qdrant's RRF and ours rank the same candidates; ties may be ordered differently.
    assert {p.id for p in rrf.points} == {p.id for p in own.points}
    rescored = client.query_points("library", prefetch=prefetch[:1], query=vectors[2], limit=5)
    candidates = {p.id for p in client.query_points("reference", query=vectors[0], limit=30).points}
    assert {p.id for p in rescored.points} <= candidates
    _same(
        rescored.points,
        client.query_points("reference", prefetch=prefetch[:1], query=vectors[2], limit=5).points,
    )


def test_scroll_count_and_retrieve_match(client: QdrantClient) -> None:
    assert client.count("library").count == client.count("reference").count == 900
    assert (
        client.count("library", count_filter=GROUP).count
        == client.count("reference", count_filter=GROUP).count
    )
    seen: list = []
    offset = None
    while True:
        page, offset = client.scroll("library", limit=128, offset=offset, scroll_filter=GROUP)
        seen += [p.id for p in page]
        if offset is None:
            break
    reference, _ = client.scroll("reference", limit=1000, scroll_filter=GROUP)
    assert seen == [p.id for p in reference]
    page, next_offset = client.scroll("library", limit=5, offset=100, with_vectors=True)
    ref_page, ref_next = client.scroll("reference", limit=5, offset=100, with_vectors=True)
    assert [p.id for p in page] == [p.id for p in ref_page]
    assert next_offset == ref_next
    assert np.allclose(page[0].vector, ref_page[0].vector)
    ids = [5, 600, 899, 123456]
    got = client.retrieve("library", ids, with_vectors=True)
    want = client.retrieve("reference", ids, with_vectors=True)
    assert [p.id for p in got] == [p.id for p in want] == [5, 600, 899]
    assert [p.payload for p in got] == [p.payload for p in want]


def test_classic_search_endpoints_match(router: RouterThread) -> None:
    vector = _queries(1)[0]
    body = {"vector": vector, "limit": 5, "with_payload": True}
    with httpx.Client(base_url=router.url) as http:
        library = http.post("/collections/library/points/search", json=body).json()["result"]
        reference = http.post("/collections/reference/points/search", json=body).json()["result"]
        assert [p["id"] for p in library] == [p["id"] for p in reference]
        batch = http.post(
            "/collections/library/points/search/batch",
            json={"searches": [body, {**body, "limit": 2}]},
        ).json()
        assert [len(r) for r in batch["result"]] == [5, 2]


def test_writes_land_in_the_nearest_domain_and_match(
    client: QdrantClient, router: RouterThread
) -> None:
    rng = np.random.default_rng(11)
    new = rng.normal(size=(6, DIM))
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    points = [
        models.PointStruct(
            id=10_000 + i, vector=[float(x) for x in v], payload={"n": 10_000 + i, "group": "new"}
        )
        for i, v in enumerate(new)
    ]
    for collection in ("library", "reference"):
        client.upsert(collection, points=points, wait=True)
    assert client.count("library").count == client.count("reference").count == 906
    library = router.state.library
    assert library is not None
    homes = library.nearest_domain([p.vector for p in points])
    fleet = router.state.config.fleet
    for point, home in zip(points, homes, strict=True):
        route = library.domains[home]
        assert fleet.get(route.cluster).retrieve(
            route.collection, [point.id]
        )  # in its nearest domain
    # Moving an existing point to another domain leaves exactly one copy.
    moved = models.PointStruct(id=10_000, vector=[float(x) for x in -new[0]], payload={"n": 1})
    for collection in ("library", "reference"):
        client.upsert(collection, points=[moved], wait=True)
    assert client.count("library").count == 906
    copies = sum(
        len(fleet.get(r.cluster).retrieve(r.collection, [10_000])) for r in library.domains
    )
    assert copies == 1
    for vector in _queries(3, seed=3):
        _same(
            client.query_points("library", query=vector, limit=10).points,
            client.query_points("reference", query=vector, limit=10).points,
        )
    # Deletes by id and by filter.
    for collection in ("library", "reference"):
        client.delete(
            collection, points_selector=models.PointIdsList(points=[10_001, 10_002]), wait=True
        )
        client.delete(
            collection,
            points_selector=models.FilterSelector(
                filter=models.Filter(
                    must=[models.FieldCondition(key="group", match=models.MatchValue(value="new"))]
                )
            ),
            wait=True,
        )
    assert client.count("library").count == client.count("reference").count == 901


async def test_async_client_matches(router: RouterThread) -> None:
    client = AsyncQdrantClient(url=router.url, timeout=30, check_compatibility=False)
    try:
        for vector in _queries(4, seed=5):
            library = (
                await client.query_points("library", query=vector, limit=8, query_filter=GROUP)
            ).points
            reference = (
                await client.query_points("reference", query=vector, limit=8, query_filter=GROUP)
            ).points
            _same(library, reference)
        assert (await client.count("library")).count == (await client.count("reference")).count
        page, _ = await client.scroll("library", limit=10)
        ref, _ = await client.scroll("reference", limit=10)
        assert [p.id for p in page] == [p.id for p in ref]
        got = await client.retrieve("library", [1, 2, 3])
        assert [p.id for p in got] == [1, 2, 3]
        info = await client.get_collection("library")
        assert info.config.params.vectors.size == DIM  # type: ignore[union-attr]
        names = {c.name for c in (await client.get_collections()).collections}
        assert {"library", "reference"} <= names
    finally:
        await client.close()
