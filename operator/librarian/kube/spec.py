"""Parsing and validating a DomainMap's ``spec`` into typed settings.

Why this exists: the CRD schema catches shapes, but not meaning (a source
cluster that is not in the fleet, bounds that contradict each other, a
duration the API server cannot judge). This module collects *every* problem
with its field path and how to fix it, so a bad spec gets one clear
``Ready=False`` condition instead of a crash or a silent default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from librarian.contracts.reserved import PRODUCT_PREFIX
from librarian.core.discovery import STRATEGIES
from librarian.core.durations import DurationError, parse_duration
from librarian.core.load import ClusterCapacity
from librarian.kube.job_pod import (
    OVERRIDABLE,
    CaBundleRef,
    JobPodError,
    JobPodSettings,
    parse_job_pod,
)

__all__ = [
    "ClusterRef",
    "DomainMapSpec",
    "FleetClusters",
    "SecretRef",
    "SpecDefaults",
    "SpecError",
    "SpecializationSpec",
    "domainmap_interval",
    "fleet_ref_of",
    "parse_cluster_capacity",
    "parse_domainmap_spec",
    "parse_fleet_spec",
    "parse_quantity",
    "parse_specialization_spec",
]


class SpecError(ValueError):
    """The spec is invalid; ``problems`` lists each with its field path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str = "api-key"
    namespace: str | None = None  # only ever accepted when it is the resource's own


@dataclass(frozen=True)
class ClusterRef:
    """A fleet entry as written in the spec (API key not resolved yet)."""

    name: str
    url: str | None = None
    embedded: str | None = None
    secret: SecretRef | None = None
    api_key_env: str | None = None
    timeout_s: float = 10.0
    retries: int = 3
    ca_bundle: CaBundleRef | None = None
    """A QdrantFleet cluster's CA bundle (``caBundle``: PEM certificates in a ConfigMap or
    Secret of the fleet's namespace, named as ``jobs.caBundle`` names one), carried for
    whoever connects to it: its ``volume()`` presents it to a pod as ``ca.crt``."""
    capacity: ClusterCapacity | None = None
    """A QdrantFleet cluster's ``capacity`` (memory, disk, queries/s, baseline latency): what
    a RebalancePolicy of a DomainMap on that fleet judges its load against, unless the
    policy's own ``spec.capacity`` lists the cluster."""


@dataclass(frozen=True)
class FleetClusters:
    """The clusters of the QdrantFleet a DomainMap names in ``spec.fleetRef``, as read.

    ``generation`` is the fleet's ``metadata.generation`` they were read at."""

    name: str
    clusters: tuple[ClusterRef, ...]
    generation: int | None = None


@dataclass(frozen=True)
class DomainMapSpec:
    source_cluster: str
    source_collection: str
    text_field: str
    clusters: tuple[ClusterRef, ...]
    strategy: str
    interval_s: float
    sample_size: int
    seed: int
    confidence_threshold: float
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    labeling_enabled: bool = True
    labeling_batch_size: int = 1000
    labeling_workers: int = 4  # pods of the labeling Job, one id range each
    catalog_cluster: str = ""
    catalog_collection: str = ""
    drift_threshold: float = 0.05
    specialize: str = "manual"
    specialization_targets: tuple[tuple[str, str | None], ...] = ()  # (cluster, strategy)
    remove_labels_on_delete: bool = False
    source_vector: str | None = None  # the dense vector to route on; None: the default one
    fleet_ref: str | None = None  # the QdrantFleet the clusters came from; None: inline
    fleet_generation: int | None = None  # that fleet's generation when it was read

    def cluster(self, name: str) -> ClusterRef:
        return next(c for c in self.clusters if c.name == name)


@dataclass(frozen=True)
class SpecDefaults:
    """Operator-wide defaults for what a DomainMap leaves out (from the configuration)."""

    strategy: str = "hybrid"
    interval_s: float = 300.0
    batch_size: int = 1000
    confidence_threshold: float = 0.8


_BOUNDS = {
    "minDomains": "min_domains",
    "maxDomains": "max_domains",
    "minDomainSize": "min_domain_size",
    "mergeSimilarity": "merge_similarity",
    "partitions": "partitions",
    "maxPartitions": "max_partitions",
    "minPartitionSize": "min_partition_size",
}


