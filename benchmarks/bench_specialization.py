"""What each optimization strategy buys, measured on the real engine (embedded Qdrant).

For the same domain data and the same held-out queries, builds one collection
per strategy (latency, throughput, accuracy, balanced) and one with Qdrant's
defaults, in one run, and prints p50/p95 query latency, recall@10 against
exact search, the estimated RAM of the config and the measured size on disk.

Data: the Debian set (``--data DIR`` / ``LIBRARIAN_BENCH_DATA``, default the
sibling ``shared/datasets/debian-dev``), else the bundled 3,000-record slice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from debian_vectors import load_vectors
from librarian.core.tuning import DomainStats, estimate_footprint, tune_collection
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    vectors = load_vectors(Path(args.data) if args.data else None)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(vectors))
    queries, data = vectors[order[: args.queries]], vectors[order[args.queries :]]
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    stats = DomainStats(points=len(data), dimension=data.shape[1], queries_per_second=50)
    configs: dict[str, tuple[CollectionSpec, int | None]] = {
        "qdrant defaults": (CollectionSpec(vector_size=data.shape[1]), None)
    }
    for strategy in ("latency", "throughput", "accuracy", "balanced"):
        tuned = tune_collection(stats, strategy)
        configs[strategy] = (tuned.collection, tuned.search.hnsw_ef)
    print(
        f"{len(data):,} points x {data.shape[1]}, {len(queries)} held-out queries, recall@10 "
        "against exact search"
    )
    print(
        f"{'config':16s} {'p50 ms':>7s} {'p95 ms':>7s} {'recall@10':>9s} {'est RAM MiB':>11s} "
        f"{'disk MiB':>8s} {'build s':>7s}"
    )
    root = Path(tempfile.mkdtemp(prefix="librarian-bench-"))
    try:
        for label, (spec, hnsw_ef) in configs.items():
            port = EmbeddedQdrant("bench", root / label.replace(" ", "-"))
            start = time.perf_counter()
            port.create_collection("domain", spec)
            for s in range(0, len(data), 1000):
                port.upsert(
                    "domain",
                    [
                        PointRecord(id=int(i), vector=data[i].tolist())
                        for i in range(s, min(s + 1000, len(data)))
                    ],
                )
            port.optimize("domain")
            build = time.perf_counter() - start
            latencies, recalls = [], []
            for q, expected in zip(queries, truth, strict=True):
                begin = time.perf_counter()
                hits = port.query(
                    "domain", q.tolist(), limit=10, with_payload=False, hnsw_ef=hnsw_ef
                )
                latencies.append((time.perf_counter() - begin) * 1000)
                recalls.append(len({h.id for h in hits} & set(expected.tolist())) / 10)
            ram, _ = estimate_footprint(spec, len(data))
            disk = folder_bytes(root / label.replace(" ", "-"))
            port.close()
            p95 = float(np.quantile(latencies, 0.95))
            print(
                f"{label:16s} {statistics.median(latencies):7.2f} {p95:7.2f} "
                f"{np.mean(recalls):9.3f} {ram / 2**20:11.1f} {disk / 2**20:8.1f} {build:7.1f}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
