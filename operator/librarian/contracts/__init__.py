"""What the operator, the router, the Jobs and the tools agree on, defined once.

Why this exists: the API group and version, the reserved payload keys that
mark a point's domain, and the labels and annotations on Kubernetes objects
are read by one part and written by another. Defined in one place, a rename
cannot leave two parts speaking different languages.
"""

from librarian.contracts.api import (
    CLUSTERSPECIALIZATIONS,
    DOMAINMAPS,
    GROUP,
    REBALANCEPOLICIES,
    VERSION,
    resource,
)
from librarian.contracts.metadata import (
    APPROVAL_ANNOTATION,
    DOMAIN_LABEL,
    DOMAINMAP_LABEL,
    FINALIZER,
    POLICY_LABEL,
    SPECIALIZATION_LABEL,
    SUPERSEDED_ANNOTATION,
)
from librarian.contracts.payload import LABEL_KEY, VERSION_KEY

__all__ = [
    "APPROVAL_ANNOTATION",
    "CLUSTERSPECIALIZATIONS",
    "DOMAINMAPS",
    "DOMAINMAP_LABEL",
    "DOMAIN_LABEL",
    "FINALIZER",
    "GROUP",
    "LABEL_KEY",
    "POLICY_LABEL",
    "REBALANCEPOLICIES",
    "SPECIALIZATION_LABEL",
    "SUPERSEDED_ANNOTATION",
    "VERSION",
    "VERSION_KEY",
    "resource",
]
