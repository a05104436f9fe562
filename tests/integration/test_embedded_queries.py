"""The embedded engine answers Qdrant's universal query, facets and ``order_by`` scrolls as
Qdrant does.

Reference: qdrant-client's local mode (an independent implementation of Qdrant's
semantics) holding the same points in one collection with the same vectors: named dense
vectors (cosine and Euclid), a sparse vector and a multivector, and some points missing
some of them. Seeded generators draw queries of every kind; the embedded adapter's
``query_points`` must return the same ranking with the same scores (relative tolerance
1e-4; points with equal scores may come in any order), the same payloads and vectors.

Where the two legitimately differ the tests say so: ``sample`` is random (only its size
and membership are compared); local mode searches exactly, so the engine's collection
stays under the full-scan threshold (its HNSW never approximates here) and
``params`` cannot change a ranking; facets and ``order_by`` on the engine need a payload
index, and an unknown vector name is refused, as on a Qdrant server (local mode needs no
index and skips the name); equal scores may come in any order, and a nested fusion's
ties decide the ranks above it; when both a stage and its prefetches filter with
``should``, the engine (Qdrant's merge of the two filters) and local mode differ (see
``_filter``).
"""

from __future__ import annotations

import json
import math
import random
import typing
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import qdrant_edge as edge
from qdrant_client import QdrantClient
from qdrant_client.http import models

from librarian.storage import edge_queries
from librarian.storage.embedded import SPEC_FILE, EmbeddedQdrant, spec_to_json
from librarian.storage.errors import InvalidRequest
from librarian.storage.port import (
    CollectionSpec,
    HnswSpec,
    OptimizersSpec,
    PointRecord,
    QuantizationSpec,
)

COLLECTION = "mixed"
POINTS = 150
UUID_POINTS = 10
DENSE, EUCLID, SPARSE, MULTI = "dense", "euclid", "sparse", "multi"
SIZES = {DENSE: 8, EUCLID: 5, MULTI: 4}
SPARSE_DIM = 40
COLORS = ["red", "green", "blue", "black", "white"]
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma"]
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
INDEXES: dict[str, models.PayloadSchemaType] = {
    "color": models.PayloadSchemaType.KEYWORD,
    "tags": models.PayloadSchemaType.KEYWORD,
    "n": models.PayloadSchemaType.INTEGER,
    "x": models.PayloadSchemaType.FLOAT,
    "flag": models.PayloadSchemaType.BOOL,
    "at": models.PayloadSchemaType.DATETIME,
    "place": models.PayloadSchemaType.GEO,
}


# ----------------------------------------------------------------- the points


@dataclass(frozen=True)
class Point:
    id: int | str
    vectors: dict[str, Any]  # name -> list[float] | list[list[float]] | models.SparseVector
    payload: dict[str, Any]


def _sparse(rng: random.Random) -> models.SparseVector:
    indices = sorted(rng.sample(range(SPARSE_DIM), rng.randint(1, 6)))
    return models.SparseVector(
        indices=indices, values=[round(rng.uniform(0.1, 2), 3) for _ in indices]
    )


def _dense(rng: random.Random, size: int) -> list[float]:
    return [round(rng.uniform(-1, 1), 4) for _ in range(size)]


def _multi(rng: random.Random) -> list[list[float]]:
    return [_dense(rng, SIZES[MULTI]) for _ in range(rng.randint(1, 3))]


def _payload(rng: random.Random, i: int) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "n": rng.randint(-10, 10),
        "x": round(rng.uniform(-5, 5), 3),
        "color": rng.choice(COLORS),
        "flag": rng.random() < 0.5,
        "tags": rng.sample(COLORS, rng.randint(0, 3)),
        "at": (EPOCH + timedelta(hours=rng.randint(0, 24 * 30))).isoformat(),
        "place": {"lon": round(rng.uniform(-10, 10), 4), "lat": round(rng.uniform(-10, 10), 4)},
        "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))),
        "nested": {"id": i, "name": rng.choice(WORDS), "deep": {"k": rng.randint(0, 3)}},
        "items": [{"id": rng.randint(0, 9), "kind": rng.choice(COLORS)} for _ in range(2)],
    }
    for key in ("n", "x", "color", "tags"):
        if rng.random() < 0.08:
            del payload[key]  # some points lack some keys
    return payload


def _points(seed: int) -> list[Point]:
    rng = random.Random(seed)
    ids: list[int | str] = list(range(POINTS - UUID_POINTS))
    ids += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(UUID_POINTS)]
    points = []
    for i, point_id in enumerate(ids):
        vectors: dict[str, Any] = {DENSE: _dense(rng, SIZES[DENSE])}
        if rng.random() < 0.9:
            vectors[EUCLID] = _dense(rng, SIZES[EUCLID])
        if rng.random() < 0.9:
            vectors[SPARSE] = _sparse(rng)
        if rng.random() < 0.9:
            vectors[MULTI] = _multi(rng)
        points.append(Point(point_id, vectors, _payload(rng, i)))
    return points


def _edge_vectors(vectors: dict[str, Any]) -> dict[str, Any]:
    return {
        name: edge.SparseVector(v.indices, v.values) if isinstance(v, models.SparseVector) else v
        for name, v in vectors.items()
    }


def _create_shard(root: Path, points: list[Point]) -> None:
    """The collection as the engine stores it, built directly (the adapter creates only
    single-vector collections): named dense, sparse and multi vectors."""
    folder = root / COLLECTION
    (folder / "shard").mkdir(parents=True)
    config = edge.EdgeConfig(
        vectors={
            DENSE: edge.EdgeVectorParams(size=SIZES[DENSE], distance=edge.Distance.Cosine),
            EUCLID: edge.EdgeVectorParams(size=SIZES[EUCLID], distance=edge.Distance.Euclid),
            MULTI: edge.EdgeVectorParams(
                size=SIZES[MULTI],
                distance=edge.Distance.Dot,
                multivector_config=edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim),
            ),
        },
        sparse_vectors={SPARSE: edge.EdgeSparseVectorParams()},
    )
    shard = edge.EdgeShard.create(str(folder / "shard"), config)
    batch = [edge.Point(p.id, _edge_vectors(p.vectors), p.payload) for p in points]
    shard.update(edge.UpdateOperation.upsert_points(batch))
    shard.close()
    spec = CollectionSpec(vector_size=SIZES[DENSE])
    (folder / SPEC_FILE).write_text(json.dumps(spec_to_json(spec)))


