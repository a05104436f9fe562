"""Query vectors are refused when they hold NaN or an infinity, and only then: the check
sums the numbers first, so finite numbers whose sum overflows must still be served."""

from __future__ import annotations

import math
from typing import Any

import pytest
from qdrant_client.http import models

from librarian.router.qdrant_api import ApiError
from librarian.router.query import dense
from librarian.storage.edge_queries import UnsupportedQuery, to_edge_query_request

BIG = 1e308  # two of them sum to infinity, each is finite

FINITE_OVERFLOWING = [BIG, BIG, -BIG, -BIG, 0.5, -0.25, 3.0, 1e-300]
NOT_FINITE = [
    [math.nan, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, math.inf],
    [-math.inf, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    [math.inf, -math.inf, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # sums to NaN
    [BIG, BIG, math.nan, 0.3, 0.4, 0.5, 0.6, 0.7],
]


def _no_lookup(point_id: Any, name: str) -> Any:
    raise AssertionError("no point is named by id")


def test_router_serves_finite_numbers_whose_sum_overflows() -> None:
    assert dense(FINITE_OVERFLOWING, 8) == FINITE_OVERFLOWING


@pytest.mark.parametrize("vector", NOT_FINITE)
def test_router_refuses_nan_and_infinities(vector: list[float]) -> None:
    with pytest.raises(ApiError, match="NaN or infinite") as refused:
        dense(vector, 8)
    assert refused.value.status == 400


def test_router_converts_integers_to_floats() -> None:
    converted = dense([1, 2, 3], 3)
    assert converted == [1.0, 2.0, 3.0]
    assert all(type(x) is float for x in converted)


def test_engine_request_keeps_finite_numbers_whose_sum_overflows() -> None:
    request = to_edge_query_request(
        models.QueryRequest(query=FINITE_OVERFLOWING, limit=3), _no_lookup
    )
    assert request is not None


@pytest.mark.parametrize("vector", NOT_FINITE)
def test_engine_request_refuses_nan_and_infinities(vector: list[float]) -> None:
    with pytest.raises(UnsupportedQuery, match="NaN or an infinity"):
        to_edge_query_request(models.QueryRequest(query=vector, limit=3), _no_lookup)


def test_engine_request_refuses_an_infinite_sparse_value() -> None:
    sparse = models.SparseVector(indices=[1, 2], values=[BIG, math.inf])
    with pytest.raises(UnsupportedQuery, match="NaN or an infinity"):
        to_edge_query_request(models.QueryRequest(query=sparse, using="s", limit=3), _no_lookup)
