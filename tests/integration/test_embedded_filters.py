"""The embedded engine's filters match what Qdrant's own semantics select.

Reference: qdrant-client's local mode (an independent implementation of Qdrant's
filter semantics in Python) holding the same points. Filters are drawn by a
seeded generator over payloads with ints, floats, strings, bools, lists, nested
objects, datetimes, geo points, text, nulls and missing keys; for each, the ids
matched by ``count`` and ``scroll`` through the storage port must be the same as
the reference's, and ``delete_points`` by that filter must delete exactly them.
"""

from __future__ import annotations

import random
import typing
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models

from librarian.storage import edge_filters
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import InvalidRequest
from librarian.storage.port import CollectionSpec, PointRecord

POINTS = 240
DIM = 4
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]
COLORS = ["red", "green", "blue", "black"]
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def _payload(rng: random.Random) -> dict[str, Any]:
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


def _points(seed: int) -> list[PointRecord]:
    rng = random.Random(seed)
    return [
        PointRecord(
            id=i,
            vector=[rng.uniform(-1, 1) for _ in range(DIM)],
            payload=_payload(rng),
        )
        for i in range(POINTS)
    ]


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
    key, values = rng.choice(
        [
            ("tags", COLORS),
            ("color", COLORS),
            ("nums", list(range(10))),
            ("n", list(range(-5, 6))),
        ]
    )
    chosen = rng.sample(values, rng.randint(0, 3))  # empty lists too
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
    return models.HasIdCondition(has_id=rng.sample(range(POINTS + 20), rng.randint(1, 30)))


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


def _field_condition(rng: random.Random) -> models.Condition:
    return rng.choice(CONDITION_MAKERS)(rng)


def _filter(rng: random.Random, depth: int = 0) -> models.Filter:
    def some() -> list[models.Condition]:
        return [
            _filter(rng, depth + 1) if depth < 2 and rng.random() < 0.2 else _field_condition(rng)
            for _ in range(rng.randint(1, 3))
        ]

    clauses: dict[str, Any] = {}
    for clause in ("must", "should", "must_not"):
        if rng.random() < 0.45:
            clauses[clause] = some()
    if rng.random() < 0.35:
        conditions = [*some(), _field_condition(rng)]
        clauses["min_should"] = models.MinShould(
            conditions=conditions, min_count=rng.randint(1, len(conditions))
        )
    if not clauses:
        clauses["must"] = some()
    return models.Filter(**clauses)


SPEC = CollectionSpec(vector_size=DIM, distance="Cosine")


@pytest.fixture
def reference() -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    client.create_collection(
        "docs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
    )
    client.upsert(
        "docs",
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in _points(7)],
    )
    yield client
    client.close()


@pytest.fixture(params=["unindexed", "keyword-indexed"])
def embedded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedQdrant]:
    """The same points; once as stored, once with keyword indexes built and in use."""
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    port.create_collection("docs", SPEC)
    port.upsert("docs", _points(7))
    if request.param == "keyword-indexed":
        for key in ("color", "tags", "text", "meta.owner", "items[].kind"):
            port.create_keyword_index("docs", key)
        port.optimize("docs")
    yield port
    port.close()


def _reference_ids(client: QdrantClient, flt: models.Filter) -> set[Any]:
    records, _ = client.scroll("docs", scroll_filter=flt, limit=POINTS * 2, with_payload=False)
    return {r.id for r in records}


def _embedded_ids(port: EmbeddedQdrant, flt: models.Filter) -> set[Any]:
    records, _ = port.scroll("docs", limit=POINTS * 2, scroll_filter=flt, with_vectors=False)
    return {r.id for r in records}


def test_generated_filters_select_what_qdrant_selects(
    reference: QdrantClient, embedded: EmbeddedQdrant
) -> None:
    rng = random.Random(20240101)
    sizes = set()
    for number in range(400):
        flt = _filter(rng)
        expected = _reference_ids(reference, flt)
        got = _embedded_ids(embedded, flt)
        assert got == expected, (
            f"filter #{number} {flt!r}: extra {got - expected}, missing {expected - got}"
        )
        assert embedded.count("docs", count_filter=flt) == len(expected), f"filter #{number}"
        sizes.add(len(expected))
    # The generator must exercise the filters, not only match nothing or everything.
    assert len(sizes) > 50


