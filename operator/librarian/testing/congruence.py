"""Qdrant's API as the official client calls it, run on two backends and judged case by case.

Why this exists: the router promises that an application switches to it by
changing one URL, so its answers must be those of one Qdrant collection holding
the same points, or a clear 4xx. The congruence tests and
``benchmarks/congruence_report.py`` share this catalogue: every operation of
the client (reads of every query kind, groups, facets, matrices, scroll,
count, retrieve, collection calls, and writes followed by a comparison of the
whole collection) with seeded arguments, a comparison of ranked results with
scores (float tolerance, ties allowed), and a verdict per case — *correct*,
*refused* (a 4xx, with its message) or *wrong* (a different answer, or a
server error). The reference is independent of the product: qdrant-client's
local mode holding the same points in one collection.

The client under test may be sync or async (the async client's coroutines are
run to completion), REST or gRPC.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from qdrant_client.http import models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.testing.congruence_data import random_filter, random_payload

__all__ = [
    "DENSE",
    "GROUPS",
    "MULTI",
    "ROUTING_VECTOR",
    "SPARSE",
    "Case",
    "MatrixComparison",
    "Verdict",
    "congruence_points",
    "judge_all",
    "read_cases",
    "sparse_vectors_config",
    "summary",
    "vectors_config",
    "write_cases",
]

# The library's vectors: three named dense ones (three distances), one sparse, one multivector.
DENSE: dict[str, tuple[int, models.Distance]] = {
    "text": (16, models.Distance.COSINE),
    "image": (12, models.Distance.DOT),
    "code": (8, models.Distance.EUCLID),
}
SPARSE = ("sparse-text",)
SPARSE_DIM = 60
MULTI: dict[str, tuple[int, models.Distance]] = {"multi-text": (6, models.Distance.COSINE)}
ROUTING_VECTOR = "text"
GROUPS = [f"g{i}" for i in range(12)]
CENTRES = 4  # the routing vectors are drawn around this many centres (the library's domains)

Outcome = Literal["correct", "refused", "wrong"]


def vectors_config() -> dict[str, models.VectorParams]:
    """The dense and multivector configuration of the collection under test."""
    config = {name: models.VectorParams(size=size, distance=d) for name, (size, d) in DENSE.items()}
    for name, (size, distance) in MULTI.items():
        config[name] = models.VectorParams(
            size=size,
            distance=distance,
            multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM
            ),
        )
    return config


def sparse_vectors_config() -> dict[str, models.SparseVectorParams]:
    return {name: models.SparseVectorParams() for name in SPARSE}


def _unit(rng: np.random.Generator, size: int) -> list[float]:
    row = rng.normal(size=size)
    return [float(x) for x in row / np.linalg.norm(row)]


def _sparse(rng: np.random.Generator) -> models.SparseVector:
    indices = sorted(
        int(i) for i in rng.choice(SPARSE_DIM, size=int(rng.integers(1, 8)), replace=False)
    )
    return models.SparseVector(
        indices=indices, values=[float(rng.uniform(0.1, 2.0)) for _ in indices]
    )


def _point_vectors(rng: np.random.Generator, centres: np.ndarray) -> dict[str, Any]:
    """Every vector of one point; some points lack the optional ones."""
    centre = centres[int(rng.integers(len(centres)))]
    text = centre + rng.normal(size=centre.shape) * 0.25
    vectors: dict[str, Any] = {ROUTING_VECTOR: [float(x) for x in text / np.linalg.norm(text)]}
    for name, (size, _) in DENSE.items():
        if name != ROUTING_VECTOR and rng.random() < 0.9:
            vectors[name] = [float(x) for x in rng.normal(size=size)]
    for name in SPARSE:
        if rng.random() < 0.85:
            vectors[name] = _sparse(rng)
    for name, (size, _) in MULTI.items():
        if rng.random() < 0.85:
            vectors[name] = [_unit(rng, size) for _ in range(int(rng.integers(1, 4)))]
    return vectors


def routing_centres(seed: int = 13) -> np.ndarray:
    """The centres the routing vectors of :func:`congruence_points` are drawn around."""
    return np.random.default_rng(seed + 1).normal(size=(CENTRES, DENSE[ROUTING_VECTOR][0])) * 3.0


def congruence_points(
    count: int = 400, seed: int = 13, first_id: int = 0
) -> list[models.PointStruct]:
    """Seeded points with every vector kind and payloads of every value kind.

    Payloads also carry ``group`` (a keyword, sometimes a list: a point in
    several groups) and ``rank`` (an int with ties) for groups and ordering.
    """
    rng = np.random.default_rng(seed)
    draw = random.Random(seed)
    centres = routing_centres(seed)
    points = []
    for offset in range(count):
        payload = random_payload(draw)
        payload["group"] = draw.sample(GROUPS, 2) if draw.random() < 0.1 else draw.choice(GROUPS)
        payload["rank"] = draw.randint(0, 60)
        points.append(
            models.PointStruct(
                id=first_id + offset, vector=_point_vectors(rng, centres), payload=payload
            )
        )
    return points


# ---------------------------------------------------------------------- cases


Compare = Callable[[Any, Any], None]


@dataclass(frozen=True)
class Case:
    """One call of the client: ``method(collection_name, **kwargs)`` on both backends.

    ``operation`` is the row of the report it counts in; ``compare`` raises an
    AssertionError naming the difference. A write case is made on the backend
    under test first and, only if it was accepted, on the reference; then the
    whole collection is compared.
    """

    operation: str
    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    compare: Compare | None = None
    writes: bool = False
    collection: str | None = None  # another collection than the one under test (e.g. an alias)

    def call(self, client: Any, collection: str) -> Any:
        name = self.collection or collection
        if self.method in {"collection_exists", "get_collection", "get_collection_aliases"}:
            result = getattr(client, self.method)(name, **self.kwargs)
        elif self.method in {"get_collections", "get_aliases"}:
            result = getattr(client, self.method)(**self.kwargs)
        elif self.method == "update_collection_aliases":
            result = client.update_collection_aliases(**self.kwargs)
        else:
            result = getattr(client, self.method)(collection_name=name, **self.kwargs)
        if inspect.isawaitable(result):
            result = _run(result)
        return result


_LOOP: asyncio.AbstractEventLoop | None = None


def _run(awaitable: Any) -> Any:
    """Run an async client's call to completion, on one loop for every call (the client's
    connections belong to the loop that opened them)."""
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()

    async def wait() -> Any:
        return await awaitable

    return _LOOP.run_until_complete(wait())


@dataclass
class Verdict:
    case: Case
    outcome: Outcome
    detail: str = ""


# ---------------------------------------------------------------------- comparison


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


def _same_vector(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict) or isinstance(b, dict):
        assert isinstance(a, dict), f"{where}: vector kinds differ"
        assert isinstance(b, dict), f"{where}: vector kinds differ"
        assert set(a) == set(b), f"{where}: vector names {sorted(a)} != {sorted(b)}"
        for name in a:
            _same_vector(a[name], b[name], f"{where}[{name}]")
        return
    if isinstance(a, models.SparseVector) or isinstance(b, models.SparseVector):
        assert isinstance(a, models.SparseVector), f"{where}: vector kinds differ"
        assert isinstance(b, models.SparseVector), f"{where}: vector kinds differ"
        pairs_a = dict(zip(a.indices, a.values, strict=True))
        pairs_b = dict(zip(b.indices, b.values, strict=True))
        assert set(pairs_a) == set(pairs_b), f"{where}: sparse indices differ"
        assert all(_close(pairs_a[i], pairs_b[i]) for i in pairs_a), f"{where}: sparse values"
        return
    if a is None or b is None:
        assert a is None, f"{where}: one vector is missing"
        assert b is None, f"{where}: one vector is missing"
        return
    assert np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-4, atol=1e-5), (
        f"{where}: vectors differ"
    )


def _same_point(a: Any, b: Any, where: str) -> None:
    # None and {} are one: qdrant-client's gRPC conversion cannot tell an empty payload from none
    assert (a.payload or {}) == (b.payload or {}), (
        f"{where} id {a.id}: payload {b.payload!r} != {a.payload!r}"
    )
    _same_vector(a.vector, b.vector, f"{where} id {a.id}")


def same_ranking(expected: Sequence[Any], got: Sequence[Any], where: str = "points") -> None:
    """Ranked points equal: same length, scores within tolerance, ids equal up to ties.

    Points of equal score may come in any order; the last run of equal scores
    may hold different members of a tie that the page cut.
    """
    assert len(got) == len(expected), f"{where}: {len(got)} points, expected {len(expected)}"
    by_id = {p.id: p for p in got}
    start = 0
    while start < len(expected):
        end = start + 1
        while end < len(expected) and _close(expected[end].score, expected[start].score):
            end += 1
        block_e = expected[start:end]
        block_g = got[start:end]
        for e, g in zip(block_e, block_g, strict=True):
            assert _close(e.score, g.score), f"{where}: score {g.score} != {e.score} at {start}"
        if end < len(expected):
            ids_e = {p.id for p in block_e}
            ids_g = {p.id for p in block_g}
            assert ids_e == ids_g, (
                f"{where}: ids {sorted(map(str, ids_g))} != {sorted(map(str, ids_e))}"
            )
        for e in block_e:
            if e.id in by_id:
                _same_point(e, by_id[e.id], where)
        start = end


def _points_of(result: Any) -> Any:
    return result.points if hasattr(result, "points") else result


def compare_ranked(expected: Any, got: Any) -> None:
    same_ranking(_points_of(expected), _points_of(got))


def compare_batch(expected: Any, got: Any) -> None:
    assert len(expected) == len(got), "batch sizes differ"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        same_ranking(_points_of(e), _points_of(g), f"request {i}")


def compare_sample(expected: Any, got: Any) -> None:
    """A random sample: same size, distinct points (their content checked by other cases)."""
    e, g = _points_of(expected), _points_of(got)
    assert len(g) == len(e), f"sample of {len(g)}, expected {len(e)}"
    assert len({p.id for p in g}) == len(g), "a sample repeats a point"


def compare_records(expected: Any, got: Any) -> None:
    """Scroll pages ``(records, next offset)`` or retrieved records, in order."""
    if isinstance(expected, tuple):
        (records_e, next_e), (records_g, next_g) = expected, got
        assert next_g == next_e, f"next page offset {next_g!r} != {next_e!r}"
    else:
        records_e, records_g = expected, got
    assert [r.id for r in records_g] == [r.id for r in records_e], "ids or their order differ"
    for e, g in zip(records_e, records_g, strict=True):
        _same_point(e, g, "record")


def compare_ordered_scroll(expected: Any, got: Any) -> None:
    """A scroll by ``order_by``: the same values in the same order (ties in any order)."""
    (records_e, _), (records_g, _) = expected, got
    assert len(records_g) == len(records_e), f"{len(records_g)} records, expected {len(records_e)}"
    for e, g in zip(records_e, records_g, strict=True):
        assert e.order_value == g.order_value, f"order value {g.order_value} != {e.order_value}"
    runs: dict[Any, set[Any]] = {}
    for r in records_e:
        runs.setdefault(r.order_value, set()).add(r.id)
    last = records_e[-1].order_value if records_e else None
    for value, ids in runs.items():
        got_ids = {r.id for r in records_g if r.order_value == value}
        assert value == last or got_ids == ids, f"ids at order value {value} differ"


def compare_equal(expected: Any, got: Any) -> None:
    assert got == expected, f"{got!r} != {expected!r}"


def compare_groups(expected: Any, got: Any) -> None:
    groups_e, groups_g = expected.groups, got.groups
    assert len(groups_g) == len(groups_e), f"{len(groups_g)} groups, expected {len(groups_e)}"
    best_e = {str(g.id): g for g in groups_e}
    best_g = {str(g.id): g for g in groups_g}
    tops_e = [g.hits[0].score for g in groups_e]
    for i, (e, g) in enumerate(zip(groups_e, groups_g, strict=True)):
        assert _close(e.hits[0].score, g.hits[0].score), f"group {i}: best score differs"
    last_tie = [str(g.id) for g in groups_e if _close(g.hits[0].score, tops_e[-1])]
    for key, group in best_e.items():
        if key in last_tie and key not in best_g:
            continue
        assert key in best_g, f"group {key} missing"
        same_ranking(group.hits, best_g[key].hits, f"group {key}")
        if group.lookup is not None or best_g[key].lookup is not None:
            assert group.lookup is not None, f"group {key}: an unexpected lookup"
            assert best_g[key].lookup is not None, f"group {key}: lookup missing"
            _same_point(group.lookup, best_g[key].lookup, f"group {key} lookup")


def compare_facets(expected: Any, got: Any) -> None:
    hits_e = [(h.value, h.count) for h in expected.hits]
    hits_g = [(h.value, h.count) for h in got.hits]
    assert hits_g == hits_e, f"facets {hits_g} != {hits_e}"


def _matrix_score(
    vectors: dict[Any, np.ndarray], a: Any, b: Any, distance: models.Distance
) -> float:
    x, y = vectors[a], vectors[b]
    if distance == models.Distance.COSINE:
        return float(np.dot(x / np.linalg.norm(x), y / np.linalg.norm(y)))
    if distance == models.Distance.DOT:
        return float(np.dot(x, y))
    return float(np.linalg.norm(x - y))


class MatrixComparison:
    """A distance matrix is drawn from a random sample: same shape, and every score the true
    distance between its two points, computed here from their vectors as the reference holds
    them when the case runs (the judge binds it to the reference first)."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.distance = DENSE[using][1]
        self.reference: Any = None
        self.collection = ""

    def bind(self, reference: Any, collection: str) -> None:
        self.reference, self.collection = reference, collection

    def _vectors(self, ids: Iterable[Any]) -> dict[Any, np.ndarray]:
        records = Case(
            "vectors", "retrieve", {"ids": list(set(ids)), "with_vectors": [self.using]}
        ).call(self.reference, self.collection)
        return {r.id: np.asarray(r.vector[self.using], float) for r in records}

    def __call__(self, expected: Any, got: Any) -> None:
        if hasattr(expected, "pairs"):
            assert len(got.pairs) == len(expected.pairs), "number of pairs differs"
            vectors = self._vectors([p.a for p in got.pairs] + [p.b for p in got.pairs])
            for pair in got.pairs:
                truth = _matrix_score(vectors, pair.a, pair.b, self.distance)
                assert _close(pair.score, truth), f"pair {pair.a},{pair.b}: {pair.score} != {truth}"
            return
        assert len(got.ids) == len(expected.ids), "sample sizes differ"
        assert len(got.scores) == len(expected.scores), "number of scores differs"
        vectors = self._vectors(got.ids)
        for row, column, score in zip(got.offsets_row, got.offsets_col, got.scores, strict=True):
            truth = _matrix_score(vectors, got.ids[row], got.ids[column], self.distance)
            assert _close(score, truth), f"offset {row},{column}: {score} != {truth}"


