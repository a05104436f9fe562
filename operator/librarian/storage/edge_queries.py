"""Translate qdrant-client query, facet, scroll and payload-index models for the embedded engine.

Why this exists: the storage port speaks Qdrant's own request models
(``qdrant_client.http.models``) to every cluster; the embedded engine
(``qdrant-edge``) runs Qdrant's shard code but has its own Python classes. This
module maps Qdrant's universal query (every variant of the ``models.Query``
union, plain dense / sparse / multi vectors and point ids as queries, nested
prefetches, ``using``, search params, payload and vector selectors), facets,
``order_by`` scrolls and payload index schemas onto those classes, and the
engine's answers back onto qdrant-client models. Filters go through
:mod:`librarian.storage.edge_filters` wherever they appear (stages, prefetches,
formula conditions, IDF corpora).

What the engine has no equivalent for (inference objects, ``lookup_from``,
shard keys, an unknown variant) is refused with :class:`UnsupportedQuery`
naming it: a request is never answered with a part of it silently dropped.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from typing import Any, cast

import qdrant_edge as edge
from pydantic import BaseModel
from qdrant_client.http import models

from librarian.storage.edge_filters import (
    to_edge_condition,
    to_edge_filter,
    to_rfc3339,
)

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_RRF_K",
    "QUERY_VARIANTS",
    "QdrantVector",
    "UnsupportedQuery",
    "VectorLookup",
    "average_vector",
    "to_edge_facet_request",
    "to_edge_index_schema",
    "to_edge_order_by",
    "to_edge_query_request",
    "to_edge_scroll_request",
    "to_facet_hit",
    "to_record",
    "to_scored_point",
]

DEFAULT_LIMIT = 10
"""Qdrant's ``limit`` when a query, prefetch, scroll or facet request leaves it unset."""

DEFAULT_RRF_K = 2
"""Qdrant's reciprocal-rank-fusion constant when a request does not give ``k``."""

QdrantVector = list[float] | list[list[float]] | models.SparseVector
"""A stored vector as qdrant-client models carry it: dense, multi (list of dense) or sparse."""

VectorLookup = Callable[[models.ExtendedPointId, str], QdrantVector]
"""Reads the named vector (``""`` for the unnamed one) of a point of the queried collection;
raises :class:`UnsupportedQuery` when the point or its vector does not exist."""


class UnsupportedQuery(ValueError):
    """The request uses something the embedded engine cannot answer exactly as Qdrant does."""


# ----------------------------------------------------------------- query requests


@dataclass
class _Stage:
    """One stage of a query (the request itself or a prefetch) while it is translated: the
    point ids used as examples there are excluded from that stage's results, as Qdrant does."""

    using: str
    lookup: VectorLookup
    mentioned: list[models.ExtendedPointId] = field(default_factory=list)

    def vector(self, value: Any, what: str) -> Any:
        """The engine's form of one vector input (a point id is read from the collection)."""
        if isinstance(value, bool):
            raise UnsupportedQuery(f"{what}: a boolean is not a vector or a point id")
        if isinstance(value, (int, str, uuid.UUID)):
            point_id: models.ExtendedPointId = str(value) if isinstance(value, uuid.UUID) else value
            self.mentioned.append(point_id)
            return _edge_vector(self.lookup(point_id, self.using), what)
        if isinstance(value, (models.Document, models.Image, models.InferenceObject)):
            raise UnsupportedQuery(
                f"{what}: {type(value).__name__} needs an inference service, which the "
                "embedded engine does not have; send the embedding instead"
            )
        return _edge_vector(value, what)

    def plain_vector(self, value: Any, what: str) -> QdrantVector:
        """One vector input as a qdrant-client vector (for arithmetic done here)."""
        if isinstance(value, (int, str, uuid.UUID)) and not isinstance(value, bool):
            point_id: models.ExtendedPointId = str(value) if isinstance(value, uuid.UUID) else value
            self.mentioned.append(point_id)
            return self.lookup(point_id, self.using)
        self.vector(value, what)  # refuses what is not a vector
        return value  # type: ignore[no-any-return]


