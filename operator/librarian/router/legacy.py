"""Qdrant's legacy search, recommend and discover bodies, as the universal queries they mean.

Why this exists: applications written before the universal query API still call
``/points/search`` (with a named or sparse vector), ``/points/recommend`` and
``/points/discover`` (and their ``/batch`` forms); newer clients no longer model
these bodies. Each is parsed here (Qdrant's fields and bounds) and turned into
the :class:`~qdrant_client.http.models.QueryRequest` Qdrant itself answers it
with, so one engine serves both and only the response shape differs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from qdrant_client.http import models

from librarian.router.qdrant_api import ApiError, SearchRequest, SearchRequestBatch

__all__ = [
    "DiscoverRequest",
    "DiscoverRequestBatch",
    "RecommendRequest",
    "RecommendRequestBatch",
    "SearchRequestBatch",
    "discover_query",
    "plain_search",
    "recommend_query",
    "search_query",
]


class _Legacy(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    filter: models.Filter | None = None
    params: models.SearchParams | None = None
    limit: int = Field(ge=1)
    offset: int | None = Field(default=None, ge=0)
    with_payload: models.WithPayloadInterface | None = None
    with_vector: models.WithVector | None = Field(default=None, alias="with_vectors")
    score_threshold: float | None = None
    using: str | None = None
    lookup_from: models.LookupLocation | None = None
    shard_key: Any = None


class RecommendRequest(_Legacy):
    """Qdrant's ``/points/recommend`` body."""

    positive: list[models.VectorInput] | None = None
    negative: list[models.VectorInput] | None = None
    strategy: models.RecommendStrategy | None = None


class RecommendRequestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    searches: list[RecommendRequest]


class DiscoverRequest(_Legacy):
    """Qdrant's ``/points/discover`` body (no target: a context search)."""

    target: models.VectorInput | None = None
    context: list[models.ContextPair] | None = None


class DiscoverRequestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    searches: list[DiscoverRequest]


def _common(body: _Legacy, query: models.Query) -> models.QueryRequest:
    if body.shard_key is not None:
        raise ApiError(400, "Wrong input: shard keys are not served by the library router")
    return models.QueryRequest(
        query=query,
        using=body.using,
        filter=body.filter,
        params=body.params,
        score_threshold=body.score_threshold,
        limit=body.limit,
        offset=body.offset,
        with_payload=body.with_payload,
        with_vector=body.with_vector,
        lookup_from=body.lookup_from,
    )


def recommend_query(body: RecommendRequest) -> models.QueryRequest:
    """``/points/recommend`` as the recommend query Qdrant runs for it."""
    if not body.positive and not body.negative:
        raise ApiError(400, "Wrong input: No positive or negative examples given")
    strategy = body.strategy or models.RecommendStrategy.AVERAGE_VECTOR
    if strategy == models.RecommendStrategy.AVERAGE_VECTOR and not body.positive:
        raise ApiError(400, "Wrong input: Positive list is empty")
    return _common(
        body,
        models.RecommendQuery(
            recommend=models.RecommendInput(
                positive=body.positive, negative=body.negative, strategy=strategy
            )
        ),
    )


def discover_query(body: DiscoverRequest) -> models.QueryRequest:
    """``/points/discover`` as a discover query (a context query without a target)."""
    context = body.context or []
    if body.target is None:
        return _common(body, models.ContextQuery(context=context))
    return _common(
        body,
        models.DiscoverQuery(discover=models.DiscoverInput(target=body.target, context=context)),
    )


def plain_search(body: SearchRequest) -> bool:
    """Is this a search with the unnamed dense vector (the routed, classic search)?"""
    return isinstance(body.vector, list)


def search_query(body: SearchRequest) -> models.QueryRequest:
    """``/points/search`` with a named dense or sparse vector as the nearest query it means."""
    vector = body.vector
    if isinstance(vector, dict) and "name" in vector and "vector" in vector:
        name, value = vector["name"], vector["vector"]
    else:
        raise ApiError(400, "Wrong input: vector must be a list of floats or {name, vector}")
    if isinstance(value, dict):
        try:
            value = models.SparseVector.model_validate(value)
        except ValueError as error:
            raise ApiError(400, f"Format error in JSON body: vector: {error}") from None
    if body.shard_key is not None:
        raise ApiError(400, "Wrong input: shard keys are not served by the library router")
    return models.QueryRequest(
        query=models.NearestQuery(nearest=value),
        using=str(name),
        filter=body.filter,
        params=body.params,
        score_threshold=body.score_threshold,
        limit=body.limit,
        offset=body.offset,
        with_payload=body.with_payload,
        with_vector=body.with_vector,
    )