def test_min_should_is_applied_not_dropped(
    reference: QdrantClient, embedded: EmbeddedQdrant
) -> None:
    conditions: list[models.Condition] = [
        models.FieldCondition(key="color", match=models.MatchValue(value="red")),
        models.FieldCondition(key="flag", match=models.MatchValue(value=True)),
        models.FieldCondition(key="n", range=models.Range(gte=0)),
    ]
    flt = models.Filter(min_should=models.MinShould(conditions=conditions, min_count=2))
    expected = _reference_ids(reference, flt)
    assert 0 < len(expected) < POINTS
    assert embedded.count("docs", count_filter=flt) == len(expected)
    embedded.delete_points("docs", points_filter=flt)
    assert embedded.count("docs") == POINTS - len(expected)
    assert (
        _embedded_ids(embedded, models.Filter(must=[models.HasIdCondition(has_id=list(expected))]))
        == set()
    )


def test_delete_by_generated_filters_deletes_exactly_the_selection(
    reference: QdrantClient, embedded: EmbeddedQdrant
) -> None:
    rng = random.Random(99)
    remaining = POINTS
    for _ in range(12):
        flt = _filter(rng)
        expected = _reference_ids(reference, flt)
        reference.delete("docs", points_selector=models.FilterSelector(filter=flt))
        embedded.delete_points("docs", points_filter=flt)
        remaining -= len(expected)
        assert embedded.count("docs") == remaining
        assert _embedded_ids(embedded, models.Filter()) == _reference_ids(
            reference, models.Filter()
        )


def test_has_vector_and_slice_translate(embedded: EmbeddedQdrant) -> None:
    every = models.Filter(must=[models.HasVectorCondition(has_vector="")])
    assert embedded.count("docs", count_filter=every) == POINTS
    slices = [
        _embedded_ids(
            embedded,
            models.Filter(must=[models.SliceCondition(slice=models.Slice(total=3, index=i))]),
        )
        for i in range(3)
    ]
    assert set().union(*slices) == set(range(POINTS))
    assert sum(len(s) for s in slices) == POINTS
    assert all(slices)


def test_datetime_bounds_accept_naive_aware_and_text(embedded: EmbeddedQdrant) -> None:
    def count(bound: Any) -> int:
        flt = models.Filter(
            must=[models.FieldCondition(key="at", range=models.DatetimeRange(lt=bound))]
        )
        return embedded.count("docs", count_filter=flt)

    moment = EPOCH + timedelta(days=30)
    same = {
        count(moment),
        count(moment.replace(tzinfo=None)),
        count("2024-01-31T00:00:00Z"),
        count(date(2024, 1, 31)),  # a date is its midnight, UTC
        count(moment.astimezone(ZoneInfo("Europe/Paris"))),
    }
    assert len(same) == 1
    assert 0 < same.pop() < POINTS


def _condition_classes() -> list[type]:
    return list(typing.get_args(models.Condition))


def _match_classes() -> list[type]:
    return list(typing.get_args(models.Match))


def _field_checks() -> list[str]:
    return [name for name in models.FieldCondition.model_fields if name != "key"]


def test_every_clause_and_condition_is_translated_or_refused_by_name() -> None:
    """A new clause or condition in qdrant-client cannot slip through untranslated."""
    assert set(models.Filter.model_fields) == {"must", "should", "must_not", "min_should"}
    known_conditions = {
        models.FieldCondition,
        models.IsEmptyCondition,
        models.IsNullCondition,
        models.HasIdCondition,
        models.HasVectorCondition,
        models.SliceCondition,
        models.NestedCondition,
        models.Filter,
    }
    assert set(_condition_classes()) == known_conditions, "new condition: translate it"
    known_matches = {
        models.MatchValue,
        models.MatchText,
        models.MatchTextAny,
        models.MatchPhrase,
        models.MatchPrefix,
        models.MatchSubstring,
        models.MatchAny,
        models.MatchExcept,
    }
    assert set(_match_classes()) == known_matches, "new match: translate it"
    assert set(_field_checks()) == {
        "match",
        "range",
        "geo_bounding_box",
        "geo_radius",
        "geo_polygon",
        "values_count",
        "is_empty",
        "is_null",
    }, "new field check: translate it"