def fleet_ref_of(spec: Mapping[str, Any]) -> str | None:
    """The QdrantFleet name ``spec.fleetRef.name`` of a DomainMap spec (None: none given)."""
    ref = spec.get("fleetRef")
    if not isinstance(ref, Mapping):
        return None
    return str(ref.get("name") or "") or None


def domainmap_interval(spec: Mapping[str, Any], defaults: SpecDefaults | None = None) -> float:
    """The re-analysis period of a DomainMap spec, without resolving its fleet.

    Raises :class:`SpecError` when ``spec.interval`` is not a valid duration."""
    problems: list[str] = []
    _, interval_s = _strategy_and_interval(spec, defaults or SpecDefaults(), problems)
    if problems:
        raise SpecError(problems)
    return interval_s


def parse_domainmap_spec(
    spec: Mapping[str, Any],
    *,
    name: str,
    defaults: SpecDefaults | None = None,
    fleet: FleetClusters | None = None,
) -> DomainMapSpec:
    """Validate ``spec`` of DomainMap ``name``; raise :class:`SpecError` listing every problem.

    Fields the spec leaves out take ``defaults`` (the operator's configuration). The clusters
    are ``spec.clusters`` (inline, deprecated) or, with ``spec.fleetRef``, those of ``fleet``
    (the QdrantFleet it names, read by the caller: see
    :func:`librarian.kube.fleets.load_domainmap_spec`); exactly one of the two is given.
    """
    defaults = defaults or SpecDefaults()
    problems: list[str] = []
    source = spec.get("source") or {}
    source_cluster, source_collection = _source(source, problems)
    fleet_ref = fleet_ref_of(spec)
    clusters, where = _domainmap_clusters(spec, fleet_ref, fleet, problems)
    seen = {c.name for c in clusters}
    if source_cluster and clusters and source_cluster not in seen:
        problems.append(
            f"spec.source.cluster {source_cluster!r} is not in {where} "
            f"({', '.join(sorted(seen))}); add it or fix the name"
        )
    strategy, interval_s = _strategy_and_interval(spec, defaults, problems)
    thresholds = _bounds(spec.get("bounds") or {}, problems)
    sample_size, confidence = _sampling(spec, defaults, problems)
    labeling = spec.get("labeling") or {}
    catalog = spec.get("catalog") or {}
    catalog_cluster = str(catalog.get("cluster") or source_cluster)
    if catalog.get("cluster") and catalog_cluster not in seen:
        problems.append(f"spec.catalog.cluster {catalog_cluster!r} is not in {where}")
    specialize, targets = _specialization(spec, seen, where, problems)
    workers = labeling.get("workers", 4)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        problems.append(f"spec.labeling.workers must be an integer from 1 to 64, not {workers!r}")
    if problems:
        raise SpecError(problems)
    return DomainMapSpec(
        source_cluster=source_cluster,
        source_collection=source_collection,
        text_field=str(source.get("textField") or "text"),
        clusters=tuple(clusters),
        strategy=strategy,
        interval_s=interval_s,
        sample_size=sample_size,
        seed=int(spec.get("seed") or 0),
        confidence_threshold=confidence,
        thresholds=thresholds,
        labeling_enabled=bool(labeling.get("enabled", True)),
        labeling_batch_size=int(labeling.get("batchSize") or defaults.batch_size),
        labeling_workers=int(labeling.get("workers") or 4),
        catalog_cluster=catalog_cluster,
        catalog_collection=str(catalog.get("collection") or f"{PRODUCT_PREFIX}catalog-{name}"),
        drift_threshold=float((spec.get("drift") or {}).get("threshold", 0.05)),
        specialize=specialize,
        specialization_targets=tuple(targets),
        remove_labels_on_delete=bool((spec.get("cleanup") or {}).get("removeLabels", False)),
        source_vector=str(source.get("vector") or "") or None,
        fleet_ref=fleet_ref,
        fleet_generation=fleet.generation if fleet_ref and fleet is not None else None,
    )


