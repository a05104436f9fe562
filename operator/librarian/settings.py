"""Typed settings of every manager, loaded from YAML, the environment and the CLI.

Why this exists: the operator, the router and the CLI share one configuration
(``config/multi-cluster-managers.yaml``). Defaults live here, in the models,
so an installed package works without the file; the YAML documents and
overrides them. Precedence, lowest first: model defaults < YAML file <
environment (``LIBRARIAN__SECTION__KEY=value``) < CLI (``--set section.key=value``).
Unknown keys and bad values raise :class:`ConfigError` naming the key and what
is accepted, instead of being silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from librarian.core.durations import DURATION_HELP, DurationError, parse_duration

ROOT_KEY = "multi_cluster_managers"
ENV_PREFIX = "LIBRARIAN__"
CONFIG_ENV = "LIBRARIAN_CONFIG"

DiscoveryStrategy = Literal["kmeans", "dbscan", "hierarchical", "semantic_flow", "hybrid"]
OptimizationStrategy = Literal["latency", "throughput", "accuracy", "balanced", "custom"]
RoutingStrategy = Literal[
    "auto",  # hybrid or domain_affinity, chosen when the routing model is built
    "hybrid",
    "domain_affinity",
    "load_balancing",
    "latency_optimized",
    "accuracy_first",
    # the seed configuration's names: nearest/threshold -> domain_affinity, all -> accuracy_first
    "nearest",
    "threshold",
    "all",
]
FusionAlgorithm = Literal["rrf", "weighted_score", "semantic_merge", "learned"]


def _seconds(value: Any) -> float:
    try:
        return parse_duration(value)
    except DurationError as error:
        raise ValueError(str(error)) from None


Duration = Annotated[float, BeforeValidator(_seconds)]
"""A duration in seconds; accepts ``100ms``, ``30s``, ``5m``, ``1h``, ``7d`` or a number."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DiscoveryStorage(_Section):
    persist_domains: bool = True
    cache_ttl: Duration = 3600.0


class DomainDiscoverySettings(_Section):
    enabled: bool = True
    strategy: DiscoveryStrategy = "hybrid"
    analysis_interval: Duration = 300.0
    batch_size: int = Field(1000, ge=1, le=100_000)
    confidence_threshold: float = Field(0.8, ge=0.0, le=1.0)
    storage: DiscoveryStorage = DiscoveryStorage()


class MigrationSettings(_Section):
    batch_size: int = Field(1000, ge=1, le=100_000)
    parallel_workers: int = Field(4, ge=1, le=64)
    verify_migration: bool = True


class ClusterSpecializationSettings(_Section):
    enabled: bool = True
    optimization_strategy: OptimizationStrategy = "balanced"
    auto_optimize: bool = True
    optimization_interval: Duration = 86400.0
    migration: MigrationSettings = MigrationSettings()


class CachingSettings(_Section):
    # off by default: a miss costs more than no cache (benchmarks/bench_cache.py)
    enable_result_cache: bool = False
    cache_ttl: Duration = 600.0
    max_entries: int = Field(10_000, ge=1)
    # an answer is cached once the newest write of every home it read is this old: keep it
    # at least the request timeout (the longest a write of the router waits for a home)
    settle_window: Duration = 30.0


class CircuitBreakerSettings(_Section):
    failure_threshold: int = Field(5, ge=1)
    reset_timeout: Duration = 30.0


class LimitsSettings(_Section):
    """What one request may cost the router; beyond a limit it is refused (400, 408 or 413)."""

    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(64, ge=4, le=10_000)
    max_batch_queries: int = Field(100, ge=1)
    max_ids_per_call: int = Field(10_000, ge=1)
    max_points_per_upsert: int = Field(1000, ge=1)
    max_limit_plus_offset: int = Field(10_000, ge=1)
    batch_concurrency: int = Field(1, ge=1)
    cache_max_bytes: int = Field(64 * 1024 * 1024, ge=0)
    header_read_timeout: Duration = 30.0
    body_read_timeout: Duration = 30.0
    upstream_workers_per_cluster: int = Field(8, ge=1, le=256)
    routing_workers: int = Field(2, ge=1, le=64)
    routing_blas_threads: int = Field(1, ge=1, le=256)


class OrchestratorSettings(_Section):
    enabled: bool = True
    routing_strategy: RoutingStrategy = "auto"
    fusion_algorithm: FusionAlgorithm = "semantic_merge"
    timeout: Duration = 30.0
    caching: CachingSettings = CachingSettings()
    target_recall: float = Field(0.96, gt=0.0, le=1.0)
    shadow_fraction: float = Field(0.05, ge=0.0, le=1.0)
    reload_interval: Duration = 30.0
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    limits: LimitsSettings = LimitsSettings()


