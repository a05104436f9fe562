"""A small library on the embedded engine, and a router serving it over real HTTP in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from librarian.router import RouterConfig, RouterState, create_app
from librarian.router.library import DomainRoute, LibraryDefinition
from librarian.settings import OrchestratorSettings
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import ClusterUnreachable
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

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


def static_loader(definition: LibraryDefinition) -> Callable[[], Awaitable[LibraryDefinition]]:
    async def load() -> LibraryDefinition:
        return definition

    return load


class RouterThread:
    """Runs a router app on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(create_app(self.state, reload_in_background=False), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> RouterThread:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("router did not start")
        return self

    def run(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)  # type: ignore[arg-type]

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def make_state(
    library: Library, *, settings: Mapping[str, Any] | None = None, **config: Any
) -> RouterState:
    orchestrator = OrchestratorSettings.model_validate(
        {"routing_strategy": "accuracy_first", "shadow_fraction": 0.0, **(settings or {})}
    )
    return RouterState(
        RouterConfig(
            fleet=library.fleet,
            default_cluster=library.definition.default_cluster,
            loader=static_loader(library.definition),
            settings=orchestrator,
            **config,
        )
    )


class FlakyPort:
    """Delegates to a real port; can be made slow or unreachable."""

    def __init__(self, inner: QdrantPort) -> None:
        self.inner = inner
        self.mode = "ok"
        self.delay_s = 0.0
        self.reason = "connection refused"
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("close", "cluster"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.mode == "down":
                raise ClusterUnreachable(self.inner.cluster, self.reason)
            if self.mode == "slow":
                time.sleep(self.delay_s)
            return attribute(*args, **kwargs)

        return call