def compare_info(expected: Any, got: Any) -> None:
    assert got.points_count == expected.points_count, (
        f"points_count {got.points_count} != {expected.points_count}"
    )
    params_e, params_g = expected.config.params, got.config.params
    assert params_g.vectors == params_e.vectors, "vector config differs"
    assert (params_g.sparse_vectors or {}) == (params_e.sparse_vectors or {}), "sparse config"
    schema_e = {k: v.data_type for k, v in (expected.payload_schema or {}).items()}
    schema_g = {k: v.data_type for k, v in (got.payload_schema or {}).items()}
    if schema_e:  # local mode keeps no payload index: then the index cases check the schema
        assert schema_g == schema_e, f"payload schema {schema_g} != {schema_e}"


def compare_collection_names(expected: Any, got: Any) -> None:
    names_e = {c.name for c in expected.collections}
    names_g = {c.name for c in got.collections}
    assert names_e <= names_g, f"collections {sorted(names_g)} lack {sorted(names_e - names_g)}"


def compare_aliases(expected: Any, got: Any) -> None:
    pairs_e = {(a.alias_name, a.collection_name) for a in expected.aliases}
    pairs_g = {(a.alias_name, a.collection_name) for a in got.aliases}
    assert pairs_g == pairs_e, f"aliases {sorted(pairs_g)} != {sorted(pairs_e)}"