@pytest.fixture(scope="module")
def points() -> list[Point]:
    return _points(7)


@pytest.fixture(scope="module")
def reference(points: list[Point]) -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    client.create_collection(
        COLLECTION,
        vectors_config={
            DENSE: models.VectorParams(size=SIZES[DENSE], distance=models.Distance.COSINE),
            EUCLID: models.VectorParams(size=SIZES[EUCLID], distance=models.Distance.EUCLID),
            MULTI: models.VectorParams(
                size=SIZES[MULTI],
                distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM
                ),
            ),
        },
        sparse_vectors_config={SPARSE: models.SparseVectorParams()},
    )
    client.upsert(
        COLLECTION,
        [models.PointStruct(id=p.id, vector=p.vectors, payload=p.payload) for p in points],
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def embedded(
    points: list[Point], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedQdrant]:
    root = tmp_path_factory.mktemp("edge")
    _create_shard(root, points)
    port = EmbeddedQdrant("edge", root)
    for key, schema in INDEXES.items():
        port.create_payload_index(COLLECTION, key, schema)
    yield port
    port.close()


# ----------------------------------------------------------------- comparison


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


def _tie_groups(values: list[Any], same: Callable[[Any, Any], bool]) -> list[tuple[int, int]]:
    """Spans [start, end) of consecutive equal values."""
    groups, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or not same(values[i - 1], values[i]):
            groups.append((start, i))
            start = i
    return groups


def assert_same_ranking(
    ours: list[Any],
    theirs: list[Any],
    *,
    key: Callable[[Any], Any] = lambda p: p.score,
    same: Callable[[Any, Any], bool] = _close,
    what: str = "",
    offset: int | None = None,
) -> None:
    """Same length, same key (score or order value) rank by rank, the same ids within each
    run of equal keys (a run cut by the limit, or by the offset, may hold any of the tied
    points)."""
    assert len(ours) == len(theirs), (what, [p.id for p in ours], [p.id for p in theirs])
    for rank, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert same(key(a), key(b)), (what, rank, key(a), key(b), a.id, b.id)
    for start, end in _tie_groups([key(p) for p in theirs], same):
        if (end == len(theirs) and start > 0) or (start == 0 and offset):
            continue  # cut by the limit or the offset
        ours_ids = {p.id for p in ours[start:end]}
        theirs_ids = {p.id for p in theirs[start:end]}
        assert ours_ids == theirs_ids or end == len(theirs), (what, start, ours_ids, theirs_ids)


def _same_vector(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_vector(a[k], b[k]) for k in a)
    if isinstance(a, models.SparseVector) and isinstance(b, models.SparseVector):
        return dict(zip(a.indices, a.values, strict=True)) == pytest.approx(
            dict(zip(b.indices, b.values, strict=True)), rel=1e-5
        )
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(
            _same_vector(x, y) if isinstance(x, list) else _close(x, y)
            for x, y in zip(a, b, strict=True)
        )
    return a is None and b is None


def assert_same_points(ours: list[Any], theirs: list[Any], what: str = "") -> None:
    """Payload and vectors of the points both answers hold."""
    by_id = {p.id: p for p in theirs}
    for point in ours:
        if point.id not in by_id:
            continue  # a tie cut by the limit, checked by the ranking
        other = by_id[point.id]
        assert point.payload == other.payload, (what, point.id, point.payload, other.payload)
        assert _same_vector(point.vector, other.vector), (
            what,
            point.id,
            point.vector,
            other.vector,
        )


def _run(
    embedded: EmbeddedQdrant, reference: QdrantClient, request: models.QueryRequest
) -> tuple[list[models.ScoredPoint], list[models.ScoredPoint]]:
    ours = embedded.query_points(COLLECTION, request)
    (theirs,) = reference.query_batch_points(COLLECTION, [request])
    return ours, theirs.points


def check(embedded: EmbeddedQdrant, reference: QdrantClient, request: models.QueryRequest) -> None:
    ours, theirs = _run(embedded, reference, request)
    what = request.model_dump_json(exclude_none=True)[:600]
    assert_same_ranking(ours, theirs, what=what, offset=request.offset)
    assert_same_points(ours, theirs, what)


# ----------------------------------------------------------------- generators


def _filter(rng: random.Random, *, nested: bool = False) -> models.Filter | None:
    """A filter, or none. ``nested``: the filter of a stage that has prefetches or is one.

    Qdrant merges the filter of a stage into those of its prefetches clause by clause, so the
    ``should`` conditions of both become alternatives of each other; the engine then
    re-scores the candidates without filtering again, while local mode applies the stage's
    own filter once more. The two differ only when both filters have ``should`` clauses, so
    the filters of multi-stage queries here use ``must`` and ``must_not``.
    """
    if rng.random() < 0.5:
        return None
    makers: list[Callable[[], models.Condition]] = [
        lambda: models.FieldCondition(
            key="color", match=models.MatchValue(value=rng.choice(COLORS))
        ),
        lambda: models.FieldCondition(key="n", range=models.Range(gte=rng.randint(-10, 3))),
        lambda: models.FieldCondition(
            key="flag", match=models.MatchValue(value=rng.random() < 0.5)
        ),
        lambda: models.FieldCondition(key="tags", match=models.MatchAny(any=rng.sample(COLORS, 2))),
        lambda: models.FieldCondition(
            key="at",
            range=models.DatetimeRange(gte=EPOCH + timedelta(days=rng.randint(0, 20))),
        ),
        lambda: models.HasVectorCondition(has_vector=rng.choice([SPARSE, MULTI, EUCLID])),
        lambda: models.IsEmptyCondition(is_empty=models.PayloadField(key="tags")),
    ]
    clause = rng.choice(["must", "must_not"] if nested else ["must", "should", "must_not"])
    return models.Filter(**{clause: [rng.choice(makers)() for _ in range(rng.randint(1, 2))]})


def _payload_selector(rng: random.Random) -> Any:
    return rng.choice(
        [
            True,
            False,
            ["n", "nested.id"],
            ["nested.deep.k", "items[].kind", "absent"],
            models.PayloadSelectorInclude(include=["color", "nested.name"]),
            models.PayloadSelectorExclude(exclude=["text", "nested.deep", "items[].id"]),
        ]
    )


def _vector_selector(rng: random.Random) -> Any:
    return rng.choice([False, True, [DENSE], [SPARSE, MULTI], [EUCLID, MULTI, DENSE]])


def _vector_for(rng: random.Random, name: str) -> Any:
    if name == SPARSE:
        return _sparse(rng)
    if name == MULTI:
        return _multi(rng)
    return _dense(rng, SIZES[name])


def _example(rng: random.Random, name: str, points: list[Point]) -> Any:
    """A vector, or the id of a point that has this vector (Qdrant reads it from the
    collection and leaves the point out of the results)."""
    if rng.random() < 0.5:
        return _vector_for(rng, name)
    return rng.choice([p.id for p in points if name in p.vectors])


def _request(
    rng: random.Random, query: Any, using: str | None, **extra: Any
) -> models.QueryRequest:
    fields: dict[str, Any] = {
        "query": query,
        "using": using,
        "filter": _filter(rng, nested="prefetch" in extra),
        "limit": rng.choice([1, 5, 10, 25]),
        "offset": rng.choice([None, 0, 3]),
        "with_payload": _payload_selector(rng),
        "with_vector": _vector_selector(rng),
    }
    fields.update(extra)
    return models.QueryRequest(**fields)


# ----------------------------------------------------------------- query kinds


@pytest.mark.parametrize("seed", range(6))
def test_nearest_on_every_vector_kind(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point], seed: int
) -> None:
    rng = random.Random(seed)
    for name in (DENSE, EUCLID, SPARSE, MULTI):
        for _ in range(4):
            vector = _example(rng, name, points)
            query = rng.choice([models.NearestQuery(nearest=vector), vector])  # both spellings
            check(embedded, reference, _request(rng, query, name))
        # score_threshold in a clear gap between two results: a threshold within float noise
        # of a score would compare 32-bit engine scores (summed in another order by the
        # sparse index) with 64-bit local ones. Euclid's score is a distance (lower passes).
        request = _request(rng, models.NearestQuery(nearest=_vector_for(rng, name)), name)
        request.limit, request.offset = 20, None
        scores = [p.score for p in _run(embedded, reference, request)[0]]
        gaps = [i for i in range(1, len(scores)) if abs(scores[i - 1] - scores[i]) > 1e-3]
        if gaps:
            i = min(gaps, key=lambda i: abs(i - len(scores) / 2))
            threshold = (scores[i - 1] + scores[i]) / 2
            check(embedded, reference, request.model_copy(update={"score_threshold": threshold}))


