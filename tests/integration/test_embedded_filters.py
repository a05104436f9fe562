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
from datetime import date, timedelta
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
from librarian.testing.congruence_data import EPOCH, random_filter, random_payload

POINTS = 240
DIM = 4


def _points(seed: int) -> list[PointRecord]:
    rng = random.Random(seed)
    return [
        PointRecord(
            id=i,
            vector=[rng.uniform(-1, 1) for _ in range(DIM)],
            payload=random_payload(rng),
        )
        for i in range(POINTS)
    ]


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
        flt = random_filter(rng)
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
        flt = random_filter(rng)
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
