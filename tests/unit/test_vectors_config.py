"""The full vectors config: choosing the routing vector, homes with the source's vectors,
immutable layout changes, placing points without the routing vector, checking vectors."""

from __future__ import annotations

from collections import Counter

import pytest
from qdrant_client.http import models

from librarian.core.collection_spec import (
    CollectionSpec,
    DenseVectorSpec,
    HnswSpec,
    QuantizationSpec,
    RoutingVectorError,
    SparseVectorSpec,
    diff_specs,
    routing_vector_name,
    with_source_vectors,
)
from librarian.core.tuning import DomainStats, estimate_footprint, tune_collection
from librarian.core.unrouted import domain_for_unrouted
from librarian.kube.spec import parse_domainmap_spec
from librarian.router.loader import definition_from_catalog
from librarian.services.catalog import CatalogEntry
from librarian.storage.vectors import VectorError, checked_vectors, routing_vector, vectors_json

NAMED = CollectionSpec(
    vectors={
        "text": DenseVectorSpec(size=8),
        "image": DenseVectorSpec(size=4, distance="Dot", hnsw=HnswSpec(m=4)),
        "late": DenseVectorSpec(size=2, multivector="max_sim"),
    },
    sparse_vectors={"bm25": SparseVectorSpec(modifier="idf")},
)


def test_the_routing_vector_is_the_default_one_or_the_one_named() -> None:
    assert routing_vector_name(CollectionSpec(vector_size=3)) == ""
    one = CollectionSpec(
        vectors={"a": DenseVectorSpec(size=2), "m": DenseVectorSpec(size=2, multivector="max_sim")}
    )
    assert routing_vector_name(one) == "a"  # the only plain dense vector
    assert routing_vector_name(NAMED, "image") == "image"
    with pytest.raises(RoutingVectorError, match=r"several dense vectors \('image', 'text'\)"):
        routing_vector_name(NAMED)
    with pytest.raises(RoutingVectorError, match="sparse vector.*'image', 'text'"):
        routing_vector_name(NAMED, "bm25")
    with pytest.raises(RoutingVectorError, match="multivector"):
        routing_vector_name(NAMED, "late")
    with pytest.raises(RoutingVectorError, match="not a vector of the collection"):
        routing_vector_name(NAMED, "nope")
    with pytest.raises(RoutingVectorError, match="no plain dense vector"):
        routing_vector_name(CollectionSpec(sparse_vectors={"s": SparseVectorSpec()}))


def test_a_spec_has_either_an_unnamed_vector_or_named_ones() -> None:
    with pytest.raises(ValueError, match="not both"):
        CollectionSpec(vector_size=3, vectors={"a": DenseVectorSpec(size=3)})
    with pytest.raises(ValueError, match="non-empty name"):
        CollectionSpec(vectors={"": DenseVectorSpec(size=3)})


def test_a_home_gets_every_vector_of_the_source_tuned_on_the_routing_one() -> None:
    tuned = tune_collection(DomainStats(points=500_000, dimension=8, distance="Cosine"), "latency")
    home = with_source_vectors(tuned.collection, NAMED, "text")
    assert home.layout() == NAMED.layout()
    assert home.vectors["text"].hnsw == tuned.collection.hnsw
    assert home.vectors["text"].quantization == tuned.collection.quantization
    assert home.vectors["image"].hnsw == HnswSpec(m=4)  # its own setting kept
    assert home.hnsw == tuned.collection.hnsw  # the default for the others
    assert home.sparse_vectors == NAMED.sparse_vectors
    unnamed = CollectionSpec(vector_size=8, sparse_vectors={"s": SparseVectorSpec()})
    assert with_source_vectors(tuned.collection, unnamed, "").sparse_vectors == {
        "s": SparseVectorSpec()
    }
    # every plain dense vector counts in the footprint (8 + 4 dimensions, not 8)
    ram_named, _ = estimate_footprint(CollectionSpec(vectors=dict(NAMED.vectors)), 1000)
    ram_one, _ = estimate_footprint(CollectionSpec(vector_size=8), 1000)
    assert ram_named - ram_one == 1000 * 4 * 4


def test_a_different_layout_is_an_immutable_change() -> None:
    grown = CollectionSpec(vectors={**NAMED.vectors, "extra": DenseVectorSpec(size=2)})
    mutable, immutable = diff_specs(NAMED, grown)
    assert [c.field for c in immutable] == ["vectors"]
    assert not mutable
    assert diff_specs(NAMED, NAMED) == ([], [])
    tuned = CollectionSpec(
        vectors=dict(NAMED.vectors),
        sparse_vectors=dict(NAMED.sparse_vectors),
        quantization=QuantizationSpec(kind="scalar"),
    )
    mutable, immutable = diff_specs(NAMED, tuned)
    assert (immutable, [c.field for c in mutable]) == ([], ["quantization"])