# ---------------------------------------------------------------------- the catalogue


def _query_vector(rng: np.random.Generator, name: str) -> Any:
    if name in DENSE:
        return _unit(rng, DENSE[name][0])
    if name in SPARSE:
        return _sparse(rng)
    size = MULTI[name][0]
    return [_unit(rng, size) for _ in range(2)]


def read_cases(points: Sequence[models.PointStruct], seed: int = 5) -> list[Case]:
    """Every read the client makes, with seeded arguments drawn over ``points``."""
    reads = _Reads(points, seed)
    for build in (
        reads.nearest,
        reads.other_vectors,
        reads.example_queries,
        reads.prefetch_queries,
        reads.aggregates,
        reads.listings,
        reads.beyond_a_library,
    ):
        build()
    return reads.cases


class _Reads:
    """The read cases, drawn from one seed."""

    def __init__(self, points: Sequence[models.PointStruct], seed: int) -> None:
        self.points = points
        self.rng = np.random.default_rng(seed)
        self.draw = random.Random(seed)
        self.ids = [p.id for p in points]
        self.cases: list[Case] = []

    def add(
        self, operation: str, method: str, compare: Compare = compare_ranked, **kwargs: Any
    ) -> None:
        self.cases.append(Case(operation, method, kwargs, compare))

    def text(self) -> list[float]:
        return _unit(self.rng, DENSE[ROUTING_VECTOR][0])

    def nearest(self) -> None:
        draw = self.draw
        points = self.points
        add = self.add
        text = self.text
        for _ in range(4):
            add(
                "query: nearest (routing vector)",
                "query_points",
                query=text(),
                using=ROUTING_VECTOR,
                limit=10,
            )
        for _ in range(4):
            add(
                "query: nearest + filter",
                "query_points",
                query=text(),
                using=ROUTING_VECTOR,
                query_filter=random_filter(draw),
                limit=8,
            )
        add(
            "query: deep offset",
            "query_points",
            query=text(),
            using=ROUTING_VECTOR,
            limit=5,
            offset=len(points) - 3,
        )
        add("query: offset", "query_points", query=text(), using=ROUTING_VECTOR, limit=5, offset=20)
        add(
            "query: score_threshold",
            "query_points",
            query=text(),
            using=ROUTING_VECTOR,
            limit=100,
            score_threshold=0.6,
        )
        add(
            "query: payload selectors",
            "query_points",
            query=text(),
            using=ROUTING_VECTOR,
            limit=5,
            with_payload=["n", "meta.owner", "items[].kind"],
        )
        add(
            "query: payload selectors",
            "query_points",
            query=text(),
            using=ROUTING_VECTOR,
            limit=5,
            with_payload=models.PayloadSelectorExclude(exclude=["text", "meta.level"]),
        )
        add(
            "query: vectors returned",
            "query_points",
            query=text(),
            using=ROUTING_VECTOR,
            limit=5,
            with_vectors=True,
        )
        add(
            "query: vectors returned",
            "query_points",
            query=text(),
            using=ROUTING_VECTOR,
            limit=5,
            with_vectors=["image", "sparse-text"],
        )
        add(
            "query: search params",
            "query_points",
            query=text(),
            using=ROUTING_VECTOR,
            limit=5,
            search_params=models.SearchParams(exact=True),
        )

    def other_vectors(self) -> None:
        rng = self.rng
        ids = self.ids
        add = self.add
        for name in [*DENSE, *SPARSE, *MULTI]:
            if name != ROUTING_VECTOR:
                for _ in range(2):
                    add(
                        f"query: nearest ({name})",
                        "query_points",
                        query=_query_vector(rng, name),
                        using=name,
                        limit=7,
                    )
        add("query: by point id", "query_points", query=ids[3], using=ROUTING_VECTOR, limit=6)
        add("query: by point id", "query_points", query=ids[7], using="image", limit=6)

    def example_queries(self) -> None:
        ids = self.ids
        add = self.add
        text = self.text
        for strategy in models.RecommendStrategy:
            add(
                f"query: recommend ({strategy.value})",
                "query_points",
                query=models.RecommendQuery(
                    recommend=models.RecommendInput(
                        positive=[ids[1], text()], negative=[ids[2]], strategy=strategy
                    )
                ),
                using=ROUTING_VECTOR,
                limit=6,
            )
        add(
            "query: discover",
            "query_points",
            query=models.DiscoverQuery(
                discover=models.DiscoverInput(
                    target=text(),
                    context=[models.ContextPair(positive=ids[4], negative=ids[5])],
                )
            ),
            using=ROUTING_VECTOR,
            limit=6,
        )
        add(
            "query: context",
            "query_points",
            query=models.ContextQuery(
                context=[
                    models.ContextPair(positive=ids[6], negative=ids[8]),
                    models.ContextPair(positive=text(), negative=text()),
                ]
            ),
            using=ROUTING_VECTOR,
            limit=6,
        )
        for direction in models.Direction:
            add(
                f"query: order_by ({direction.value})",
                "query_points",
                compare=_ordered_query,
                query=models.OrderByQuery(order_by=models.OrderBy(key="rank", direction=direction)),
                limit=15,
            )

    def prefetch_queries(self) -> None:
        rng = self.rng
        ids = self.ids
        add = self.add
        text = self.text
        prefetch = [
            models.Prefetch(query=text(), using=ROUTING_VECTOR, limit=25),
            models.Prefetch(query=_query_vector(rng, "image"), using="image", limit=25),
        ]
        hybrid = [
            models.Prefetch(query=text(), using=ROUTING_VECTOR, limit=25),
            models.Prefetch(query=_query_vector(rng, "sparse-text"), using="sparse-text", limit=25),
        ]
        for fusion in models.Fusion:
            add(
                f"query: fusion ({fusion.value})",
                "query_points",
                query=models.FusionQuery(fusion=fusion),
                prefetch=prefetch,
                limit=10,
            )
        add(
            "query: fusion (rrf)",
            "query_points",
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            prefetch=hybrid,
            limit=10,
        )
        add(
            "query: rrf with k and weights",
            "query_points",
            query=models.RrfQuery(rrf=models.Rrf(k=5, weights=[2.0, 1.0])),
            prefetch=prefetch,
            limit=10,
        )
        add(
            "query: prefetch + rescoring",
            "query_points",
            query=_query_vector(rng, "multi-text"),
            using="multi-text",
            prefetch=prefetch[:1],
            limit=6,
        )
        add(
            "query: nested prefetch",
            "query_points",
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            prefetch=[
                models.Prefetch(
                    query=_query_vector(rng, "code"), using="code", prefetch=prefetch, limit=15
                ),
                hybrid[1],
            ],
            limit=8,
        )
        add(
            "query: formula",
            "query_points",
            query=models.FormulaQuery(
                formula=models.SumExpression(
                    sum=["$score", models.MultExpression(mult=[0.01, "rank"])]
                )
            ),
            prefetch=prefetch[:1],
            limit=8,
        )
        add(
            "query: mmr",
            "query_points",
            query=models.NearestQuery(
                nearest=text(), mmr=models.Mmr(diversity=0.5, candidates_limit=30)
            ),
            using=ROUTING_VECTOR,
            limit=6,
        )
        add(
            "query: sample",
            "query_points",
            compare=compare_sample,
            query=models.SampleQuery(sample=models.Sample.RANDOM),
            limit=5,
        )
        add(
            "query: batch",
            "query_batch_points",
            compare=compare_batch,
            requests=[
                models.QueryRequest(query=text(), using=ROUTING_VECTOR, limit=4, with_payload=True),
                models.QueryRequest(query=_query_vector(rng, "image"), using="image", limit=4),
                models.QueryRequest(query=ids[9], using=ROUTING_VECTOR, limit=3),
            ],
        )

    def beyond_a_library(self) -> None:
        """Queries whose Qdrant semantics cannot be kept across homes: the router must refuse
        them with a 400 that says why (local mode, one collection, answers them)."""
        add, text = self.add, self.text
        fused = [
            models.Prefetch(query=text(), using=ROUTING_VECTOR, limit=20),
            models.Prefetch(query=_query_vector(self.rng, "image"), using="image", limit=20),
        ]
        add(
            "query groups: fused prefetch",
            "query_points_groups",
            compare=compare_groups,
            prefetch=fused,
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            group_by="group",
            limit=3,
        )
        add(
            "query: mmr on a multivector",
            "query_points",
            query=models.NearestQuery(
                nearest=_query_vector(self.rng, "multi-text"),
                mmr=models.Mmr(diversity=0.5, candidates_limit=20),
            ),
            using="multi-text",
            limit=5,
        )
        add(
            "query: formula over a fused prefetch",
            "query_points",
            query=models.FormulaQuery(formula=models.SumExpression(sum=["$score", 1.0])),
            prefetch=models.Prefetch(
                prefetch=fused, query=models.FusionQuery(fusion=models.Fusion.RRF), limit=20
            ),
            limit=5,
        )

    def aggregates(self) -> None:
        rng = self.rng
        draw = self.draw
        add = self.add
        text = self.text
        for kwargs in (
            {
                "query": text(),
                "using": ROUTING_VECTOR,
                "group_by": "group",
                "group_size": 3,
                "limit": 4,
            },
            {
                "query": _query_vector(rng, "image"),
                "using": "image",
                "group_by": "group",
                "group_size": 2,
                "limit": 5,
            },
            {
                "query": text(),
                "using": ROUTING_VECTOR,
                "group_by": "color",
                "group_size": 4,
                "limit": 3,
                "query_filter": random_filter(draw),
            },
        ):
            add("query groups", "query_points_groups", compare=compare_groups, **kwargs)
        add(
            "search matrix pairs",
            "search_matrix_pairs",
            compare=MatrixComparison(ROUTING_VECTOR),
            sample=20,
            limit=3,
            using=ROUTING_VECTOR,
        )
        add(
            "search matrix offsets",
            "search_matrix_offsets",
            compare=MatrixComparison("image"),
            sample=15,
            limit=2,
            using="image",
        )
        for kwargs in (
            {"key": "color"},
            {"key": "group", "limit": 3},
            {"key": "tags", "facet_filter": random_filter(draw), "exact": True},
            {"key": "group", "exact": True, "limit": 20},
        ):
            add("facet", "facet", compare=compare_facets, **kwargs)

    def listings(self) -> None:
        draw = self.draw
        ids = self.ids
        add = self.add
        add("scroll", "scroll", compare=compare_records, limit=25)
        add(
            "scroll", "scroll", compare=compare_records, limit=10, offset=ids[40], with_vectors=True
        )
        for _ in range(3):
            add(
                "scroll + filter",
                "scroll",
                compare=compare_records,
                limit=30,
                scroll_filter=random_filter(draw),
            )
        add(
            "scroll",
            "scroll",
            compare=compare_records,
            limit=5,
            with_vectors=["text", "multi-text"],
            with_payload=["group"],
        )
        for direction in models.Direction:
            add(
                "scroll: order_by",
                "scroll",
                compare=compare_ordered_scroll,
                limit=20,
                order_by=models.OrderBy(key="rank", direction=direction),
            )
        add(
            "scroll: order_by",
            "scroll",
            compare=compare_ordered_scroll,
            limit=20,
            order_by=models.OrderBy(key="rank", start_from=30),
        )
        add("count", "count", compare=compare_equal, exact=True)
        for _ in range(4):
            add(
                "count",
                "count",
                compare=compare_equal,
                count_filter=random_filter(draw),
                exact=True,
            )
        missing = max(int(i) for i in ids if isinstance(i, int)) + 1000
        add("retrieve", "retrieve", compare=compare_records, ids=[ids[0], missing, ids[11], ids[5]])
        add(
            "retrieve",
            "retrieve",
            compare=compare_records,
            ids=ids[20:26],
            with_vectors=["text", "sparse-text"],
            with_payload=["meta"],
        )
        add("collection exists", "collection_exists", compare=compare_equal)
        add("collection info", "get_collection", compare=compare_info)
        add("collections", "get_collections", compare=compare_collection_names)