def to_edge_query_request(request: models.QueryRequest, lookup: VectorLookup) -> edge.QueryRequest:
    """The engine's equivalent of ``request`` on one collection.

    ``lookup`` reads the vectors of points named by id in the query (Qdrant resolves them in
    the queried collection when ``lookup_from`` is not given, and excludes those points from
    the results of the stage naming them).
    """
    if request.shard_key is not None:
        raise UnsupportedQuery("shard_key: the embedded engine has no shard keys")
    if request.lookup_from is not None:
        raise UnsupportedQuery(
            "lookup_from: vectors from another collection are resolved before the query "
            "reaches one collection"
        )
    limit = _limit(request.limit, "limit")
    offset = request.offset if request.offset is not None else 0
    if offset < 0:
        raise UnsupportedQuery(f"offset {offset} is invalid: it must be 0 or larger")
    _check_stage(request.query, request.using, request.prefetch, request.score_threshold)
    stage = _Stage(using=request.using or "", lookup=lookup)
    query = _scoring(request.query, stage, limit)
    return edge.QueryRequest(
        limit=limit,
        offset=offset,
        query=query,
        prefetches=_prefetches(request.prefetch, lookup),
        with_vector=_vector_selector(request.with_vector),
        with_payload=_payload_selector(request.with_payload, default=False),
        filter=_stage_filter(request.filter, stage.mentioned),
        score_threshold=request.score_threshold,
        params=_search_params(request.params),
    )


def _check_stage(query: Any, using: str | None, prefetch: Any, score_threshold: Any) -> None:
    """Qdrant's own checks of how a stage's query, ``using``, prefetches and threshold combine
    (the engine leaves them to the layer above it)."""
    if prefetch and query is None:
        raise UnsupportedQuery("a query is needed to merge the prefetches")
    if score_threshold is not None and query is None:
        raise UnsupportedQuery("a query is needed to use the score_threshold")
    if score_threshold is not None and isinstance(query, models.OrderByQuery):
        raise UnsupportedQuery("score_threshold cannot be used with an order_by query")
    if isinstance(query, (models.FusionQuery, models.RrfQuery, models.FormulaQuery)):
        kind = type(query).__name__
        if not prefetch:
            raise UnsupportedQuery(f"{kind} merges prefetches: it needs at least one prefetch")
        if using and not isinstance(query, models.FormulaQuery):
            raise UnsupportedQuery(f"{kind} cannot be combined with `using`")
    if isinstance(query, models.RrfQuery) and query.rrf.k is not None and query.rrf.k < 1:
        raise UnsupportedQuery(f"rrf k {query.rrf.k} is invalid: it must be 1 or larger")
    if isinstance(query, models.NearestQuery) and query.mmr is not None:
        candidates = query.mmr.candidates_limit
        if candidates is not None and candidates < 0:
            raise UnsupportedQuery(f"mmr candidates_limit {candidates} must be 0 or larger")


def _limit(value: int | None, what: str) -> int:
    limit = value if value is not None else DEFAULT_LIMIT
    if limit < 1:
        raise UnsupportedQuery(f"{what} {limit} is invalid: it must be 1 or larger")
    return limit


def _prefetches(value: Any, lookup: VectorLookup) -> list[edge.Prefetch] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [_prefetch(item, lookup) for item in items]


def _prefetch(prefetch: Any, lookup: VectorLookup) -> edge.Prefetch:
    if not isinstance(prefetch, models.Prefetch):
        raise UnsupportedQuery(
            f"prefetch {type(prefetch).__name__} is not a qdrant_client Prefetch"
        )
    if prefetch.lookup_from is not None:
        raise UnsupportedQuery(
            "prefetch lookup_from: vectors from another collection are resolved before the "
            "query reaches one collection"
        )
    limit = _limit(prefetch.limit, "prefetch limit")
    _check_stage(prefetch.query, prefetch.using, prefetch.prefetch, prefetch.score_threshold)
    stage = _Stage(using=prefetch.using or "", lookup=lookup)
    query = _scoring(prefetch.query, stage, limit)
    return edge.Prefetch(
        limit=limit,
        query=query,
        prefetches=_prefetches(prefetch.prefetch, lookup),
        params=_search_params(prefetch.params),
        filter=_stage_filter(prefetch.filter, stage.mentioned),
        score_threshold=prefetch.score_threshold,
    )