def _unknown(name: str) -> Any:
    return type(name, (), {})()


@pytest.mark.parametrize("clause", ["must", "should", "must_not"])
def test_unknown_condition_is_refused_by_name(clause: str) -> None:
    flt = models.Filter.model_construct(**{clause: [_unknown("GeoShapeCondition")]})
    with pytest.raises(edge_filters.UnsupportedFilter, match="GeoShapeCondition"):
        edge_filters.to_edge_filter(flt)
    flt = models.Filter.model_construct(
        min_should=models.MinShould.model_construct(
            conditions=[_unknown("FancyCondition")], min_count=1
        )
    )
    with pytest.raises(edge_filters.UnsupportedFilter, match="FancyCondition"):
        edge_filters.to_edge_filter(flt)


def test_unknown_match_and_range_and_empty_field_condition_are_refused(
    embedded: EmbeddedQdrant,
) -> None:
    cases = [
        (
            models.FieldCondition.model_construct(key="k", match=_unknown("MatchRegex")),
            "MatchRegex",
        ),
        (models.FieldCondition.model_construct(key="k", range=_unknown("RangeIp")), "RangeIp"),
        (models.FieldCondition(key="k"), "exactly one of"),
        (
            models.FieldCondition(
                key="k", match=models.MatchValue(value=1), range=models.Range(gt=0)
            ),
            "got match, range",
        ),
    ]
    for condition, name in cases:
        flt = models.Filter(must=[condition])
        with pytest.raises(InvalidRequest, match=name):
            embedded.count("docs", count_filter=flt)
        with pytest.raises(InvalidRequest, match=name):
            embedded.delete_points("docs", points_filter=flt)
    assert embedded.count("docs") == POINTS  # a refused filter deletes nothing


def test_every_known_condition_translates() -> None:
    """Each class of the union (and each match) becomes an engine object, never None."""
    examples: dict[type, Any] = {
        models.FieldCondition: models.FieldCondition(key="k", match=models.MatchValue(value="v")),
        models.IsEmptyCondition: models.IsEmptyCondition(is_empty=models.PayloadField(key="k")),
        models.IsNullCondition: models.IsNullCondition(is_null=models.PayloadField(key="k")),
        models.HasIdCondition: models.HasIdCondition(has_id=[1]),
        models.HasVectorCondition: models.HasVectorCondition(has_vector=""),
        models.SliceCondition: models.SliceCondition(slice=models.Slice(total=2, index=0)),
        models.NestedCondition: models.NestedCondition(
            nested=models.Nested(key="items", filter=models.Filter())
        ),
        models.Filter: models.Filter(),
    }
    assert set(examples) == set(_condition_classes())
    for cls, condition in examples.items():
        translated = repr(edge_filters.to_edge_filter(models.Filter(must=[condition])))
        assert translated.startswith(f"Filter(must=[{cls.__name__}("), translated
    matches: dict[type, Any] = {
        models.MatchValue: models.MatchValue(value=True),
        models.MatchText: models.MatchText(text="a"),
        models.MatchTextAny: models.MatchTextAny(text_any="a b"),
        models.MatchPhrase: models.MatchPhrase(phrase="a b"),
        models.MatchPrefix: models.MatchPrefix(prefix="a"),
        models.MatchSubstring: models.MatchSubstring(substring="a"),
        models.MatchAny: models.MatchAny(any=[1, 2]),
        models.MatchExcept: models.MatchExcept(**{"except": ["a"]}),
    }
    assert set(matches) == set(_match_classes())
    for cls, match in matches.items():
        condition = models.FieldCondition(key="k", match=match)
        assert f"match={cls.__name__}(" in repr(  # the engine's repr spells it r#match
            edge_filters.to_edge_filter(models.Filter(must=[condition]))
        )
