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
from librarian.core.mapping import (
    ClusterCapacity,
    MappingValidation,
    estimate_memory_bytes,
    validate_domain_mapping,
)
from librarian.core.patterns import DomainChange, PatternReport, discover_patterns

__all__ = [
    "STRATEGIES",
    "ClusterCapacity",
    "DiscoveryBounds",
    "DiscoveryError",
    "DiscoveryResult",
    "Domain",
    "DomainChange",
    "MappingValidation",
    "Partition",
    "PatternReport",
    "assign",
    "assign_partitions",
    "discover",
    "discover_patterns",
    "estimate_memory_bytes",
    "validate_domain_mapping",
]