def _ordered_query(expected: Any, got: Any) -> None:
    """``order_by`` in a query: the scores are the ordered values; ties in any order."""
    same_ranking(_points_of(expected), _points_of(got))


def _routing_vector(point: models.PointStruct) -> list[float]:
    vectors = point.vector
    assert isinstance(vectors, dict)
    routing: list[float] = vectors[ROUTING_VECTOR]  # type: ignore[assignment]
    return routing


def write_cases(points: Sequence[models.PointStruct], seed: int = 9) -> list[Case]:
    """Every write the client makes; each is followed by a comparison of the whole collection."""
    draw = random.Random(seed)
    ids = [p.id for p in points]
    fresh = congruence_points(12, seed=seed + 100, first_id=100_000)
    changed = congruence_points(6, seed=seed + 200, first_id=0)  # new content for existing ids
    changed = [
        models.PointStruct(id=ids[i * 7], vector=p.vector, payload=p.payload)
        for i, p in enumerate(changed)
    ]
    moved_vectors = congruence_points(4, seed=seed + 300)
    cases: list[Case] = []

    def add(operation: str, method: str, **kwargs: Any) -> None:
        cases.append(Case(operation, method, kwargs, None, writes=True))

    add("upsert", "upsert", points=fresh[:6])
    add("upsert", "upsert", points=changed)
    add(
        "upsert (batch form)",
        "upsert",
        points=models.Batch(
            ids=[p.id for p in fresh[6:9]],
            vectors={ROUTING_VECTOR: [_routing_vector(p) for p in fresh[6:9]]},
            payloads=[p.payload for p in fresh[6:9]],
        ),
    )
    add("upload points", "upload_points", points=fresh[9:], wait=True)
    add(
        "upsert (update_filter)",
        "upsert",
        points=[models.PointStruct(id=ids[2], vector=points[3].vector, payload={"n": 1})],
        update_filter=models.Filter(
            must=[models.FieldCondition(key="rank", range=models.Range(gte=30))]
        ),
    )
    add(
        "upsert (update_mode)",
        "upsert",
        points=[
            models.PointStruct(id=ids[12], vector=points[13].vector, payload={"only": "update"})
        ],
        update_mode=models.UpdateMode.UPDATE_ONLY,
    )
    add("set payload", "set_payload", payload={"colour": "teal", "n": 99}, points=ids[30:34])
    add(
        "set payload",
        "set_payload",
        payload={"flagged": True},
        points=models.FilterSelector(filter=random_filter(draw)),
    )
    add("set payload (key)", "set_payload", payload={"owner": "cid"}, points=ids[35:37], key="meta")
    add("overwrite payload", "overwrite_payload", payload={"only": 1}, points=ids[38:40])
    add("delete payload", "delete_payload", keys=["color", "tags"], points=ids[41:45])
    add("clear payload", "clear_payload", points_selector=ids[46:48])
    add(
        "update vectors",
        "update_vectors",
        points=[
            models.PointVectors(id=ids[50 + i], vector={ROUTING_VECTOR: _routing_vector(p)})
            for i, p in enumerate(moved_vectors)
        ],
    )
    add("delete vectors", "delete_vectors", vectors=["image"], points=ids[60:63])
    add("delete", "delete", points_selector=models.PointIdsList(points=ids[70:75]))
    add(
        "delete (filter)",
        "delete",
        points_selector=models.FilterSelector(
            filter=models.Filter(
                must=[models.FieldCondition(key="rank", match=models.MatchValue(value=7))]
            )
        ),
    )
    add(
        "batch update",
        "batch_update_points",
        update_operations=[
            models.UpsertOperation(upsert=models.PointsList(points=fresh[:2])),
            models.SetPayloadOperation(
                set_payload=models.SetPayload(payload={"b": 1}, points=ids[80:82])
            ),
            models.DeleteOperation(delete=models.PointIdsList(points=ids[83:85])),
        ],
    )
    add(
        "create payload index",
        "create_payload_index",
        field_name="color",
        field_schema=models.PayloadSchemaType.KEYWORD,
    )
    add(
        "create payload index",
        "create_payload_index",
        field_name="text",
        field_schema=models.TextIndexParams(
            type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD
        ),
    )
    add("delete payload index", "delete_payload_index", field_name="text")
    add(
        "update collection",
        "update_collection",
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=5000),
    )
    return cases


