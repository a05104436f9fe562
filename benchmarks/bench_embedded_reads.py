"""Concurrent reads on one embedded collection: queries/s from 1 to 8 threads.

One embedded engine holds seeded random vectors (64-d, cosine) in one
collection, indexed. The same queries go through the embedded adapter's
``query`` from 1, 2, 4 and 8 threads, twice per thread count, interleaved so
that drift on a shared machine hits both alike:

- ``shared``: the adapter as it is (reads of a collection run at once);
- ``one lock``: the same adapter with one plain lock around every call, as the
  adapter used to serialise every call on a collection.

Printed: queries/s of each and their ratio, with the number of CPUs (the
overlap cannot pay beyond it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord

COLLECTION = "reads"


def _load(port: EmbeddedQdrant, points: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    port.create_collection(COLLECTION, CollectionSpec(vector_size=dim))
    for start in range(0, points, 2_000):
        block = rng.standard_normal((min(2_000, points - start), dim)).astype(np.float32)
        port.upsert(
            COLLECTION,
            [
                PointRecord(id=start + i, vector=row.tolist(), payload={"n": start + i})
                for i, row in enumerate(block)
            ],
        )
    port.optimize(COLLECTION)


def _rate(
    port: EmbeddedQdrant,
    queries: list[list[float]],
    threads: int,
    guard: threading.Lock | None,
    *,
    exact: bool,
) -> float:
    """Queries per second with ``threads`` threads sharing ``queries``."""
    serialised = guard if guard is not None else contextlib.nullcontext()

    def run(part: list[list[float]]) -> None:
        for vector in part:
            with serialised:
                port.query(COLLECTION, vector, limit=10, exact=exact)

    parts = [queries[i::threads] for i in range(threads)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(run, part) for part in parts]:
            future.result()
    return len(queries) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=40_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        port = EmbeddedQdrant("bench", Path(folder))
        try:
            _load(port, args.points, args.dim, args.seed)
            rng = np.random.default_rng(args.seed + 1)
            queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32).tolist()
            for vector in queries[:100]:  # warm up
                port.query(COLLECTION, vector, limit=10)
            print(f"{args.points} points, {args.dim}-d, {os.cpu_count()} CPUs")
            for exact in (False, True):
                runs = queries if not exact else queries[: max(1, len(queries) // 10)]
                print(f"{'exact' if exact else 'HNSW'} search, {len(runs)} queries per run")
                print(f"{'threads':>7} {'shared q/s':>11} {'one lock q/s':>13} {'ratio':>6}")
                for threads in (1, 2, 4, 8):
                    shared = _rate(port, runs, threads, None, exact=exact)
                    locked = _rate(port, runs, threads, threading.Lock(), exact=exact)
                    print(f"{threads:>7} {shared:>11.0f} {locked:>13.0f} {shared / locked:>6.2f}")
        finally:
            port.close()


if __name__ == "__main__":
    main()