def test_exact_and_approximate_params_do_not_change_answers_below_full_scan(
    embedded: EmbeddedQdrant, reference: QdrantClient
) -> None:
    # Local mode always searches exactly; the collection is below the engine's full-scan
    # threshold, so every params choice must give the exact answer too.
    rng = random.Random(11)
    for params in (
        models.SearchParams(exact=True),
        models.SearchParams(hnsw_ef=4),
        models.SearchParams(
            quantization=models.QuantizationSearchParams(ignore=True, rescore=True, oversampling=2)
        ),
        models.SearchParams(indexed_only=False, acorn=models.AcornSearchParams(enable=True)),
    ):
        check(embedded, reference, _request(rng, _dense(rng, SIZES[DENSE]), DENSE, params=params))


def test_search_params_reach_the_index(tmp_path: Path) -> None:
    # Above the full-scan threshold, with an HNSW graph and binary quantization built:
    # `exact` with quantization ignored gives local mode's exact answer; a tiny `hnsw_ef`
    # without rescoring gives another (so the params are honoured, not dropped).
    rng = random.Random(41)
    records = [PointRecord(id=i, vector=_dense(rng, 16)) for i in range(3000)]
    spec = CollectionSpec(
        vector_size=16,
        hnsw=HnswSpec(m=4, ef_construct=8, full_scan_threshold=10),
        optimizers=OptimizersSpec(indexing_threshold=10, default_segment_number=1),
        quantization=QuantizationSpec(kind="binary", always_ram=True),
    )
    port = EmbeddedQdrant("edge", tmp_path)
    reference = QdrantClient(":memory:")
    try:
        port.create_collection("indexed", spec)
        port.upsert("indexed", records)
        port.optimize("indexed")
        assert port.collection_info("indexed").indexed_vectors_count == len(records)
        reference.create_collection(
            "indexed", vectors_config=models.VectorParams(size=16, distance=models.Distance.COSINE)
        )
        reference.upsert(
            "indexed", [models.PointStruct(id=r.id, vector=r.vector, payload={}) for r in records]
        )
        exact = models.SearchParams(
            exact=True, quantization=models.QuantizationSearchParams(ignore=True)
        )
        rough = models.SearchParams(
            hnsw_ef=1, quantization=models.QuantizationSearchParams(rescore=False)
        )
        differs = 0
        for _ in range(20):
            request = models.QueryRequest(query=_dense(rng, 16), limit=10, params=exact)
            ours = port.query_points("indexed", request)
            (theirs,) = reference.query_batch_points("indexed", [request])
            assert_same_ranking(ours, theirs.points)
            approximate = port.query_points("indexed", request.model_copy(update={"params": rough}))
            differs += [p.id for p in approximate] != [p.id for p in ours]
        assert differs > 10
    finally:
        port.close()
        reference.close()


@pytest.mark.parametrize("seed", range(5))
def test_recommend_with_every_strategy(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point], seed: int
) -> None:
    rng = random.Random(100 + seed)
    for name in (DENSE, EUCLID, SPARSE, MULTI):
        for strategy in [None, *models.RecommendStrategy]:
            positive = [_example(rng, name, points) for _ in range(rng.randint(1, 3))]
            negative = [_example(rng, name, points) for _ in range(rng.randint(0, 2))]
            recommend = models.RecommendInput(
                positive=positive, negative=negative, strategy=strategy
            )
            check(
                embedded, reference, _request(rng, models.RecommendQuery(recommend=recommend), name)
            )


def test_recommend_with_negatives_only(embedded: EmbeddedQdrant, reference: QdrantClient) -> None:
    rng = random.Random(5)
    for strategy in (models.RecommendStrategy.BEST_SCORE, models.RecommendStrategy.SUM_SCORES):
        recommend = models.RecommendInput(negative=[_dense(rng, SIZES[DENSE])], strategy=strategy)
        check(embedded, reference, _request(rng, models.RecommendQuery(recommend=recommend), DENSE))


