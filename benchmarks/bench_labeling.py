"""Labeling throughput with 1, 2 and 4 workers, on the same data and engine in one run.

Loads ``--points`` Debian vectors (repeated with a little noise past the set's
size) into one embedded collection, discovers domains on a sample, then labels
every point as the labeling Job does (:mod:`librarian.services.labeling_job`:
a plan of id ranges cut at sampled ids, each worker scrolling its range with
vectors and writing conditional payload-only labels, progress recorded after
every page), with 1, 2 and 4 workers run as threads on the one engine (the
pods of a Job each have their own process; here they share this one and its
cores). Each run labels with a new analysis version, so every run labels every
point. The single-threaded in-process labeling the operator used to run is the
first row. Prints seconds, points/s and the ratio to 1 worker, and the number of
CPUs (the gain is bounded by free cores and by the engine taking writes to one
collection in turn). A measurement: no goal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from debian_vectors import load_vectors
from librarian.core.discovery import discover
from librarian.services.labeling import label_points
from librarian.services.labeling_job import (
    LabelingProgressStore,
    label_range,
    plan_labeling,
)
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort


def tiled(vectors: np.ndarray, n: int) -> np.ndarray:
    """``n`` unit vectors: the data set, repeated with a little noise when it has fewer."""
    rng = np.random.default_rng(0)
    out = np.resize(vectors, (n, vectors.shape[1])).astype(np.float32)
    if n > len(vectors):
        out[len(vectors) :] += rng.normal(0, 0.01, (n - len(vectors), vectors.shape[1]))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def fill(port: QdrantPort, vectors: np.ndarray) -> None:
    port.create_collection("source", CollectionSpec(vector_size=vectors.shape[1]))
    for start in range(0, len(vectors), 1000):
        port.upsert(
            "source",
            [
                PointRecord(id=i, vector=vectors[i].tolist(), payload={"n": i})
                for i in range(start, min(start + 1000, len(vectors)))
            ],
        )


def run_job(port: QdrantPort, domains: list, version: int, workers: int, batch: int) -> float:
    """Seconds to label every point with ``workers`` workers (threads), from the plan."""
    started = time.perf_counter()
    plan = plan_labeling(
        port, "source", domains, name=f"bench@v{version}", version=version, workers=workers
    )
    store = LabelingProgressStore(port)
    store.save_plan(plan)
    with ThreadPoolExecutor(workers) as pool:
        ends = list(
            pool.map(
                lambda i: label_range(port, plan, i, store=store, batch_size=batch),
                range(len(plan.ranges)),
            )
        )
    elapsed = time.perf_counter() - started
    labelled = sum(end.labeled for end in ends)
    if labelled != plan.total:
        raise SystemExit(f"{workers} worker(s) labelled {labelled} of {plan.total} points")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000, help="points per page")
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    args = parser.parse_args()
    vectors = tiled(load_vectors(args.data), args.points)
    folder = Path(tempfile.mkdtemp(prefix="bench-labeling-"))
    port = EmbeddedQdrant("bench", folder / "engine")
    try:
        fill(port, vectors)
        sample = vectors[np.random.default_rng(1).choice(len(vectors), 5000, replace=False)]
        domains = list(discover(sample, strategy="kmeans", seed=0).domains)
        print(
            f"labeling {args.points:,} points ({vectors.shape[1]}-d), {len(domains)} domains, "
            f"pages of {args.batch}, embedded engine, {os.cpu_count()} CPUs"
        )
        started = time.perf_counter()
        report = label_points(port, "source", domains, version=1, batch_size=args.batch)
        inline = time.perf_counter() - started
        assert report.labeled == args.points
        rows = [("in-process (before)", inline)]
        for version, workers in enumerate((1, 2, 4), start=2):
            rows.append(
                (f"Job, {workers} worker(s)", run_job(port, domains, version, workers, args.batch))
            )
        base = rows[1][1]
        print(f"{'labeling':<22} {'seconds':>8} {'points/s':>10} {'vs 1 worker':>12}")
        for label, seconds in rows:
            print(
                f"{label:<22} {seconds:>8.2f} {args.points / seconds:>10,.0f} "
                f"{base / seconds:>11.2f}x"
            )
    finally:
        port.close()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
