"""Load analysis of a library's fleet (AnalyzeLoadDistribution).

Why this exists: rebalancing starts from one picture of where the load is.
From per-domain figures the router and the clusters report (queries/s, p95
latency, points, memory and disk, online recall) this builds each cluster's
load, the fleet's balance (max/mean of cluster load over every cluster,
empty ones counting 0), the thresholds each figure breaks and what to do
about it. The planner, the operator and the CLI all read this one
report. Pure: no clock, no I/O.

Definitions (the README repeats them for users):

* cluster load = sum of its domains' queries/s, divided by the cluster's
  ``max_qps`` when known (then 1.0 means "at capacity"), raw queries/s
  when no cluster declares one; in a fleet where only some clusters declare
  ``max_qps``, the others are judged against the mean of the declared ones
  (so every load is in the same unit and max/mean stays meaningful);
* cluster p95 = queries/s-weighted mean of its domains' p95 (an estimate:
  p95s do not add up exactly, but the busiest domains dominate what callers
  see);
* a cluster's latency limit = its ``baseline_p95_ms`` plus
  ``latency_degradation_ms``; without a configured baseline, the fleet's
  fastest cluster serves as the healthy reference;
* memory/disk usage = bytes of its domains / the cluster's capacity, when
  the capacity is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "VIOLATION_KINDS",
    "ClusterCapacity",
    "ClusterLoad",
    "DomainLoad",
    "LoadError",
    "LoadReport",
    "Thresholds",
    "Violation",
    "analyze_load",
    "load_scale",
]

VIOLATION_KINDS = ("load_imbalance", "latency_degradation", "accuracy_drop", "capacity")


class LoadError(ValueError):
    """Bad load figures, capacities or thresholds; the message names the value and what is accepted."""


@dataclass(frozen=True)
class DomainLoad:
    """What one domain costs where it is served now."""

    domain: str
    cluster: str
    qps: float = 0.0
    p95_ms: float | None = None
    points: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    recall: float | None = None  # online recall estimate, if known
    baseline_recall: float | None = None  # recall when it was specialized / target


@dataclass(frozen=True)
class ClusterCapacity:
    """What a cluster can take; ``None`` means not limited or unknown."""

    name: str
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    max_qps: float | None = None
    baseline_p95_ms: float | None = None  # p95 when healthy; degradation is measured from it


@dataclass(frozen=True)
class Thresholds:
    """When a figure counts as a problem."""

    load_imbalance: float = 0.3  # goal: max/mean cluster load <= 1 + load_imbalance
    latency_degradation_ms: float = 100.0  # above the cluster's healthy p95
    accuracy_drop: float = 0.1  # recall below the domain's baseline recall
    capacity_usage: float = 0.85  # share of memory/disk capacity never exceeded

    def __post_init__(self) -> None:
        checks = (
            ("load_imbalance", self.load_imbalance, 0.0, None, "a number >= 0, e.g. 0.3"),
            (
                "latency_degradation_ms",
                self.latency_degradation_ms,
                0.0,
                None,
                "milliseconds >= 0, e.g. 100",
            ),
            ("accuracy_drop", self.accuracy_drop, 0.0, 1.0, "a share between 0 and 1, e.g. 0.1"),
            ("capacity_usage", self.capacity_usage, 0.0, 1.0, "a share in (0, 1], e.g. 0.85"),
        )
        for name, value, low, high, accepted in checks:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < low
                or (high is not None and value > high)
                or (name == "capacity_usage" and value <= 0)
            ):
                raise LoadError(f"threshold {name}={value!r} is not accepted: use {accepted}")


@dataclass(frozen=True)
class ClusterLoad:
    """One cluster's figures."""

    name: str
    qps: float
    load: float  # qps / max_qps when max_qps known, else qps (see load_scale)
    p95_ms: float | None  # qps-weighted p95 of its domains (None if no latency known)
    points: int
    memory_bytes: int
    disk_bytes: int
    memory_usage: float | None  # fraction of capacity, None if unlimited
    disk_usage: float | None
    domains: tuple[str, ...]
    latency_limit_ms: float | None = None  # healthy p95 + allowed degradation, if known


@dataclass(frozen=True)
class Violation:
    """A threshold a figure breaks."""

    kind: str  # one of VIOLATION_KINDS
    subject: str  # cluster name, domain id, or "fleet"
    value: float
    threshold: float
    message: str  # human sentence: what, how much, limit