def _state(client: Any, collection: str) -> list[Any]:
    """Every point of the collection with payload and vectors, in id order."""
    records: list[Any] = []
    offset = None
    while True:
        page = Case("state", "scroll", {"limit": 256, "offset": offset, "with_vectors": True}).call(
            client, collection
        )
        batch, offset = page
        records.extend(batch)
        if offset is None:
            return records


# ---------------------------------------------------------------------- judging


def _refusal(error: Exception) -> str | None:
    """The message of a 4xx (REST) or a client-side refusal (gRPC status), else ``None``."""
    if isinstance(error, UnexpectedResponse):
        status = error.status_code or 0
        return error.content.decode(errors="replace")[:300] if 400 <= status < 500 else None
    code = getattr(error, "code", None)
    if callable(code):
        name = getattr(code(), "name", "")
        if name in {
            "INVALID_ARGUMENT",
            "NOT_FOUND",
            "UNIMPLEMENTED",
            "FAILED_PRECONDITION",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "OUT_OF_RANGE",
        }:
            details = getattr(error, "details", lambda: "")()
            return f"{name}: {details}"[:300]
    return None


def _index_applied(case: Case, info: Any) -> None:
    """After an index call, the collection's payload schema shows it (or no longer does)."""
    field_name = case.kwargs["field_name"]
    schema = info.payload_schema or {}
    if case.method == "delete_payload_index":
        assert field_name not in schema, f"index on {field_name!r} still listed"
        return
    wanted = case.kwargs["field_schema"]
    kind = wanted if isinstance(wanted, models.PayloadSchemaType) else wanted.type
    assert field_name in schema, f"index on {field_name!r} not listed"
    assert str(schema[field_name].data_type.value) == str(getattr(kind, "value", kind)), (
        f"index on {field_name!r} is {schema[field_name].data_type}, expected {kind}"
    )