def _stage_filter(
    flt: models.Filter | None, mentioned: Sequence[models.ExtendedPointId]
) -> edge.Filter | None:
    """The stage's filter, and not the points its query names by id.

    As Qdrant does, the exclusion joins the filter's own ``must_not`` clause rather than
    wrapping the filter: a stage's filter is later merged clause by clause with the filters
    of the stages above it (their ``should`` conditions become alternatives of each other),
    and a wrapped filter would merge differently.
    """
    translated = to_edge_filter(flt)
    if not mentioned:
        return translated
    excluded = edge.HasIdCondition(set(mentioned))
    if translated is None:
        return edge.Filter(must_not=[excluded])
    return edge.Filter(
        must=translated.must,
        should=translated.should,
        must_not=[*(translated.must_not or []), excluded],
        min_should=translated.min_should,
    )


def _nearest(query: models.NearestQuery, stage: _Stage, limit: int) -> Any:
    vector = stage.vector(query.nearest, "nearest")
    if query.mmr is None:
        return edge.Query.Nearest(vector, using=stage.using or None)
    if isinstance(vector, edge.SparseVector):
        raise UnsupportedQuery(
            "mmr on a sparse vector is not supported by the embedded engine; use it on a "
            "dense or multi vector"
        )
    diversity = query.mmr.diversity if query.mmr.diversity is not None else 0.5
    if not 0.0 <= diversity <= 1.0:
        raise UnsupportedQuery(f"mmr diversity {diversity} must be between 0 and 1")
    candidates = query.mmr.candidates_limit
    return edge.Mmr(
        vector,
        lambda_=1.0 - diversity,
        candidates_limit=candidates if candidates is not None else limit,
        using=stage.using or None,
    )


def _discover(query: models.DiscoverQuery, stage: _Stage, limit: int) -> Any:
    target = stage.vector(query.discover.target, "discover target")
    pairs = _context_pairs(query.discover.context, stage, "discover context")
    return edge.Query.Discover(edge.DiscoverQuery(target, pairs), using=stage.using or None)


def _context(query: models.ContextQuery, stage: _Stage, limit: int) -> Any:
    pairs = _context_pairs(query.context, stage, "context")
    return edge.Query.Context(edge.ContextQuery(pairs), using=stage.using or None)


def _fusion(query: models.FusionQuery, stage: _Stage, limit: int) -> Any:
    if query.fusion == models.Fusion.RRF:
        return edge.Fusion.Rrf(k=DEFAULT_RRF_K)
    if query.fusion == models.Fusion.DBSF:
        return edge.Fusion.Dbsf()
    raise UnsupportedQuery(f"fusion {query.fusion!r} is not supported by the embedded engine")


def _rrf(query: models.RrfQuery, stage: _Stage, limit: int) -> Any:
    k = query.rrf.k if query.rrf.k is not None else DEFAULT_RRF_K
    return edge.Fusion.Rrf(k=k, weights=query.rrf.weights)


def _formula(query: models.FormulaQuery, stage: _Stage, limit: int) -> Any:
    return edge.Formula(_expression(query.formula), defaults=_defaults(query.defaults))


def _sample(query: models.SampleQuery, stage: _Stage, limit: int) -> Any:
    if query.sample == models.Sample.RANDOM:
        return edge.Sample.Random
    raise UnsupportedQuery(f"sample {query.sample!r} is not supported by the embedded engine")


_VECTOR_INPUT_MODELS = (
    models.SparseVector,
    models.Document,
    models.Image,
    models.InferenceObject,
)
"""Models that are vector inputs (a bare one is a nearest query), not query variants."""

QUERY_VARIANTS: dict[type[Any], Callable[[Any, _Stage, int], Any]] = {
    models.NearestQuery: _nearest,
    models.RecommendQuery: lambda query, stage, limit: _recommend(query.recommend, stage),
    models.DiscoverQuery: _discover,
    models.ContextQuery: _context,
    models.OrderByQuery: lambda query, stage, limit: to_edge_order_by(query.order_by),
    models.FusionQuery: _fusion,
    models.RrfQuery: _rrf,
    models.FormulaQuery: _formula,
    models.SampleQuery: _sample,
    models.RelevanceFeedbackQuery: lambda query, stage, limit: _relevance_feedback(
        query.relevance_feedback, stage
    ),
    models.TextQuery: lambda query, stage, limit: _text_query(query, stage),
}
"""How each variant of qdrant-client's ``models.Query`` union becomes the engine's query."""


