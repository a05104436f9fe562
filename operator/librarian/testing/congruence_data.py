"""Seeded payloads and filters shaped like real ones, for comparing backends.

Why this exists: the tests that compare the embedded engine, the router and
qdrant-client's local mode on the same points need payloads with every kind of
value Qdrant filters on (ints, floats, strings, bools, lists, nested objects,
datetimes, geo points, text, nulls and missing keys) and filters using every
clause and condition over them; one generator serves them all, so a condition
added here is checked everywhere.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from qdrant_client.http import models

__all__ = ["COLORS", "EPOCH", "WORDS", "random_condition", "random_filter", "random_payload"]

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]
COLORS = ["red", "green", "blue", "black"]
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
ID_SPACE = 260  # has_id conditions draw from 0..ID_SPACE-1 (some ids may not exist)


def random_payload(rng: random.Random) -> dict[str, Any]:
    """One point's payload: every key may be missing, some may be null or lists."""
    payload: dict[str, Any] = {}

    def maybe(key: str, value: Any) -> None:
        roll = rng.random()
        if roll < 0.12:
            return  # missing
        if roll < 0.18:
            payload[key] = None
        else:
            payload[key] = value

    maybe("n", rng.randint(-20, 20))
    maybe("x", round(rng.uniform(-10, 10), 3))
    maybe("color", rng.choice(COLORS))
    maybe("flag", rng.random() < 0.5)
    maybe("tags", rng.sample(COLORS, rng.randint(0, 3)))
    maybe("nums", [rng.randint(0, 9) for _ in range(rng.randint(0, 4))])
    maybe("at", (EPOCH + timedelta(hours=rng.randint(0, 24 * 60))).isoformat())
    maybe("place", {"lon": round(rng.uniform(-10, 10), 4), "lat": round(rng.uniform(-10, 10), 4)})
    maybe("text", " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))))
    maybe(
        "items",
        [{"kind": rng.choice(COLORS), "size": rng.randint(0, 5)} for _ in range(rng.randint(0, 3))],
    )
    maybe("meta", {"level": rng.randint(0, 3), "owner": rng.choice(["ann", "bob"])})
    return payload


def _bounds(rng: random.Random, low: float, high: float, cast: Any) -> dict[str, Any]:
    """One or two of gt/gte/lt/lte, drawn between ``low`` and ``high``."""
    a, b = sorted(cast(rng.uniform(low, high)) for _ in range(2))
    bounds: dict[str, Any] = {}
    if rng.random() < 0.7:
        bounds[rng.choice(["gt", "gte"])] = a
    if not bounds or rng.random() < 0.7:
        bounds[rng.choice(["lt", "lte"])] = b
    return bounds


def _int_value(rng: random.Random) -> models.Condition:
    return models.FieldCondition(key="n", match=models.MatchValue(value=rng.randint(-5, 5)))


def _keyword_value(rng: random.Random) -> models.Condition:
    return models.FieldCondition(key="color", match=models.MatchValue(value=rng.choice(COLORS)))


def _bool_value(rng: random.Random) -> models.Condition:
    return models.FieldCondition(key="flag", match=models.MatchValue(value=rng.random() < 0.5))


def _any_or_except(rng: random.Random) -> models.Condition:
    choices: list[tuple[str, list[Any]]] = [
        ("tags", COLORS),
        ("color", COLORS),
        ("nums", list(range(10))),
        ("n", list(range(-5, 6))),
    ]
    key, values = rng.choice(choices)
    chosen: list[Any] = rng.sample(values, rng.randint(0, 3))  # empty lists too
    if rng.random() < 0.5:
        return models.FieldCondition(key=key, match=models.MatchAny(any=chosen))
    return models.FieldCondition(key=key, match=models.MatchExcept(**{"except": chosen}))


def _number_range(rng: random.Random) -> models.Condition:
    key = rng.choice(["n", "x", "nums", "meta.level"])
    return models.FieldCondition(key=key, range=models.Range(**_bounds(rng, -12, 12, float)))


def _datetime_range(rng: random.Random) -> models.Condition:
    hours = _bounds(rng, 0, 24 * 60, int)
    moments: dict[str, Any] = {k: EPOCH + timedelta(hours=v) for k, v in hours.items()}
    if rng.random() < 0.5:  # qdrant-client also takes RFC 3339 text
        moments = {k: v.isoformat().replace("+00:00", "Z") for k, v in moments.items()}
    return models.FieldCondition(key="at", range=models.DatetimeRange(**moments))


def _geo_radius(rng: random.Random) -> models.Condition:
    lon, lat = rng.uniform(-9, 9), rng.uniform(-9, 9)
    return models.FieldCondition(
        key="place",
        geo_radius=models.GeoRadius(
            center=models.GeoPoint(lon=lon, lat=lat), radius=rng.uniform(1e5, 8e5)
        ),
    )


def _geo_box(rng: random.Random) -> models.Condition:
    left, right = sorted(rng.uniform(-10, 10) for _ in range(2))
    bottom, top = sorted(rng.uniform(-10, 10) for _ in range(2))
    return models.FieldCondition(
        key="place",
        geo_bounding_box=models.GeoBoundingBox(
            top_left=models.GeoPoint(lon=left, lat=top),
            bottom_right=models.GeoPoint(lon=right, lat=bottom),
        ),
    )


def _geo_polygon(rng: random.Random) -> models.Condition:
    cx, cy, r = rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(2, 5)
    ring = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    hole = [(cx - r / 3, cy - r / 3), (cx + r / 3, cy - r / 3), (cx, cy + r / 3)]

    def line(corners: list[tuple[float, float]]) -> models.GeoLineString:
        closed = [*corners, corners[0]]
        return models.GeoLineString(points=[models.GeoPoint(lon=x, lat=y) for x, y in closed])

    return models.FieldCondition(
        key="place",
        geo_polygon=models.GeoPolygon(
            exterior=line(ring), interiors=[line(hole)] if rng.random() < 0.5 else None
        ),
    )


def _values_count(rng: random.Random) -> models.Condition:
    return models.FieldCondition(
        key=rng.choice(["tags", "nums", "items"]),
        values_count=models.ValuesCount(**_bounds(rng, 0, 4, int)),
    )


def _empty_or_null(rng: random.Random) -> models.Condition:
    key = rng.choice(["n", "tags", "text", "meta.owner", "absent"])
    if rng.random() < 0.5:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
    return models.IsNullCondition(is_null=models.PayloadField(key=key))


def _full_text(rng: random.Random) -> models.Condition:
    # Full-text matches, on a field without a full-text index (neither side needs one).
    word, other = rng.sample(WORDS, 2)
    full_text = rng.choice(
        [
            models.MatchText(text=rng.choice([word, f"{word} {other}"])),
            models.MatchTextAny(text_any=f"{word} {other}"),
            models.MatchPhrase(phrase=f"{word} {other}"),
            models.MatchPrefix(prefix=word[: rng.randint(1, len(word))]),
            models.MatchSubstring(substring=f"{word[2:]} {other[:2]}"),
        ]
    )
    return models.FieldCondition(key="text", match=full_text)


def _has_id(rng: random.Random) -> models.Condition:
    return models.HasIdCondition(has_id=rng.sample(range(ID_SPACE), rng.randint(1, 30)))


def _nested(rng: random.Random) -> models.Condition:
    return models.NestedCondition(
        nested=models.Nested(
            key="items",
            filter=models.Filter(
                must=[
                    models.FieldCondition(
                        key="kind", match=models.MatchValue(value=rng.choice(COLORS))
                    ),
                    models.FieldCondition(
                        key="size", range=models.Range(**_bounds(rng, 0, 5, int))
                    ),
                ]
            ),
        )
    )


def _array_path(rng: random.Random) -> models.Condition:
    return models.FieldCondition(
        key="items[].kind", match=models.MatchValue(value=rng.choice(COLORS))
    )


def _object_path(rng: random.Random) -> models.Condition:
    return models.FieldCondition(
        key="meta.owner", match=models.MatchValue(value=rng.choice(["ann", "bob"]))
    )


CONDITION_MAKERS = (
    _int_value,
    _keyword_value,
    _bool_value,
    _any_or_except,
    _number_range,
    _datetime_range,
    _geo_radius,
    _geo_box,
    _geo_polygon,
    _values_count,
    _empty_or_null,
    _full_text,
    _has_id,
    _nested,
    _array_path,
    _object_path,
)


def random_condition(rng: random.Random) -> models.Condition:
    """One condition of any kind Qdrant has, over the payload keys ``random_payload`` writes."""
    return rng.choice(CONDITION_MAKERS)(rng)


def random_filter(rng: random.Random, depth: int = 0) -> models.Filter:
    """A filter of must / should / must_not / min_should clauses, nested up to two deep."""

    def some() -> list[models.Condition]:
        return [
            random_filter(rng, depth + 1)
            if depth < 2 and rng.random() < 0.2
            else random_condition(rng)
            for _ in range(rng.randint(1, 3))
        ]

    clauses: dict[str, Any] = {}
    for clause in ("must", "should", "must_not"):
        if rng.random() < 0.45:
            clauses[clause] = some()
    if rng.random() < 0.35:
        conditions = [*some(), random_condition(rng)]
        clauses["min_should"] = models.MinShould(
            conditions=conditions, min_count=rng.randint(1, len(conditions))
        )
    if not clauses:
        clauses["must"] = some()
    return models.Filter(**clauses)
