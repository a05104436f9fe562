"""The router's status and load report: what it serves and what a rebalance policy reads.

Why this exists: the router writes ``GET /librarian/status`` and ``GET
/librarian/load``; the operator reads them to judge where the query load lands.
Defined once as typed models, the two sides cannot drift apart: the router
renders these models (``to_json``) and the operator validates what it receives
with the same ones. Field names on the wire are camelCase (``p95Ms``,
``estimatedRecall``); in Python they are snake_case.

Figures a reader does not need have neutral defaults, so a report from an older
router (or a stand-in) that omits them still parses; the load itself
(``load.domains``) is required.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "CacheReport",
    "ClusterLoad",
    "DomainLoad",
    "DomainStatus",
    "LibraryStatus",
    "LoadReport",
    "OutboxReport",
    "QualityReport",
    "RouterStatus",
]


class _Report(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,  # built by field name in Python, read by alias from the wire
        allow_inf_nan=False,
        frozen=True,
    )

    def to_json(self) -> dict[str, Any]:
        """The wire form: JSON-safe values under their camelCase names."""
        return self.model_dump(mode="json", by_alias=True)


class DomainLoad(_Report):
    """One domain's query load as one router saw it."""

    id: str
    cluster: str | None = None  # the cluster it was last served from
    queries: int = Field(default=0, ge=0)  # since the router started, failed calls included
    errors: int = Field(default=0, ge=0)
    qps: float = Field(default=0.0, ge=0.0)  # over the sliding window
    p95_ms: float | None = Field(default=None, ge=0.0)  # successful calls only; None before any


class ClusterLoad(_Report):
    """The load of every domain one cluster serves, summed."""

    name: str
    queries: int = Field(default=0, ge=0)
    qps: float = Field(default=0.0, ge=0.0)
    p95_ms: float | None = Field(default=None, ge=0.0)


class LoadReport(_Report):
    """``GET /librarian/load``: per-domain and per-cluster load, sorted by name."""

    uptime_seconds: float = Field(default=0.0, ge=0.0)
    window_seconds: float = Field(default=0.0, ge=0.0)
    domains: list[DomainLoad]
    clusters: list[ClusterLoad] = Field(default_factory=list)


class CacheReport(_Report):
    """The result cache: its entries, hit rate, and what makes an entry stale."""

    entries: int = Field(default=0, ge=0)
    hit_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    enabled: bool = False
    size_bytes: int = Field(default=0, ge=0)
    settle_window_seconds: float = Field(default=0.0, ge=0.0)
    detects: str = ""  # which writes invalidate a cached answer (and which cannot)


class QualityReport(_Report):
    """The router's online estimate of its own recall, from shadow queries."""

    estimated_recall: float | None = Field(default=None, ge=0.0, le=1.0)
    shadow_queries: int = Field(default=0, ge=0)
    shadow_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    learned_fusion_fitted: bool = False


class OutboxReport(_Report):
    """The write path's pending cleanups: while ``entries`` > 0 older copies may still be
    visible in the clusters named (see the consistency model)."""

    entries: int = Field(default=0, ge=0)
    oldest_age_seconds: float | None = Field(default=None, ge=0.0)
    clusters: list[str] = Field(default_factory=list)
    durable: bool = False
    max_entries: int = Field(default=0, ge=0)


class DomainStatus(_Report):
    """One domain of the loaded library: where it is served from."""

    id: str
    name: str
    cluster: str
    collection: str
    points: int
    specialized: bool
    circuit: str  # closed, open or half-open
    # The domain's partitions: marked on each point of its home when it is placed by partition
    # (searches ask only the chosen ones), else the catalog's cells of a domain searched whole.
    partitions: list[str] = Field(default_factory=list)
    # How the home marks partitions: "field" (an indexed payload field), "shardKeys" (one
    # shard key per partition: a home made before the field), "" (not placed by partition).
    partition_layout: str = ""
    sharded_by_partition: bool = False  # partition_layout == "shardKeys"


class LibraryStatus(_Report):
    name: str
    version: str
    vector_size: int
    distance: str
    routing: dict[str, Any] = Field(default_factory=dict)
    domains: list[DomainStatus] = Field(default_factory=list)


class RouterStatus(_Report):
    """``GET /librarian/status`` (inside Qdrant's ``result`` envelope)."""

    ready: bool = False
    load_error: str | None = None
    cache: CacheReport = Field(default_factory=CacheReport)
    circuits: dict[str, str] = Field(default_factory=dict)
    quality: QualityReport = Field(default_factory=QualityReport)
    outbox: OutboxReport = Field(default_factory=OutboxReport)
    fences: dict[str, str] = Field(default_factory=dict)  # move name -> phase enforced
    writes_refused: str | None = None  # why this replica refuses writes, if it does
    routing_efficiency: float | None = None
    fusion: str | None = None
    authentication: str | None = None  # how callers are authenticated; says so when off
    load: LoadReport
    library: LibraryStatus | None = None  # absent until a library is loaded

    def to_json(self) -> dict[str, Any]:
        """The wire form: camelCase names, ``library`` left out while none is loaded."""
        return self.model_dump(
            mode="json", by_alias=True, exclude={"library"} if self.library is None else None
        )
