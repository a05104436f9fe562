"""Pure logic of qdrant-librarian: numpy and scikit-learn only, no I/O, no clock, no env.

Why this exists: the algorithms (discovery, patterns, placement, mapping
validation, routing, fusion, load analysis, forecasts, rebalancing plans,
tuning) are the product's heart; keeping them pure keeps them testable and
reusable from the operator, the router, the CLI and as a library. They speak
of domains, clusters and load, never of the resources or statuses that carry
them. (The rebalancing ``ClusterCapacity`` lives in :mod:`librarian.core.load`;
the one exported here describes a specialization target for mapping
validation.)
"""

from librarian.core.discovery import (
    STRATEGIES,
    DiscoveryBounds,
    DiscoveryError,
    DiscoveryResult,
    Domain,
    Partition,
    assign,
    assign_partitions,
    discover,
    partition_count,
)
from librarian.core.forecast import (
    Forecast,
    LoadHistory,
    PredictionLedger,
    forecast_series,
    mean_absolute_percentage_error,
    predict_domain_metrics,
)
from librarian.core.fusion import FUSIONS, FusionError, FusionModel, Hit, fuse
from librarian.core.load import DomainLoad, LoadReport, Thresholds, Violation, analyze_load
from librarian.core.mapping import (
    ClusterCapacity,
    MappingValidation,
    estimate_memory_bytes,
    validate_domain_mapping,
)
from librarian.core.patterns import DomainChange, PatternReport, discover_patterns
from librarian.core.planner import (
    Constraints,
    MaintenanceWindow,
    Move,
    Proposal,
    plan_rebalance,
)
from librarian.core.routing import LibraryRouter, RouteDecision, RoutingError, build_router

__all__ = [
    "FUSIONS",
    "STRATEGIES",
    "ClusterCapacity",
    "Constraints",
    "DiscoveryBounds",
    "DiscoveryError",
    "DiscoveryResult",
    "Domain",
    "DomainChange",
    "DomainLoad",
    "Forecast",
    "FusionError",
    "FusionModel",
    "Hit",
    "LibraryRouter",
    "LoadHistory",
    "LoadReport",
    "MaintenanceWindow",
    "MappingValidation",
    "Move",
    "Partition",
    "PatternReport",
    "PredictionLedger",
    "Proposal",
    "RouteDecision",
    "RoutingError",
    "Thresholds",
    "Violation",
    "analyze_load",
    "assign",
    "assign_partitions",
    "build_router",
    "discover",
    "discover_patterns",
    "estimate_memory_bytes",
    "forecast_series",
    "fuse",
    "mean_absolute_percentage_error",
    "partition_count",
    "plan_rebalance",
    "predict_domain_metrics",
    "validate_domain_mapping",
]
