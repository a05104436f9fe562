"""Tuning: a concrete Qdrant collection config for one domain and one optimization strategy.

Why this exists: a specialized collection is only worth having if it is tuned
for how its domain is used. From a domain's statistics (points, dimension,
distance, growth, query load, memory budget) and a strategy this derives HNSW,
search-time ``hnsw_ef``, quantization (with rescoring and oversampling),
on-disk placement, shards, replication and optimizer thresholds, plus an
estimated footprint and the reasons for each choice. Pure: no I/O.

Strategies (the README documents them for users):

* ``latency`` — denser graph (m=32, ef_construct=200), scalar int8 vectors
  kept in RAM with rescoring (oversampling 2.0), ``hnsw_ef`` 96, indexes built
  early; more replicas under load.
* ``throughput`` — lean graph (m=16, ef_construct=100), scalar int8 in RAM
  without rescoring, ``hnsw_ef`` 64, few large segments, shards for big
  domains, replicas under load.
* ``accuracy`` — dense graph (m=48, ef_construct=400), full-precision vectors,
  ``hnsw_ef`` 256, no quantization.
* ``balanced`` — Qdrant-like graph (m=16, ef_construct=128), ``hnsw_ef`` 128,
  scalar int8 with rescoring once a domain passes 100k points.
* ``custom`` — ``balanced`` as the base; the user's overrides win (they win
  for every strategy).

When the estimated RAM exceeds ``memory_budget_bytes``, original vectors go
on disk (the quantized copy stays in RAM), then the HNSW graph too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from librarian.core.collection_spec import (
    CollectionSpec,
    Distance,
    HnswSpec,
    OptimizersSpec,
    QuantizationSpec,
)

OPTIMIZATION_STRATEGIES = ("latency", "throughput", "accuracy", "balanced", "custom")
OVERRIDE_KEYS = (
    "m",
    "ef_construct",
    "full_scan_threshold",
    "hnsw_on_disk",
    "hnsw_ef",
    "quantization",
    "quantization_always_ram",
    "rescore",
    "oversampling",
    "on_disk_vectors",
    "on_disk_payload",
    "shard_number",
    "replication_factor",
    "indexing_threshold",
    "default_segment_number",
    "max_segment_size",
)
_INT_OVERRIDES = frozenset(
    {
        "m",
        "ef_construct",
        "full_scan_threshold",
        "hnsw_ef",
        "shard_number",
        "replication_factor",
        "indexing_threshold",
        "default_segment_number",
        "max_segment_size",
    }
)
_COMPRESSION_BYTES = {"x4": 4, "x8": 8, "x16": 16, "x32": 32, "x64": 64}


class TuningError(ValueError):
    """Bad statistics, strategy or override; the message says which and what is accepted."""


@dataclass(frozen=True)
class DomainStats:
    """What is known about a domain and how it is used."""

    points: int
    dimension: int
    distance: Distance = "Cosine"
    growth_per_day: float = 0.0  # fraction of points added per day (0.01 = 1%)
    queries_per_second: float = 0.0
    memory_budget_bytes: int | None = None  # RAM the target can give this collection


@dataclass(frozen=True)
class SearchPlan:
    """Search-time parameters that go with the collection config."""

    hnsw_ef: int
    rescore: bool = False
    oversampling: float | None = None


@dataclass(frozen=True)
class TunedConfig:
    """A collection config, its search plan, its estimated footprint and why."""

    strategy: str
    collection: CollectionSpec
    search: SearchPlan
    estimated_ram_bytes: int
    estimated_disk_bytes: int
    rationale: tuple[str, ...]


@dataclass(frozen=True)
class _Profile:
    m: int
    ef_construct: int
    hnsw_ef: int
    quantize_from: int | None  # points from which scalar quantization is used (None: never)
    rescore: bool
    oversampling: float | None
    indexing_threshold: int | None  # KB of vectors before an index is built
    default_segment_number: int | None
    replicas_from_qps: float | None


_PROFILES = {
    "latency": _Profile(32, 200, 96, 0, True, 2.0, 1_000, None, 100.0),
    "throughput": _Profile(16, 100, 64, 0, False, None, 10_000, 2, 50.0),
    "accuracy": _Profile(48, 400, 256, None, False, None, 1_000, None, None),
    "balanced": _Profile(16, 128, 128, 100_000, True, 1.5, None, None, 500.0),
}
_PROFILES["custom"] = _PROFILES["balanced"]


def estimate_footprint(spec: CollectionSpec, points: int) -> tuple[int, int]:
    """Estimated (RAM, disk) bytes of ``points`` vectors under ``spec`` (vectors and graph).

    Every plain dense vector counts (named ones by their sizes); multivectors and
    sparse vectors, whose sizes vary per point, are left out."""
    dim = sum(v.size for v in spec.dense_vectors().values() if v.multivector is None)
    raw = points * dim * 4
    m = spec.hnsw.m if spec.hnsw and spec.hnsw.m else 16
    graph = int(points * m * 2 * 4 * 1.1)  # level-0 links dominate
    quantized = 0
    quantized_in_ram = False
    if spec.quantization is not None:
        q = spec.quantization
        if q.kind == "scalar":
            quantized = points * dim
        elif q.kind == "product":
            quantized = points * dim * 4 // _COMPRESSION_BYTES[q.compression or "x16"]
        else:
            quantized = math.ceil(points * dim / 8)
        quantized_in_ram = bool(q.always_ram) or not spec.on_disk_vectors
    ram = 0 if spec.on_disk_vectors else raw
    ram += quantized if quantized_in_ram else 0
    ram += 0 if (spec.hnsw and spec.hnsw.on_disk) else graph
    disk = raw + quantized + graph
    return ram, disk


def tune_collection(
    stats: DomainStats,
    strategy: str = "balanced",
    overrides: Mapping[str, Any] | None = None,
) -> TunedConfig:
    """Derive the collection config for ``stats`` under ``strategy``; ``overrides`` win."""
    overrides = _checked_request(stats, strategy, overrides)
    profile = _PROFILES[strategy]
    why: list[str] = []
    # Size the collection for where it will be in 30 days, not where it is today.
    planned = int(stats.points * (1.0 + max(stats.growth_per_day, 0.0)) ** 30)
    if planned > stats.points:
        why.append(f"sized for {planned:,} points (30 days of {stats.growth_per_day:.1%}/day)")

    quantization = None
    if profile.quantize_from is not None and planned >= profile.quantize_from:
        quantization = QuantizationSpec(kind="scalar", quantile=0.99, always_ram=True)
        why.append("scalar int8 quantization in RAM: 4x smaller vectors for the search")
    shard_number = max(1, min(16, math.ceil(planned / 5_000_000)))
    if strategy == "throughput" and planned > 1_000_000:
        shard_number = max(shard_number, 2)
    if shard_number > 1:
        why.append(f"{shard_number} shards to spread {planned:,} points")
    replication = 1
    if (
        profile.replicas_from_qps is not None
        and stats.queries_per_second >= profile.replicas_from_qps
    ):
        replication = 2 if stats.queries_per_second < 4 * profile.replicas_from_qps else 3
        why.append(f"{replication} replicas for {stats.queries_per_second:g} queries/s")
    spec = CollectionSpec(
        vector_size=stats.dimension,
        distance=stats.distance,
        on_disk_vectors=False,
        on_disk_payload=True,
        hnsw=HnswSpec(m=profile.m, ef_construct=profile.ef_construct),
        quantization=quantization,
        optimizers=OptimizersSpec(
            indexing_threshold=profile.indexing_threshold,
            default_segment_number=profile.default_segment_number,
        ),
        shard_number=shard_number,
        replication_factor=replication,
    )
    why.append(
        f"HNSW m={profile.m}, ef_construct={profile.ef_construct}; search hnsw_ef={profile.hnsw_ef}"
    )
    search = SearchPlan(
        hnsw_ef=profile.hnsw_ef,
        rescore=profile.rescore and quantization is not None,
        oversampling=profile.oversampling if quantization is not None else None,
    )

    if stats.memory_budget_bytes is not None:
        spec, search = _fit_budget(spec, search, stats.memory_budget_bytes, planned, why)

    spec, search = _apply_overrides(spec, search, overrides, why)
    ram, disk = estimate_footprint(spec, planned)
    return TunedConfig(
        strategy=strategy,
        collection=spec,
        search=search,
        estimated_ram_bytes=ram,
        estimated_disk_bytes=disk,
        rationale=tuple(why),
    )


def _checked_request(
    stats: DomainStats, strategy: str, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The overrides as a dict, once the strategy, the statistics and the overrides' keys are
    known to be accepted; :class:`TuningError` otherwise."""
    if strategy not in OPTIMIZATION_STRATEGIES:
        raise TuningError(
            f"unknown optimization strategy {strategy!r}; accepted: "
            f"{', '.join(OPTIMIZATION_STRATEGIES)}"
        )
    if stats.points < 0 or stats.dimension < 1:
        raise TuningError(
            f"domain statistics need points >= 0 and dimension >= 1 "
            f"(got {stats.points} points, dimension {stats.dimension})"
        )
    checked = dict(overrides or {})
    unknown = sorted(set(checked) - set(OVERRIDE_KEYS))
    if unknown:
        raise TuningError(
            f"unknown override(s) {', '.join(unknown)}; accepted: {', '.join(OVERRIDE_KEYS)}"
        )
    return checked