def _domainmap_clusters(
    spec: Mapping[str, Any],
    fleet_ref: str | None,
    fleet: FleetClusters | None,
    problems: list[str],
) -> tuple[list[ClusterRef], str]:
    """The DomainMap's clusters and how messages name where they come from."""
    inline = spec.get("clusters")
    if "fleetRef" in spec and fleet_ref is None:
        problems.append("spec.fleetRef.name is required: the QdrantFleet of this namespace to use")
        return [], "spec.fleetRef"
    if fleet_ref is not None and inline:
        problems.append(
            f"give spec.clusters or spec.fleetRef, not both: the clusters come from QdrantFleet "
            f"{fleet_ref!r}; remove spec.clusters"
        )
        return [], f"QdrantFleet {fleet_ref!r}"
    if fleet_ref is None:
        if not inline:
            problems.append(
                "spec.fleetRef is required: name the QdrantFleet of this namespace whose "
                "clusters to use (or list them in spec.clusters, deprecated)"
            )
            return [], "spec.clusters"
        return _clusters(inline, problems, where="spec.clusters", in_fleet=False), "spec.clusters"
    where = f"QdrantFleet {fleet_ref!r}"
    if fleet is None or fleet.name != fleet_ref:
        problems.append(f"spec.fleetRef names QdrantFleet {fleet_ref!r}, which was not read")
        return [], where
    return list(fleet.clusters), where


def parse_fleet_spec(spec: Mapping[str, Any], *, name: str) -> tuple[ClusterRef, ...]:
    """Validate the ``spec`` of QdrantFleet ``name``: its clusters, as a DomainMap's
    ``spec.clusters`` takes them, plus each one's optional ``caBundle``.

    Raises :class:`SpecError` listing every problem (paths start with ``spec.clusters``)."""
    problems: list[str] = []
    clusters = _clusters(spec.get("clusters") or [], problems, where="spec.clusters")
    if problems:
        raise SpecError(problems)
    return tuple(clusters)


def _source(source: Mapping[str, Any], problems: list[str]) -> tuple[str, str]:
    cluster = str(source.get("cluster") or "")
    collection = str(source.get("collection") or "")
    if not cluster:
        problems.append("spec.source.cluster is required: name one of the clusters (of the fleet)")
    if not collection:
        problems.append("spec.source.collection is required: the collection to analyse")
    return cluster, collection


def _clusters(
    raw_clusters: Sequence[Mapping[str, Any]],
    problems: list[str],
    *,
    where: str,
    in_fleet: bool = True,
) -> list[ClusterRef]:
    """The fleet entries; an entry without a name is reported and left out.

    ``in_fleet``: whether the entries are a QdrantFleet's, which alone may carry ``caBundle``
    and ``capacity``."""
    if not raw_clusters:
        problems.append(f"{where} must list at least one cluster (url or embedded)")
    clusters: list[ClusterRef] = []
    seen: set[str] = set()
    field_path = where
    for index, raw in enumerate(raw_clusters):
        where = f"{field_path}[{index}]"
        cluster_name = str(raw.get("name") or "")
        if not cluster_name:
            problems.append(f"{where}.name is required")
            continue
        if cluster_name in seen:
            problems.append(f"{where}.name {cluster_name!r} appears twice; names must be unique")
        seen.add(cluster_name)
        cluster = _cluster(raw, where, cluster_name, problems)
        if raw.get("caBundle") is not None:
            if in_fleet:
                cluster = replace(cluster, ca_bundle=_ca_bundle(raw["caBundle"], where, problems))
            else:
                problems.append(
                    f"{where}.caBundle is accepted in a QdrantFleet only: move the clusters "
                    "to a QdrantFleet and name it in spec.fleetRef"
                )
        if raw.get("capacity") is not None:
            if in_fleet:
                capacity = raw["capacity"]
                if isinstance(capacity, Mapping):
                    cluster = replace(
                        cluster,
                        capacity=parse_cluster_capacity(
                            capacity, f"{where}.capacity", cluster_name, problems
                        ),
                    )
                else:
                    problems.append(f"{where}.capacity must be an object, got {capacity!r}")
            else:
                problems.append(
                    f"{where}.capacity is accepted in a QdrantFleet only (or in a "
                    "RebalancePolicy's spec.capacity)"
                )
        clusters.append(cluster)
    return clusters


def _ca_bundle(raw: Any, where: str, problems: list[str]) -> CaBundleRef | None:
    """A cluster's ``caBundle``, checked as the chart's ``jobs.caBundle`` is."""
    try:
        return parse_job_pod({"caBundle": raw}, where=where, allowed=("caBundle",)).ca_bundle
    except JobPodError as error:
        problems.extend(error.problems)
        return None