def _scoring(query: Any, stage: _Stage, limit: int) -> Any:
    """The engine's scoring query for one ``models.QueryInterface`` (``limit``: the stage's
    number of results, MMR's default number of candidates)."""
    if query is None:
        return None
    translate = QUERY_VARIANTS.get(type(query))
    if translate is not None:
        return translate(query, stage, limit)
    if isinstance(query, BaseModel) and not isinstance(query, _VECTOR_INPUT_MODELS):
        raise UnsupportedQuery(
            f"query {type(query).__name__} is not supported by the embedded engine"
        )
    # A bare vector or point id is Qdrant's shorthand for a nearest query.
    return edge.Query.Nearest(stage.vector(query, "query"), using=stage.using or None)


def _context_pairs(value: Any, stage: _Stage, what: str) -> list[edge.ContextPair]:
    pairs = value if isinstance(value, list) else [value]
    return [
        edge.ContextPair(
            positive=stage.vector(pair.positive, f"{what} positive"),
            negative=stage.vector(pair.negative, f"{what} negative"),
        )
        for pair in pairs
    ]


def _recommend(recommend: models.RecommendInput, stage: _Stage) -> Any:
    using = stage.using or None
    positive = list(recommend.positive or [])
    negative = list(recommend.negative or [])
    strategy = recommend.strategy or models.RecommendStrategy.AVERAGE_VECTOR
    if strategy == models.RecommendStrategy.AVERAGE_VECTOR:
        if not positive:
            raise UnsupportedQuery("recommend with average_vector needs at least one positive")
        positives = [stage.plain_vector(v, "recommend positive") for v in positive]
        negatives = [stage.plain_vector(v, "recommend negative") for v in negative]
        average = average_vector(positives, negatives)
        return edge.Query.Nearest(_edge_vector(average, "recommend"), using=using)
    if not positive and not negative:
        raise UnsupportedQuery(
            f"recommend with {strategy.value} needs positive or negative examples"
        )
    query = edge.RecommendQuery(
        positives=[stage.vector(v, "recommend positive") for v in positive],
        negatives=[stage.vector(v, "recommend negative") for v in negative],
    )
    if strategy == models.RecommendStrategy.BEST_SCORE:
        return edge.Query.RecommendBestScore(query, using=using)
    if strategy == models.RecommendStrategy.SUM_SCORES:
        return edge.Query.RecommendSumScores(query, using=using)
    raise UnsupportedQuery(f"recommend strategy {strategy!r} is not supported by the engine")


def average_vector(
    positives: Sequence[QdrantVector], negatives: Sequence[QdrantVector]
) -> QdrantVector:
    """Qdrant's ``average_vector`` recommendation: the mean of the positives, pushed away from
    the mean of the negatives (``2 * mean(pos) - mean(neg)``); for sparse vectors index by
    index (a missing index counts as 0); for multivectors, the positives' sub-vectors and the
    negatives' sub-vectors negated, side by side."""
    kinds = {_kind(v) for v in [*positives, *negatives]}
    if len(kinds) != 1:
        raise UnsupportedQuery("recommend examples mix dense, sparse and multi vectors")
    (kind,) = kinds
    if kind == "multi":
        multi_positives = cast(Sequence[list[list[float]]], positives)
        multi_negatives = cast(Sequence[list[list[float]]], negatives)
        rows = [[float(x) for x in row] for multi in multi_positives for row in multi]
        rows += [[-float(x) for x in row] for multi in multi_negatives for row in multi]
        return rows
    if kind == "sparse":
        positive = _sparse_mean(positives)  # type: ignore[arg-type]
        if negatives:
            negative = _sparse_mean(negatives)  # type: ignore[arg-type]
            merged = {
                i: 2 * positive.get(i, 0.0) - negative.get(i, 0.0) for i in positive | negative
            }
        else:
            merged = positive
        indices = sorted(merged)
        return models.SparseVector(indices=indices, values=[merged[i] for i in indices])
    sizes = {len(v) for v in [*positives, *negatives]}  # type: ignore[arg-type]
    if len(sizes) != 1:
        raise UnsupportedQuery("recommend examples have different dimensions")
    mean_positive = _dense_mean(positives)  # type: ignore[arg-type]
    if not negatives:
        return mean_positive
    mean_negative = _dense_mean(negatives)  # type: ignore[arg-type]
    return [2 * p - n for p, n in zip(mean_positive, mean_negative, strict=True)]


def _kind(vector: Any) -> str:
    if isinstance(vector, models.SparseVector):
        return "sparse"
    if vector and isinstance(vector[0], list):
        return "multi"
    return "dense"


