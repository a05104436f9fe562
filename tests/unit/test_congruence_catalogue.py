"""The congruence catalogue itself: it finds two equal collections equal, and tells a wrong
answer from a refusal.

The router's congruence tests and report rest on this judge, so a judge that
could not fail would make them worthless: here one backend is local mode with a
point changed or with a call that answers 400, and the verdicts must say so.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.testing import congruence
from librarian.testing.congruence import Case

pytestmark = pytest.mark.timeout(120)

POINTS = congruence.congruence_points(160)


def _collection(points: list[models.PointStruct]) -> QdrantClient:
    client = QdrantClient(":memory:")
    client.create_collection(
        "lib",
        vectors_config=congruence.vectors_config(),
        sparse_vectors_config=congruence.sparse_vectors_config(),
    )
    client.upsert("lib", points)
    return client


@pytest.fixture
def reference() -> Iterator[QdrantClient]:
    client = _collection(POINTS)
    yield client
    client.close()


def _outcomes(verdicts: list[congruence.Verdict]) -> dict[str, int]:
    counts = {"correct": 0, "refused": 0, "wrong": 0}
    for verdict in verdicts:
        counts[verdict.outcome] += 1
    return counts


def test_equal_collections_are_judged_correct_for_every_case(reference: QdrantClient) -> None:
    other = _collection(POINTS)
    cases = [  # local mode keeps no payload index, so the index cases cannot pass on it
        case
        for case in congruence.read_cases(POINTS) + congruence.write_cases(POINTS)
        if "payload_index" not in case.method
    ]
    verdicts = congruence.judge_all(cases, reference, other, "lib")
    assert [v.detail for v in verdicts if v.outcome != "correct"] == []
    assert {row[0] for row in congruence.summary(verdicts)} >= {
        "query: recommend (best_score)",
        "query groups",
        "facet",
        "scroll: order_by",
        "update vectors",
    }


def test_a_changed_point_makes_the_cases_that_see_it_wrong(reference: QdrantClient) -> None:
    changed = list(POINTS)
    changed[1] = models.PointStruct(
        id=changed[1].id, vector=changed[1].vector, payload={**changed[1].payload, "n": 1000}
    )
    verdicts = congruence.judge_all(
        [
            Case("scroll", "scroll", {"limit": 5}, congruence.compare_records),
            Case("retrieve", "retrieve", {"ids": [POINTS[1].id]}, congruence.compare_records),
            Case("count", "count", {"exact": True}, congruence.compare_equal),
        ],
        reference,
        _collection(changed),
        "lib",
    )
    assert [v.outcome for v in verdicts] == ["wrong", "wrong", "correct"]
    assert "payload" in verdicts[0].detail


def test_a_missing_point_or_a_reordered_page_is_wrong(reference: QdrantClient) -> None:
    fewer = _collection(POINTS[:-1])
    query = congruence.read_cases(POINTS)[0]
    shallower = Case(query.operation, query.method, {**query.kwargs, "limit": 9})
    assert (
        _outcomes(
            congruence.judge_all(
                [Case("count", "count", {}, congruence.compare_equal)], reference, fewer, "lib"
            )
        )["wrong"]
        == 1
    )

    class Truncating:
        """Answers the same query with one hit fewer."""

        def __init__(self, inner: QdrantClient) -> None:
            self.inner = inner

        def query_points(self, **kwargs: Any) -> Any:
            kwargs["limit"] = shallower.kwargs["limit"]
            return self.inner.query_points(**kwargs)

    verdicts = congruence.judge_all([query], reference, Truncating(_collection(POINTS)), "lib")
    assert verdicts[0].outcome == "wrong"


def test_an_index_call_is_judged_on_the_payload_schema_it_leaves(
    reference: QdrantClient,
) -> None:
    index = next(c for c in congruence.write_cases(POINTS) if c.method == "create_payload_index")
    # Local mode accepts the call but lists no index: the judge must see that.
    verdict = congruence.judge_all([index], reference, _collection(POINTS), "lib")[0]
    assert verdict.outcome == "wrong"
    assert "not listed" in verdict.detail


def test_a_4xx_is_a_refusal_and_a_5xx_is_wrong(reference: QdrantClient) -> None:
    class Answering:
        def __init__(self, status: int) -> None:
            self.status = status

        def count(self, **kwargs: Any) -> Any:
            raise UnexpectedResponse(
                self.status,
                "x",
                b'{"status":{"error":"Bad request: not served"}}',
                None,  # type: ignore[arg-type]
            )

    case = Case("count", "count", {}, congruence.compare_equal)
    refused = congruence.judge_all([case], reference, Answering(400), "lib")[0]
    failed = congruence.judge_all([case], reference, Answering(502), "lib")[0]
    assert (refused.outcome, failed.outcome) == ("refused", "wrong")
    assert "not served" in refused.detail
