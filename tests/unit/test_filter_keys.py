"""Finding the filters of a parsed request body, wherever Qdrant's models nest them."""

from __future__ import annotations

from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, PARTITION_KEY
from librarian.router.filter_keys import filters_in, reserved_filter_keys


def _on(key: str) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key=key, match=models.MatchValue(value=1))])


def test_filters_are_found_in_nested_prefetches_batches_and_update_operations() -> None:
    query = models.QueryRequest(
        query=[0.1] * 8,
        prefetch=[models.Prefetch(prefetch=[models.Prefetch(query=[0.2] * 8, filter=_on("a"))])],
        filter=_on("b"),
    )
    batch = models.QueryRequestBatch(searches=[query, models.QueryRequest(filter=_on("c"))])
    operations = models.UpdateOperations(
        operations=[
            models.SetPayloadOperation(
                set_payload=models.SetPayload(payload={"x": 1}, filter=_on(LABEL_KEY))
            ),
            models.DeleteOperation(delete=models.FilterSelector(filter=_on(f"{PARTITION_KEY}[]"))),
        ]
    )
    assert len(list(filters_in(batch))) == 3
    assert reserved_filter_keys(batch) == []
    assert reserved_filter_keys(operations) == [LABEL_KEY, f"{PARTITION_KEY}[]"]


def test_payloads_and_vectors_are_not_mistaken_for_filters() -> None:
    """A payload may hold anything the client likes, a key named like a reserved one too (it
    is refused as a payload elsewhere, not as a filter); vectors are numbers."""
    points = models.PointsList(
        points=[
            models.PointStruct(id=1, vector=[0.5] * 8, payload={"must": [{"key": LABEL_KEY}]}),
            models.PointStruct(id=2, vector={"text": [0.5] * 8}, payload={}),
        ],
        update_filter=_on("tag"),
    )
    assert [f.must for f in filters_in(points)] == [_on("tag").must]
    assert reserved_filter_keys(points) == []
