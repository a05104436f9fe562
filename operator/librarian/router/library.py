"""The library the router serves: where every domain's points live, and how to route to them.

Why this exists: the server needs one immutable snapshot of "domain -> cluster,
collection" plus a routing model learned from the domains' own points. A
domain that is not specialized yet still lives in the labelled source
collection (reached with a filter on its label); once its ClusterSpecialization
is Ready it lives in its own collection. A reload builds a new snapshot and
swaps it in; requests in flight keep the one they started with.

A specialized home marks each point with the partition of its domain it is in
(:mod:`librarian.services.placement`: an indexed payload field, or a shard key
per partition in a home created before that layout): the snapshot keeps each
such home's placement (how writes mark a point) and a second routing model over
partitions, so a search asks each home once for only the partitions it chose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
from qdrant_client.http import models

from librarian.contracts.moves import MovePhase
from librarian.contracts.payload import LABEL_KEY
from librarian.core.collection_spec import CollectionSpec, routing_vector_name
from librarian.core.routing import LibraryRouter, build_router
from librarian.services.labeling import domain_filter
from librarian.services.placement import Placement, placed_by_field, searched_by_graph
from librarian.services.versioning import and_filters, live_filter
from librarian.storage.errors import CollectionNotFound
from librarian.storage.fleet import Fleet
from librarian.storage.port import Distance, PointRecord, QdrantPort

__all__ = [
    "CollectionHome",
    "DomainRoute",
    "Library",
    "LibraryDefinition",
    "MoveFence",
    "MovePhase",
    "PartitionRef",
    "PartitionRouting",
    "View",
    "build_library",
    "combine_filters",
    "home_placements",
    "home_route",
]


class CollectionHome(NamedTuple):
    """A collection on a cluster: where points are stored, whichever domains share it."""

    cluster: str
    collection: str


class PartitionRef(NamedTuple):
    """A partition of a domain as the catalog stores it: its id (the partition field's value,
    or a shard key, in the domain's specialized home) and its centroid."""

    id: str
    centroid: tuple[float, ...]


@dataclass(frozen=True)
class DomainRoute:
    """Where one domain's points are: a collection, or a labelled slice of one."""

    domain_id: str
    name: str
    cluster: str
    collection: str
    centroid: tuple[float, ...]
    size: int
    labelled_slice: bool = False  # still in the source collection, selected by its label
    specialized: bool = False
    versioned: bool = False  # a library domain: versioned points, tombstones to leave out
    partitions: tuple[PartitionRef, ...] = ()  # the domain's partitions (from the catalog)
    # Set on one labelled slice of a library: every domain id of its snapshot. That slice
    # also holds the source's points labelled with none of them (labels a re-analysis
    # writes while routers still serve the previous snapshot), so no read misses them.
    strays_outside: tuple[str, ...] = ()

    def slice_filter(self) -> models.Filter | None:
        if not self.labelled_slice:
            return None
        own = domain_filter(self.domain_id)
        if not self.strays_outside:
            return own
        known = models.FieldCondition(
            key=LABEL_KEY, match=models.MatchAny(any=list(self.strays_outside))
        )
        return models.Filter(should=[own, models.Filter(must_not=[known])])

    def holds_label(self, label: Any) -> bool:
        """Whether a point of this unit's collection labelled ``label`` is one of its points."""
        if not self.labelled_slice:
            return True
        return label == self.domain_id or (
            bool(self.strays_outside) and label not in self.strays_outside
        )

    def read_filter(self) -> models.Filter | None:
        """What every read of this unit adds to the client's filter: its slice, no tombstones."""
        return and_filters(self.slice_filter(), live_filter() if self.versioned else None)

    @property
    def home(self) -> CollectionHome:
        """The collection holding this domain's points (shared by every labelled slice of it)."""
        return CollectionHome(self.cluster, self.collection)

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.collection}" + (
            f"#{self.domain_id}" if self.labelled_slice else ""
        )


