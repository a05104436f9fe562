"""Prefetch fusion through the router against qdrant-client's local mode holding the same points.

The reference is independent of the router: local mode (``QdrantClient(":memory:")``)
with every point of the library in one collection. Each prefetch is checked to
be the same list on both sides first, so that a difference in the fused answer
can only come from the fusion.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from .router_support import DIM, Library, RouterThread, build_embedded_library, make_state

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Library, RouterThread]]:
    library = build_embedded_library(tmp_path_factory.mktemp("library"))
    settings = {"caching": {"enable_result_cache": False}, "routing_strategy": "accuracy_first"}
    with RouterThread(make_state(library, settings=settings)) as router:
        yield library, router
    library.fleet.close()


@pytest.fixture(scope="module")
def reference(served: tuple[Library, RouterThread]) -> Iterator[QdrantClient]:
    library, _ = served
    local = QdrantClient(":memory:")
    local.create_collection(
        "ref", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    local.upsert(
        "ref",
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in library.points],
    )
    yield local
    local.close()


def _query(seed: int) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=DIM)
    return [float(x) for x in vector / np.linalg.norm(vector)]


FUSIONS = [
    models.FusionQuery(fusion=models.Fusion.RRF),
    models.FusionQuery(fusion=models.Fusion.DBSF),
    models.RrfQuery(rrf=models.Rrf(k=5, weights=[1.0, 3.0])),
]


@pytest.mark.parametrize("fusion", FUSIONS, ids=["rrf", "dbsf", "rrf-k5-weighted"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fused_prefetches_rank_and_score_as_local_mode(
    served: tuple[Library, RouterThread], reference: QdrantClient, fusion: object, seed: int
) -> None:
    _, router = served
    prefetch = [
        models.Prefetch(query=_query(seed), limit=20),
        models.Prefetch(query=_query(seed + 100), limit=20),
    ]
    with closing(QdrantClient(url=router.url, timeout=30, check_compatibility=False)) as client:
        for one in prefetch:  # the same candidates on both sides
            assert [
                p.id for p in client.query_points("library", query=one.query, limit=20).points
            ] == [p.id for p in reference.query_points("ref", query=one.query, limit=20).points]
        ours = client.query_points("library", prefetch=prefetch, query=fusion, limit=10).points
    theirs = reference.query_points("ref", prefetch=prefetch, query=fusion, limit=10).points
    assert [p.id for p in ours] == [p.id for p in theirs]
    assert np.allclose([p.score for p in ours], [p.score for p in theirs], atol=1e-5)


def test_weights_that_do_not_match_the_prefetches_are_a_400(
    served: tuple[Library, RouterThread],
) -> None:
    _, router = served
    with (
        closing(QdrantClient(url=router.url, timeout=30, check_compatibility=False)) as client,
        pytest.raises(UnexpectedResponse) as refused,
    ):
        client.query_points(
            "library",
            prefetch=[models.Prefetch(query=_query(1), limit=5)] * 2,
            query=models.RrfQuery(rrf=models.Rrf(weights=[1.0])),
            limit=5,
        )
    assert refused.value.status_code == 400
