"""Parsing and validating a RebalancePolicy's ``spec`` into typed settings.

Why this exists: the CRD schema catches shapes, but a policy also has meaning
the API server cannot judge (a maintenance window that does not parse, a
duration, a cluster pinned and excluded at once). Every problem is collected
with its field path and how to fix it, so a bad policy gets one clear
``Ready=False/InvalidSpec`` condition and never a half-applied default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from librarian.core.durations import DurationError, parse_duration
from librarian.core.load import ClusterCapacity, Thresholds
from librarian.core.planner import STRATEGIES, Constraints, PlanError, parse_window
from librarian.core.tuning import OPTIMIZATION_STRATEGIES
from librarian.kube.spec import ClusterRef, SpecError, parse_cluster_capacity

__all__ = [
    "DEFAULT_ROUTER_PORT",
    "MODES",
    "PolicyDefaults",
    "PolicySpec",
    "RouterRef",
    "effective_capacities",
    "parse_policy_spec",
]

MODES = ("observe", "approve", "auto")
_EXECUTION_STRATEGIES = tuple(s for s in OPTIMIZATION_STRATEGIES if s != "custom")
DEFAULT_ROUTER_PORT = 6333
"""The router's REST port when a routerRef names none and the Service has no port named http."""
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # a namespace name
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # a Service name starts with a letter


@dataclass(frozen=True)
class PolicyDefaults:
    """Operator-wide defaults for what a policy leaves out (``adaptive_rebalancing``)."""

    enabled: bool = True
    auto_trigger: bool = True
    interval_s: float = 900.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    prediction: bool = True


@dataclass(frozen=True)
class RouterRef:
    """``spec.loadSource.routerRef``: a router's Service, resolved by the operator to its URL."""

    name: str
    namespace: str | None = None  # None: the policy's namespace
    port: int | None = None  # None: the Service's port named http, else DEFAULT_ROUTER_PORT


@dataclass(frozen=True)
class PolicySpec:
    domain_map: str
    mode: str
    strategy: str
    interval_s: float
    thresholds: Thresholds
    constraints: Constraints
    capacities: tuple[ClusterCapacity, ...]
    router_urls: tuple[str, ...]
    prediction: bool
    horizon_s: float
    execution_strategy: str
    grace_s: float
    router_ref: RouterRef | None = None


def _duration(value: Any, where: str, default: float, problems: list[str]) -> float:
    if value is None:
        return default
    try:
        return parse_duration(value)
    except DurationError as error:
        problems.append(f"{where}: {error}")
        return default


def _number(
    raw: Mapping[str, Any],
    key: str,
    where: str,
    default: float,
    problems: list[str],
    *,
    low: float = 0.0,
    high: float | None = None,
) -> float:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{where}.{key} must be a number, got {value!r}")
        return default
    if value < low or (high is not None and value > high):
        bounds = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
        problems.append(f"{where}.{key} must be {bounds}, got {value!r}")
        return default
    return float(value)


def _integer(
    raw: Mapping[str, Any], key: str, where: str, default: int | None, problems: list[str]
) -> int | None:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"{where}.{key} must be a whole number >= 1, got {value!r}")
        return default
    return value


def _names(raw: Mapping[str, Any], key: str, where: str, problems: list[str]) -> frozenset[str]:
    values = raw.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        problems.append(f"{where}.{key} must be a list of names, got {values!r}")
        return frozenset()
    return frozenset(values)


def _thresholds(raw: Mapping[str, Any], defaults: Thresholds, problems: list[str]) -> Thresholds:
    where = "spec.thresholds"
    latency_s = _duration(
        raw.get("latencyDegradation"),
        f"{where}.latencyDegradation",
        defaults.latency_degradation_ms / 1000,
        problems,
    )
    return Thresholds(
        load_imbalance=_number(
            raw, "loadImbalance", where, defaults.load_imbalance, problems, high=10.0
        ),
        latency_degradation_ms=latency_s * 1000,
        accuracy_drop=_number(raw, "accuracyDrop", where, defaults.accuracy_drop, problems, high=1),
        capacity_usage=_number(
            raw, "capacityUsage", where, defaults.capacity_usage, problems, low=0.01, high=1
        ),
    )


def _constraints(raw: Mapping[str, Any], problems: list[str]) -> Constraints:
    where = "spec.constraints"
    windows = []
    for index, text in enumerate(raw.get("maintenanceWindows") or []):
        try:
            windows.append(parse_window(str(text)))
        except PlanError as error:
            problems.append(f"{where}.maintenanceWindows[{index}]: {error}")
    pinned = _names(raw, "pinnedDomains", where, problems)
    excluded = _names(raw, "excludedClusters", where, problems)
    return Constraints(
        max_concurrent_migrations=_integer(raw, "maxConcurrentMigrations", where, 1, problems) or 1,
        max_points_per_run=_integer(raw, "maxPointsPerRun", where, None, problems),
        max_moves_per_run=_integer(raw, "maxMovesPerRun", where, 10, problems) or 10,
        maintenance_windows=tuple(windows),
        pinned_domains=pinned,
        excluded_clusters=excluded,
    )


def _capacities(raw: Any, problems: list[str]) -> tuple[ClusterCapacity, ...]:
    capacities: list[ClusterCapacity] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw or []):
        where = f"spec.capacity[{index}]"
        cluster = str((entry or {}).get("cluster") or "")
        if not cluster:
            problems.append(f"{where}.cluster is required: a cluster of the DomainMap")
            continue
        if cluster in seen:
            problems.append(f"{where}.cluster {cluster!r} appears twice; one entry per cluster")
        seen.add(cluster)
        capacities.append(parse_cluster_capacity(entry, where, cluster, problems))
    return tuple(capacities)


