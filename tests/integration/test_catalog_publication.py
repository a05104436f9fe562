"""Publishing a catalog atomically, on both storage adapters.

Readers (routers, re-analyses) must never see half of a publication: a writer
killed before its flip leaves the previous publication served; a writer the
head no longer wants publishes nothing; a catalog written before heads existed
is read as it was, and replaced whole by the first publication.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from qdrant_client.http import models

from librarian.core.discovery import DiscoveryResult, discover
from librarian.services.catalog import (
    OWNER_KEY,
    PUBLICATION_KEY,
    PublicationSuperseded,
    catalog_point_id,
    claim_publication,
    discard_publication,
    labels_pending,
    mark_labelled,
    read_catalog,
    read_head,
    read_partitions,
    read_previous,
    read_published,
    write_catalog,
)
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

DIM = 16


def _result(seed: int, n_domains: int = 3) -> DiscoveryResult:
    vectors = np.random.default_rng(seed).standard_normal((300, DIM)).astype(np.float32)
    return discover(vectors, n_domains=n_domains, min_domains=1, min_partition_size=20)


def _publish(port: QdrantPort, result: DiscoveryResult, version: int, name: str, **kw: Any) -> None:
    write_catalog(
        port,
        "catalog",
        "dm",
        result.domains,
        version,
        partitions=result.partitions,
        publication=name,
        **kw,
    )


def _of(port: QdrantPort, publication: str) -> int:
    flt = models.Filter(
        must=[
            models.FieldCondition(key=PUBLICATION_KEY, match=models.MatchValue(value=publication))
        ]
    )
    return port.count("catalog", count_filter=flt)


class _KilledAtTheFlip:
    """The port as a pod killed just before its head flip sees it."""

    def __init__(self, port: QdrantPort) -> None:
        self._port = port

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)

    def set_payload(self, collection: str, payload: Any, *args: Any, **kwargs: Any) -> None:
        if PUBLICATION_KEY in payload:
            raise RuntimeError("killed")
        self._port.set_payload(collection, payload, *args, **kwargs)


def test_a_publication_killed_before_its_flip_is_never_read_and_its_rerun_publishes(
    port: QdrantPort,
) -> None:
    first, second = _result(0), _result(1, n_domains=4)
    claim_publication(port, "catalog", "dm", "a", DIM)
    assert read_published(port, "catalog", "dm").entries == []  # claimed, nothing published
    _publish(port, first, 1, "a")
    before = read_published(port, "catalog", "dm")
    assert {e.domain_id for e in before.entries} == {d.id for d in first.domains}
    assert len(before.partitions) == len(first.partitions)

    claim_publication(port, "catalog", "dm", "b", DIM)
    with pytest.raises(RuntimeError, match="killed"):
        _publish(_KilledAtTheFlip(port), second, 2, "b")  # type: ignore[arg-type]
    assert _of(port, "b") == len(second.domains) + len(second.partitions)  # written ...
    assert read_published(port, "catalog", "dm") == before  # ... and not read
    assert read_catalog(port, "catalog", "dm") == before.entries
    assert read_partitions(port, "catalog", "dm") == before.partitions
    assert [d.id for d in read_previous(port, "catalog", "dm")[0]] == [
        e.domain_id for e in before.entries
    ]

    _publish(port, second, 2, "b", labelled=False, report={"domainCount": 4})
    after = read_published(port, "catalog", "dm")
    assert {e.domain_id for e in after.entries} == {d.id for d in second.domains}
    assert {e.version for e in after.entries} == {2}
    assert after.pending
    assert _of(port, "a") == 0  # the replaced publication is gone
    head = read_head(port, "catalog", "dm")
    assert head is not None
    assert (head.publication, head.version, head.report) == ("b", 2, {"domainCount": 4})

    # A rerun after the flip changes nothing (it must not rewrite what routers serve).
    _publish(port, _result(2), 2, "b")
    assert read_published(port, "catalog", "dm") == after
    mark_labelled(port, "catalog", "dm", 1)  # an older version: not this one
    assert labels_pending(port, "catalog", "dm")
    mark_labelled(port, "catalog", "dm", 2)
    assert not labels_pending(port, "catalog", "dm")


def test_a_publication_the_head_no_longer_wants_is_not_published(port: QdrantPort) -> None:
    first = _result(0)
    _publish_first = write_catalog  # the only writer: claims v1 itself
    _publish_first(port, "catalog", "dm", first.domains, 1, partitions=first.partitions)
    served = read_published(port, "catalog", "dm")
    claim_publication(port, "catalog", "dm", "stale", DIM)
    claim_publication(port, "catalog", "dm", "fresh", DIM)  # the spec changed meanwhile
    with pytest.raises(PublicationSuperseded):
        _publish(port, _result(3), 2, "stale")
    assert _of(port, "stale") == 0
    assert read_published(port, "catalog", "dm") == served
    _publish(port, _result(4), 2, "fresh")
    assert read_head(port, "catalog", "dm").publication == "fresh"  # type: ignore[union-attr]

    # A writer the head stopped wanting between its entries and its flip: the flip is refused.
    claim_publication(port, "catalog", "dm", "late", DIM)

    class _ClaimedAway:
        def __getattr__(self, name: str) -> Any:
            return getattr(port, name)

        def set_payload(self, collection: str, payload: Any, *args: Any, **kw: Any) -> None:
            if PUBLICATION_KEY in payload:
                claim_publication(port, "catalog", "dm", "newest", DIM)
            port.set_payload(collection, payload, *args, **kw)

    fresh = read_published(port, "catalog", "dm")
    with pytest.raises(PublicationSuperseded):
        _publish(_ClaimedAway(), _result(5), 3, "late")  # type: ignore[arg-type]
    assert read_published(port, "catalog", "dm") == fresh
    assert _of(port, "late") == 0
    discard_publication(port, "catalog", "dm", "fresh")  # a published one is never discarded
    assert read_published(port, "catalog", "dm") == fresh


def test_a_catalog_written_before_heads_is_read_then_replaced_whole(port: QdrantPort) -> None:
    legacy = _result(0)
    port.create_collection("catalog", CollectionSpec(vector_size=DIM))
    port.create_keyword_index("catalog", OWNER_KEY)
    points = [
        PointRecord(
            id=catalog_point_id("dm", d.id),
            vector=[float(x) for x in d.centroid],
            payload={
                "kind": "domain",
                OWNER_KEY: "dm",
                "domain_id": d.id,
                "name": d.name,
                "size": d.size,
                "radius": d.radius,
                "cohesion": d.cohesion,
                "keywords": list(d.keywords),
                "parent": None,
                "version": 1,
            },
        )
        for d in legacy.domains
    ]
    points.append(
        PointRecord(
            id=catalog_point_id("dm", "labels_pending"),
            vector=[1.0] + [0.0] * (DIM - 1),
            payload={"kind": "labels_pending", OWNER_KEY: "dm", "version": 1},
        )
    )
    port.upsert("catalog", points)
    assert {e.domain_id for e in read_catalog(port, "catalog", "dm")} == {
        d.id for d in legacy.domains
    }
    assert labels_pending(port, "catalog", "dm")
    claim_publication(port, "catalog", "dm", "first", DIM)  # still served while it runs
    assert len(read_catalog(port, "catalog", "dm")) == len(legacy.domains)
    newer = _result(6, n_domains=2)
    _publish(port, newer, 2, "first")
    assert {e.domain_id for e in read_catalog(port, "catalog", "dm")} == {
        d.id for d in newer.domains
    }
    assert not labels_pending(port, "catalog", "dm")
    assert port.count("catalog") == 1 + len(newer.domains) + len(newer.partitions)  # + head
