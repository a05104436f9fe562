"""Router limits: what a heavy or hostile client costs everyone else, in one process and run.

The Debian vectors are split by discovery into a library on one embedded
engine (as in ``bench_router_overhead.py``) and served by the router over real
HTTP, result cache off so every query reaches the engine.

- ``isolation``: a light client sends single queries, first alone, then while a
  heavy client sends back-to-back batches of the largest allowed size
  (``limits.max_batch_queries``); printed: the light client's p50/p99 in both
  runs and the p99 ratio. Goal: ratio <= 3.
- ``attacks``: the process's resident memory before and after a battery of
  hostile requests (a 50 MB whitespace-padded body, 10 million floats, a
  vector of 1 million numbers, a batch of 5,000 queries, 300 queries padded to
  1 MB each, a filter nested 1,000 deep, 20,000 ids); each one's status and
  time are printed, and the router must still answer. Goal: growth <= 200 MB.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench_router_overhead import build
from debian_vectors import load_vectors
from librarian.router import RouterConfig, RouterState
from librarian.settings import OrchestratorSettings
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.testing.router import RouterThread, resident_bytes, static_loader

MiB = 1024 * 1024


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


def light_latencies(url: str, rows: list[list[float]]) -> list[float]:
    samples = []
    with httpx.Client(base_url=url, timeout=120) as http:
        for row in rows:
            started = time.perf_counter()
            r = http.post("/collections/library/points/query", json={"query": row, "limit": 10})
            samples.append(time.perf_counter() - started)
            r.raise_for_status()
    return samples


def heavy_load(url: str, rows: list[list[float]], size: int, stop: threading.Event) -> int:
    """Batches of ``size`` queries, back to back, until ``stop``; returns the batches answered."""
    answered = 0
    with httpx.Client(base_url=url, timeout=300) as http:
        while not stop.is_set():
            start = (answered * size) % max(1, len(rows) - size)
            batch = {"searches": [{"query": r, "limit": 10} for r in rows[start : start + size]]}
            http.post("/collections/library/points/query/batch", json=batch).raise_for_status()
            answered += 1
    return answered


def attacks(dim: int) -> list[tuple[str, Callable[[httpx.Client], httpx.Response]]]:
    vector = [0.1] * dim
    query = json.dumps({"query": vector, "limit": 10})

    def raw(body: str | bytes, path: str = "/collections/library/points/query") -> Any:
        return lambda http: http.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )

    def padded_queries(http: httpx.Client) -> httpx.Response:
        response = None
        for n in range(300):
            body = json.dumps({"query": vector, "limit": 10 + n % 5}) + " " * MiB
            response = raw(body)(http)
        assert response is not None
        return response

    nested = '{"key": "n", "match": {"value": 1}}'
    for _ in range(1000):
        nested = '{"must": [' + nested + "]}"
    return [
        ("50 MB of whitespace around a query", raw(" " * (50 * MiB) + query)),
        (
            "10 million floats",
            raw('{"limit": 3, "query": [' + ",".join(["0.5"] * 10_000_000) + "]}"),
        ),
        ("a vector of 1 million numbers", raw(json.dumps({"query": [0.5] * 1_000_000}))),
        (
            "a batch of 5,000 queries",
            raw(
                json.dumps({"searches": [{"query": vector, "limit": 10}] * 5000}),
                "/collections/library/points/query/batch",
            ),
        ),
        ("300 queries padded to 1 MB", padded_queries),
        (
            "a filter nested 1,000 deep",
            raw('{"query": ' + json.dumps(vector) + ', "filter": ' + nested + "}"),
        ),
        (
            "20,000 ids",
            raw(json.dumps({"ids": list(range(20_000))}), "/collections/library/points"),
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--queries", type=int, default=400, help="light client's queries per run")
    args = parser.parse_args()
    vectors = load_vectors(Path(args.data) if args.data else None)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = np.random.default_rng(0).permutation(len(vectors))
    held_out = 1000
    queries, data = vectors[order[:held_out]], vectors[order[held_out:]]
    rows = [[float(x) for x in q] for q in queries]
    with tempfile.TemporaryDirectory() as tmp:
        engine = EmbeddedQdrant("engine", Path(tmp) / "engine")
        definition, domains = build(engine, data, seed=0)
        settings = OrchestratorSettings.model_validate(
            {"caching": {"enable_result_cache": False}, "shadow_fraction": 0.0}
        )
        state = RouterState(
            RouterConfig(
                Fleet.of_ports({"engine": engine}), "engine", static_loader(definition), settings
            )
        )
        batch_size = settings.limits.max_batch_queries
        with RouterThread(state) as router:
            light_latencies(router.url, rows[:50])  # warm up
            alone = light_latencies(router.url, rows[: args.queries])
            stop = threading.Event()
            answered: list[int] = []
            heavy = threading.Thread(
                target=lambda: answered.append(heavy_load(router.url, rows, batch_size, stop))
            )
            heavy.start()
            loaded = light_latencies(router.url, rows[: args.queries])
            stop.set()
            heavy.join(600)
            ratio = percentile_ms(loaded, 99) / percentile_ms(alone, 99)
            print(
                f"{len(data):,} points, {domains} domains on one embedded engine; light client: "
                f"{args.queries} single queries; heavy client: batches of {batch_size} "
                f"({answered[0] if answered else 0} answered meanwhile)"
            )
            print(f"{'light client':<22}{'p50 ms':>8}{'p99 ms':>8}")
            for name, samples in (("alone", alone), ("beside the heavy one", loaded)):
                print(
                    f"{name:<22}{percentile_ms(samples, 50):>8.2f}{percentile_ms(samples, 99):>8.2f}"
                )
            print(f"p99 ratio (beside the heavy client / alone): {ratio:.2f}x")

            gc.collect()
            before = resident_bytes()
            with httpx.Client(base_url=router.url, timeout=300) as http:
                for name, send in attacks(engine.collection_info("whole").vector_size):
                    started = time.perf_counter()
                    status = send(http).status_code
                    print(f"  {name:<38} {status}  {time.perf_counter() - started:6.2f}s")
                serving = http.post(
                    "/collections/library/points/query", json={"query": rows[0], "limit": 10}
                ).status_code
            gc.collect()
            growth = (resident_bytes() - before) / MiB
            print(f"resident memory after the attacks: {growth:+.0f} MB; still serving: {serving}")
        engine.close()
    ok_isolation, ok_memory = ratio <= 3.0, growth <= 200 and serving == 200
    print(f"goal light p99 <= 3x alone: {'met' if ok_isolation else 'MISSED'}")
    print(f"goal memory growth <= 200 MB: {'met' if ok_memory else 'MISSED'}")
    return 0 if ok_isolation and ok_memory else 1


if __name__ == "__main__":
    sys.exit(main())
