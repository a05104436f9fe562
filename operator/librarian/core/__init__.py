"""Pure logic of qdrant-librarian: numpy and scikit-learn only, no I/O, no clock, no env.

Why this exists: the algorithms (discovery, patterns, placement validation,
status conditions) are the product's heart; keeping them pure keeps them
testable and reusable from the operator, the CLI and as a library.
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
)
from librarian.core.fusion import FUSIONS, FusionError, FusionModel, Hit, fuse
from librarian.core.mapping import (
    ClusterCapacity,
    MappingValidation,
    estimate_memory_bytes,
    validate_domain_mapping,
)
from librarian.core.patterns import DomainChange, PatternReport, discover_patterns
from librarian.core.routing import LibraryRouter, RouteDecision, RoutingError, build_router

__all__ = [
    "FUSIONS",
    "STRATEGIES",
    "ClusterCapacity",
    "DiscoveryBounds",
    "DiscoveryError",
    "DiscoveryResult",
    "Domain",
    "DomainChange",
    "FusionError",
    "FusionModel",
    "Hit",
    "LibraryRouter",
    "MappingValidation",
    "Partition",
    "PatternReport",
    "RouteDecision",
    "RoutingError",
    "assign",
    "assign_partitions",
    "build_router",
    "discover",
    "discover_patterns",
    "estimate_memory_bytes",
    "fuse",
    "validate_domain_mapping",
]