def test_average_vector_recommendation_is_refused_without_positives(
    embedded: EmbeddedQdrant,
) -> None:
    recommend = models.RecommendInput(negative=[[0.1] * SIZES[DENSE]])
    request = models.QueryRequest(query=models.RecommendQuery(recommend=recommend), using=DENSE)
    with pytest.raises(InvalidRequest, match="positive"):
        embedded.query_points(COLLECTION, request)


def _pairs(rng: random.Random, name: str, points: list[Point]) -> list[models.ContextPair]:
    return [
        models.ContextPair(
            positive=_example(rng, name, points), negative=_example(rng, name, points)
        )
        for _ in range(rng.randint(1, 3))
    ]


@pytest.mark.parametrize("seed", range(5))
def test_discover_and_context(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point], seed: int
) -> None:
    rng = random.Random(200 + seed)
    for name in (DENSE, EUCLID, SPARSE, MULTI):
        discover = models.DiscoverInput(
            target=_example(rng, name, points), context=_pairs(rng, name, points)
        )
        check(embedded, reference, _request(rng, models.DiscoverQuery(discover=discover), name))
        context = models.ContextQuery(context=_pairs(rng, name, points))
        check(embedded, reference, _request(rng, context, name))


@pytest.mark.parametrize("seed", range(4))
def test_mmr_diversifies_as_qdrant_does(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point], seed: int
) -> None:
    rng = random.Random(300 + seed)
    for name in (DENSE, EUCLID, MULTI):  # sparse: refused, see below
        mmr = models.Mmr(
            diversity=rng.choice([None, 0.0, 0.3, 0.8, 1.0]),
            candidates_limit=rng.choice([None, 30, 60]),
        )
        query = models.NearestQuery(nearest=_example(rng, name, points), mmr=mmr)
        check(embedded, reference, _request(rng, query, name, score_threshold=None))


@pytest.mark.parametrize("seed", range(3))
def test_relevance_feedback(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point], seed: int
) -> None:
    rng = random.Random(400 + seed)
    for name in (DENSE, EUCLID):
        feedback = models.RelevanceFeedbackInput(
            target=_example(rng, name, points),
            feedback=[
                models.FeedbackItem(example=_example(rng, name, points), score=rng.uniform(0, 1))
                for _ in range(3)
            ],
            strategy=models.NaiveFeedbackStrategy(
                naive=models.NaiveFeedbackStrategyParams(a=1.0, b=0.5, c=0.2)
            ),
        )
        query = models.RelevanceFeedbackQuery(relevance_feedback=feedback)
        check(embedded, reference, _request(rng, query, name))


def _order_key(point: Any) -> Any:
    return point.order_value


def _same_value(a: Any, b: Any) -> bool:
    return bool(a == b) or (a is not None and b is not None and _close(float(a), float(b)))


@pytest.mark.parametrize("seed", range(3))
def test_order_by_query(embedded: EmbeddedQdrant, reference: QdrantClient, seed: int) -> None:
    rng = random.Random(500 + seed)
    for key in ("n", "x", "at"):
        for _ in range(3):
            direction = rng.choice([None, models.Direction.ASC, models.Direction.DESC])
            start: Any = None
            if rng.random() < 0.5:
                start = (
                    EPOCH + timedelta(days=rng.randint(0, 30))
                    if key == "at"
                    else rng.randint(-5, 5)
                )
            order_by = models.OrderBy(key=key, direction=direction, start_from=start)
            request = _request(rng, models.OrderByQuery(order_by=order_by), None, offset=None)
            ours, theirs = _run(embedded, reference, request)
            assert_same_ranking(ours, theirs, key=_order_key, same=_same_value, what=str(request))
            assert_same_points(ours, theirs)


def _prefetch(rng: random.Random, points: list[Point], depth: int = 0) -> models.Prefetch:
    name = rng.choice([DENSE, EUCLID, SPARSE, MULTI])
    inner = None
    query: Any = models.NearestQuery(nearest=_example(rng, name, points))
    if depth < 1 and rng.random() < 0.3:
        # Nested stages re-score their prefetches with a vector: a nested fusion's ties (two
        # lists' first points score the same) are broken in an unspecified order, which then
        # decides the outer ranks (see test_nested_fusion below).
        inner = [_prefetch(rng, points, depth + 1) for _ in range(2)]
    return models.Prefetch(
        prefetch=inner,
        query=query,
        using=name,
        filter=_filter(rng, nested=True),
        limit=rng.choice([None, 5, 20, 40]),
        # cosine scores: no point's score is within float noise of 0.1 here
        score_threshold=rng.choice([None, 0.1]) if name == DENSE else None,
        params=rng.choice([None, models.SearchParams(exact=True, hnsw_ef=8)]),
    )


@pytest.mark.parametrize("seed", range(6))
def test_fusion_of_prefetches(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point], seed: int
) -> None:
    rng = random.Random(600 + seed)
    for query in (
        models.FusionQuery(fusion=models.Fusion.RRF),
        models.FusionQuery(fusion=models.Fusion.DBSF),
        models.RrfQuery(rrf=models.Rrf()),
        models.RrfQuery(rrf=models.Rrf(k=rng.randint(1, 80))),
        models.RrfQuery(rrf=models.Rrf(k=10, weights=[3.0, 1.0])),
    ):
        prefetch = [_prefetch(rng, points) for _ in range(2)]
        check(embedded, reference, _request(rng, query, None, prefetch=prefetch))


def test_nested_fusion(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point]
) -> None:
    # The inner fusions merge one list each, so they have no ties to break.
    rng = random.Random(650)
    for inner_query in (
        models.FusionQuery(fusion=models.Fusion.RRF),
        models.FusionQuery(fusion=models.Fusion.DBSF),
        models.RrfQuery(rrf=models.Rrf(k=5)),
    ):
        inner = models.Prefetch(
            prefetch=models.Prefetch(query=_example(rng, SPARSE, points), using=SPARSE, limit=15),
            query=inner_query,
            limit=10,
        )
        outer = models.Prefetch(query=_example(rng, MULTI, points), using=MULTI, limit=12)
        for query in (
            models.FusionQuery(fusion=models.Fusion.RRF),
            models.RrfQuery(rrf=models.Rrf(k=3, weights=[1.0, 2.0])),
        ):
            check(
                embedded,
                reference,
                models.QueryRequest(prefetch=[inner, outer], query=query, limit=15),
            )