def _judge_read(case: Case, reference: Any, tested: Any, collection: str) -> Verdict:
    try:
        expected = case.call(reference, collection)
    except (ValueError, UnexpectedResponse) as error:  # the reference refuses this one too
        return _both_refuse(case, tested, collection, error)
    try:
        got = case.call(tested, collection)
    except Exception as error:  # noqa: BLE001 - every failure is a verdict
        refusal = _refusal(error)
        if refusal is not None:
            return Verdict(case, "refused", refusal)
        return Verdict(case, "wrong", f"{type(error).__name__}: {error}"[:300])
    compare = case.compare or compare_ranked
    if isinstance(compare, MatrixComparison):
        compare.bind(reference, collection)
    try:
        compare(expected, got)
    except AssertionError as difference:
        return Verdict(case, "wrong", str(difference)[:300])
    return Verdict(case, "correct")


def _both_refuse(case: Case, tested: Any, collection: str, refusal: Exception) -> Verdict:
    """The reference refused the call (e.g. a query by the id of a point that lacks the
    vector): the backend under test must refuse it too, with a 4xx."""
    try:
        case.call(tested, collection)
    except Exception as error:  # noqa: BLE001 - every failure is a verdict
        if _refusal(error) is not None:
            return Verdict(case, "correct", "refused by both")
        return Verdict(case, "wrong", f"{type(error).__name__}: {error}"[:300])
    return Verdict(case, "wrong", f"answered where the reference refused: {refusal}"[:300])