def test_points_without_the_routing_vector_are_spread_deterministically() -> None:
    domains = ["d-a", "d-b", "d-c"]
    first = [domain_for_unrouted(i, domains) for i in range(3000)]
    assert first == [domain_for_unrouted(i, list(reversed(domains))) for i in range(3000)]
    counts = Counter(first)
    assert set(counts) == set(domains)
    assert min(counts.values()) > 800  # evenly spread
    uuid = "0f8c1a52-4e2b-4a5e-9c1d-2b3c4d5e6f70"
    assert domain_for_unrouted(uuid, domains) == domain_for_unrouted(uuid.upper(), domains)
    with pytest.raises(ValueError, match="without domains"):
        domain_for_unrouted(1, [])


def test_vectors_are_checked_as_qdrant_checks_them() -> None:
    checked = checked_vectors(
        {"text": [1] * 8, "bm25": {"indices": [5, 2], "values": [0.5, 0.2]}, "late": [[1, 2]]},
        NAMED,
    )
    assert checked == {
        "text": [1.0] * 8,
        "bm25": models.SparseVector(indices=[2, 5], values=[0.2, 0.5]),
        "late": [[1.0, 2.0]],
    }
    assert routing_vector(checked, "text") == [1.0] * 8
    assert routing_vector(checked, "late") is None
    assert routing_vector(checked, "image") is None
    assert vectors_json(checked)["bm25"] == {"indices": [2, 5], "values": [0.2, 0.5]}  # type: ignore[index]
    assert checked_vectors({}, NAMED) == {}  # a point may lack every named vector
    for bad, words in (
        ({"nope": [1.0]}, "Not existing vector name error: nope"),
        ({"text": [1.0]}, "expected dim: 8, got 1 for vector 'text'"),
        ({"late": []}, "Multivector must be a non-empty list"),
        ({"late": [[1.0, 2.0, 3.0]]}, "expected dim: 2, got 3"),
        ({"bm25": {"indices": [1, 1], "values": [1.0, 2.0]}}, "unique"),
        ({"bm25": {"indices": [-1], "values": [1.0]}}, "non-negative"),
        ({"image": [float("inf")] * 4}, "NaN or infinite"),
        ({"text": "abcdefgh"}, "one-dimensional"),
        ([1.0] * 8, "Unnamed vectors are not allowed"),
    ):
        with pytest.raises(VectorError, match=words):
            checked_vectors(bad, NAMED)
    unnamed = CollectionSpec(vector_size=2)
    assert checked_vectors([1, 2], unnamed) == [1.0, 2.0]
    with pytest.raises(VectorError, match="Not existing vector name error: a"):
        checked_vectors({"a": [1.0, 2.0]}, unnamed)
    # a collection of payloads only has no vector of any name, the unnamed one included
    with pytest.raises(VectorError, match="Not existing vector name error"):
        checked_vectors([0.1, 0.2, 0.3], CollectionSpec())
    assert checked_vectors({}, CollectionSpec()) == {}


def test_the_domainmap_spec_reads_the_source_vector() -> None:
    base = {
        "source": {"cluster": "c", "collection": "docs"},
        "clusters": [{"name": "c", "url": "http://q:6333"}],
    }
    assert parse_domainmap_spec(base, name="m").source_vector is None
    named = {**base, "source": {**base["source"], "vector": "text"}}
    assert parse_domainmap_spec(named, name="m").source_vector == "text"


def test_the_catalog_loader_passes_the_routing_vector_and_a_change_of_it_reloads() -> None:
    entry = CatalogEntry(
        owner="o",
        domain_id="d1",
        name="one",
        centroid=[1.0, 0.0],
        size=3,
        radius=0.1,
        cohesion=0.9,
        keywords=(),
        version=1,
    )
    plain = definition_from_catalog([entry], name="lib", source=("c", "docs"), homes={})
    named = definition_from_catalog(
        [entry], name="lib", source=("c", "docs"), homes={}, vector="text"
    )
    assert plain is not None
    assert named is not None
    assert (plain.vector, named.vector) == (None, "text")
    assert plain.version != named.version  # the router rebuilds its routing model