@pytest.mark.parametrize("seed", range(4))
def test_rescoring_prefetches_with_a_vector(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point], seed: int
) -> None:
    rng = random.Random(700 + seed)
    for name in (DENSE, MULTI):
        prefetch = rng.choice([_prefetch(rng, points), [_prefetch(rng, points) for _ in range(2)]])
        query = models.NearestQuery(nearest=_example(rng, name, points))
        check(embedded, reference, _request(rng, query, name, prefetch=prefetch))


def _formulas(rng: random.Random) -> list[Any]:
    origin = models.GeoPoint(lon=rng.uniform(-5, 5), lat=rng.uniform(-5, 5))
    return [
        models.SumExpression(
            sum=[
                "$score",
                models.MultExpression(
                    mult=[
                        0.5,
                        models.FieldCondition(key="color", match=models.MatchValue(value="red")),
                    ]
                ),
            ]
        ),
        models.MultExpression(mult=["$score[0]", models.AbsExpression(abs="x")]),
        models.SumExpression(
            sum=[
                "$score",
                models.DivExpression(
                    div=models.DivParams(left="n", right=3.0, by_zero_default=0.0)
                ),
            ]
        ),
        models.SumExpression(
            sum=[
                "$score",
                models.GaussDecayExpression(
                    gauss_decay=models.DecayParamsExpression(
                        x=models.GeoDistance(
                            geo_distance=models.GeoDistanceParams(origin=origin, to="place")
                        ),
                        scale=500_000,
                    )
                ),
            ]
        ),
        models.SumExpression(
            sum=[
                "$score",
                models.LinDecayExpression(
                    lin_decay=models.DecayParamsExpression(
                        x=models.DatetimeKeyExpression(datetime_key="at"),
                        target=models.DatetimeExpression(
                            datetime=(EPOCH + timedelta(days=10)).isoformat()
                        ),
                        scale=86_400 * 10,
                        midpoint=0.3,
                    )
                ),
            ]
        ),
        models.MaxExpression(
            max=[
                models.ExpDecayExpression(
                    exp_decay=models.DecayParamsExpression(x="n", target=2.0)
                ),
                models.NegExpression(neg="$score"),
                models.SqrtExpression(
                    sqrt=models.PowExpression(pow=models.PowParams(base="x", exponent=2.0))
                ),
                models.Log10Expression(log10=models.SumExpression(sum=[11.0, "n"])),
            ]
        ),
        models.MinExpression(
            min=[
                models.LnExpression(
                    ln=models.SumExpression(sum=[1.0, models.AbsExpression(abs="x")])
                ),
                models.ExpExpression(exp="$score"),
                models.AcoshExpression(
                    acosh=models.SumExpression(sum=[1.5, models.AbsExpression(abs="x")])
                ),
                models.Filter(must=[models.HasVectorCondition(has_vector=SPARSE)]),
            ]
        ),
        models.SumExpression(sum=["$score", "missing_key"]),
    ]


@pytest.mark.parametrize("seed", range(3))
def test_formula_rescoring(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point], seed: int
) -> None:
    rng = random.Random(800 + seed)
    for formula in _formulas(rng):
        prefetch = [
            models.Prefetch(query=_vector_for(rng, DENSE), using=DENSE, limit=30),
            models.Prefetch(query=_vector_for(rng, SPARSE), using=SPARSE, limit=30),
        ]
        query = models.FormulaQuery(formula=formula, defaults={"missing_key": 0.25, "n": 0, "x": 1})
        check(embedded, reference, _request(rng, query, None, prefetch=prefetch))


def test_formula_variable_without_value_or_default_is_refused(
    embedded: EmbeddedQdrant, reference: QdrantClient
) -> None:
    # Some points lack "x": Qdrant refuses the query (local mode too), it does not skip them.
    prefetch = models.Prefetch(query=[0.1] * SIZES[DENSE], using=DENSE, limit=POINTS)
    request = models.QueryRequest(
        prefetch=prefetch, query=models.FormulaQuery(formula=models.AbsExpression(abs="x"))
    )
    with pytest.raises(InvalidRequest):
        embedded.query_points(COLLECTION, request)
    with pytest.raises(ValueError, match="No value found for x"):
        reference.query_batch_points(COLLECTION, [request])


def test_sample_is_random_but_honours_filter_and_limit(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point]
) -> None:
    # Random order on both sides: compare the number of points and that each one matches.
    flt = models.Filter(
        must=[models.FieldCondition(key="color", match=models.MatchValue(value="red"))]
    )
    matching = {p.id for p in points if p.payload.get("color") == "red"}
    request = models.QueryRequest(
        query=models.SampleQuery(sample=models.Sample.RANDOM),
        filter=flt,
        limit=7,
        with_payload=True,
    )
    ours, theirs = _run(embedded, reference, request)
    assert len(ours) == len(theirs) == min(7, len(matching))
    assert {p.id for p in ours} <= matching
    assert all(p.payload == next(q.payload for q in points if q.id == p.id) for p in ours)


def test_no_query_lists_points_in_id_order(
    embedded: EmbeddedQdrant, reference: QdrantClient
) -> None:
    rng = random.Random(3)
    for _ in range(4):
        check(embedded, reference, _request(rng, None, None))


def test_text_query_ranks_by_bm25(
    tmp_path: Path, points: list[Point], reference: QdrantClient
) -> None:
    # A collection of its own: a scoring text index on "text" (local mode needs none).
    _create_shard(tmp_path, points)
    port = EmbeddedQdrant("edge", tmp_path)
    index = models.TextIndexParams(type=models.TextIndexType.TEXT, scoring=True)
    reference.create_payload_index(COLLECTION, "text", index)
    try:
        port.create_payload_index(COLLECTION, "text", index)
        rng = random.Random(9)
        for _ in range(5):
            words = " ".join(rng.sample(WORDS, 2))
            request = _request(rng, models.TextQuery(text=words), "text")
            ours = port.query_points(COLLECTION, request)
            (theirs,) = reference.query_batch_points(COLLECTION, [request])
            assert_same_ranking(ours, theirs.points, what=words)
    finally:
        port.close()


