"""Routing quality: recall@10 against the share of points touched, on real embeddings.

Holds out 1,000 vectors as queries; the truth is the exact top-10 over all the
rest. Discovery runs on the rest (default settings); the router is built with
``build_router(vectors, result.partition_labels, result.partitions)`` and, for
comparison in the same run, over the coarser domains; against the baseline of
probing the nearest k-means-style centroids until the same recall, and the
oracle (exactly the units holding the true top-10).

Goal: recall@10 >= 0.95 while touching <= 25% of the points on average.

Data: the Debian set (``--data DIR`` / ``LIBRARIAN_BENCH_DATA``, default the
sibling ``shared/datasets/debian-dev``), else the bundled 3,000-record slice.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from debian_vectors import load_vectors
from librarian.core.discovery import discover
from librarian.core.routing import build_router


def measure(routes, labels, truth, sizes, total):
    recall = np.mean([np.isin(labels[t], r).mean() for t, r in zip(truth, routes, strict=True)])
    touched = np.mean([sizes[r].sum() / total for r in routes])
    return float(recall), float(touched)


def centroid_baseline(queries, centroids, labels, truth, sizes, total, goal):
    """Touched share the nearest-centroid rule needs to reach ``goal`` recall."""
    order = np.argsort(-(queries @ centroids.T), axis=1)
    for probes in range(1, len(centroids) + 1):
        routes = [list(row[:probes]) for row in order]
        recall, touched = measure(routes, labels, truth, sizes, total)
        if recall >= goal:
            return probes, recall, touched
    return len(centroids), recall, touched


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vectors = load_vectors(Path(args.data) if args.data else None)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = np.random.default_rng(args.seed).permutation(len(vectors))
    queries, data = vectors[order[: args.queries]], vectors[order[args.queries :]]
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    started = time.perf_counter()
    result = discover(data, seed=args.seed)
    print(
        f"{len(data):,} points, {len(queries):,} held-out queries; discovery "
        f"{time.perf_counter() - started:.1f}s: {len(result.domains)} domains, {len(result.partitions)} partitions"
    )
    ok = True
    print(
        f"{'units':<11}{'strategy':<17}{'recall@10':>10}{'touched':>9}{'units/q':>9}{'route ms':>9}{'build s':>8}"
    )
    for kind, labels, units in (
        ("partitions", result.partition_labels, result.partitions),
        ("domains", result.labels, result.domains),
    ):
        sizes = np.bincount(labels, minlength=len(units))
        centroids = np.stack([u.centroid for u in units]).astype(np.float32)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        for strategy in ("hybrid", "domain_affinity"):
            started = time.perf_counter()
            router = build_router(data, labels, units, strategy=strategy, seed=args.seed)
            built = time.perf_counter() - started
            started = time.perf_counter()
            routes = [router.route(q) for q in queries]
            per_query = (time.perf_counter() - started) / len(queries) * 1e3
            recall, touched = measure(routes, labels, truth, sizes, len(data))
            print(
                f"{kind:<11}{strategy:<17}{recall:>10.3f}{touched:>8.1%}{np.mean([len(r) for r in routes]):>9.1f}"
                f"{per_query:>9.3f}{built:>8.1f}"
            )
            if kind == "partitions" and strategy == "hybrid":
                ok = recall >= 0.95 and touched <= 0.25
                goal_recall = recall
        probes, c_recall, c_touched = centroid_baseline(
            queries, centroids, labels, truth, sizes, len(data), 0.95
        )
        print(
            f"{kind:<11}{'nearest-centroid':<17}{c_recall:>10.3f}{c_touched:>8.1%}{probes:>9.1f}  (fixed probes to reach 0.95)"
        )
        oracle = [list(np.unique(labels[t])) for t in truth]
        o_recall, o_touched = measure(oracle, labels, truth, sizes, len(data))
        print(
            f"{kind:<11}{'oracle':<17}{o_recall:>10.3f}{o_touched:>8.1%}{np.mean([len(r) for r in oracle]):>9.1f}"
        )
    print(
        f"goal recall@10 >= 0.95 at <= 25% touched (partitions, hybrid): {'met' if ok else 'MISSED'} "
        f"(recall {goal_recall:.3f})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
