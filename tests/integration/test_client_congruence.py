"""The official client gets from a library what one Qdrant collection gives, for every operation.

A library of four domains on two embedded clusters, routed on its named vector
``text`` (its points also carry other named, sparse and multi vectors), filled
through the router; the reference is qdrant-client's local mode holding the same
points in one collection. Every case of the congruence catalogue (each query
kind, groups, facets, matrices, scroll, count, retrieve, collection calls,
writes followed by a comparison of the whole collection, then the reads again)
runs through REST and gRPC, with the sync and the async client. No case may be
answered differently; the only refusals allowed are listed here with the reason
the router gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from librarian.testing import congruence

pytestmark = pytest.mark.timeout(600)

POINTS = congruence.congruence_points(250)

# Operations the router refuses on a library, with words of the reason it gives.
ALLOWED_REFUSALS: dict[str, str] = {
    "query groups: fused prefetch": "each home would fuse or rescore only its own candidates",
    "query: mmr on a multivector": "mmr over a library is served for dense vectors",
    "query: formula over a fused prefetch": "which the library's homes cannot compute apart",
    "update collection": "tuned per domain by its ClusterSpecializations",
}


@pytest.mark.parametrize(
    ("transport", "sharded", "by_field"),
    [
        *((t, False, False) for t in congruence.TRANSPORTS),
        ("rest", True, False),
        ("rest", True, True),
    ],
    ids=[*congruence.TRANSPORTS, "rest-sharded-homes", "rest-partition-field-homes"],
)
def test_every_operation_is_answered_as_one_collection_answers(
    transport: str, sharded: bool, by_field: bool, tmp_path: Path
) -> None:
    """(``rest-sharded-homes``: every home sharded by partition, writes placed by key;
    ``rest-partition-field-homes``: every home one shard, each point's partition in the
    indexed partition field.)"""
    verdicts = congruence.judge_transport(
        tmp_path, transport, POINTS, sharded=sharded, by_field=by_field
    )
    wrong = [f"{v.case.operation}: {v.detail}" for v in verdicts if v.outcome == "wrong"]
    assert wrong == []
    refused = [v for v in verdicts if v.outcome == "refused"]
    unexpected = [
        f"{v.case.operation}: {v.detail}"
        for v in refused
        if ALLOWED_REFUSALS.get(v.case.operation, "\0") not in v.detail
    ]
    assert unexpected == []
    covered = {v.case.operation for v in verdicts if v.outcome == "correct"}
    assert {
        "query: recommend (average_vector)",
        "query: discover",
        "query: context",
        "query: order_by (asc)",
        "query: fusion (dbsf)",
        "query: formula",
        "query: mmr",
        "query: nearest (sparse-text)",
        "query: nearest (multi-text)",
        "query groups",
        "facet",
        "search matrix pairs",
        "scroll: order_by",
        "collection info",
        "update vectors",
        "upsert (update_filter)",
        "upsert (update_mode)",
        "create payload index",
    } <= covered
