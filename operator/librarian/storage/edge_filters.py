"""Translate ``qdrant_client`` filters into the embedded engine's filter objects.

Why this exists: the product speaks one filter language (the official
``qdrant_client.http.models.Filter``) to every cluster. The embedded engine
(``qdrant-edge``) has its own classes with the same meaning; this module maps
every clause of ``models.Filter`` (``must``, ``should``, ``must_not``,
``min_should``) and every condition of the ``models.Condition`` union
(field conditions with any match, numeric or datetime range, geo box, radius
or polygon, values count, is-empty and is-null; is-empty, is-null, has-id,
has-vector, slice and nested conditions; nested filters). Anything it does not
recognise is refused with :class:`UnsupportedFilter` naming the condition, so a
filter is never silently widened into "match everything".
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import qdrant_edge as edge
from qdrant_client.http import models

__all__ = ["UnsupportedFilter", "to_edge_condition", "to_edge_filter", "to_rfc3339"]


class UnsupportedFilter(ValueError):
    """The filter uses a condition the embedded adapter does not translate."""


def to_edge_filter(flt: models.Filter | None) -> edge.Filter | None:
    """The embedded engine's equivalent of ``flt`` (``None`` stays ``None``)."""
    if flt is None:
        return None
    if not isinstance(flt, models.Filter):
        raise UnsupportedFilter(f"filter {type(flt).__name__} is not a qdrant_client Filter")
    min_should = None
    if flt.min_should is not None:
        min_should = edge.MinShould(
            conditions=_conditions(flt.min_should.conditions) or [],
            min_count=flt.min_should.min_count,
        )
    return edge.Filter(
        must=_conditions(flt.must),
        should=_conditions(flt.should),
        must_not=_conditions(flt.must_not),
        min_should=min_should,
    )


def _conditions(value: Any) -> list[Any] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [_condition(item) for item in items]


def to_edge_condition(condition: models.Condition) -> Any:
    """The embedded engine's equivalent of one condition (formulas score by conditions)."""
    return _condition(condition)


def _condition(condition: Any) -> Any:
    if isinstance(condition, models.Filter):
        return to_edge_filter(condition)
    if isinstance(condition, models.FieldCondition):
        return _field(condition)
    if isinstance(condition, models.IsEmptyCondition):
        return edge.IsEmptyCondition(condition.is_empty.key)
    if isinstance(condition, models.IsNullCondition):
        return edge.IsNullCondition(condition.is_null.key)
    if isinstance(condition, models.HasIdCondition):
        return edge.HasIdCondition(set(condition.has_id))
    if isinstance(condition, models.HasVectorCondition):
        return edge.HasVectorCondition(condition.has_vector)
    if isinstance(condition, models.SliceCondition):
        return edge.SliceCondition(  # type: ignore[attr-defined]  # missing from the stubs
            total=condition.slice.total, index=condition.slice.index
        )
    if isinstance(condition, models.NestedCondition):
        inner = to_edge_filter(condition.nested.filter) or edge.Filter()
        return edge.NestedCondition(key=condition.nested.key, filter=inner)
    raise UnsupportedFilter(
        f"filter condition {type(condition).__name__} is not supported by the embedded engine"
    )