def _dense_mean(vectors: Sequence[Sequence[float]]) -> list[float]:
    return [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]


def _sparse_mean(vectors: Sequence[models.SparseVector]) -> dict[int, float]:
    total: dict[int, float] = {}
    for vector in vectors:
        if len(vector.indices) != len(vector.values):
            raise UnsupportedQuery("sparse vector indices and values differ in length")
        for index, value in zip(vector.indices, vector.values, strict=True):
            total[index] = total.get(index, 0.0) + value
    return {index: value / len(vectors) for index, value in total.items()}


def _relevance_feedback(feedback: models.RelevanceFeedbackInput, stage: _Stage) -> Any:
    strategy = feedback.strategy
    if not isinstance(strategy, models.NaiveFeedbackStrategy):
        raise UnsupportedQuery(
            f"relevance feedback strategy {type(strategy).__name__} is not supported by the engine"
        )
    target = stage.vector(feedback.target, "relevance feedback target")
    items = [
        edge.FeedbackItem(stage.vector(item.example, "relevance feedback example"), item.score)
        for item in feedback.feedback
    ]
    params = strategy.naive
    coefficients = edge.NaiveFeedbackStrategy(a=params.a, b=params.b, c=params.c)
    return edge.Query.FeedbackNaive(
        edge.FeedbackNaiveQuery(target, items, coefficients), using=stage.using or None
    )


def _text_query(query: models.TextQuery, stage: _Stage) -> edge.TextQuery:
    if not stage.using:
        raise UnsupportedQuery("a text query needs `using`: the payload field it ranks on")
    if isinstance(query.text, str):
        return edge.TextQuery(field=stage.using, query=query.text)
    scoring = query.text.scoring
    params = None
    if scoring is not None:
        if not isinstance(scoring, models.Bm25Scoring):
            raise UnsupportedQuery(f"text scoring {type(scoring).__name__} is not supported")
        params = edge.Bm25Params(k=scoring.bm25.k, b=scoring.bm25.b)
    return edge.TextQuery(field=stage.using, query=query.text.query, scoring=params)


def _edge_vector(value: Any, what: str) -> Any:
    """A qdrant-client vector (dense, multi or sparse) as the engine takes it."""
    if isinstance(value, models.SparseVector):
        if len(value.indices) != len(value.values):
            raise UnsupportedQuery(f"{what}: sparse vector indices and values differ in length")
        return edge.SparseVector(list(value.indices), _finite(value.values, what))
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [_finite(row, what) for row in value]
    if isinstance(value, list):
        return _finite(value, what)
    raise UnsupportedQuery(f"{what}: {type(value).__name__} is not a vector")


def _finite(values: Sequence[Any], what: str) -> list[float]:
    """The numbers of a dense vector; NaN and infinities are refused (Qdrant's JSON cannot
    carry them, and the engine would silently match nothing)."""
    numbers = [float(x) for x in values]
    # A sum of finite numbers is finite unless it overflows, and one NaN or infinity makes
    # it NaN or infinite: summing is one C loop, so only a sum that is not finite is looked
    # at number by number.
    if not math.isfinite(sum(numbers)) and not all(math.isfinite(x) for x in numbers):
        raise UnsupportedQuery(f"{what}: a vector holds NaN or an infinity")
    return numbers


# ----------------------------------------------------------------- formulas


_DECAYS: dict[type[Any], tuple[str, edge.DecayKind]] = {
    models.LinDecayExpression: ("lin_decay", edge.DecayKind.Lin),
    models.ExpDecayExpression: ("exp_decay", edge.DecayKind.Exp),
    models.GaussDecayExpression: ("gauss_decay", edge.DecayKind.Gauss),
}
_UNARY: dict[type[Any], tuple[str, Callable[[edge.Expression], edge.Expression]]] = {
    models.NegExpression: ("neg", edge.Expression.Neg),
    models.AbsExpression: ("abs", edge.Expression.Abs),
    models.SqrtExpression: ("sqrt", edge.Expression.Sqrt),
    models.ExpExpression: ("exp", edge.Expression.Exp),
    models.Log10Expression: ("log10", edge.Expression.Log10),
    models.LnExpression: ("ln", edge.Expression.Ln),
    models.AcoshExpression: ("acosh", edge.Expression.Acosh),
}
_VARIADIC: dict[type[Any], tuple[str, Callable[[list[edge.Expression]], edge.Expression]]] = {
    models.MultExpression: ("mult", edge.Expression.Mult),
    models.SumExpression: ("sum", edge.Expression.Sum),
    models.MaxExpression: ("max", edge.Expression.Max),
    models.MinExpression: ("min", edge.Expression.Min),
}
_CONDITIONS = (
    models.FieldCondition,
    models.IsEmptyCondition,
    models.IsNullCondition,
    models.HasIdCondition,
    models.HasVectorCondition,
    models.SliceCondition,
    models.NestedCondition,
    models.Filter,
)


