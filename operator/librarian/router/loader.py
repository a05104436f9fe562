"""Where the router learns the library: a DomainMap and its ClusterSpecializations, or the catalog.

Why this exists: the router must follow the operator's decisions without a
restart. The Kubernetes loader reads the DomainMap (its status lists the
domains, the catalog holds their centroids) and every Ready
ClusterSpecialization of it (a domain that has one is read from its own
collection; the others from the labelled source). While a domain moves between
clusters it has two Ready ClusterSpecializations; the old one is annotated
``librarian.dev/superseded-by`` once reads may switch, so the router reads the
one that is not, the newest when in doubt. The catalog loader does the
same from the catalog collection alone, for routers outside Kubernetes. Both
return a :class:`LibraryDefinition` whose ``version`` changes whenever a
domain or its home changes; the server polls the loader and rebuilds then.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from librarian.contracts.api import GROUP, VERSION
from librarian.kube import client as api
from librarian.kube.fleet_access import CredentialPolicy, resolve_clusters
from librarian.kube.fleets import FleetNotFound, load_domainmap_spec
from librarian.kube.serving import home_collection, serving_specializations
from librarian.kube.spec import SpecError
from librarian.router.library import (
    CollectionHome,
    DomainRoute,
    LibraryDefinition,
    MoveFence,
    MovePhase,
    PartitionRef,
)
from librarian.services.catalog import (
    CatalogEntry,
    CatalogPartition,
    read_published,
)
from librarian.storage.fleet import ClusterConfig, Fleet

__all__ = [
    "catalog_loader",
    "definition_from_catalog",
    "kubernetes_fleet",
    "kubernetes_loader",
    "moves_in_flight",
    "specialized_homes",
]

Homes = Mapping[str, tuple[str, str]]  # domain id -> (cluster, collection) once specialized


def definition_from_catalog(
    entries: list[CatalogEntry],
    *,
    name: str,
    source: tuple[str, str],
    homes: Homes,
    sizes: Mapping[str, int] | None = None,
    moves: tuple[MoveFence, ...] = (),
    vector: str | None = None,
    partitions: Sequence[CatalogPartition] = (),
) -> LibraryDefinition | None:
    """The library of one owner's catalog entries; specialized domains live at ``homes``;
    points routed on the dense ``vector`` (``None``: the collection's default one); each
    domain knows its ``partitions`` (how its specialized home marks its points)."""
    if not entries:
        return None
    cells: dict[str, list[PartitionRef]] = {}
    for partition in partitions:
        cells.setdefault(partition.domain_id, []).append(
            PartitionRef(partition.partition_id, tuple(float(x) for x in partition.centroid))
        )
    routes = []
    for entry in sorted(entries, key=lambda e: e.domain_id):
        home = homes.get(entry.domain_id)
        cluster, collection = home if home else source
        routes.append(
            DomainRoute(
                domain_id=entry.domain_id,
                name=entry.name,
                cluster=cluster,
                collection=collection,
                centroid=tuple(float(x) for x in entry.centroid),
                size=int((sizes or {}).get(entry.domain_id, entry.size)),
                labelled_slice=home is None,
                specialized=home is not None,
                versioned=True,
                partitions=tuple(cells.get(entry.domain_id, ())),
            )
        )
    slices = [i for i, r in enumerate(routes) if r.labelled_slice]
    if slices:  # the source's points labelled by no domain here are read with the first slice
        known = tuple(r.domain_id for r in routes)
        routes[slices[0]] = replace(routes[slices[0]], strays_outside=known)
    fingerprint = json.dumps(
        [
            (
                r.domain_id,
                r.cluster,
                r.collection,
                r.labelled_slice,
                e.version,
                [p.id for p in r.partitions],
            )
            for r, e in zip(routes, sorted(entries, key=lambda e: e.domain_id), strict=True)
        ]
        + [vector]
    )
    version = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    return LibraryDefinition(
        name=name,
        domains=tuple(routes),
        default_cluster=source[0],
        version=version,
        moves=moves,
        source=CollectionHome(*source),
        vector=vector,
    )


def moves_in_flight(items: Sequence[Mapping[str, Any]], domainmap: str) -> tuple[MoveFence, ...]:
    """The moves of ``domainmap``'s domains that the routers must follow (``status.move`` of
    each ClusterSpecialization), by name."""
    moves = []
    for item in items:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        move = status.get("move") or {}
        if spec.get("domainMap") != domainmap or not move or not status.get("domainId"):
            continue
        try:
            phase = MovePhase(str(move.get("phase")))
            source = CollectionHome(move["source"]["cluster"], move["source"]["collection"])
            target = CollectionHome(move["target"]["cluster"], move["target"]["collection"])
        except (KeyError, TypeError, ValueError):
            continue  # not a move record this router understands: nothing to enforce
        name = str((item.get("metadata") or {}).get("name"))
        moves.append(MoveFence(name, str(status["domainId"]), phase, source, target))
    return tuple(sorted(moves, key=lambda m: m.name))


def specialized_homes(
    items: Sequence[Mapping[str, Any]], domainmap: str
) -> dict[str, tuple[str, str]]:
    """Domain id -> (cluster, collection) of the ClusterSpecialization serving it (see
    :func:`librarian.kube.serving.serving_specializations`)."""
    return {
        domain_id: (str(item["spec"]["target"]["cluster"]), str(home_collection(item)))
        for domain_id, item in serving_specializations(items, domainmap).items()
    }


def catalog_loader(
    fleet: Fleet,
    *,
    name: str,
    source: tuple[str, str],
    catalog: tuple[str, str],
    owner: str | None = None,
    homes: Homes | None = None,
    vector: str | None = None,
) -> Callable[[], Awaitable[LibraryDefinition | None]]:
    """A loader reading the catalog collection (no Kubernetes needed); points are routed on
    the dense ``vector`` (``None``: the collection's default one)."""

    async def load() -> LibraryDefinition | None:
        port = fleet.get(catalog[0])
        published = await asyncio.to_thread(read_published, port, catalog[1], owner)
        if published.pending:
            return None  # its labels are being written: keep serving what is loaded
        return definition_from_catalog(
            published.entries,
            name=name,
            source=source,
            homes=homes or {},
            vector=vector,
            partitions=published.partitions,
        )

    return load


async def _domainmap(namespace: str, name: str) -> dict[str, Any]:
    return await api.get_json(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/domainmaps/{name}")


async def kubernetes_fleet(
    namespace: str, name: str, *, policy: CredentialPolicy
) -> tuple[Fleet, list[ClusterConfig], str]:
    """The fleet of a DomainMap (its QdrantFleet's clusters with ``spec.fleetRef``, else its
    inline ones; API keys read from their Secrets) and its source cluster.

    ``policy`` refuses the Secrets, variables and plain-HTTP hosts the operator's
    configuration does not allow, as the operator does, before any cluster is contacted.
    """
    body = await _domainmap(namespace, name)
    try:
        parsed = await load_domainmap_spec(body.get("spec") or {}, namespace=namespace, name=name)
    except SpecError as error:
        raise ValueError(
            f"DomainMap {namespace}/{name} has an invalid spec: {'; '.join(error.problems)}"
        ) from None
    except FleetNotFound as error:
        raise ValueError(str(error)) from None
    configs = await resolve_clusters(parsed.clusters, namespace, policy=policy)
    return Fleet(configs), configs, parsed.source_cluster


def kubernetes_loader(
    fleet: Fleet, namespace: str, name: str, *, library_name: str | None = None
) -> Callable[[], Awaitable[LibraryDefinition | None]]:
    """A loader following a DomainMap and its Ready ClusterSpecializations."""

    async def load() -> LibraryDefinition | None:
        body = await _domainmap(namespace, name)
        parsed = await load_domainmap_spec(body.get("spec") or {}, namespace=namespace, name=name)
        status = body.get("status") or {}
        if not status.get("domains"):
            return None
        listing = await api.get_json(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/clusterspecializations"
        )
        items = listing.get("items") or []
        homes = specialized_homes(items, name)
        catalog = status.get("catalog") or {}
        catalog_cluster = catalog.get("cluster") or parsed.catalog_cluster or parsed.source_cluster
        catalog_collection = catalog.get("collection") or parsed.catalog_collection
        owner = f"{namespace}/{name}"
        published = await asyncio.to_thread(
            read_published, fleet.get(catalog_cluster), catalog_collection, owner
        )
        if published.pending:
            return None  # its labels are being written: keep serving what is loaded
        return definition_from_catalog(
            published.entries,
            name=library_name or parsed.source_collection,
            source=(parsed.source_cluster, parsed.source_collection),
            homes=homes,
            moves=moves_in_flight(items, name),
            vector=parsed.source_vector,
            partitions=published.partitions,
        )

    return load
