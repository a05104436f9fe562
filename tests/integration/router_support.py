"""A small library on the embedded engine; the router and flaky-cluster helpers it is served with.

The router thread, the state factory, the static loader and the flaky port
live in :mod:`librarian.testing.router` (the history scenario uses them too);
they are re-exported here for the tests that import them from this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from librarian.contracts.moves import MovePhase
from librarian.contracts.payload import TOMBSTONE_KEY
from librarian.router.library import CollectionHome, DomainRoute, LibraryDefinition, MoveFence
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import ClusterUnreachable
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort
from librarian.testing.router import FlakyPort, RouterThread, make_state, static_loader

__all__ = [
    "DIM",
    "DOMAINS",
    "FailsOnce",
    "FlakyPort",
    "HeldCall",
    "Library",
    "RouterThread",
    "build_embedded_library",
    "client_of",
    "library_points",
    "library_with_flaky_west",
    "live_copies",
    "make_state",
    "moving",
    "near",
    "static_loader",
]

DIM = 16
DOMAINS = 3


def library_points(n: int = 900, seed: int = 0) -> tuple[list[PointRecord], np.ndarray, np.ndarray]:
    """Points in three clouds; returns the points, their cloud and the cloud centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(DOMAINS, DIM)) * 2
    clouds = rng.integers(0, DOMAINS, n)
    vectors = centres[clouds] + rng.normal(size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = [
        PointRecord(
            i, [float(x) for x in vectors[i]], {"n": i, "group": f"g{i % 4}", "text": f"doc {i}"}
        )
        for i in range(n)
    ]
    unit_centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    return points, clouds, unit_centres


@dataclass
class Library:
    fleet: Fleet
    definition: LibraryDefinition
    points: list[PointRecord]


def build_embedded_library(path: Path, *, name: str = "library") -> Library:
    """Two embedded clusters: domains 0/1 on ``east``, 2 on ``west``; ``reference`` holds all."""
    points, clouds, centres = library_points()
    east = EmbeddedQdrant("east", path / "east")
    west = EmbeddedQdrant("west", path / "west")
    spec = CollectionSpec(vector_size=DIM)
    east.create_collection("reference", spec)
    east.upsert("reference", points)
    routes = []
    for d in range(DOMAINS):
        port: QdrantPort = east if d < 2 else west
        collection = f"{name}-d{d}"
        port.create_collection(collection, spec)
        port.upsert(collection, [p for p, c in zip(points, clouds, strict=True) if c == d])
        routes.append(
            DomainRoute(
                domain_id=f"d{d}",
                name=f"domain {d}",
                cluster=port.cluster,
                collection=collection,
                centroid=tuple(float(x) for x in centres[d]),
                size=int((clouds == d).sum()),
                specialized=True,
                versioned=True,
            )
        )
    definition = LibraryDefinition(
        name=name, domains=tuple(routes), default_cluster="east", version="v1"
    )
    return Library(Fleet.of_ports({"east": east, "west": west}), definition, points)


@contextmanager
def library_with_flaky_west(path: Path) -> Iterator[tuple[Library, FlakyPort]]:
    """The embedded library with its ``west`` cluster behind a port a test can break."""
    built = build_embedded_library(path)
    west = FlakyPort(built.fleet.get("west"))
    built.fleet = Fleet.of_ports({"east": built.fleet.get("east"), "west": west})
    try:
        yield built, west
    finally:
        built.fleet.close()


def client_of(router: RouterThread) -> QdrantClient:
    """The official client, pointed at ``router``."""
    return QdrantClient(url=router.url, timeout=30, check_compatibility=False)


def near(built: Library, domain: int, seed: int = 0) -> list[float]:
    """A unit vector close to ``domain``'s centroid (so the router places it there)."""
    centre = np.asarray(built.definition.domains[domain].centroid)
    vector = centre + np.random.default_rng(seed).normal(size=DIM) * 0.05
    return [float(x) for x in vector / np.linalg.norm(vector)]


def live_copies(copies: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The copies (where, payload) that are not tombstones."""
    return [(where, payload) for where, payload in copies if TOMBSTONE_KEY not in payload]


def moving(built: Library, phase: MovePhase) -> LibraryDefinition:
    """The library with d2 moving from west/library-d2 to east/library-d2-new (created if
    missing); reads come from the new home once the move is switched."""
    east = built.fleet.get("east")
    if not east.collection_exists("library-d2-new"):
        east.create_collection("library-d2-new", CollectionSpec(vector_size=DIM))
    move = MoveFence(
        "d2-to-east",
        "d2",
        phase,
        CollectionHome("west", "library-d2"),
        CollectionHome("east", "library-d2-new"),
    )
    routes = built.definition.domains
    if phase is not MovePhase.DUAL_WRITE:
        routes = (*routes[:2], replace(routes[2], cluster="east", collection="library-d2-new"))
    return replace(built.definition, domains=routes, moves=(move,))


class HeldCall:
    """Holds the next call of one port method (once armed, and where ``when`` says so for its
    arguments) until released, as a slow cluster would; then makes it."""

    def __init__(
        self, inner: Any, method: str, *, when: Callable[..., bool] = lambda *a, **k: True
    ) -> None:
        self.inner = inner
        self.method = method
        self.when = when
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name != self.method:
            return attribute

        def held(*args: Any, **kwargs: Any) -> Any:
            if self.armed and self.when(*args, **kwargs):
                self.armed = False
                self.entered.set()
                assert self.release.wait(60), f"the held {name} was never released"
            return attribute(*args, **kwargs)

        return held


class FailsOnce:
    """Once armed, the next call of one port method (where ``when`` says so for its
    arguments) fails as if the cluster had stopped answering, without being made."""

    def __init__(
        self, inner: Any, method: str, *, when: Callable[..., bool] = lambda *a, **k: True
    ) -> None:
        self.inner = inner
        self.method = method
        self.when = when
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name != self.method:
            return attribute

        def failing(*args: Any, **kwargs: Any) -> Any:
            if self.armed and self.when(*args, **kwargs):
                self.armed = False
                raise ClusterUnreachable(str(self.inner.cluster), "connection reset")
            return attribute(*args, **kwargs)

        return failing