def _expression(expression: Any) -> edge.Expression:
    """The engine's form of one node of a formula (``models.Expression``)."""
    if isinstance(expression, bool):
        raise UnsupportedQuery("formula: a boolean is not an expression")
    if isinstance(expression, (int, float)):
        return edge.Expression.Constant(float(expression))
    if isinstance(expression, str):
        return edge.Expression.Variable(expression)
    if isinstance(expression, _CONDITIONS):
        return edge.Expression.Condition(to_edge_condition(expression))
    return _compound_expression(expression)


def _compound_expression(expression: Any) -> edge.Expression:
    if isinstance(expression, models.GeoDistance):
        params = expression.geo_distance
        origin = edge.GeoPoint(lon=params.origin.lon, lat=params.origin.lat)
        return edge.Expression.GeoDistance(origin, params.to)
    if isinstance(expression, models.DatetimeExpression):
        return edge.Expression.Datetime(expression.datetime)
    if isinstance(expression, models.DatetimeKeyExpression):
        return edge.Expression.DatetimeKey(expression.datetime_key)
    kind = type(expression)
    if kind in _VARIADIC:
        name, build = _VARIADIC[kind]
        return build([_expression(item) for item in getattr(expression, name)])
    if kind in _UNARY:
        name, unary = _UNARY[kind]
        return unary(_expression(getattr(expression, name)))
    if isinstance(expression, models.DivExpression):
        div = expression.div
        return edge.Expression.Div(
            _expression(div.left), _expression(div.right), by_zero_default=div.by_zero_default
        )
    if isinstance(expression, models.PowExpression):
        return edge.Expression.Pow(
            _expression(expression.pow.base), _expression(expression.pow.exponent)
        )
    if kind in _DECAYS:
        name, decay = _DECAYS[kind]
        params = getattr(expression, name)
        return edge.Expression.Decay(
            decay,
            _expression(params.x),
            target=None if params.target is None else _expression(params.target),
            midpoint=params.midpoint,
            scale=params.scale,
        )
    raise UnsupportedQuery(
        f"formula expression {kind.__name__} is not supported by the embedded engine"
    )