class RebalanceThresholds(_Section):
    load_imbalance: float = Field(0.3, ge=0.0, le=1.0)
    latency_degradation: Duration = 0.1
    accuracy_drop: float = Field(0.1, ge=0.0, le=1.0)


class PredictionSettings(_Section):
    enable_ml_predictions: bool = True
    model_update_interval: Duration = 604800.0


class RebalancingSettings(_Section):
    enabled: bool = True
    auto_trigger: bool = True
    analysis_interval: Duration = 900.0
    thresholds: RebalanceThresholds = RebalanceThresholds()
    prediction: PredictionSettings = PredictionSettings()


class CredentialSettings(_Section):
    """Which credentials the operator and the router may hand to a Qdrant cluster.

    ``allowedApiKeyEnv``: the only environment variables a cluster's ``apiKeyEnv``
    may name. ``insecureHosts``: hosts an API key may be sent to over plain HTTP
    (every other host needs https). Both are empty by default: nothing is allowed.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, populate_by_name=True
    )

    allowed_api_key_env: tuple[str, ...] = Field((), alias="allowedApiKeyEnv")
    insecure_hosts: tuple[str, ...] = Field((), alias="insecureHosts")


class Settings(_Section):
    """Everything under ``multi_cluster_managers``."""

    domain_discovery: DomainDiscoverySettings = DomainDiscoverySettings()
    cluster_specialization: ClusterSpecializationSettings = ClusterSpecializationSettings()
    domain_library_orchestrator: OrchestratorSettings = OrchestratorSettings()
    adaptive_rebalancing: RebalancingSettings = RebalancingSettings()
    credentials: CredentialSettings = CredentialSettings()


class ConfigError(ValueError):
    """The configuration has an unknown key or a bad value; the message says which and why."""


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Settings:
    """Build :class:`Settings` from the file, the environment and ``key=value`` overrides.

    ``path`` defaults to ``$LIBRARIAN_CONFIG`` when set; with neither, only
    defaults, environment and overrides apply.
    """
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    source = "defaults"
    if chosen:
        data = _read_file(Path(chosen))
        source = str(chosen)
    for key, value in sorted(env.items()):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_dotted(data, dotted, yaml.safe_load(value) if value else value, origin=key)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, _, value = item.partition("=")
        _set_dotted(data, dotted.strip(), yaml.safe_load(value), origin=f"--set {item}")
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_explain(error, source)) from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration file {path} is not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or set(loaded) != {ROOT_KEY}:
        found = sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__
        raise ConfigError(
            f"configuration file {path} must have exactly one top-level key "
            f"{ROOT_KEY!r}; found {found}"
        )
    section = loaded[ROOT_KEY] or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{ROOT_KEY} in {path} must be a mapping of sections")
    return section


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, *, origin: str) -> None:
    parts = [p for p in dotted.split(".") if p]
    if parts and parts[0] == ROOT_KEY:
        parts = parts[1:]
    if not parts:
        raise ConfigError(f"{origin}: names no configuration key")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _explain(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for problem in error.errors():
        loc = ".".join(str(p) for p in (ROOT_KEY, *problem["loc"]))
        if problem["type"] == "extra_forbidden":
            parent = _model_at(problem["loc"][:-1])
            accepted = ", ".join(parent.model_fields) if parent else "see the documentation"
            lines.append(f"  {loc}: unknown key; accepted keys here: {accepted}")
        elif problem["type"] == "literal_error":
            choices = problem.get("ctx", {}).get("expected", "")
            lines.append(f"  {loc}: got {problem['input']!r}; accepted: {choices}")
        elif "duration" in str(problem.get("msg", "")):
            lines.append(f"  {loc}: got {problem['input']!r}; {DURATION_HELP}")
        else:
            lines.append(f"  {loc}: got {problem['input']!r}; {problem['msg']}")
    return "\n".join(lines)


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return None
        if not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def settings_as_yaml(settings: Settings) -> str:
    """The effective settings as YAML, for ``librarian config``."""
    return yaml.safe_dump({ROOT_KEY: settings.model_dump()}, sort_keys=False)


def literal_choices(literal: Any) -> tuple[str, ...]:
    """The accepted values of one of the ``Literal`` aliases above."""
    return tuple(str(a) for a in get_args(literal))