def _judge_write(case: Case, reference: Any, tested: Any, collection: str) -> Verdict:
    try:
        case.call(tested, collection)
    except Exception as error:  # noqa: BLE001 - every failure is a verdict
        refusal = _refusal(error)
        if refusal is not None:
            return Verdict(case, "refused", refusal)
        return Verdict(case, "wrong", f"{type(error).__name__}: {error}"[:300])
    case.call(reference, collection)
    try:
        compare_records(_state(reference, collection), _state(tested, collection))
        if case.method in {"create_payload_index", "delete_payload_index"}:
            _index_applied(case, Case("", "get_collection").call(tested, collection))
    except AssertionError as difference:
        return Verdict(case, "wrong", f"after the write: {difference}"[:300])
    return Verdict(case, "correct")


def judge_all(cases: Iterable[Case], reference: Any, tested: Any, collection: str) -> list[Verdict]:
    """Run every case on both backends (reads first on the reference, writes first on the
    backend under test) and judge each."""
    verdicts = []
    with warnings.catch_warnings():  # local mode warns that it ignores indexes and search params
        warnings.simplefilter("ignore", UserWarning)
        for case in cases:
            judge = _judge_write if case.writes else _judge_read
            verdicts.append(judge(case, reference, tested, collection))
    return verdicts


def summary(verdicts: Iterable[Verdict]) -> list[tuple[str, int, int, int, list[str]]]:
    """Rows ``(operation, correct, refused, wrong, reasons)`` in catalogue order."""
    rows: dict[str, list[Any]] = {}
    for verdict in verdicts:
        row = rows.setdefault(verdict.case.operation, [0, 0, 0, []])
        index = {"correct": 0, "refused": 1, "wrong": 2}[verdict.outcome]
        row[index] += 1
        if verdict.outcome != "correct" and verdict.detail not in row[3]:
            row[3].append(verdict.detail)
    return [(op, c, r, w, reasons) for op, (c, r, w, reasons) in rows.items()]


# ---------------------------------------------------------------------- the library under test

INDEXES: dict[str, models.PayloadSchemaType] = {
    "rank": models.PayloadSchemaType.INTEGER,  # order_by needs a range index on a server
    "group": models.PayloadSchemaType.KEYWORD,  # facets need a keyword index on a server
    "color": models.PayloadSchemaType.KEYWORD,
    "tags": models.PayloadSchemaType.KEYWORD,
}