def parse_cluster_capacity(
    entry: Mapping[str, Any], where: str, cluster: str, problems: list[str]
) -> ClusterCapacity:
    """What one cluster can take (``memory``, ``disk``, ``maxQueriesPerSecond``,
    ``baselineLatency``), as a QdrantFleet's cluster or a RebalancePolicy's ``spec.capacity``
    entry writes it; each bad value is reported in ``problems`` and left unset."""
    sizes: dict[str, int | None] = {}
    for key in ("memory", "disk"):
        sizes[key] = None
        if entry.get(key) is not None:
            try:
                sizes[key] = parse_quantity(str(entry[key]))
            except ValueError:
                problems.append(f"{where}.{key} {entry[key]!r} is not a quantity like 512Mi or 8Gi")
    max_qps = entry.get("maxQueriesPerSecond")
    if max_qps is not None and (
        isinstance(max_qps, bool) or not isinstance(max_qps, int | float) or max_qps <= 0
    ):
        problems.append(f"{where}.maxQueriesPerSecond must be a number > 0, got {max_qps!r}")
        max_qps = None
    baseline = entry.get("baselineLatency")
    baseline_ms: float | None = None
    if baseline is not None:
        try:
            baseline_ms = parse_duration(baseline) * 1000
        except DurationError as error:
            problems.append(f"{where}.baselineLatency: {error}")
    return ClusterCapacity(
        name=cluster,
        memory_bytes=sizes["memory"],
        disk_bytes=sizes["disk"],
        max_qps=float(max_qps) if max_qps is not None else None,
        baseline_p95_ms=baseline_ms,
    )


def _cluster(raw: Mapping[str, Any], where: str, name: str, problems: list[str]) -> ClusterRef:
    url, embedded = raw.get("url"), raw.get("embedded")
    if (url is None) == (embedded is None):
        problems.append(
            f"{where} ({name}) needs exactly one of url (remote Qdrant) or "
            "embedded (local engine path)"
        )
    if url is not None and not str(url).startswith(("http://", "https://")):
        problems.append(f"{where}.url must start with http:// or https://, got {url!r}")
    if "apiKey" in raw:
        problems.append(
            f"{where}.apiKey is not accepted: API keys never go in a spec; use "
            "apiKeySecretRef (a Secret) or apiKeyEnv (the operator's environment)"
        )
    secret = _secret_ref(raw.get("apiKeySecretRef"), where, problems)
    if secret and raw.get("apiKeyEnv"):
        problems.append(f"{where}: give apiKeySecretRef or apiKeyEnv, not both")
    timeout = _number(raw.get("timeoutSeconds", 10), f"{where}.timeoutSeconds", problems)
    retries = _number(raw.get("retries", 3), f"{where}.retries", problems)
    return ClusterRef(
        name=name,
        url=str(url) if url is not None else None,
        embedded=str(embedded) if embedded is not None else None,
        secret=secret,
        api_key_env=raw.get("apiKeyEnv"),
        timeout_s=max(float(timeout), 0.1),
        retries=int(retries),
    )


def _secret_ref(raw: Mapping[str, Any] | None, where: str, problems: list[str]) -> SecretRef | None:
    if not raw:
        return None
    if not raw.get("name"):
        problems.append(f"{where}.apiKeySecretRef.name is required")
        return None
    namespace = raw.get("namespace")
    return SecretRef(
        str(raw["name"]), str(raw.get("key") or "api-key"), str(namespace) if namespace else None
    )


def _strategy_and_interval(
    spec: Mapping[str, Any], defaults: SpecDefaults, problems: list[str]
) -> tuple[str, float]:
    strategy = str(spec.get("strategy") or defaults.strategy)
    if strategy not in STRATEGIES:
        problems.append(f"spec.strategy {strategy!r} is unknown; accepted: {', '.join(STRATEGIES)}")
    interval_s = defaults.interval_s
    try:
        interval_s = parse_duration(spec.get("interval") or defaults.interval_s)
    except DurationError as error:
        problems.append(f"spec.interval: {error}")
    if interval_s <= 0:
        problems.append("spec.interval must be longer than zero")
    return strategy, interval_s