def _fit_budget(
    spec: CollectionSpec, search: SearchPlan, budget: int, planned: int, why: list[str]
) -> tuple[CollectionSpec, SearchPlan]:
    """Vectors on disk (a quantized copy in RAM), then the graph too, until ``planned`` points
    fit the RAM ``budget`` (or nothing more can go to disk)."""
    ram, _ = estimate_footprint(spec, planned)
    if ram > budget:
        if spec.quantization is None:
            spec = replace(spec, quantization=QuantizationSpec(kind="scalar", always_ram=True))
            search = replace(search, rescore=True, oversampling=1.5)
        spec = replace(spec, on_disk_vectors=True)
        why.append("original vectors on disk to fit the memory budget (quantized copy in RAM)")
        ram, _ = estimate_footprint(spec, planned)
    if ram > budget:
        assert spec.hnsw is not None
        spec = replace(spec, hnsw=replace(spec.hnsw, on_disk=True))
        why.append("HNSW graph on disk too: the budget is smaller than the index")
    return spec, search


def _apply_overrides(
    spec: CollectionSpec, search: SearchPlan, overrides: dict[str, Any], why: list[str]
) -> tuple[CollectionSpec, SearchPlan]:
    if not overrides:
        return spec, search
    ints = {k: _positive_int(k, v) for k, v in overrides.items() if k in _INT_OVERRIDES}
    hnsw_changes: dict[str, Any] = {
        k: ints[k] for k in ("m", "ef_construct", "full_scan_threshold") if k in ints
    }
    if "hnsw_on_disk" in overrides:
        hnsw_changes["on_disk"] = bool(overrides["hnsw_on_disk"])
    optimizer_changes: dict[str, Any] = {
        k: ints[k]
        for k in ("indexing_threshold", "default_segment_number", "max_segment_size")
        if k in ints
    }
    spec_changes: dict[str, Any] = {
        "hnsw": replace(spec.hnsw or HnswSpec(), **hnsw_changes),
        "optimizers": replace(spec.optimizers or OptimizersSpec(), **optimizer_changes),
    }
    spec_changes.update({k: ints[k] for k in ("shard_number", "replication_factor") if k in ints})
    spec_changes.update(
        {k: bool(overrides[k]) for k in ("on_disk_vectors", "on_disk_payload") if k in overrides}
    )
    spec = replace(spec, **spec_changes)
    if "quantization" in overrides:
        kind = overrides["quantization"]
        if kind in (None, "none"):
            spec = replace(spec, quantization=None)
            search = replace(search, rescore=False, oversampling=None)
        elif kind in ("scalar", "product", "binary"):
            spec = replace(
                spec,
                quantization=QuantizationSpec(
                    kind=kind,
                    always_ram=overrides.get("quantization_always_ram", True),
                    compression="x16" if kind == "product" else None,
                ),
            )
        else:
            raise TuningError(
                f"override quantization={kind!r}; accepted: none, scalar, product, binary"
            )
    if "hnsw_ef" in ints:
        search = replace(search, hnsw_ef=ints["hnsw_ef"])
    if "rescore" in overrides:
        search = replace(search, rescore=bool(overrides["rescore"]))
    if "oversampling" in overrides:
        value = overrides["oversampling"]
        if value is not None and (not isinstance(value, int | float) or value < 1):
            raise TuningError(f"override oversampling must be a number >= 1, got {value!r}")
        search = replace(search, oversampling=value)
    why.append("user overrides applied: " + ", ".join(sorted(overrides)))
    return spec, search


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TuningError(f"override {key} must be a positive integer, got {value!r}")
    return value