@dataclass(frozen=True)
class MoveFence:
    """A domain's move in flight: its name (the ClusterSpecialization), phase and two homes."""

    name: str
    domain_id: str
    phase: MovePhase
    source: CollectionHome
    target: CollectionHome

    @property
    def writes_both(self) -> bool:
        return self.phase in (MovePhase.DUAL_WRITE, MovePhase.SWITCHED)


@dataclass(frozen=True)
class LibraryDefinition:
    """What a loader found: the virtual collection's name, its domains, and a version tag."""

    name: str
    domains: tuple[DomainRoute, ...]
    default_cluster: str
    version: str  # changes whenever domains or their homes change
    moves: tuple[MoveFence, ...] = ()  # moves in flight (they change no route, only writes)
    source: CollectionHome | None = None  # the collection the library was analysed from

    @property
    def source_home(self) -> CollectionHome:
        """The library's source collection (the first domain's home when none is named)."""
        return self.source if self.source is not None else self.domains[0].home

    vector: str | None = None  # the dense vector to route on (DomainMap spec.source.vector)


@dataclass(frozen=True)
class PartitionRouting:
    """The routing model over partitions: a unit is a partition of a domain whose home is
    placed by partition (``key`` set), or a whole domain that is not (``key`` ``None``)."""

    router: LibraryRouter
    units: tuple[tuple[int, str | None], ...]  # (domain index, partition or None) per unit

    def selection(self, chosen: Sequence[int]) -> tuple[list[int], dict[int, tuple[str, ...]]]:
        """The domains the chosen units are in (in the order first chosen), and for each domain
        whose home is placed by partition, the partitions chosen in it."""
        domains: list[int] = []
        keys: dict[int, list[str]] = {}
        for unit in chosen:
            domain, key = self.units[unit]
            if domain not in domains:
                domains.append(domain)
            if key is not None:
                keys.setdefault(domain, []).append(key)
        return domains, {d: tuple(k) for d, k in keys.items()}


@dataclass
class Library:
    """A routable snapshot of a :class:`LibraryDefinition`."""

    definition: LibraryDefinition
    router: LibraryRouter
    vector_size: int  # of the routing vector
    distance: Distance  # of the routing vector
    higher_is_better: bool
    sample_points: int
    vector: str = ""  # the routing vector's name ("": the unnamed vector)
    spec: CollectionSpec | None = None  # the homes' configuration: every vector they hold
    # Homes sharded by partition: where a write puts each point.
    placements: Mapping[CollectionHome, Placement] = field(default_factory=dict)
    partition_routing: PartitionRouting | None = None  # routing over partitions, if any

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def domains(self) -> tuple[DomainRoute, ...]:
        return self.definition.domains

    def nearest_domain(self, vectors: Sequence[Sequence[float]]) -> list[int]:
        """The domain each routing vector belongs to (nearest centroid, as labelling assigns
        it)."""
        if not vectors:
            return []
        data = np.asarray(vectors, dtype=np.float32)
        data /= np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
        return [int(i) for i in np.argmax(data @ self.router.centroids.T, axis=1)]


@dataclass(frozen=True)
class View:
    """The units a request addresses: a library snapshot's domains, or one passthrough collection.

    A request keeps the view it started with: a reload in the meantime does not
    change where its calls go or which snapshot its figures are recorded against.
    """

    routes: tuple[DomainRoute, ...]
    library: Library | None
    vector_size: int  # of the routing vector (0: the collection has no default dense vector)
    higher_is_better: bool
    moves: tuple[MoveFence, ...] = ()
    vector: str = ""  # the routing vector's name ("": the unnamed vector)
    spec: CollectionSpec | None = None  # every vector the collection holds, when known

    @classmethod
    def of(cls, library: Library) -> View:
        return cls(
            library.domains,
            library,
            library.vector_size,
            library.higher_is_better,
            library.definition.moves,
            library.vector,
            library.spec,
        )

    @property
    def routed(self) -> bool:
        """Does the view address a library's domains (rather than one plain collection)?"""
        return self.library is not None

    def homes(self) -> dict[CollectionHome, DomainRoute]:
        """One route per distinct collection the view's points may live in (first route wins),
        the homes of moves in flight included."""
        homes: dict[CollectionHome, DomainRoute] = {}
        for route in self.routes:
            homes.setdefault(route.home, route)
        for move in self.moves:
            for home in (move.source, move.target):
                homes.setdefault(home, home_route(home))
        return homes

    def write_homes(self, route: DomainRoute) -> tuple[CollectionHome, ...]:
        """Where a write to ``route``'s domain goes: its home, and the other home of a move
        of the domain that is in a dual-write phase."""
        homes = [route.home]
        for move in self.moves:
            if move.domain_id == route.domain_id and move.writes_both:
                homes += [h for h in (move.source, move.target) if h not in homes]
        return tuple(homes)

    def fences(self) -> dict[str, str]:
        """The phase of every move this view enforces, by move name (for the status report)."""
        return {move.name: move.phase.value for move in self.moves}