# ----------------------------------------------------------------- ids, selectors, refusals


def test_query_by_point_id_excludes_that_point(
    embedded: EmbeddedQdrant, reference: QdrantClient, points: list[Point]
) -> None:
    for point in points[:3] + points[-2:]:
        request = models.QueryRequest(
            query=point.id, using=DENSE, limit=5, with_payload=["nested.id"]
        )
        ours, theirs = _run(embedded, reference, request)
        assert point.id not in {p.id for p in ours}
        assert_same_ranking(ours, theirs)
        prefetch = models.Prefetch(query=point.id, using=DENSE, limit=10)
        request = models.QueryRequest(
            prefetch=prefetch, query=_vector_for(random.Random(1), SPARSE), using=SPARSE, limit=5
        )
        check(embedded, reference, request)


def test_missing_point_or_vector_named_as_query_is_refused(
    embedded: EmbeddedQdrant, points: list[Point]
) -> None:
    with pytest.raises(InvalidRequest, match="no point with id 99999"):
        embedded.query_points(COLLECTION, models.QueryRequest(query=99999, using=DENSE))
    lacking = next(p for p in points if SPARSE not in p.vectors)
    with pytest.raises(InvalidRequest, match="has no vector 'sparse'"):
        embedded.query_points(COLLECTION, models.QueryRequest(query=lacking.id, using=SPARSE))


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        (
            {
                "query": [0.1] * 8,
                "using": DENSE,
                "lookup_from": models.LookupLocation(collection="other"),
            },
            "lookup_from",
        ),
        (
            {
                "prefetch": models.Prefetch(
                    query=1, using=DENSE, lookup_from=models.LookupLocation(collection="other")
                ),
                "query": models.FusionQuery(fusion=models.Fusion.RRF),
            },
            "lookup_from",
        ),
        ({"query": models.Document(text="hello", model="any"), "using": DENSE}, "inference"),
        (
            {
                "query": models.NearestQuery(nearest=42, mmr=models.Mmr(candidates_limit=-1)),
                "using": DENSE,
            },
            "candidates_limit",
        ),
        (
            {
                "query": models.NearestQuery(nearest=models.Image(image="x.png", model="any")),
                "using": DENSE,
            },
            "inference",
        ),
        ({"query": [0.1] * 8, "using": DENSE, "shard_key": "a"}, "shard_key"),
        ({"query": [0.1] * 8, "using": DENSE, "limit": 0}, "limit 0"),
        ({"query": [0.1] * 8, "using": DENSE, "offset": -1}, "offset -1"),
        (
            {"query": [0.1] * 8, "using": DENSE, "prefetch": models.Prefetch(limit=0)},
            "prefetch limit 0",
        ),
        ({"query": models.TextQuery(text="alpha")}, "needs `using`"),
        (
            {
                "query": models.NearestQuery(
                    nearest=models.SparseVector(indices=[1], values=[1.0]), mmr=models.Mmr()
                ),
                "using": SPARSE,
            },
            "mmr on a sparse vector",
        ),
        ({"prefetch": models.Prefetch(query=[0.1] * 8, using=DENSE)}, "a query is needed to merge"),
        ({"query": None, "score_threshold": 0.5}, "a query is needed to use the score_threshold"),
        ({"query": models.OrderByQuery(order_by="n"), "score_threshold": 0.5}, "order_by"),
        ({"query": models.FusionQuery(fusion=models.Fusion.RRF)}, "needs at least one prefetch"),
        (
            {
                "query": models.RrfQuery(rrf=models.Rrf()),
                "using": DENSE,
                "prefetch": models.Prefetch(query=[0.1] * 8, using=DENSE),
            },
            "cannot be combined with `using`",
        ),
        (
            {
                "query": models.RrfQuery(rrf=models.Rrf(k=0)),
                "prefetch": models.Prefetch(query=[0.1] * 8, using=DENSE),
            },
            "rrf k 0",
        ),
        (
            {
                "query": models.NearestQuery(nearest=[0.1] * 8, mmr=models.Mmr(diversity=1.5)),
                "using": DENSE,
            },
            "diversity",
        ),
    ],
)
def test_what_the_engine_cannot_answer_is_refused_by_name(
    embedded: EmbeddedQdrant, request_fields: dict[str, Any], message: str
) -> None:
    request = models.QueryRequest.model_construct(**request_fields)
    with pytest.raises(InvalidRequest, match=message):
        embedded.query_points(COLLECTION, request)


def test_every_query_variant_and_request_field_is_handled() -> None:
    # A new variant of qdrant-client's Query union, or a new field of QueryRequest / Prefetch,
    # must be added here and in the translation, not silently ignored.
    assert set(edge_queries.QUERY_VARIANTS) == set(typing.get_args(models.Query))
    handled_request_fields = {
        "shard_key",
        "prefetch",
        "query",
        "using",
        "filter",
        "params",
        "score_threshold",
        "limit",
        "offset",
        "with_vector",
        "with_payload",
        "lookup_from",
    }
    assert set(models.QueryRequest.model_fields) == handled_request_fields
    assert set(models.Prefetch.model_fields) == handled_request_fields - {
        "shard_key",
        "offset",
        "with_vector",
        "with_payload",
    }
    assert set(models.SearchParams.model_fields) == {
        "hnsw_ef",
        "exact",
        "quantization",
        "indexed_only",
        "acorn",
        "idf",
    }
    expression_classes = set(typing.get_args(models.Expression))
    handled = {
        float,
        str,
        *edge_queries._DECAYS,
        *edge_queries._UNARY,
        *edge_queries._VARIADIC,
        *edge_queries._CONDITIONS,
        models.GeoDistance,
        models.DatetimeExpression,
        models.DatetimeKeyExpression,
        models.DivExpression,
        models.PowExpression,
    }
    assert {
        c if isinstance(c, type) else typing.get_args(c)[0] for c in expression_classes
    } <= handled


def test_unknown_query_variant_is_refused_by_name(embedded: EmbeddedQdrant) -> None:
    class FutureQuery(models.SampleQuery):
        pass

    request = models.QueryRequest.model_construct(query=FutureQuery(sample=models.Sample.RANDOM))
    with pytest.raises(InvalidRequest, match="FutureQuery"):
        embedded.query_points(COLLECTION, request)


