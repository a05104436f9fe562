"""Reading the QdrantFleet a DomainMap names, so every reader gets the same clusters.

Why this exists: a DomainMap lists its clusters inline (deprecated) or names a
QdrantFleet of its own namespace in ``spec.fleetRef``. The operator's
controllers and the router both need the DomainMap's clusters; this reads the
fleet (when there is one) and parses the DomainMap with it, so what follows
(credential rules, Jobs, routing) sees one cluster list whichever form the
spec uses. The fleet is read from the DomainMap's own namespace only: its
clusters' key Secrets are read there too, under the same credential rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from librarian.contracts.api import GROUP, QDRANTFLEETS, VERSION
from librarian.kube import client as api
from librarian.kube.errors import KubernetesApiError
from librarian.kube.spec import (
    DomainMapSpec,
    FleetClusters,
    SpecDefaults,
    SpecError,
    fleet_ref_of,
    parse_domainmap_spec,
    parse_fleet_spec,
)

__all__ = [
    "FleetNotFound",
    "fleet_path",
    "load_domainmap_spec",
    "read_fleet",
]


class FleetNotFound(KubernetesApiError):
    """The QdrantFleet a DomainMap names does not exist (yet) in its namespace."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=404, reason="FleetNotFound")


def fleet_path(namespace: str, name: str | None = None) -> str:
    """The API path of the QdrantFleets of ``namespace`` (of one, with ``name``)."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{QDRANTFLEETS}"
    return f"{path}/{name}" if name else path


async def read_fleet(namespace: str, name: str, *, referrer: str = "") -> FleetClusters:
    """The clusters of QdrantFleet ``namespace/name``.

    Raises :class:`FleetNotFound` when it does not exist and :class:`SpecError` (problems
    prefixed with the fleet's name) when its spec is invalid; ``referrer`` (e.g.
    ``DomainMap team-a/books``) is named in the not-found message."""
    try:
        body = await api.get_json(fleet_path(namespace, name))
    except api.NotFound:
        by = f"{referrer} names it in spec.fleetRef, but " if referrer else ""
        raise FleetNotFound(
            f"{by}QdrantFleet {name!r} does not exist in namespace {namespace}: create it "
            f"there (kind QdrantFleet, metadata.name {name}, spec.clusters) or fix "
            "spec.fleetRef.name"
        ) from None
    return fleet_clusters(body, name)


def fleet_clusters(body: Mapping[str, Any], name: str) -> FleetClusters:
    """A read QdrantFleet object as :class:`FleetClusters` (validated)."""
    try:
        clusters = parse_fleet_spec(body.get("spec") or {}, name=name)
    except SpecError as error:
        raise SpecError(
            [f"QdrantFleet {name!r}: {problem}" for problem in error.problems]
        ) from None
    generation = (body.get("metadata") or {}).get("generation")
    return FleetClusters(name, clusters, int(generation) if generation is not None else None)


async def load_domainmap_spec(
    spec: Mapping[str, Any],
    *,
    namespace: str,
    name: str,
    defaults: SpecDefaults | None = None,
) -> DomainMapSpec:
    """DomainMap ``namespace/name``'s spec parsed with its clusters, read from the QdrantFleet
    its ``spec.fleetRef`` names (or inline).

    Raises :class:`SpecError` for an invalid spec (the DomainMap's or the fleet's),
    :class:`FleetNotFound` for a missing fleet and :class:`KubernetesApiError` when the API
    cannot be read. A spec that gives both or neither of ``clusters`` and ``fleetRef`` is a
    :class:`SpecError` before anything is read."""
    fleet_name = fleet_ref_of(spec)
    if fleet_name is None or spec.get("clusters"):
        return parse_domainmap_spec(spec, name=name, defaults=defaults)
    fleet = await read_fleet(namespace, fleet_name, referrer=f"DomainMap {namespace}/{name}")
    return parse_domainmap_spec(spec, name=name, defaults=defaults, fleet=fleet)