def collection_spec() -> Any:
    """The library homes' vectors, as the product describes a collection."""
    from librarian.core.collection_spec import CollectionSpec, DenseVectorSpec, SparseVectorSpec

    vectors = {
        name: DenseVectorSpec(size=size, distance=distance.value)
        for name, (size, distance) in DENSE.items()
    }
    for name, (size, distance) in MULTI.items():
        vectors[name] = DenseVectorSpec(
            size=size,
            distance=distance.value,
            multivector="max_sim",
        )
    return CollectionSpec(
        vectors=vectors, sparse_vectors={name: SparseVectorSpec() for name in SPARSE}
    )


def build_library(
    path: Any,
    name: str = "library",
    seed: int = 13,
    *,
    sharded: bool = False,
    by_field: bool = False,
) -> tuple[Any, Any]:
    """Empty homes of a library routed on ``text``: one domain per centre, the first two on
    an embedded cluster ``east``, the others on ``west`` (``sharded``: each home placed by
    partition, three cells around the domain's centre: one shard key per partition, or with
    ``by_field`` one shard with the indexed partition field). Returns ``(fleet,
    definition)``; points are to be written through the router, which places them."""
    from dataclasses import replace

    from librarian.router.library import DomainRoute, LibraryDefinition, PartitionRef
    from librarian.services.placement import ensure_partition_index
    from librarian.storage.embedded import EmbeddedQdrant
    from librarian.storage.fleet import Fleet

    centres = routing_centres(seed)
    east = EmbeddedQdrant("east", path / "east")
    west = EmbeddedQdrant("west", path / "west")
    spec = collection_spec()
    routes = []
    rng = np.random.default_rng(seed)
    for domain, centre in enumerate(centres):
        port = east if domain < 2 else west
        collection = f"{name}-d{domain}"
        unit = centre / np.linalg.norm(centre)
        partitions: tuple[PartitionRef, ...] = ()
        if sharded:
            cells = unit + rng.normal(size=(3, len(unit))) * 0.3
            cells /= np.linalg.norm(cells, axis=1, keepdims=True)
            partitions = tuple(
                PartitionRef(f"d{domain}-p{i}", tuple(float(x) for x in cell))
                for i, cell in enumerate(cells)
            )
        keys = tuple(p.id for p in partitions) or None
        port.create_collection(collection, replace(spec, shard_keys=None if by_field else keys))
        if partitions and by_field:
            ensure_partition_index(port, collection)
        routes.append(
            DomainRoute(
                domain_id=f"d{domain}",
                name=f"domain {domain}",
                cluster=port.cluster,
                collection=collection,
                centroid=tuple(float(x) for x in unit),
                size=0,
                specialized=True,
                versioned=True,
                partitions=partitions,
            )
        )
    definition = LibraryDefinition(
        name=name,
        domains=tuple(routes),
        default_cluster="east",
        version="v1",
        vector=ROUTING_VECTOR,
    )
    return Fleet.of_ports({"east": east, "west": west}), definition


def fill(client: Any, collection: str, points: Sequence[models.PointStruct]) -> None:
    """The same start on either backend: the points (in batches) and the payload indexes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for start in range(0, len(points), 100):
            Case("fill", "upsert", {"points": list(points[start : start + 100])}).call(
                client, collection
            )
        for key, schema in INDEXES.items():
            Case("fill", "create_payload_index", {"field_name": key, "field_schema": schema}).call(
                client, collection
            )


def reference_of(collection: str, points: Sequence[models.PointStruct]) -> Any:
    """qdrant-client's local mode holding ``points`` in one collection: the reference."""
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    client.create_collection(
        collection, vectors_config=vectors_config(), sparse_vectors_config=sparse_vectors_config()
    )
    fill(client, collection, points)
    return client


TRANSPORTS = ("rest", "rest-async", "grpc", "grpc-async")


class _Served:
    """What a test router is built for: the fleet and the library's definition."""

    def __init__(self, fleet: Any, definition: Any) -> None:
        self.fleet = fleet
        self.definition = definition


def client_for(router: Any, transport: str) -> Any:
    """The official client of ``transport`` (REST or gRPC, sync or async) pointed at
    ``router`` (a :class:`librarian.testing.router.RouterThread` serving gRPC too)."""
    from qdrant_client import AsyncQdrantClient, QdrantClient

    kind = AsyncQdrantClient if transport.endswith("async") else QdrantClient
    return kind(
        url=router.url,
        grpc_port=router.grpc_port or 6334,
        prefer_grpc=transport.startswith("grpc"),
        timeout=60,
        check_compatibility=False,
    )


def judge_transport(
    path: Any,
    transport: str,
    points: Sequence[models.PointStruct],
    *,
    sharded: bool = False,
    by_field: bool = False,
) -> list[Verdict]:
    """Every case through one transport, on a fresh library under ``path`` (``sharded``: its
    homes placed by partition, ``by_field`` in the partition field) and a reference of its
    own: the reads, the writes, then the reads again (over the tombstones, moved points and
    changed payloads the writes left)."""
    from librarian.testing.router import RouterThread, make_state

    fleet, definition = build_library(path, sharded=sharded, by_field=by_field)
    state = make_state(
        _Served(fleet, definition), settings={"caching": {"enable_result_cache": False}}
    )
    try:
        with RouterThread(state, grpc=True) as router:
            client = client_for(router, transport)
            fill(client, "library", points)
            reference = reference_of("library", points)
            cases = read_cases(points) + write_cases(points) + read_cases(points, seed=6)
            return judge_all(cases, reference, client, "library")
    finally:
        fleet.close()
