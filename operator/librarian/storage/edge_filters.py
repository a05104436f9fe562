"""Translate ``qdrant_client`` filters into the embedded engine's filter objects.

Why this exists: the product speaks one filter language (the official
``qdrant_client.http.models.Filter``) to every cluster. The embedded engine
(``qdrant-edge``) has its own classes with the same meaning; this module maps
the subset the product uses and rejects anything else with a clear error
instead of silently matching everything.
"""

from __future__ import annotations

from typing import Any

import qdrant_edge as edge
from qdrant_client.http import models


class UnsupportedFilter(ValueError):
    """The filter uses a condition the embedded adapter does not translate."""


def to_edge_filter(flt: models.Filter | None) -> edge.Filter | None:
    """The embedded engine's equivalent of ``flt`` (``None`` stays ``None``)."""
    if flt is None:
        return None
    return edge.Filter(
        must=_conditions(flt.must),
        should=_conditions(flt.should),
        must_not=_conditions(flt.must_not),
    )


def _conditions(value: Any) -> list[Any] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [_condition(item) for item in items]


def _condition(condition: Any) -> Any:
    if isinstance(condition, models.Filter):
        return to_edge_filter(condition)
    if isinstance(condition, models.FieldCondition):
        return _field(condition)
    if isinstance(condition, models.IsEmptyCondition):
        return edge.IsEmptyCondition(condition.is_empty.key)
    if isinstance(condition, models.HasIdCondition):
        return edge.HasIdCondition(set(condition.has_id))
    raise UnsupportedFilter(
        f"filter condition {type(condition).__name__} is not supported by the embedded engine "
        "adapter; use FieldCondition (MatchValue/MatchAny), IsEmptyCondition or HasIdCondition"
    )


def _field(condition: models.FieldCondition) -> Any:
    key = condition.key
    if condition.match is not None and condition.range is None:
        return edge.FieldCondition(key=key, match=_match(key, condition.match))
    if isinstance(condition.range, models.Range) and condition.match is None:
        bounds = condition.range
        return edge.FieldCondition(
            key=key,
            range=edge.RangeFloat(gte=bounds.gte, gt=bounds.gt, lte=bounds.lte, lt=bounds.lt),
        )
    raise UnsupportedFilter(
        f"field condition on {key!r} is not supported by the embedded engine adapter; "
        "use one match (MatchValue/MatchAny/MatchExcept) or one numeric range"
    )


def _match(key: str, match: Any) -> Any:
    if isinstance(match, models.MatchValue):
        return edge.MatchValue(match.value)
    if isinstance(match, models.MatchAny):
        return edge.MatchAny(list(match.any))  # type: ignore[arg-type]
    if isinstance(match, models.MatchExcept):
        return edge.MatchExcept(list(match.except_))  # type: ignore[arg-type]
    raise UnsupportedFilter(
        f"match {type(match).__name__} on {key!r} is not supported by the embedded engine "
        "adapter; use MatchValue, MatchAny or MatchExcept"
    )