def _defaults(defaults: dict[str, Any] | None) -> dict[str, Any] | None:
    if defaults is None:
        return None
    return {key: _json_value(value) for key, value in defaults.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return to_rfc3339(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


# ----------------------------------------------------------------- params and selectors


def _search_params(params: models.SearchParams | None) -> edge.SearchParams | None:
    if params is None:
        return None
    quantization = None
    if params.quantization is not None:
        q = params.quantization
        quantization = edge.QuantizationSearchParams(
            ignore=bool(q.ignore), rescore=q.rescore, oversampling=q.oversampling
        )
    acorn = None
    if params.acorn is not None:
        acorn = edge.AcornSearchParams(
            enable=bool(params.acorn.enable), max_selectivity=params.acorn.max_selectivity
        )
    idf = None
    if isinstance(params.idf, models.IdfCorpusParams):
        idf = edge.IdfParams(corpus=to_edge_filter(params.idf.corpus))
    elif params.idf is not None and params.idf != models.IdfScope.GLOBAL:
        raise UnsupportedQuery(f"idf scope {params.idf!r} is not supported by the embedded engine")
    return edge.SearchParams(
        hnsw_ef=params.hnsw_ef,
        exact=bool(params.exact),
        quantization=quantization,
        indexed_only=bool(params.indexed_only),
        acorn=acorn,
        idf=idf,
    )


def _payload_selector(value: Any, *, default: bool) -> Any:
    """``with_payload``: a bool, a list of keys (nested paths too) or include / exclude."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, models.PayloadSelectorInclude):
        return edge.PayloadSelector.Include(list(value.include))
    if isinstance(value, models.PayloadSelectorExclude):
        return edge.PayloadSelector.Exclude(list(value.exclude))
    if isinstance(value, list) and all(isinstance(key, str) for key in value):
        return edge.PayloadSelector.Include(list(value))
    raise UnsupportedQuery(
        f"with_payload {value!r} is not a bool, a list of keys or a payload selector"
    )


def _vector_selector(value: Any) -> bool | list[str]:
    """``with_vector``: a bool or the names of the vectors to return."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return list(value)
    raise UnsupportedQuery(f"with_vector {value!r} is not a bool or a list of vector names")


# ----------------------------------------------------------------- scroll, order_by, facet


_DIRECTIONS = {models.Direction.ASC: edge.Direction.Asc, models.Direction.DESC: edge.Direction.Desc}


def to_edge_order_by(order_by: Any) -> edge.OrderBy:
    """``order_by`` as a key or a ``models.OrderBy`` (datetime ``start_from`` as RFC 3339)."""
    if isinstance(order_by, str):
        return edge.OrderBy(order_by)
    if not isinstance(order_by, models.OrderBy):
        raise UnsupportedQuery(f"order_by {order_by!r} is not a key or an OrderBy")
    start: float | str | None = (
        to_rfc3339(order_by.start_from)
        if isinstance(order_by.start_from, (datetime, date))
        else order_by.start_from
    )
    return edge.OrderBy(
        order_by.key,
        direction=None if order_by.direction is None else _DIRECTIONS[order_by.direction],
        start_from=start,
    )


def to_edge_scroll_request(request: models.ScrollRequest) -> edge.ScrollRequest:
    """One page of a scroll: id order from ``offset``, or ``order_by``."""
    if request.shard_key is not None:
        raise UnsupportedQuery("shard_key: the embedded engine has no shard keys")
    order_by = None if request.order_by is None else to_edge_order_by(request.order_by)
    offset = request.offset
    if isinstance(offset, uuid.UUID):
        offset = str(offset)
    return edge.ScrollRequest(
        offset=offset,
        limit=_limit(request.limit, "limit"),
        filter=to_edge_filter(request.filter),
        with_payload=_payload_selector(request.with_payload, default=True),
        with_vector=_vector_selector(request.with_vector),
        order_by=order_by,
    )


def to_edge_facet_request(request: models.FacetRequest) -> edge.FacetRequest:
    if request.shard_key is not None:
        raise UnsupportedQuery("shard_key: the embedded engine has no shard keys")
    return edge.FacetRequest(
        key=request.key,
        limit=_limit(request.limit, "facet limit"),
        exact=bool(request.exact),
        filter=to_edge_filter(request.filter),
    )


# ----------------------------------------------------------------- answers


def _point_id(value: Any) -> models.ExtendedPointId:
    if isinstance(value, uuid.UUID):
        return str(value)
    return value  # type: ignore[no-any-return]


def _vector_output(value: Any, with_vector: Any) -> Any:
    """The engine's vectors as Qdrant answers them: only those asked for (the engine adds the
    vector an MMR query compared), the unnamed vector alone as a list, otherwise a map of
    name to dense, multi or sparse vector."""
    if value is None or with_vector is None or with_vector is False:
        return None
    if not isinstance(value, dict):
        return _one_vector(value)
    wanted = None if with_vector is True else set(with_vector)
    vectors = {
        name: _one_vector(vector)
        for name, vector in value.items()
        if wanted is None or name in wanted
    }
    if set(vectors) == {""}:
        return vectors[""]
    return vectors


def _one_vector(vector: Any) -> Any:
    if isinstance(vector, edge.SparseVector):
        return models.SparseVector(indices=list(vector.indices), values=list(vector.values))
    if vector and isinstance(vector[0], list):
        return [[float(x) for x in row] for row in vector]
    return [float(x) for x in vector]


def _payload_output(payload: Any, selected: bool) -> dict[str, Any] | None:
    if not selected:
        return None
    return dict(payload or {})


def to_scored_point(
    hit: edge.ScoredPoint, *, with_payload: Any, with_vector: Any
) -> models.ScoredPoint:
    return models.ScoredPoint(
        id=_point_id(hit.id),
        version=hit.version,
        score=float(hit.score),
        payload=_payload_output(hit.payload, with_payload is not False),
        vector=_vector_output(hit.vector, with_vector),
        order_value=hit.order_value,
    )


def to_record(record: edge.Record, *, with_payload: Any, with_vector: Any) -> models.Record:
    return models.Record(
        id=_point_id(record.id),
        payload=_payload_output(record.payload, with_payload is not False),
        vector=_vector_output(record.vector, with_vector),
        order_value=record.order_value,
    )


def to_facet_hit(hit: edge.FacetHit) -> models.FacetValueHit:
    return models.FacetValueHit(value=hit.value, count=int(hit.count))


# ----------------------------------------------------------------- payload indexes


_SCHEMA_TYPES = {
    models.PayloadSchemaType.KEYWORD: edge.PayloadSchemaType.Keyword,
    models.PayloadSchemaType.INTEGER: edge.PayloadSchemaType.Integer,
    models.PayloadSchemaType.FLOAT: edge.PayloadSchemaType.Float,
    models.PayloadSchemaType.GEO: edge.PayloadSchemaType.Geo,
    models.PayloadSchemaType.TEXT: edge.PayloadSchemaType.Text,
    models.PayloadSchemaType.BOOL: edge.PayloadSchemaType.Bool,
    models.PayloadSchemaType.DATETIME: edge.PayloadSchemaType.Datetime,
    models.PayloadSchemaType.UUID: edge.PayloadSchemaType.Uuid,
}
_INDEX_PARAMS: dict[type[Any], Any] = {
    models.KeywordIndexParams: edge.KeywordIndexParams,
    models.IntegerIndexParams: edge.IntegerIndexParams,
    models.FloatIndexParams: edge.FloatIndexParams,
    models.GeoIndexParams: edge.GeoIndexParams,
    models.TextIndexParams: edge.TextIndexParams,
    models.BoolIndexParams: edge.BoolIndexParams,
    models.DatetimeIndexParams: edge.DatetimeIndexParams,
    models.UuidIndexParams: edge.UuidIndexParams,
}


def _edge_member(kind: Any, value: Enum | str, what: str) -> Any:
    """The member of the engine's enum ``kind`` named like qdrant-client's ``value``."""
    text = str(value.value if isinstance(value, Enum) else value).replace("_", "").lower()
    for name in dir(kind):
        if not name.startswith("_") and name.replace("_", "").lower() == text:
            return getattr(kind, name)
    raise UnsupportedQuery(f"{what} {text!r} is not supported by the embedded engine")


def to_edge_index_schema(schema: Any) -> Any:
    """A payload index schema: a ``PayloadSchemaType`` (or its name) or index parameters."""
    if isinstance(schema, (models.PayloadSchemaType, str)):
        try:
            return _SCHEMA_TYPES[models.PayloadSchemaType(schema)]
        except ValueError:
            raise UnsupportedQuery(f"payload schema {schema!r} is unknown") from None
    build = _INDEX_PARAMS.get(type(schema))
    if build is None:
        raise UnsupportedQuery(f"payload schema {type(schema).__name__} is unknown")
    fields: dict[str, Any] = {}
    for name in type(schema).model_fields:
        value = getattr(schema, name)
        if name == "type" or value is None:
            continue
        fields[name] = _index_param(name, value)
    return build(**fields)


def _index_param(name: str, value: Any) -> Any:
    if name == "memory":
        return _edge_member(edge.Memory, value, "memory")
    if name == "tokenizer":
        return _edge_member(edge.TokenizerType, value, "tokenizer")
    if name == "stopwords":
        if isinstance(value, models.StopwordsSet):
            return edge.StopwordsSet(
                languages=None
                if value.languages is None
                else {_edge_member(edge.Language, lang, "language") for lang in value.languages},
                custom=None if value.custom is None else set(value.custom),
            )
        return _edge_member(edge.Language, value, "stopwords language")
    if name == "stemmer":
        if isinstance(value, models.SnowballParams):
            return edge.SnowballParams(
                _edge_member(edge.SnowballLanguage, value.language, "stemmer language")
            )
        if isinstance(value, models.DisabledStemmerParams):
            return edge.DisabledStemmer()
        raise UnsupportedQuery(f"stemmer {type(value).__name__} is not supported")
    if name == "scoring":
        if isinstance(value, models.TextScoringParams):
            return edge.TextScoringParams(
                type=_edge_member(edge.TextScoringType, value.type, "text scoring")
            )
        return bool(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    raise UnsupportedQuery(f"payload index parameter {name}={value!r} is not supported")
