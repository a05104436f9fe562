"""The custom resources' API group, version and plural names.

Why this exists: the operator, the router's loader, ``librarian up`` and the
tests all address the same resources; the CRD YAML files are the source of
truth and a packaging test checks these names against them.
"""

from __future__ import annotations

GROUP = "librarian.dev"
VERSION = "v1alpha1"

DOMAINMAPS = "domainmaps"
CLUSTERSPECIALIZATIONS = "clusterspecializations"
REBALANCEPOLICIES = "rebalancepolicies"
QDRANTFLEETS = "qdrantfleets"


def resource(plural: str) -> str:
    """``group/version/plural``, the form the emulated API and kopf's selectors take."""
    return f"{GROUP}/{VERSION}/{plural}"
