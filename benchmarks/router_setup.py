"""The library and the router the router benchmarks share: built once, served in or out of process.

Why this exists: ``bench_router_overhead.py`` and ``bench_cache.py`` measure
the same setup (the Debian vectors whole in one collection and split by
discovery into one collection per domain, on one embedded engine, a router
with shadow queries off) and must not drift apart. ``bench_cache.py`` serves
routers in its own process; ``router_process.py`` serves one in a process of
its own for ``bench_router_overhead.py``.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
from aiohttp import web

from librarian.core.discovery import discover
from librarian.router import RouterConfig, RouterState, create_app
from librarian.router.grpc_api import start_grpc_server
from librarian.router.library import DomainRoute, LibraryDefinition
from librarian.settings import OrchestratorSettings
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointRecord

__all__ = ["WHOLE", "build", "percentile", "router_state", "serve", "start"]

WHOLE = "whole"  # the one collection holding every point, served as an allowlisted pass-through


def build(engine: EmbeddedQdrant, data: np.ndarray, seed: int) -> tuple[LibraryDefinition, int]:
    """The whole collection and the library's domain collections on ``engine``: the definition
    and the number of domains."""
    result = discover(data, seed=seed)
    spec = CollectionSpec(vector_size=data.shape[1])
    points = [PointRecord(i, [float(x) for x in v], {"n": i}) for i, v in enumerate(data)]
    engine.create_collection(WHOLE, spec)
    engine.upsert(WHOLE, points)
    routes = []
    for d, domain in enumerate(result.domains):
        name = f"library-{domain.id}"
        engine.create_collection(name, spec)
        engine.upsert(name, [p for p in points if result.labels[p.id] == d])
        routes.append(
            DomainRoute(
                domain.id,
                domain.name,
                "engine",
                name,
                tuple(map(float, domain.centroid)),
                domain.size,
                specialized=True,
                versioned=True,
            )
        )
    return LibraryDefinition("library", tuple(routes), "engine", "v1"), len(result.domains)


def router_state(
    engine: EmbeddedQdrant,
    definition: LibraryDefinition,
    *,
    cache: bool = False,
    passthrough: frozenset[str] = frozenset(),
) -> RouterState:
    """A router serving ``definition`` from ``engine`` (and the ``passthrough`` collections as
    they are), shadow queries off, the result cache as asked."""

    async def loader() -> LibraryDefinition:
        return definition

    settings = OrchestratorSettings.model_validate(
        {"caching": {"enable_result_cache": cache}, "shadow_fraction": 0.0}
    )
    fleet = Fleet.of_ports({"engine": engine})
    return RouterState(RouterConfig(fleet, "engine", loader, settings, passthrough=passthrough))


async def start(
    state: RouterState, host: str = "127.0.0.1"
) -> tuple[web.AppRunner, grpc.aio.Server, int, int]:
    """The router's REST and gRPC servers on ``host`` (free ports): runner, gRPC server, ports."""
    runner = web.AppRunner(create_app(state, reload_in_background=False), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    assert runner.server is not None
    grpc_server, grpc_port = await start_grpc_server(
        runner.server.request_handler,
        host,
        0,
        max_message_bytes=state.config.settings.limits.max_body_bytes,
    )
    return runner, grpc_server, int(runner.addresses[0][1]), grpc_port


def serve(state: RouterState) -> tuple[str, int, threading.Event]:
    """The router on 127.0.0.1 in a thread of this process: its REST URL, its gRPC port, and
    the flag that stops it."""
    ready, stop_flag = threading.Event(), threading.Event()
    address: list[str] = []
    grpc_port: list[int] = []

    async def run() -> None:
        runner, grpc_server, port, grpc = await start(state)
        address.append(f"http://127.0.0.1:{port}")
        grpc_port.append(grpc)
        ready.set()
        await asyncio.to_thread(stop_flag.wait)
        await grpc_server.stop(grace=None)
        await runner.cleanup()

    threading.Thread(target=lambda: asyncio.run(run()), daemon=True).start()
    if not ready.wait(120):
        raise RuntimeError("the router did not start within 120 s")
    return address[0], grpc_port[0], stop_flag


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-th percentile of ``samples`` (seconds) in milliseconds."""
    return float(np.percentile(np.asarray(samples) * 1e3, q))
