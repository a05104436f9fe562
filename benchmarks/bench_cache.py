"""Result cache: what a hit (its generation lookup included) and a miss cost against no cache.

One embedded engine holds the Debian vectors split by discovery into one
collection per domain (the library), with versioned points as the router
writes them. Two routers serve it in this process: one with the result cache
off, one with it on. The official ``qdrant-client`` (sync, HTTP) sends the same
queries, interleaved so that drift on a shared machine hits every path alike:

- ``no cache``: the router without a cache;
- ``miss``: the caching router, first time a query is seen (every home's
  generation read first, the answer computed, then cached);
- ``hit``: the caching router, the same query again (the generations of the
  homes the answer read are read again and compared; the answer is served).

Printed: p50/p95 of each path, the ratios to ``no cache``, and the hit rate
above which the cache pays for itself (where the mean cost of misses and hits
equals the cost without a cache). The router's default (cache on or off)
follows these figures (see the README).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient

from debian_vectors import load_vectors
from librarian.contracts.payload import POINT_VERSION_KEY
from librarian.core.hlc import encode_version
from librarian.router.library import LibraryDefinition
from librarian.storage.embedded import EmbeddedQdrant
from router_setup import build, percentile, router_state, serve


def versioned(engine: EmbeddedQdrant, definition: LibraryDefinition) -> None:
    """Stamp every point of the library with a version, as writes through a router do (an hour
    ago: past the settle window)."""
    wall_ms = int(time.time() * 1000) - 3_600_000
    for d, route in enumerate(definition.domains):
        engine.set_payload(
            route.collection, {POINT_VERSION_KEY: encode_version(wall_ms, 0, d % 128)}
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    vectors = load_vectors(Path(args.data) if args.data else None)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = np.random.default_rng(0).permutation(len(vectors))
    queries, data = vectors[order[: args.queries]], vectors[order[args.queries :]]
    with tempfile.TemporaryDirectory() as tmp:
        engine = EmbeddedQdrant("engine", Path(tmp) / "engine")
        definition, domains = build(engine, data, seed=0)
        versioned(engine, definition)
        plain, caching = (router_state(engine, definition, cache=c) for c in (False, True))
        (plain_url, _, stop_plain), (cache_url, _, stop_cache) = serve(plain), serve(caching)
        without = QdrantClient(url=plain_url, timeout=60, check_compatibility=False)
        cached = QdrantClient(url=cache_url, timeout=60, check_compatibility=False)
        rows = [[float(x) for x in q] for q in queries]
        for row in rows[:50]:  # warm up both routers (other queries: the cache stays cold)
            without.query_points("library", query=row, limit=10)
            cached.query_points("library", query=row[::-1], limit=10)
        timings: dict[str, list[float]] = {"no cache": [], "miss": [], "hit": []}
        for row in rows:
            for path in timings:
                client = without if path == "no cache" else cached
                t0 = time.perf_counter()
                client.query_points("library", query=row, limit=10)
                timings[path].append(time.perf_counter() - t0)
        print(
            f"{len(data):,} points, {domains} domains, {len(rows):,} queries "
            f"(top-10, routing {caching.config.strategy})"
        )
        print(f"cache hit rate on the caching router: {caching.cache.hit_rate:.3f}")
        base = percentile(timings["no cache"], 50)
        print(f"{'path':<10}{'p50 ms':>8}{'p95 ms':>8}{'p50 / no cache':>16}")
        for path, samples in timings.items():
            p50 = percentile(samples, 50)
            print(f"{path:<10}{p50:>8.3f}{percentile(samples, 95):>8.3f}{p50 / base:>16.2f}")
        miss, hit = percentile(timings["miss"], 50), percentile(timings["hit"], 50)
        if hit < base:
            even = max(0.0, (miss - base) / (miss - hit))
            print(f"the cache pays for itself above a hit rate of {even:.0%}")
        else:
            print("a hit costs as much as no cache: the cache does not pay for itself")
        for client in (without, cached):
            client.close()
        stop_plain.set()
        stop_cache.set()
        time.sleep(0.3)
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
