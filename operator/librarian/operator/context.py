"""What the operator's controllers share and tests may replace: fleet factory, clock, defaults.

Why this exists: every controller (DomainMap, ClusterSpecialization,
RebalancePolicy) takes the same context; it is built once from the operator's
configuration, and tests inject a clock, short intervals or a fake fleet.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from librarian import __version__
from librarian.core.load import Thresholds
from librarian.kube.fleet_access import CredentialPolicy
from librarian.kube.job_pod import JobPodSettings
from librarian.kube.policy_spec import PolicyDefaults
from librarian.kube.spec import SpecDefaults
from librarian.operator.analysis import RetryPolicy
from librarian.operator.router_ref import ServiceUrl, cluster_service_url
from librarian.settings import Settings
from librarian.storage.fleet import ClusterConfig, Fleet

__all__ = ["OperatorContext"]


@dataclass
class OperatorContext:
    """What handlers need that tests may replace: fleet factory, clock, timeouts."""

    fleet_factory: Callable[[Iterable[ClusterConfig]], Fleet] = Fleet
    spec_defaults: SpecDefaults = field(default_factory=SpecDefaults)
    discovery_enabled: bool = True
    default_optimization_strategy: str = "balanced"
    migration_defaults: dict[str, Any] = field(
        default_factory=lambda: {
            "batch_size": 1000,
            "parallel_workers": 4,
            "verify_migration": True,
        }
    )
    image: str = field(
        default_factory=lambda: os.environ.get(
            "LIBRARIAN_IMAGE", f"ghcr.io/qdrant-librarian/qdrant-librarian:{__version__}"
        )
    )
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    progress_interval_s: float = 2.0
    job_retry: RetryPolicy = field(default_factory=RetryPolicy)
    """How a failed analysis or labeling Job is created again."""
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    rebalance_defaults: PolicyDefaults = field(default_factory=PolicyDefaults)
    credential_policy: CredentialPolicy = field(default_factory=CredentialPolicy)
    job_pod: JobPodSettings = field(default_factory=JobPodSettings)
    """The pod settings of every Job (the chart's ``jobs`` values; see
    :func:`librarian.kube.job_pod.job_pod_from_env`)."""
    service_url: ServiceUrl = cluster_service_url
    """How a Service a policy's routerRef names is reached (its cluster DNS name)."""

    def lock(self, key: str) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    @classmethod
    def from_settings(
        cls, settings: Settings, job_pod: JobPodSettings | None = None
    ) -> OperatorContext:
        """Defaults and switches from the multi-cluster-managers configuration, and the Job
        pod settings (the chart's ``jobs`` values)."""
        discovery = settings.domain_discovery
        rebalancing = settings.adaptive_rebalancing
        return cls(
            spec_defaults=SpecDefaults(
                strategy=discovery.strategy,
                interval_s=discovery.analysis_interval,
                batch_size=discovery.batch_size,
                confidence_threshold=discovery.confidence_threshold,
            ),
            discovery_enabled=discovery.enabled,
            job_pod=job_pod or JobPodSettings(),
            credential_policy=CredentialPolicy.of(
                settings.credentials.allowed_api_key_env, settings.credentials.insecure_hosts
            ),
            default_optimization_strategy=settings.cluster_specialization.optimization_strategy,
            migration_defaults=settings.cluster_specialization.migration.model_dump(),
            rebalance_defaults=PolicyDefaults(
                enabled=rebalancing.enabled,
                auto_trigger=rebalancing.auto_trigger,
                interval_s=rebalancing.analysis_interval,
                thresholds=Thresholds(
                    load_imbalance=rebalancing.thresholds.load_imbalance,
                    latency_degradation_ms=rebalancing.thresholds.latency_degradation * 1000,
                    accuracy_drop=rebalancing.thresholds.accuracy_drop,
                ),
                prediction=rebalancing.prediction.enable_ml_predictions,
            ),
        )