def effective_capacities(
    policy: Sequence[ClusterCapacity], clusters: Sequence[ClusterRef]
) -> tuple[ClusterCapacity, ...]:
    """The capacities a policy judges against: its own ``spec.capacity`` entries, then the
    capacity its DomainMap's QdrantFleet gives each cluster the policy does not list."""
    listed = {c.name for c in policy}
    from_fleet = [c.capacity for c in clusters if c.capacity is not None and c.name not in listed]
    return (*policy, *from_fleet)


def parse_policy_spec(
    spec: Mapping[str, Any], *, defaults: PolicyDefaults | None = None
) -> PolicySpec:
    """Validate a RebalancePolicy spec; raise :class:`SpecError` listing every problem."""
    defaults = defaults or PolicyDefaults()
    problems: list[str] = []
    domain_map = str(spec.get("domainMap") or "")
    if not domain_map:
        problems.append("spec.domainMap is required: the DomainMap whose library to rebalance")
    mode = str(spec.get("mode") or "observe")
    if mode not in MODES:
        problems.append(f"spec.mode {mode!r} is unknown; accepted: {', '.join(MODES)}")
    strategy = str(spec.get("strategy") or "hybrid")
    if strategy not in STRATEGIES:
        problems.append(f"spec.strategy {strategy!r} is unknown; accepted: {', '.join(STRATEGIES)}")
    interval_s = _duration(
        spec.get("analysisInterval"), "spec.analysisInterval", defaults.interval_s, problems
    )
    if interval_s <= 0:
        problems.append("spec.analysisInterval must be longer than 0s, e.g. 15m")
    thresholds = _thresholds(spec.get("thresholds") or {}, defaults.thresholds, problems)
    constraints = _constraints(spec.get("constraints") or {}, problems)
    capacities = _capacities(spec.get("capacity"), problems)
    both = constraints.pinned_domains & constraints.excluded_clusters
    if both:
        problems.append(
            f"spec.constraints: {', '.join(sorted(both))} is listed as a pinned domain and an "
            "excluded cluster; pinnedDomains takes domain ids, excludedClusters cluster names"
        )
    load_source = spec.get("loadSource")
    urls = tuple(str(u) for u in (load_source or {}).get("routerUrls") or [])
    for index, url in enumerate(urls):
        if not url.startswith(("http://", "https://")):
            problems.append(
                f"spec.loadSource.routerUrls[{index}] must start with http:// or https://, "
                f"got {url!r}"
            )
    router_ref = _router_ref((load_source or {}).get("routerRef"), problems)
    if load_source is not None and not urls and router_ref is None:
        problems.append(
            "spec.loadSource needs routerRef (the router's Service) or routerUrls; "
            "leave loadSource out when no router serves the DomainMap"
        )
    if mode == "auto" and not urls and router_ref is None and strategy != "capacity_based":
        problems.append(
            "spec.mode auto needs spec.loadSource.routerRef or routerUrls, or spec.strategy "
            "capacity_based: without the router's figures only capacity can be judged"
        )
    prediction = spec.get("prediction") or {}
    horizon_s = _duration(prediction.get("horizon"), "spec.prediction.horizon", 6 * 3600, problems)
    execution = spec.get("execution") or {}
    execution_strategy = str(execution.get("strategy") or "balanced")
    if execution_strategy not in _EXECUTION_STRATEGIES:
        problems.append(
            f"spec.execution.strategy {execution_strategy!r} is unknown; accepted: "
            f"{', '.join(_EXECUTION_STRATEGIES)}"
        )
    grace_s = _duration(execution.get("gracePeriod"), "spec.execution.gracePeriod", 60, problems)
    if problems:
        raise SpecError(problems)
    return PolicySpec(
        domain_map=domain_map,
        mode=mode,
        strategy=strategy,
        interval_s=interval_s,
        thresholds=thresholds,
        constraints=constraints,
        capacities=capacities,
        router_urls=urls,
        prediction=bool(prediction.get("enabled", defaults.prediction)),
        horizon_s=horizon_s,
        execution_strategy=execution_strategy,
        grace_s=grace_s,
        router_ref=router_ref,
    )


def _router_ref(raw: Any, problems: list[str]) -> RouterRef | None:
    """``spec.loadSource.routerRef``: a Service name, its namespace and port, each checked."""
    if raw is None:
        return None
    where = "spec.loadSource.routerRef"
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be an object with name, namespace and port, got {raw!r}")
        return None
    unknown = sorted(set(raw) - {"name", "namespace", "port"})
    if unknown:
        problems.append(f"{where}.{unknown[0]} is unknown; accepted: name, namespace, port")
    name, namespace, port = raw.get("name"), raw.get("namespace"), raw.get("port")
    checked = len(problems)
    if not isinstance(name, str) or not _SERVICE_NAME.match(name) or len(name) > 63:
        problems.append(
            f"{where}.name must be a Service name (a lower-case letter, then letters, digits "
            f"and '-', at most 63), got {name!r}"
        )
    if namespace is not None and (
        not isinstance(namespace, str) or not _DNS_LABEL.match(namespace) or len(namespace) > 63
    ):
        problems.append(f"{where}.namespace must be a namespace name, got {namespace!r}")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        problems.append(f"{where}.port must be a port number from 1 to 65535, got {port!r}")
    if len(problems) > checked:
        return None
    return RouterRef(str(name), namespace, port)