def _bounds(bounds: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """``spec.bounds`` as discovery thresholds, checked against each other."""
    thresholds: dict[str, Any] = {}
    for key, value in bounds.items():
        if key not in _BOUNDS:
            problems.append(f"spec.bounds.{key} is unknown; accepted: {', '.join(sorted(_BOUNDS))}")
            continue
        thresholds[_BOUNDS[key]] = value
    low, high = thresholds.get("min_domains"), thresholds.get("max_domains")
    if low is not None and high is not None and low > high:
        problems.append(
            f"spec.bounds.minDomains ({low}) is larger than spec.bounds.maxDomains ({high})"
        )
    for key in ("partitions", "maxPartitions", "minPartitionSize"):
        value = bounds.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append(f"spec.bounds.{key} must be a whole number >= 1 (got {value!r})")
    similarity = thresholds.get("merge_similarity")
    if similarity is not None and not 0 < float(similarity) <= 1:
        problems.append("spec.bounds.mergeSimilarity must be in (0, 1]")
    return thresholds


def _sampling(
    spec: Mapping[str, Any], defaults: SpecDefaults, problems: list[str]
) -> tuple[int, float]:
    sample_size = int(_number(spec.get("sampleSize", 10_000), "spec.sampleSize", problems))
    if sample_size < 10:
        problems.append("spec.sampleSize must be at least 10")
    confidence = float(
        _number(
            spec.get("confidenceThreshold", defaults.confidence_threshold),
            "spec.confidenceThreshold",
            problems,
        )
    )
    if not 0 <= confidence <= 1:
        problems.append("spec.confidenceThreshold must be between 0 and 1")
    return sample_size, confidence


def _specialization(
    spec: Mapping[str, Any], clusters: set[str], where: str, problems: list[str]
) -> tuple[str, list[tuple[str, str | None]]]:
    """``spec.specialize`` and the targets automatic specialization places domains on."""
    specialize = str(spec.get("specialize") or "manual")
    if specialize not in ("manual", "auto"):
        problems.append(f"spec.specialize {specialize!r} is unknown; accepted: manual, auto")
    targets: list[tuple[str, str | None]] = []
    for index, raw in enumerate((spec.get("specialization") or {}).get("targets") or []):
        cluster = str(raw.get("cluster") or "")
        if cluster not in clusters:
            problems.append(
                f"spec.specialization.targets[{index}].cluster {cluster!r} is not in {where}"
            )
        if raw.get("strategy") == "custom":
            problems.append(
                f"spec.specialization.targets[{index}].strategy custom needs overrides, which "
                "automatic specialization does not set; use latency, throughput, accuracy or "
                "balanced"
            )
        targets.append((cluster, raw.get("strategy")))
    if specialize == "auto" and not targets:
        problems.append(
            "spec.specialize is auto but spec.specialization.targets is empty: list "
            "the clusters (and strategies) to place domains on"
        )
    return specialize, targets


def _number(value: Any, where: str, problems: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{where} must be a number, got {value!r}")
        return 0.0
    return float(value)


@dataclass(frozen=True)
class SpecializationSpec:
    domain_map: str
    domain: str
    target_cluster: str
    target_collection: str | None
    strategy: str
    overrides: Mapping[str, Any]
    queries_per_second: float
    growth_per_day: float
    memory_budget_bytes: int | None
    batch_size: int | None
    workers: int | None
    verify: bool | None
    cleanup_source: bool
    grace_s: float
    backoff_limit: int
    active_deadline_s: float
    image: str | None
    source_cluster: str | None = None  # copy from here instead of the DomainMap's source
    source_collection: str | None = None
    job: JobPodSettings = field(default_factory=JobPodSettings)
    """``spec.job``: the migration Job's pod settings over the operator-wide ones."""


_OVERRIDE_NAMES = {
    "m": "m",
    "efConstruct": "ef_construct",
    "fullScanThreshold": "full_scan_threshold",
    "hnswOnDisk": "hnsw_on_disk",
    "hnswEf": "hnsw_ef",
    "quantization": "quantization",
    "quantizationAlwaysRam": "quantization_always_ram",
    "rescore": "rescore",
    "oversampling": "oversampling",
    "onDiskVectors": "on_disk_vectors",
    "onDiskPayload": "on_disk_payload",
    "shardNumber": "shard_number",
    "replicationFactor": "replication_factor",
    "indexingThreshold": "indexing_threshold",
    "defaultSegmentNumber": "default_segment_number",
    "maxSegmentSize": "max_segment_size",
}
_SIZE_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def parse_quantity(text: str) -> int:
    """Kubernetes memory quantities (``512Mi``, ``2Gi``, ``1G``, plain bytes)."""
    value = str(text).strip()
    for unit in sorted(_SIZE_UNITS, key=len, reverse=True):
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * _SIZE_UNITS[unit])
    return int(float(value))


def parse_specialization_spec(
    spec: Mapping[str, Any], *, default_strategy: str = "balanced"
) -> SpecializationSpec:
    """Validate a ClusterSpecialization spec; raise :class:`SpecError` listing every problem."""
    problems: list[str] = []
    domain_map = str(spec.get("domainMap") or "")
    domain = str(spec.get("domain") or "")
    target = spec.get("target") or {}
    if not domain_map:
        problems.append("spec.domainMap is required: the DomainMap whose domain this specializes")
    if not domain:
        problems.append("spec.domain is required: a domain id or name from the DomainMap's status")
    if not target.get("cluster"):
        problems.append("spec.target.cluster is required: a cluster of the DomainMap")
    strategy = _optimization_strategy(spec, default_strategy, problems)
    source = spec.get("source") or {}
    if source and not (source.get("cluster") and source.get("collection")):
        problems.append(
            "spec.source needs both cluster and collection (where the domain's points are now)"
        )
    overrides = _overrides(spec, problems)
    load = spec.get("expectedLoad") or {}
    budget = _memory_budget(load, problems)
    migration = spec.get("migration") or {}
    grace_s, deadline_s = _migration_times(migration, problems)
    job = JobPodSettings()
    try:
        job = parse_job_pod(spec.get("job"), where="spec.job", allowed=OVERRIDABLE)
    except JobPodError as error:
        problems.extend(error.problems)
    if problems:
        raise SpecError(problems)
    return SpecializationSpec(
        domain_map=domain_map,
        domain=domain,
        target_cluster=str(target["cluster"]),
        target_collection=target.get("collection") or None,
        strategy=strategy,
        overrides=overrides,
        queries_per_second=float(load.get("queriesPerSecond") or 0.0),
        growth_per_day=float(load.get("growthPerDay") or 0.0),
        memory_budget_bytes=budget,
        batch_size=migration.get("batchSize"),
        workers=migration.get("parallelWorkers"),
        verify=migration.get("verify"),
        cleanup_source=bool(migration.get("cleanupSource", False)),
        grace_s=grace_s,
        backoff_limit=int(migration.get("backoffLimit", 3)),
        active_deadline_s=deadline_s,
        image=migration.get("image"),
        source_cluster=source.get("cluster") or None,
        source_collection=source.get("collection") or None,
        job=job,
    )


def _optimization_strategy(
    spec: Mapping[str, Any], default_strategy: str, problems: list[str]
) -> str:
    from librarian.core.tuning import OPTIMIZATION_STRATEGIES

    strategy = str(spec.get("strategy") or default_strategy)
    if strategy not in OPTIMIZATION_STRATEGIES:
        problems.append(
            f"spec.strategy {strategy!r} is unknown; accepted: {', '.join(OPTIMIZATION_STRATEGIES)}"
        )
    return strategy


def _overrides(spec: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """``spec.overrides`` under the tuning's names; ``custom`` needs some."""
    if spec.get("strategy") == "custom" and not spec.get("overrides"):
        problems.append("spec.strategy custom needs spec.overrides (the config values to use)")
    overrides: dict[str, Any] = {}
    for key, value in (spec.get("overrides") or {}).items():
        if key not in _OVERRIDE_NAMES:
            problems.append(
                f"spec.overrides.{key} is unknown; accepted: {', '.join(sorted(_OVERRIDE_NAMES))}"
            )
        else:
            overrides[_OVERRIDE_NAMES[key]] = value
    return overrides


def _memory_budget(load: Mapping[str, Any], problems: list[str]) -> int | None:
    if not load.get("memoryBudget"):
        return None
    try:
        return parse_quantity(load["memoryBudget"])
    except ValueError:
        problems.append(
            f"spec.expectedLoad.memoryBudget {load['memoryBudget']!r} is not a "
            "quantity like 512Mi or 2Gi"
        )
        return None


def _migration_times(migration: Mapping[str, Any], problems: list[str]) -> tuple[float, float]:
    """The grace period and the Job's deadline; cleaning the source needs a verified copy."""
    if migration.get("cleanupSource") and migration.get("verify") is False:
        problems.append(
            "spec.migration.cleanupSource needs verify: the source is cleaned only after the "
            "copy is verified"
        )
    grace_s = deadline_s = 0.0
    try:
        grace_s = parse_duration(migration.get("gracePeriod") or "0s")
        deadline_s = parse_duration(migration.get("activeDeadline") or "6h")
    except DurationError as error:
        problems.append(f"spec.migration: {error}")
    return grace_s, deadline_s