def _field(condition: models.FieldCondition) -> edge.FieldCondition:
    key = condition.key
    given = [
        name
        for name in models.FieldCondition.model_fields
        if name != "key" and getattr(condition, name) is not None
    ]
    if len(given) != 1:
        # Qdrant itself refuses a field condition with zero or several checks.
        raise UnsupportedFilter(
            f"field condition on {key!r} must have exactly one of match, range, "
            f"geo_bounding_box, geo_radius, geo_polygon, values_count, is_empty, is_null "
            f"(got {', '.join(given) or 'none'})"
        )
    (kind,) = given
    if kind == "match":
        return edge.FieldCondition(key=key, match=_match(key, condition.match))
    if kind == "range":
        return edge.FieldCondition(key=key, range=_range(key, condition.range))
    if kind == "geo_bounding_box":
        box = condition.geo_bounding_box
        assert box is not None
        return edge.FieldCondition(
            key=key,
            geo_bounding_box=edge.GeoBoundingBox(
                top_left=_point(box.top_left), bottom_right=_point(box.bottom_right)
            ),
        )
    if kind == "geo_radius":
        circle = condition.geo_radius
        assert circle is not None
        return edge.FieldCondition(
            key=key,
            geo_radius=edge.GeoRadius(center=_point(circle.center), radius=circle.radius),
        )
    if kind == "geo_polygon":
        polygon = condition.geo_polygon
        assert polygon is not None
        interiors = (
            None
            if polygon.interiors is None
            else [[_point(p) for p in line.points] for line in polygon.interiors]
        )
        return edge.FieldCondition(
            key=key,
            geo_polygon=edge.GeoPolygon(
                exterior=[_point(p) for p in polygon.exterior.points], interiors=interiors
            ),
        )
    if kind == "values_count":
        count = condition.values_count
        assert count is not None
        return edge.FieldCondition(
            key=key,
            values_count=edge.ValuesCount(lt=count.lt, gt=count.gt, lte=count.lte, gte=count.gte),
        )
    if kind == "is_empty":
        return edge.FieldCondition(key=key, is_empty=bool(condition.is_empty))
    if kind == "is_null":
        return edge.FieldCondition(key=key, is_null=bool(condition.is_null))
    raise UnsupportedFilter(
        f"field condition {kind!r} on {key!r} is not supported by the embedded engine"
    )


def _point(point: models.GeoPoint) -> edge.GeoPoint:
    return edge.GeoPoint(lon=point.lon, lat=point.lat)


def _range(key: str, bounds: Any) -> Any:
    if isinstance(bounds, models.Range):
        return edge.RangeFloat(gte=bounds.gte, gt=bounds.gt, lte=bounds.lte, lt=bounds.lt)
    if isinstance(bounds, models.DatetimeRange):
        return edge.RangeDateTime(
            gte=to_rfc3339(bounds.gte),
            gt=to_rfc3339(bounds.gt),
            lte=to_rfc3339(bounds.lte),
            lt=to_rfc3339(bounds.lt),
        )
    raise UnsupportedFilter(
        f"range {type(bounds).__name__} on {key!r} is not supported by the embedded engine"
    )


def to_rfc3339(moment: datetime | date | str | None) -> str | None:
    """The engine's datetime bound: RFC 3339 text, naive times taken as UTC (as Qdrant does)."""
    if moment is None or isinstance(moment, str):
        return moment
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def _match(key: str, match: Any) -> Any:
    if isinstance(match, models.MatchValue):
        if isinstance(match.value, bool):
            # The engine's binding reads a Python bool as the integer 0 or 1 (bool is an int
            # subclass) and would then never match a boolean payload; numpy's bool is not an
            # int, so it arrives as a boolean.
            return edge.MatchValue(np.bool_(match.value))  # type: ignore[arg-type]
        return edge.MatchValue(match.value)
    if isinstance(match, models.MatchAny):
        return edge.MatchAny(list(match.any))  # type: ignore[arg-type]
    if isinstance(match, models.MatchExcept):
        return edge.MatchExcept(list(match.except_))  # type: ignore[arg-type]
    if isinstance(match, models.MatchText):
        return edge.MatchText(match.text)
    if isinstance(match, models.MatchTextAny):
        return edge.MatchTextAny(match.text_any)
    if isinstance(match, models.MatchPhrase):
        return edge.MatchPhrase(match.phrase)
    if isinstance(match, models.MatchPrefix):
        return edge.MatchPrefix(match.prefix)
    if isinstance(match, models.MatchSubstring):
        return edge.MatchSubstring(match.substring)
    raise UnsupportedFilter(
        f"match {type(match).__name__} on {key!r} is not supported by the embedded engine"
    )
