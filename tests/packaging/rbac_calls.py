"""The Kubernetes API calls the operator and the router make, verb by verb.

One table, two checks: the chart's Roles must grant exactly these verbs
(tests/packaging/test_rbac.py), and every request the operator really sends
to the emulated API must be in the table (tests/operator/test_secret_hygiene.py).
Keys are (apiGroup, resource or resource/subresource).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Table = Mapping[tuple[str, str], frozenset[str]]

OPERATOR: Table = {
    # kopf: list + watch to follow them, patch for progress annotations and the finalizer;
    # the operator: get a DomainMap's live status (domainmap.py) and a specialization's
    # DomainMap (specialization.py).
    ("librarian.dev", "domainmaps"): frozenset({"get", "list", "watch", "patch"}),
    # kopf as above; the operator creates one per domain with specialize: auto.
    # rebalance.py: a move creates a ClusterSpecialization, reads it, marks the old one
    # superseded (patch) and deletes its own after rollback or once replaced.
    ("librarian.dev", "clusterspecializations"): frozenset(
        {"get", "list", "watch", "patch", "create", "delete"}
    ),
    # kopf as above; the operator re-reads a policy (get) and removes a handled
    # librarian.dev/rebalance annotation (patch).
    ("librarian.dev", "rebalancepolicies"): frozenset({"get", "list", "watch", "patch"}),
    # kopf writes handler results, the operator progress (api.patch_status).
    ("librarian.dev", "domainmaps/status"): frozenset({"patch"}),
    ("librarian.dev", "clusterspecializations/status"): frozenset({"patch"}),
    ("librarian.dev", "rebalancepolicies/status"): frozenset({"patch"}),
    # kopf follows QdrantFleets (list, watch, patch); kube/fleets.py reads a DomainMap's
    # fleetRef (get); operator/fleet.py writes each cluster's reachability (status).
    ("librarian.dev", "qdrantfleets"): frozenset({"get", "list", "watch", "patch"}),
    ("librarian.dev", "qdrantfleets/status"): frozenset({"patch"}),
    # jobs.py and domainmap.py: the owner references of Jobs and of auto-created
    # ClusterSpecializations set blockOwnerDeletion; where the API server enforces
    # OwnerReferencesPermissionEnforcement (OpenShift), creating it needs update on the
    # owner's finalizers. Checked by admission, never a request the operator sends.
    ("librarian.dev", "clusterspecializations/finalizers"): frozenset({"update"}),
    ("librarian.dev", "domainmaps/finalizers"): frozenset({"update"}),
    # kopf posts Events (kopf.info / kopf.event / kopf.warn and handler logs).
    ("", "events"): frozenset({"create"}),
    # api.read_secret_value: API keys named by apiKeySecretRef, never listed.
    ("", "secrets"): frozenset({"get"}),
    # specialization.py: the migration Job is created, then read until it ends;
    # domainmap.py: the labeling Job likewise, and a newer analysis deletes an older one's.
    ("batch", "jobs"): frozenset({"get", "create", "delete"}),
    # job_pods.py: a running Job's pods, listed by its job-name label, to say why it is stuck.
    ("", "pods"): frozenset({"list"}),
    # kube/fences.py: a move waits until every router replica's Lease acknowledges its phase.
    ("coordination.k8s.io", "leases"): frozenset({"list"}),
    # router_ref.py: the Service a RebalancePolicy's routerRef names, read for its port.
    ("", "services"): frozenset({"get"}),
}

# Granted for admission only (see above): the one update the operator holds, on owners'
# finalizers, so blockOwnerDeletion may be set on the Jobs they own.
OWNER_FINALIZERS: Table = {
    ("librarian.dev", "clusterspecializations/finalizers"): frozenset({"update"}),
    ("librarian.dev", "domainmaps/finalizers"): frozenset({"update"}),
}

# Watching the whole cluster, kopf follows CRDs being added and removed.
OPERATOR_CLUSTER_WIDE: Table = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"list", "watch"}),
}

# kopf peering (more than one replica): the peering object is watched and patched.
PEERING_NAMESPACED: Table = {("kopf.dev", "kopfpeerings"): frozenset({"list", "watch", "patch"})}
PEERING_CLUSTER: Table = {
    ("kopf.dev", "clusterkopfpeerings"): frozenset({"list", "watch", "patch"}),
}

# router/loader.py: the DomainMap (get), its ClusterSpecializations (list), and the
# fleet's API keys (get); watch lets it follow changes without polling.
ROUTER: Table = {
    ("librarian.dev", "domainmaps"): frozenset({"get", "list", "watch"}),
    ("librarian.dev", "clusterspecializations"): frozenset({"get", "list", "watch"}),
    # kube/fleets.py: the QdrantFleet of the DomainMap's spec.fleetRef.
    ("librarian.dev", "qdrantfleets"): frozenset({"get"}),
    ("", "secrets"): frozenset({"get"}),
    # router/registration.py: each replica creates, then renews, its own Lease.
    ("coordination.k8s.io", "leases"): frozenset({"create", "patch"}),
}


# The one Secret permission (in OPERATOR and ROUTER above): never in a ClusterRole, and the
# router's only with resourceNames.
SECRETS: Table = {("", "secrets"): frozenset({"get"})}


def without(table: Table, removed: Table) -> dict[tuple[str, str], frozenset[str]]:
    """``table`` less the verbs of ``removed``."""
    left = {key: verbs - removed.get(key, frozenset()) for key, verbs in table.items()}
    return {key: verbs for key, verbs in left.items() if verbs}


def merge(*tables: Table) -> dict[tuple[str, str], frozenset[str]]:
    merged: dict[tuple[str, str], frozenset[str]] = {}
    for table in tables:
        for key, verbs in table.items():
            merged[key] = merged.get(key, frozenset()) | verbs
    return merged


def triples(table: Table) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for (group, resource), verbs in table.items() for verb in verbs}


def granted(rules: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    """What a Role's rules allow, as (apiGroup, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
