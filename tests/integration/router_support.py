"""A small library on the embedded engine; the router and flaky-cluster helpers it is served with.

The router thread, the state factory, the static loader and the flaky port
live in :mod:`librarian.testing.router` (the history scenario uses them too);
they are re-exported here for the tests that import them from this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from librarian.router.library import DomainRoute, LibraryDefinition
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort
from librarian.testing.router import FlakyPort, RouterThread, make_state, static_loader

__all__ = [
    "DIM",
    "DOMAINS",
    "FlakyPort",
    "Library",
    "RouterThread",
    "build_embedded_library",
    "library_points",
    "make_state",
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
