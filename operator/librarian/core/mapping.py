"""Validation of a proposed domain -> cluster mapping (ValidateDomainMapping).

Why this exists: before any collection is created or any point moves, a
placement must make sense: every domain placed, on a known and reachable
cluster with the right vector size, fitting in its memory, and not piling all
the load on one cluster. This returns a score with the issues and what to do
about them, so a handler can refuse a bad plan with a clear message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from librarian.core.discovery import Domain

BYTES_PER_FLOAT = 4
INDEX_OVERHEAD = 1.5
"""Memory factor over raw float32 vectors: HNSW links, payload and id tracking
add roughly half again on top of the vectors (Qdrant's own sizing guidance)."""


def estimate_memory_bytes(points: int, dim: int, *, overhead: float = INDEX_OVERHEAD) -> int:
    """Estimated RAM of ``points`` vectors of ``dim`` float32 with an HNSW index."""
    return int(points * dim * BYTES_PER_FLOAT * overhead)


@dataclass(frozen=True)
class ClusterCapacity:
    """What is known about a target cluster."""

    reachable: bool = True
    memory_bytes: int | None = None  # None: unknown, not checked
    used_bytes: int = 0
    vector_size: int | None = None  # None: any


@dataclass(frozen=True)
class MappingValidation:
    """A score in [0, 1] (1 = nothing to fix), the issues and recommendations."""

    score: float
    issues: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.issues


def validate_domain_mapping(
    domains: Sequence[Domain],
    mapping: Mapping[str, str],
    clusters: Mapping[str, ClusterCapacity],
    *,
    vector_size: int | None = None,
    max_imbalance: float = 0.5,
) -> MappingValidation:
    """Check every domain is mapped to a known, reachable cluster that fits it.

    ``max_imbalance`` is the largest accepted share by which the busiest
    cluster's points exceed an even split (0.5 = 50% above even).
    """
    issues: list[str] = []
    recommendations: list[str] = []
    dim = vector_size or (len(domains[0].centroid) if domains else 0)
    known_ids = {d.id for d in domains}

    penalties = 0.0
    for stray in sorted(set(mapping) - known_ids):
        issues.append(f"mapping names domain {stray!r}, which is not among the discovered domains")
        penalties += 1
    load: dict[str, int] = {}
    for domain in domains:
        penalties += _check_placement(domain, mapping, clusters, dim, issues, recommendations)
        cluster = mapping.get(domain.id)
        if cluster is not None and cluster in clusters:
            load[cluster] = load.get(cluster, 0) + domain.size
    penalties += _check_memory(load, clusters, dim, issues, recommendations)
    penalties += _check_balance(load, clusters, max_imbalance, recommendations)

    score = max(0.0, 1.0 - penalties / max(len(domains), 1))
    return MappingValidation(score=round(score, 4), issues=issues, recommendations=recommendations)


def _check_placement(
    domain: Domain,
    mapping: Mapping[str, str],
    clusters: Mapping[str, ClusterCapacity],
    dim: int,
    issues: list[str],
    recommendations: list[str],
) -> float:
    """The issues of one domain's cluster (none, unknown, unreachable, other vector size);
    returns the penalty."""
    cluster = mapping.get(domain.id)
    if cluster is None:
        issues.append(f"domain {domain.name!r} ({domain.id}) is not mapped to any cluster")
        recommendations.append(f"map {domain.id} to one of: {', '.join(sorted(clusters))}")
        return 1.0
    capacity = clusters.get(cluster)
    if capacity is None:
        issues.append(
            f"domain {domain.id} is mapped to unknown cluster {cluster!r}; "
            f"known clusters: {', '.join(sorted(clusters)) or 'none'}"
        )
        return 1.0
    penalty = 0.0
    if not capacity.reachable:
        issues.append(f"cluster {cluster!r} (for domain {domain.id}) is not reachable")
        recommendations.append(f"check the URL and API key of cluster {cluster!r}")
        penalty += 1
    if capacity.vector_size is not None and dim and capacity.vector_size != dim:
        issues.append(
            f"cluster {cluster!r} holds {capacity.vector_size}-d vectors but domain "
            f"{domain.id} has {dim}-d vectors"
        )
        penalty += 1
    return penalty


def _check_memory(
    load: Mapping[str, int],
    clusters: Mapping[str, ClusterCapacity],
    dim: int,
    issues: list[str],
    recommendations: list[str],
) -> float:
    """Clusters whose free memory the points mapped to them would exceed (or nearly fill)."""
    penalty = 0.0
    for cluster, points in sorted(load.items()):
        capacity = clusters[cluster]
        if capacity.memory_bytes is None:
            continue
        needed = estimate_memory_bytes(points, dim)
        free = capacity.memory_bytes - capacity.used_bytes
        if needed > free:
            issues.append(
                f"cluster {cluster!r} needs about {needed / 2**20:.0f} MiB for {points:,} points "
                f"but has {max(free, 0) / 2**20:.0f} MiB free"
            )
            recommendations.append(
                f"move a domain off {cluster!r}, enable on-disk vectors or quantization there"
            )
            penalty += 1
        elif needed > 0.8 * free:
            recommendations.append(f"cluster {cluster!r} would be over 80% full; plan headroom")
            penalty += 0.25
    return penalty


def _check_balance(
    load: Mapping[str, int],
    clusters: Mapping[str, ClusterCapacity],
    max_imbalance: float,
    recommendations: list[str],
) -> float:
    """The busiest cluster's points above an even split by more than ``max_imbalance``."""
    if not load or len(clusters) <= 1:
        return 0.0
    total = sum(load.values())
    even = total / len(clusters)
    busiest, points = max(load.items(), key=lambda item: item[1])
    excess = points / even - 1.0 if even else 0.0
    if excess <= max_imbalance:
        return 0.0
    recommendations.append(
        f"cluster {busiest!r} would hold {points / max(total, 1):.0%} of the points; "
        "spread domains across clusters for balance"
    )
    return min(1.0, excess - max_imbalance)
