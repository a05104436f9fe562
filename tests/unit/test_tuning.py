"""Tuning core: each strategy's choices, growth, load, memory budget and overrides."""

from __future__ import annotations

import pytest

from librarian.core.tuning import (
    OPTIMIZATION_STRATEGIES,
    DomainStats,
    TuningError,
    estimate_footprint,
    tune_collection,
)

SMALL = DomainStats(points=20_000, dimension=384)
BIG = DomainStats(points=3_000_000, dimension=768, queries_per_second=300)


@pytest.mark.parametrize("strategy", OPTIMIZATION_STRATEGIES)
def test_every_strategy_gives_a_complete_config(strategy: str) -> None:
    tuned = tune_collection(BIG, strategy)
    spec = tuned.collection
    assert spec.vector_size == 768
    assert spec.distance == "Cosine"
    assert spec.hnsw is not None
    assert spec.hnsw.m
    assert spec.hnsw.ef_construct
    assert tuned.search.hnsw_ef > 0
    assert tuned.estimated_ram_bytes > 0
    assert tuned.estimated_disk_bytes >= tuned.estimated_ram_bytes
    assert tuned.rationale


def test_strategies_differ_where_they_should() -> None:
    latency, throughput, accuracy, balanced = (
        tune_collection(BIG, s) for s in ("latency", "throughput", "accuracy", "balanced")
    )
    assert accuracy.collection.quantization is None
    assert accuracy.collection.hnsw.m > latency.collection.hnsw.m > throughput.collection.hnsw.m  # type: ignore[union-attr]
    assert accuracy.search.hnsw_ef > balanced.search.hnsw_ef > throughput.search.hnsw_ef
    assert latency.collection.quantization is not None
    assert latency.search.rescore
    assert latency.search.oversampling == 2.0
    assert throughput.collection.quantization is not None
    assert not throughput.search.rescore
    assert throughput.collection.shard_number >= 2  # type: ignore[operator]
    assert throughput.collection.optimizers.default_segment_number == 2  # type: ignore[union-attr]
    assert latency.collection.replication_factor == 2  # 300 qps >= 100
    assert accuracy.collection.replication_factor == 1


def test_balanced_quantizes_only_large_domains() -> None:
    assert tune_collection(SMALL, "balanced").collection.quantization is None
    assert tune_collection(BIG, "balanced").collection.quantization is not None


def test_growth_sizes_for_the_future() -> None:
    growing = DomainStats(points=90_000, dimension=384, growth_per_day=0.01)
    tuned = tune_collection(growing, "balanced")
    assert tuned.collection.quantization is not None  # 90k grows past 100k within 30 days
    assert any("30 days" in r for r in tuned.rationale)


def test_memory_budget_moves_vectors_then_graph_to_disk() -> None:
    unlimited = tune_collection(BIG, "accuracy")
    ram, _ = estimate_footprint(unlimited.collection, BIG.points)
    tight = tune_collection(
        DomainStats(points=BIG.points, dimension=768, memory_budget_bytes=ram // 3), "accuracy"
    )
    assert tight.collection.on_disk_vectors is True
    assert tight.collection.quantization is not None
    assert tight.search.rescore
    assert tight.estimated_ram_bytes < ram
    tiny = tune_collection(
        DomainStats(points=BIG.points, dimension=768, memory_budget_bytes=10_000), "accuracy"
    )
    assert tiny.collection.hnsw.on_disk is True  # type: ignore[union-attr]


def test_overrides_win_for_every_strategy() -> None:
    tuned = tune_collection(
        BIG,
        "latency",
        {
            "m": 64,
            "hnsw_ef": 300,
            "quantization": "none",
            "shard_number": 5,
            "on_disk_vectors": True,
        },
    )
    spec = tuned.collection
    assert spec.hnsw.m == 64
    assert tuned.search.hnsw_ef == 300
    assert spec.quantization is None
    assert not tuned.search.rescore
    assert spec.shard_number == 5
    assert spec.on_disk_vectors is True
    custom = tune_collection(SMALL, "custom", {"quantization": "product"})
    assert custom.collection.quantization.kind == "product"  # type: ignore[union-attr]
    binary = tune_collection(SMALL, "custom", {"quantization": "binary"})
    assert binary.estimated_ram_bytes < custom.estimated_ram_bytes * 4


def test_footprint_reflects_quantization_and_disk() -> None:
    base = tune_collection(SMALL, "accuracy").collection
    ram_full, _ = estimate_footprint(base, 100_000)
    quantized = tune_collection(
        SMALL, "custom", {"quantization": "scalar", "on_disk_vectors": True}
    ).collection
    ram_q, disk_q = estimate_footprint(quantized, 100_000)
    assert ram_q < ram_full / 2
    assert disk_q > ram_q


@pytest.mark.parametrize(
    ("strategy", "overrides", "message"),
    [
        ("fastest", None, "unknown optimization strategy 'fastest'; accepted: latency"),
        ("custom", {"colour": 1}, "unknown override"),
        ("custom", {"m": 0}, "m must be a positive integer"),
        ("custom", {"quantization": "fp8"}, "accepted: none, scalar, product, binary"),
        ("custom", {"oversampling": 0.5}, "oversampling must be a number >= 1"),
    ],
)
def test_bad_input(strategy: str, overrides: dict[str, object] | None, message: str) -> None:
    with pytest.raises(TuningError, match=message):
        tune_collection(SMALL, strategy, overrides)


def test_bad_stats() -> None:
    with pytest.raises(TuningError, match="dimension >= 1"):
        tune_collection(DomainStats(points=10, dimension=0))
