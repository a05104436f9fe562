"""Router overhead: what routing through the library adds to a query, in one run.

One embedded engine holds the Debian vectors twice: whole, in one collection,
and split by discovery into one collection per domain (the library). With
caching off, the official ``qdrant-client`` (sync, HTTP) runs the same 1,000
queries three ways:

- ``direct``: the engine called in-process (the upstream itself, no HTTP);
- ``one hop``: through the router's pass-through to the whole collection, i.e.
  Qdrant's REST API served straight from the engine: what an application
  calling Qdrant directly pays;
- ``library``: through the router's library collection: routing, fan-out to
  the chosen domains, fusion;
- ``one hop gRPC`` and ``library gRPC``: the same two through the router's
  gRPC API (``prefer_grpc=True``), which hands each call to the REST code.

Goal: p50 added latency (library minus one hop) <= 1 ms. Requests per
CPU-second of the whole process (client and router share it) are printed, and
the gRPC paths' p50 as ratios to REST through the router and to one collection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from aiohttp import web
from qdrant_client import QdrantClient

from debian_vectors import load_vectors
from librarian.core.discovery import discover
from librarian.router import RouterConfig, RouterState, create_app
from librarian.router.grpc_api import start_grpc_server
from librarian.router.library import DomainRoute, LibraryDefinition
from librarian.settings import OrchestratorSettings
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointRecord


def serve(state: RouterState) -> tuple[str, int, threading.Event]:
    """The router on 127.0.0.1: its REST URL, its gRPC port, and the flag that stops it."""
    ready, stop_flag = threading.Event(), threading.Event()
    address: list[str] = []
    grpc_port: list[int] = []

    async def run() -> None:
        runner = web.AppRunner(create_app(state, reload_in_background=False), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        assert runner.server is not None
        grpc_server, port = await start_grpc_server(
            runner.server.request_handler,
            "127.0.0.1",
            0,
            max_message_bytes=state.config.settings.limits.max_body_bytes,
        )
        address.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        grpc_port.append(port)
        ready.set()
        await asyncio.to_thread(stop_flag.wait)
        await grpc_server.stop(grace=None)
        await runner.cleanup()

    threading.Thread(target=lambda: asyncio.run(run()), daemon=True).start()
    ready.wait(120)
    return address[0], grpc_port[0], stop_flag


def build(engine: EmbeddedQdrant, data: np.ndarray, seed: int) -> tuple[LibraryDefinition, int]:
    """The whole collection and the library's domain collections on ``engine``."""
    result = discover(data, seed=seed)
    spec = CollectionSpec(vector_size=data.shape[1])
    points = [PointRecord(i, [float(x) for x in v], {"n": i}) for i, v in enumerate(data)]
    engine.create_collection("whole", spec)
    engine.upsert("whole", points)
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


def router_state(engine: EmbeddedQdrant, definition: LibraryDefinition) -> RouterState:
    """A router serving ``definition`` from ``engine`` and ``whole`` as it is (the one
    collection compared with the library), its cache and shadow queries off."""

    async def loader() -> LibraryDefinition:
        return definition

    settings = OrchestratorSettings.model_validate(
        {"caching": {"enable_result_cache": False}, "shadow_fraction": 0.0}
    )
    fleet = Fleet.of_ports({"engine": engine})
    return RouterState(
        RouterConfig(fleet, "engine", loader, settings, passthrough=frozenset({"whole"}))
    )


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    vectors = load_vectors(Path(args.data) if args.data else None)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = np.random.default_rng(0).permutation(len(vectors))
    queries, data = vectors[order[: args.queries]], vectors[order[args.queries :]]
    with tempfile.TemporaryDirectory() as tmp:
        engine = EmbeddedQdrant("engine", Path(tmp) / "engine")
        definition, domains = build(engine, data, seed=0)

        state = router_state(engine, definition)
        url, grpc_port, stop = serve(state)
        client = QdrantClient(url=url, timeout=60, check_compatibility=False)
        grpc_client = QdrantClient(
            url=url, prefer_grpc=True, grpc_port=grpc_port, timeout=60, check_compatibility=False
        )
        rows = [[float(x) for x in q] for q in queries]
        for row in rows[:50]:  # warm up every path
            engine.query("whole", row, limit=10)
            for warm in (client, grpc_client):
                warm.query_points("whole", query=row, limit=10)
                warm.query_points("library", query=row, limit=10)
        paths = ("direct", "one hop", "library", "one hop gRPC", "library gRPC")
        timings: dict[str, list[float]] = {path: [] for path in paths}
        cpu: dict[str, float] = dict.fromkeys(timings, 0.0)
        for row in rows:  # interleaved, so drift on a shared machine hits every path alike
            for path in timings:
                c0, t0 = time.process_time(), time.perf_counter()
                if path == "direct":
                    engine.query("whole", row, limit=10)
                else:
                    through = grpc_client if path.endswith("gRPC") else client
                    through.query_points(
                        "whole" if path.startswith("one hop") else "library", query=row, limit=10
                    )
                timings[path].append(time.perf_counter() - t0)
                cpu[path] += time.process_time() - c0
        print(f"{len(data):,} points, {domains} domains, {len(rows):,} queries (top-10, cache off)")
        print(f"{'path':<14}{'p50 ms':>8}{'p95 ms':>8}{'req/CPU-s':>11}")
        for path, samples in timings.items():
            print(
                f"{path:<14}{percentile(samples, 50):>8.3f}{percentile(samples, 95):>8.3f}{len(samples) / max(cpu[path], 1e-9):>11.0f}"
            )
        added = percentile(timings["library"], 50) - percentile(timings["one hop"], 50)
        whole_hop = percentile(timings["library"], 50) - percentile(timings["direct"], 50)
        print(
            f"p50 added by the library vs one hop: {added:+.3f} ms; vs the in-process engine: {whole_hop:+.3f} ms"
        )
        p50 = {path: percentile(samples, 50) for path, samples in timings.items()}
        print(
            "gRPC p50 / REST p50 through the router: "
            f"library {p50['library gRPC'] / p50['library']:.2f}x, "
            f"one hop {p50['one hop gRPC'] / p50['one hop']:.2f}x; "
            f"gRPC library / gRPC one hop (one collection): "
            f"{p50['library gRPC'] / p50['one hop gRPC']:.2f}x"
        )
        print(f"routing: {state.library.router.describe() if state.library else {}}")
        ok = added <= 1.0
        print(f"goal p50 added latency <= 1 ms: {'met' if ok else 'MISSED'}")
        client.close()
        grpc_client.close()
        stop.set()
        time.sleep(0.3)
        engine.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