def test_payload_and_vector_selectors(embedded: EmbeddedQdrant, reference: QdrantClient) -> None:
    rng = random.Random(12)
    for with_payload in (
        True,
        False,
        [],
        ["nested.id"],
        ["nested.deep.k", "items[].kind"],
        models.PayloadSelectorInclude(include=["nested.id", "color"]),
        models.PayloadSelectorExclude(exclude=["nested.id", "text", "items[].id"]),
    ):
        for with_vector in (True, False, [MULTI], [SPARSE, DENSE]):
            request = models.QueryRequest(
                query=_dense(rng, SIZES[DENSE]),
                using=DENSE,
                limit=4,
                with_payload=with_payload,
                with_vector=with_vector,
            )
            ours, theirs = _run(embedded, reference, request)
            assert [p.id for p in ours] == [p.id for p in theirs]
            assert_same_points(ours, theirs, str((with_payload, with_vector)))
    ours = embedded.query_points(
        COLLECTION, models.QueryRequest(query=[0.1] * 8, using=DENSE, with_payload=["nested.id"])
    )
    assert all(set(p.payload) == {"nested"} and set(p.payload["nested"]) == {"id"} for p in ours)


def test_unknown_vector_name_is_refused(embedded: EmbeddedQdrant) -> None:
    # As a Qdrant server does (local mode leaves an unknown name out instead).
    for request in (
        models.QueryRequest(query=[0.1] * SIZES[DENSE], using=DENSE, with_vector=[DENSE, "absent"]),
        models.QueryRequest(query=[0.1] * SIZES[DENSE], using="absent"),
    ):
        with pytest.raises(InvalidRequest, match="absent"):
            embedded.query_points(COLLECTION, request)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([math.nan, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "NaN"),
        (models.SparseVector(indices=[1], values=[math.inf]), "NaN or an infinity"),
        ([0.1, 0.2], "dimension"),
        ([[0.1] * SIZES[DENSE]], "multi"),
        (
            models.RecommendQuery(
                recommend=models.RecommendInput(positive=[[0.1] * 8, [[0.1] * 8]])
            ),
            "mix dense, sparse and multi",
        ),
    ],
)
def test_hostile_vectors_are_refused(embedded: EmbeddedQdrant, query: Any, message: str) -> None:
    request = models.QueryRequest(query=query, using=DENSE)
    with pytest.raises(InvalidRequest, match=message):
        embedded.query_points(COLLECTION, request)


def test_prefetch_depth_is_bounded(embedded: EmbeddedQdrant) -> None:
    prefetch = models.Prefetch(query=[0.1] * SIZES[DENSE], using=DENSE)
    for _ in range(300):
        prefetch = models.Prefetch(prefetch=prefetch, query=[0.1] * SIZES[DENSE], using=DENSE)
    request = models.QueryRequest(prefetch=prefetch, query=[0.1] * SIZES[DENSE], using=DENSE)
    with pytest.raises(InvalidRequest, match="depth"):
        embedded.query_points(COLLECTION, request)


