"""Labels and annotations the product puts on Kubernetes objects, and what each means.

Why this exists: an annotation written by one controller (or by a user) is read
by another, or by the router; the keys live here once.
"""

from __future__ import annotations

from librarian.contracts.api import GROUP

DOMAINMAP_LABEL = f"{GROUP}/domainmap"
"""On a ClusterSpecialization: the DomainMap whose domain it serves."""

DOMAIN_LABEL = f"{GROUP}/domain"
"""On a ClusterSpecialization: the domain id it serves."""

SPECIALIZATION_LABEL = f"{GROUP}/specialization"
"""On a migration Job: the ClusterSpecialization it moves points for."""

POLICY_LABEL = f"{GROUP}/rebalance-policy"
"""On a ClusterSpecialization a rebalancing move created: the policy (a label, not an owner)."""

SUPERSEDED_ANNOTATION = f"{GROUP}/superseded-by"
"""On a ClusterSpecialization whose domain moved: the specialization that serves it now."""

APPROVAL_ANNOTATION = f"{GROUP}/rebalance"
"""Set by a user on a RebalancePolicy: ``approve``, ``refresh`` or ``stop``."""

FINALIZER = f"{GROUP}/cleanup"
"""The operator's finalizer: what it created is cleaned up before the resource goes."""

ROUTER_FOR_LABEL = f"{GROUP}/router-for"
"""On a router replica's Lease: the DomainMap whose library it serves."""

FENCES_ANNOTATION = f"{GROUP}/fences"
"""On a router replica's Lease: JSON ``{move name: phase}`` of the moves it enforces."""

LIBRARY_LOADED_ANNOTATION = f"{GROUP}/library-loaded"
"""On a router replica's Lease: ``"true"`` once it serves the library (and may write to it)."""

CREDENTIALS_LABEL = f"{GROUP}/qdrant-credentials"
"""On a Secret, set to ``"true"`` by its owner: its keys may be sent to a Qdrant cluster
that a DomainMap of the same namespace names. Unlabelled Secrets are never used."""

RETRY_ANNOTATION = f"{GROUP}/retry"
"""Set (to any new value) by a user on a DomainMap whose analysis or labeling Job failed
after its retries: the operator runs it again."""

FLEET_ANNOTATION = f"{GROUP}/fleet-generation"
"""Set by the operator on a DomainMap whose ``spec.fleetRef`` names a QdrantFleet that was
created or changed: that fleet's generation. A DomainMap whose last analysis read another
generation is analysed again (the operator writes metadata, never a DomainMap's spec)."""