def home_route(home: CollectionHome) -> DomainRoute:
    """A route addressing a whole collection (for calls about a home, not a domain)."""
    return DomainRoute(
        domain_id="", name="", cluster=home.cluster, collection=home.collection, centroid=(), size=0
    )


def combine_filters(
    user: models.Filter | None, slice_: models.Filter | None
) -> models.Filter | None:
    """The user's filter AND a domain's slice filter (either may be absent)."""
    if slice_ is None:
        return user
    if user is None:
        return slice_
    return models.Filter(must=[user, slice_])


def _sample(port: QdrantPort, route: DomainRoute, limit: int) -> list[PointRecord]:
    """The first ``limit`` points of the domain in id order (with vectors).

    Drawn deterministically, not at random: the routing model is learnt from
    this sample, so the same library must give the same sample — and the same
    answers — after a restart. A domain within its share of the budget is
    taken whole either way; a larger one is represented by its lowest ids
    (its oldest points, when ids follow insertion order).
    """
    if limit <= 0:
        return []
    records, _ = port.scroll(
        route.collection,
        limit=limit,
        scroll_filter=route.read_filter(),
        with_vectors=True,
        with_payload=False,
    )
    return records


def home_placements(
    definition: LibraryDefinition, fleet: Fleet, vector: str
) -> dict[CollectionHome, Placement]:
    """The homes placed by partition (a specialized domain's, or a move's), each with the
    placement of the domain it holds: on a home placed by field every partition of the domain;
    on one sharded by partition, its partitions that are shard keys of the home."""
    by_id = {route.domain_id: route for route in definition.domains}
    serving: dict[CollectionHome, DomainRoute] = {}
    for route in definition.domains:
        if route.specialized:
            serving.setdefault(route.home, route)
    for move in definition.moves:
        moving = by_id.get(move.domain_id)
        if moving is not None:
            for home in (move.source, move.target):
                if home != definition.source_home:
                    serving.setdefault(home, moving)
    placements: dict[CollectionHome, Placement] = {}
    for home, route in serving.items():
        try:
            info = fleet.get(home.cluster).collection_info(home.collection)
        except CollectionNotFound:
            continue  # a move's home not created yet
        by_field = placed_by_field(info)
        keys = info.spec.shard_keys
        held = [p for p in route.partitions if by_field or (keys is not None and p.id in keys)]
        if held:
            placement = Placement(
                domain_id=route.domain_id,
                vector=vector,
                keys=tuple(p.id for p in held),
                centroids=np.asarray([p.centroid for p in held], dtype=np.float32),
                by_field=by_field,
                graph=by_field and searched_by_graph(info.points_count, info.indexed_vectors_count),
            )
            if by_field:  # points marked by an earlier analysis' partitions stay readable
                outside = models.Filter(must_not=[placement.current()])
                strays = fleet.get(home.cluster).count(home.collection, count_filter=outside)
                placement = replace(placement, strays=strays > 0)
            placements[home] = placement
    return placements