def test_concurrent_queries_get_their_own_answers(
    embedded: EmbeddedQdrant, points: list[Point]
) -> None:
    rng = random.Random(21)
    requests = [
        _request(rng, _example(rng, name, points), name, filter=None)
        for name in (DENSE, SPARSE, MULTI, EUCLID)
        for _ in range(5)
    ]
    expected = [embedded.query_points(COLLECTION, r) for r in requests]

    def worker(order: list[int]) -> list[tuple[int, list[models.ScoredPoint]]]:
        return [(i, embedded.query_points(COLLECTION, requests[i])) for i in order]

    orders = [random.Random(seed).sample(range(len(requests)), len(requests)) for seed in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for answers in pool.map(worker, orders):
            for i, answer in answers:
                assert answer == expected[i]


def test_single_unnamed_vector_collection(tmp_path: Path) -> None:
    # The collections the adapter itself creates: one unnamed dense vector, which Qdrant
    # returns as a plain list and reads by id from the unnamed vector.
    rng = random.Random(31)
    records = [
        PointRecord(id=i, vector=_dense(rng, 6), payload={"n": i % 7, "color": rng.choice(COLORS)})
        for i in range(60)
    ]
    port = EmbeddedQdrant("edge", tmp_path)
    reference = QdrantClient(":memory:")
    try:
        port.create_collection("plain", CollectionSpec(vector_size=6, distance="Dot"))
        port.upsert("plain", records)
        reference.create_collection(
            "plain", vectors_config=models.VectorParams(size=6, distance=models.Distance.DOT)
        )
        reference.upsert(
            "plain",
            [models.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in records],
        )
        for request in (
            models.QueryRequest(query=_dense(rng, 6), with_vector=True, with_payload=True),
            models.QueryRequest(query=5, with_vector=[""], limit=4),
            models.QueryRequest(
                query=models.RecommendQuery(
                    recommend=models.RecommendInput(positive=[1, _dense(rng, 6)], negative=[2])
                ),
                with_payload=["color"],
            ),
            models.QueryRequest(
                prefetch=[
                    models.Prefetch(query=3, limit=20),
                    models.Prefetch(query=_dense(rng, 6), limit=20),
                ],
                query=models.FusionQuery(fusion=models.Fusion.DBSF),
                with_vector=True,
            ),
        ):
            ours = port.query_points("plain", request)
            (theirs,) = reference.query_batch_points("plain", [request])
            assert_same_ranking(ours, theirs.points, what=str(request))
            assert_same_points(ours, theirs.points)
            assert all(p.vector is None or isinstance(p.vector, list) for p in ours)
    finally:
        port.close()
        reference.close()


# ----------------------------------------------------------------- facets and scrolls


@pytest.mark.parametrize("key", ["color", "tags", "n", "flag"])
def test_facet_counts(embedded: EmbeddedQdrant, reference: QdrantClient, key: str) -> None:
    rng = random.Random(key)
    for _ in range(6):
        request = models.FacetRequest(
            key=key,
            filter=_filter(rng),
            limit=rng.choice([None, 2, 5, 50]),
            exact=rng.choice([None, True]),  # approximate counts are exact on a small collection
        )
        ours = embedded.facet(COLLECTION, request)
        theirs = reference.facet(
            COLLECTION, key, facet_filter=request.filter, limit=request.limit or 10, exact=True
        ).hits
        assert [(h.value, h.count) for h in ours] == [(h.value, h.count) for h in theirs], request


def test_facet_needs_an_index_as_on_a_server(embedded: EmbeddedQdrant) -> None:
    with pytest.raises(InvalidRequest, match="index"):
        embedded.facet(COLLECTION, models.FacetRequest(key="text"))


@pytest.mark.parametrize("seed", range(4))
def test_order_by_scroll(embedded: EmbeddedQdrant, reference: QdrantClient, seed: int) -> None:
    rng = random.Random(900 + seed)
    for key in ("n", "x", "at"):
        direction = rng.choice([None, models.Direction.ASC, models.Direction.DESC])
        start: Any = None
        if rng.random() < 0.5:
            start = (
                EPOCH + timedelta(days=rng.randint(0, 30)) if key == "at" else rng.uniform(-5, 5)
            )
        order_by: Any = models.OrderBy(key=key, direction=direction, start_from=start)
        if rng.random() < 0.3:
            order_by = key
        request = models.ScrollRequest(
            filter=_filter(rng),
            limit=rng.choice([3, 10, 40]),
            order_by=order_by,
            with_payload=_payload_selector(rng),
            with_vector=_vector_selector(rng),
        )
        ours, next_offset = embedded.scroll_points(COLLECTION, request)
        theirs, their_next = reference.scroll(
            COLLECTION,
            scroll_filter=request.filter,
            limit=request.limit,
            order_by=order_by,
            with_payload=request.with_payload,
            with_vectors=request.with_vector,
        )
        assert next_offset is None
        assert their_next is None
        assert_same_ranking(ours, theirs, key=_order_key, same=_same_value, what=str(request))
        assert_same_points(ours, theirs)


def test_order_by_scroll_refusals_match_a_server(
    embedded: EmbeddedQdrant, reference: QdrantClient
) -> None:
    # An offset cannot be combined with order_by (local mode refuses it too); ordering needs
    # a range index on the key, as on a Qdrant server (local mode needs none).
    with pytest.raises(InvalidRequest, match="Offset is not supported"):
        embedded.scroll_points(COLLECTION, models.ScrollRequest(limit=3, offset=5, order_by="n"))
    with pytest.raises(ValueError, match="Offset is not supported"):
        reference.scroll(COLLECTION, limit=3, offset=5, order_by="n")
    with pytest.raises(InvalidRequest, match="range index"):
        embedded.scroll_points(COLLECTION, models.ScrollRequest(limit=3, order_by="text"))


def test_id_order_scroll_pages(embedded: EmbeddedQdrant, reference: QdrantClient) -> None:
    rng = random.Random(4)
    flt = _filter(rng)
    offset: Any = None
    pages = 0
    while True:
        request = models.ScrollRequest(
            filter=flt, limit=17, offset=offset, with_payload=["nested.id"], with_vector=[MULTI]
        )
        ours, next_offset = embedded.scroll_points(COLLECTION, request)
        theirs, their_next = reference.scroll(
            COLLECTION,
            scroll_filter=flt,
            limit=17,
            offset=offset,
            with_payload=["nested.id"],
            with_vectors=[MULTI],
        )
        assert [p.id for p in ours] == [p.id for p in theirs]
        assert_same_points(ours, theirs)
        assert next_offset == their_next
        pages += 1
        if next_offset is None:
            break
        offset = next_offset
    assert pages > 2


# ----------------------------------------------------------------- payload indexes


@pytest.mark.parametrize("schema", list(models.PayloadSchemaType))
def test_create_and_delete_payload_index_of_every_type(
    tmp_path: Path, schema: models.PayloadSchemaType
) -> None:
    port = EmbeddedQdrant("edge", tmp_path)
    try:
        port.create_collection("c", CollectionSpec(vector_size=2))
        port.create_payload_index("c", "field", schema)
        port.create_payload_index("c", "field", schema)  # idempotent
        assert port.collection_info("c").payload_schema == {"field": schema.value}
        port.delete_payload_index("c", "field")
        assert port.collection_info("c").payload_schema == {}
    finally:
        port.close()


@pytest.mark.parametrize(
    "params",
    [
        models.KeywordIndexParams(
            type=models.KeywordIndexType.KEYWORD, is_tenant=True, on_disk=True
        ),
        models.IntegerIndexParams(type=models.IntegerIndexType.INTEGER, lookup=True, range=False),
        models.FloatIndexParams(type=models.FloatIndexType.FLOAT, is_principal=True),
        models.GeoIndexParams(type=models.GeoIndexType.GEO, memory=models.Memory.CACHED),
        models.BoolIndexParams(type=models.BoolIndexType.BOOL),
        models.DatetimeIndexParams(type=models.DatetimeIndexType.DATETIME, is_principal=False),
        models.UuidIndexParams(type=models.UuidIndexType.UUID, is_tenant=True),
        models.TextIndexParams(
            type=models.TextIndexType.TEXT,
            tokenizer=models.TokenizerType.WORD,
            min_token_len=2,
            lowercase=True,
            phrase_matching=True,
            stopwords=models.StopwordsSet(languages=[models.Language.ENGLISH], custom=["the"]),
            stemmer=models.SnowballParams(
                type=models.Snowball.SNOWBALL, language=models.SnowballLanguage.ENGLISH
            ),
            scoring=models.TextScoringParams(type=models.TextScoringType.BM25),
        ),
        models.TextIndexParams(
            type=models.TextIndexType.TEXT,
            stopwords=models.Language.GERMAN,
            stemmer=models.DisabledStemmerParams(type=models.NoStemmer.NONE),
        ),
    ],
)
def test_payload_index_params_translate(tmp_path: Path, params: Any) -> None:
    port = EmbeddedQdrant("edge", tmp_path)
    try:
        port.create_collection("c", CollectionSpec(vector_size=2))
        port.create_payload_index("c", "field", params)
        assert port.collection_info("c").payload_schema == {"field": params.type.value}
    finally:
        port.close()


def test_unknown_payload_schema_is_refused(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path)
    try:
        port.create_collection("c", CollectionSpec(vector_size=2))
        with pytest.raises(InvalidRequest, match="unknown"):
            port.create_payload_index("c", "field", "vector")  # type: ignore[arg-type]
    finally:
        port.close()