@dataclass(frozen=True)
class LoadReport:
    """The fleet's load picture: per cluster, per domain, balance, violations, advice."""

    clusters: tuple[ClusterLoad, ...]
    domains: tuple[DomainLoad, ...]
    max_mean_ratio: float  # max cluster load / mean cluster load (1.0 when all zero)
    imbalance: float  # max_mean_ratio - 1
    violations: tuple[Violation, ...]
    recommendations: tuple[str, ...]

    def cluster(self, name: str) -> ClusterLoad:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        known = ", ".join(c.name for c in self.clusters) or "none"
        raise KeyError(f"no cluster {name!r} in the load report; known: {known}")


def load_scale(capacities: Sequence[ClusterCapacity], names: Sequence[str]) -> dict[str, float]:
    """The divisor turning each named cluster's queries/s into its load.

    A cluster's ``max_qps`` when declared; for the others, the mean declared
    ``max_qps`` of the fleet, or 1.0 (raw queries/s) when none is declared.
    """
    declared = {c.name: c.max_qps for c in capacities if c.max_qps}
    fallback = sum(declared.values()) / len(declared) if declared else 1.0
    return {name: declared.get(name) or fallback for name in names}


def _check_number(
    what: str, value: float | int | None, *, optional: bool, positive: bool = False
) -> None:
    if value is None and optional:
        return
    if (
        value is None
        or isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        accepted = "a number > 0" if positive else "a number >= 0"
        if optional:
            accepted += " or nothing (unknown)"
        raise LoadError(f"{what} is {value!r}; accepted: {accepted}")


def _validate(domains: Sequence[DomainLoad], capacities: Sequence[ClusterCapacity]) -> None:
    seen: set[str] = set()
    for index, capacity in enumerate(capacities):
        if not isinstance(capacity.name, str) or not capacity.name:
            raise LoadError(f"capacity entry {index} has no cluster name; give each one a name")
        if capacity.name in seen:
            raise LoadError(
                f"cluster {capacity.name!r} has two capacity entries; give one per cluster"
            )
        seen.add(capacity.name)
        where = f"cluster {capacity.name!r}"
        _check_number(f"{where} memory_bytes", capacity.memory_bytes, optional=True)
        _check_number(f"{where} disk_bytes", capacity.disk_bytes, optional=True)
        _check_number(f"{where} max_qps", capacity.max_qps, optional=True, positive=True)
        _check_number(f"{where} baseline_p95_ms", capacity.baseline_p95_ms, optional=True)
    seen.clear()
    for index, domain in enumerate(domains):
        if not isinstance(domain.domain, str) or not domain.domain:
            raise LoadError(f"domain entry {index} has no domain id; give each one an id")
        if domain.domain in seen:
            raise LoadError(
                f"domain {domain.domain!r} is listed twice; a domain is served from one cluster"
            )
        seen.add(domain.domain)
        where = f"domain {domain.domain!r}"
        if not isinstance(domain.cluster, str) or not domain.cluster:
            raise LoadError(f"{where} has no cluster; name the cluster serving it")
        _check_number(f"{where} qps", domain.qps, optional=False)
        _check_number(f"{where} p95_ms", domain.p95_ms, optional=True)
        for field in ("points", "memory_bytes", "disk_bytes"):
            value = getattr(domain, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LoadError(f"{where} {field} is {value!r}; accepted: a whole number >= 0")
        for field in ("recall", "baseline_recall"):
            value = getattr(domain, field)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0.0 <= value <= 1.0
            ):
                raise LoadError(
                    f"{where} {field} is {value!r}; accepted: a share between 0 and 1 or nothing"
                )


def _weighted_p95(members: Sequence[DomainLoad]) -> float | None:
    known = [d for d in members if d.p95_ms is not None]
    if not known:
        return None
    weight = sum(d.qps for d in known)
    if weight <= 0:
        return sum(float(d.p95_ms or 0.0) for d in known) / len(known)
    return sum(d.qps * float(d.p95_ms or 0.0) for d in known) / weight


def _usage(used: int, capacity: int | None) -> float | None:
    if capacity is None:
        return None
    if capacity == 0:
        return math.inf if used else 0.0
    return used / capacity


Findings = tuple[list[Violation], list[str]]
"""Violations found, and the recommendations that go with them."""


def analyze_load(
    domains: Sequence[DomainLoad],
    capacities: Sequence[ClusterCapacity],
    thresholds: Thresholds = Thresholds(),
) -> LoadReport:
    """The load picture of a fleet.

    Clusters are every capacity entry (in their order) plus any other cluster
    a domain names (in order of first mention). Raises :class:`LoadError` on
    bad input.
    """
    _validate(domains, capacities)
    caps = {c.name: c for c in capacities}
    clusters = _cluster_loads(domains, capacities, thresholds)
    loads = [c.load for c in clusters]
    mean = sum(loads) / len(loads) if loads else 0.0
    ratio = max(loads) / mean if mean > 0 else 1.0
    violations: list[Violation] = []
    recommendations: list[str] = []
    for found, advice in (
        _balance_findings(clusters, ratio, mean, thresholds),
        _latency_findings(clusters, caps, thresholds),
        _capacity_findings(clusters, thresholds),
        _accuracy_findings(domains, thresholds),
    ):
        violations.extend(found)
        recommendations.extend(advice)
    recommendations.extend(_max_qps_advice(clusters, caps))
    return LoadReport(
        clusters=tuple(clusters),
        domains=tuple(domains),
        max_mean_ratio=ratio,
        imbalance=ratio - 1.0,
        violations=tuple(violations),
        recommendations=tuple(recommendations),
    )


def _cluster_loads(
    domains: Sequence[DomainLoad], capacities: Sequence[ClusterCapacity], thresholds: Thresholds
) -> list[ClusterLoad]:
    """Every cluster's figures: the capacity entries in order, then the other clusters named."""
    caps = {c.name: c for c in capacities}
    names = [c.name for c in capacities]
    for domain in domains:
        if domain.cluster not in caps and domain.cluster not in names:
            names.append(domain.cluster)
    members: dict[str, list[DomainLoad]] = {name: [] for name in names}
    for domain in domains:
        members[domain.cluster].append(domain)

    measured_p95 = {name: _weighted_p95(members[name]) for name in names}
    known_p95 = [p for p in measured_p95.values() if p is not None]
    fleet_reference = min(known_p95) if len(known_p95) >= 2 else None

    scale = load_scale(capacities, names)
    clusters: list[ClusterLoad] = []
    for name in names:
        cap = caps.get(name, ClusterCapacity(name))
        group = members[name]
        qps = float(sum(d.qps for d in group))
        memory = sum(d.memory_bytes for d in group)
        disk = sum(d.disk_bytes for d in group)
        baseline = cap.baseline_p95_ms if cap.baseline_p95_ms is not None else fleet_reference
        clusters.append(
            ClusterLoad(
                name=name,
                qps=qps,
                load=qps / scale[name],
                p95_ms=measured_p95[name],
                points=sum(d.points for d in group),
                memory_bytes=memory,
                disk_bytes=disk,
                memory_usage=_usage(memory, cap.memory_bytes),
                disk_usage=_usage(disk, cap.disk_bytes),
                domains=tuple(d.domain for d in group),
                latency_limit_ms=None
                if baseline is None
                else baseline + thresholds.latency_degradation_ms,
            )
        )
    return clusters


def _balance_findings(
    clusters: Sequence[ClusterLoad], ratio: float, mean: float, thresholds: Thresholds
) -> Findings:
    """The fleet's max/mean above the goal, when there is more than one cluster."""
    goal = 1.0 + thresholds.load_imbalance
    if len(clusters) <= 1 or ratio <= goal + 1e-12:
        return [], []
    hottest = max(clusters, key=lambda c: c.load)
    coolest = min(clusters, key=lambda c: c.load)
    violation = Violation(
        kind="load_imbalance",
        subject="fleet",
        value=ratio - 1.0,
        threshold=thresholds.load_imbalance,
        message=(
            f"cluster {hottest.name!r} carries {ratio:.2f}x the mean cluster load "
            f"(imbalance {ratio - 1:.2f} > {thresholds.load_imbalance:.2f}, "
            f"goal max/mean <= {goal:.2f})"
        ),
    )
    advice = (
        f"move query load off {hottest.name!r} ({ratio:.2f}x the mean) toward "
        f"{coolest.name!r} ({coolest.load / mean:.2f}x the mean): the load_based or "
        "hybrid strategy proposes the fewest points to move"
    )
    return [violation], [advice]


def _latency_findings(
    clusters: Sequence[ClusterLoad], caps: Mapping[str, ClusterCapacity], thresholds: Thresholds
) -> Findings:
    """Clusters answering slower than their latency limit."""
    violations: list[Violation] = []
    recommendations: list[str] = []
    for cluster in clusters:
        if (
            cluster.p95_ms is None
            or cluster.latency_limit_ms is None
            or cluster.p95_ms <= cluster.latency_limit_ms
        ):
            continue
        configured = caps.get(cluster.name)
        reference = (
            f"its baseline {configured.baseline_p95_ms:g} ms"
            if configured is not None and configured.baseline_p95_ms is not None
            else "the fleet's fastest cluster"
        )
        violations.append(
            Violation(
                kind="latency_degradation",
                subject=cluster.name,
                value=cluster.p95_ms,
                threshold=cluster.latency_limit_ms,
                message=(
                    f"cluster {cluster.name!r} answers at p95 {cluster.p95_ms:.0f} ms, "
                    f"{cluster.p95_ms - cluster.latency_limit_ms:.0f} ms over its limit of "
                    f"{cluster.latency_limit_ms:.0f} ms ({reference} + "
                    f"{thresholds.latency_degradation_ms:g} ms)"
                ),
            )
        )
        recommendations.append(
            f"move query load off {cluster.name!r} to bring its p95 under "
            f"{cluster.latency_limit_ms:.0f} ms (latency_based or hybrid strategy), or give "
            "it more replicas"
        )
    return violations, recommendations


def _capacity_findings(clusters: Sequence[ClusterLoad], thresholds: Thresholds) -> Findings:
    """Clusters using more of their memory or disk than the threshold."""
    violations: list[Violation] = []
    recommendations: list[str] = []
    for cluster in clusters:
        for resource, usage, used in (
            ("memory", cluster.memory_usage, cluster.memory_bytes),
            ("disk", cluster.disk_usage, cluster.disk_bytes),
        ):
            if usage is None or usage <= thresholds.capacity_usage:
                continue
            violations.append(
                Violation(
                    kind="capacity",
                    subject=cluster.name,
                    value=usage,
                    threshold=thresholds.capacity_usage,
                    message=(
                        f"cluster {cluster.name!r} uses {usage:.0%} of its {resource} "
                        f"({used / 2**20:,.0f} MiB), above the {thresholds.capacity_usage:.0%} "
                        "limit"
                    ),
                )
            )
            recommendations.append(
                f"free {resource} on {cluster.name!r}: move a domain off it "
                f"(capacity_based or hybrid strategy) or grow its {resource}"
            )
    return violations, recommendations


def _accuracy_findings(domains: Sequence[DomainLoad], thresholds: Thresholds) -> Findings:
    """Domains whose recall dropped below their baseline by more than the threshold."""
    violations: list[Violation] = []
    recommendations: list[str] = []
    for domain in domains:
        if domain.recall is None or domain.baseline_recall is None:
            continue
        drop = domain.baseline_recall - domain.recall
        if drop <= thresholds.accuracy_drop + 1e-12:
            continue
        violations.append(
            Violation(
                kind="accuracy_drop",
                subject=domain.domain,
                value=drop,
                threshold=thresholds.accuracy_drop,
                message=(
                    f"domain {domain.domain!r} answers at recall {domain.recall:.2f}, "
                    f"{drop:.2f} below its baseline {domain.baseline_recall:.2f} "
                    f"(limit {thresholds.accuracy_drop:.2f})"
                ),
            )
        )
        recommendations.append(
            f"re-analyse the DomainMap so discovery re-labels the points that drifted out "
            f"of domain {domain.domain!r} (domain_based or hybrid strategy proposes it)"
        )
    return violations, recommendations


def _max_qps_advice(
    clusters: Sequence[ClusterLoad], caps: Mapping[str, ClusterCapacity]
) -> list[str]:
    """Clusters asked for more than their max_qps, and clusters that do not declare one."""
    recommendations = []
    for cluster in clusters:
        limits = caps.get(cluster.name)
        if limits is not None and limits.max_qps and cluster.load > 1.0:
            recommendations.append(
                f"cluster {cluster.name!r} is asked for {cluster.load:.0%} of its "
                f"{limits.max_qps:g} queries/s: move load off it or add replicas"
            )

    undeclared = [c.name for c in clusters if not caps.get(c.name, ClusterCapacity(c.name)).max_qps]
    if undeclared and len(undeclared) < len(clusters):
        recommendations.append(
            f"declare max_qps (maxQueriesPerSecond) for {', '.join(map(repr, undeclared))} too: "
            "until then they are judged against the mean of the declared ones"
        )
    return recommendations