def _partition_routing(
    definition: LibraryDefinition,
    placements: Mapping[CollectionHome, Placement],
    vectors: list[list[float]],
    labels: list[int],
    routing_options: Mapping[str, Any],
) -> PartitionRouting | None:
    """The routing model over partitions (``None`` when no home is sharded by partition):
    each sampled point is in the partition its home places it in; a partition's size is its
    share of its domain's sample times the domain's size."""
    sharded = {
        index: placements[route.home]
        for index, route in enumerate(definition.domains)
        if route.specialized and route.home in placements
    }
    if not sharded:
        return None
    units: list[tuple[int, str | None]] = []
    first_unit: dict[int, int] = {}
    centroids: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    for index, route in enumerate(definition.domains):
        first_unit[index] = len(units)
        placement = sharded.get(index)
        if placement is None:
            units.append((index, None))
            centroids.append(np.asarray(route.centroid, dtype=np.float32))
        else:
            units += [(index, key) for key in placement.keys]
            centroids += list(placement.centroids)
    data = np.asarray(vectors, dtype=np.float32)
    domain_labels = np.asarray(labels)
    unit_labels = np.asarray([first_unit[d] for d in labels], dtype=np.int64)
    for index, placement in sharded.items():
        rows = np.flatnonzero(domain_labels == index)
        if len(rows):
            keys = placement.keys_of_vectors(data[rows])
            offset = {key: i for i, key in enumerate(placement.keys)}
            unit_labels[rows] = [first_unit[index] + offset[k] for k in keys]
    sizes = []
    for unit, (index, key) in enumerate(units):
        domain_size = definition.domains[index].size
        if key is None:
            sizes.append(domain_size)
            continue
        in_domain = int(np.count_nonzero(domain_labels == index)) or 1
        sizes.append(round(domain_size * np.count_nonzero(unit_labels == unit) / in_domain))
    router = build_router(
        data,
        unit_labels,
        centroids,
        unit_sizes=sizes,
        sample_fraction=0.8,
        min_sample=0,
        **routing_options,
    )
    return PartitionRouting(router, tuple(units))


def build_library(
    definition: LibraryDefinition,
    fleet: Fleet,
    *,
    sample_budget: int = 20_000,
    **routing_options: Any,
) -> Library:
    """Count and sample every domain (in proportion to its size); learn the routing model."""
    if not definition.domains:
        raise ValueError(
            f"library {definition.name!r} has no domains yet; analyse the DomainMap first"
        )
    counted = tuple(
        replace(
            route,
            size=fleet.get(route.cluster).count(route.collection, count_filter=route.read_filter()),
        )
        for route in definition.domains
    )
    definition = replace(definition, domains=counted)
    total = sum(max(route.size, 0) for route in definition.domains) or 1
    budget = min(sample_budget, total)
    first = definition.domains[0]
    info = fleet.get(first.cluster).collection_info(first.collection)
    vector = routing_vector_name(info.spec, definition.vector)  # RoutingVectorError names them
    routing = info.spec.dense_vectors()[vector]
    vectors: list[list[float]] = []
    labels: list[int] = []
    for index, route in enumerate(definition.domains):
        wanted = max(20, round(budget * route.size / total))
        for record in _sample(fleet.get(route.cluster), route, wanted):
            dense = record.dense(vector)
            if dense is not None:
                vectors.append(dense)
                labels.append(index)
    sizes = [route.size for route in definition.domains]
    centroids = [np.asarray(route.centroid, dtype=np.float32) for route in definition.domains]
    if not vectors:  # empty domains: centroids alone
        vectors = [list(map(float, c)) for c in centroids]
        labels = list(range(len(centroids)))
    router = build_router(
        np.asarray(vectors, dtype=np.float32),
        np.asarray(labels),
        centroids,
        unit_sizes=sizes,
        sample_fraction=0.8,
        min_sample=0,
        **routing_options,
    )
    placements = home_placements(definition, fleet, vector)
    return Library(
        definition=definition,
        router=router,
        vector_size=routing.size,
        distance=routing.distance,
        higher_is_better=routing.distance != "Euclid" and routing.distance != "Manhattan",
        sample_points=len(vectors),
        vector=vector,
        spec=info.spec,
        placements=placements,
        partition_routing=_partition_routing(
            definition, placements, vectors, labels, routing_options
        ),
    )
