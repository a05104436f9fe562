"""Versioned migration throughput on the embedded engine: `migrate` against a plain loop.

In one run, on the same data (Debian vectors, two domains, every point
versioned) and the same engine (the embedded Qdrant engine through the storage
port), prints points/s of:
- a plain loop: scroll the domain's points (vectors and payload), upsert them
  into the target, nothing else — the baseline;
- `librarian.services.migration.migrate` as a move runs it: a fence version
  (conditional copy), checkpoints, the catch-up by version, and the full
  verification (every id by version, a sample by contents).
Runs are interleaved, each from a collected heap; each migrate run is compared
with the plain run just before it and the median of those ratios is the verdict
(the machine is shared and noisy). The data set is repeated (with a little noise)
up to ``--points``: per-run costs such as creating the checkpoint collection
then weigh what they weigh in a real move. The engine keeps the interpreter
lock through each call, so the migration reads and writes in turn here (its
pipeline overlaps them on remote clusters). Goal: migrate >= 0.8x the plain
loop.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from debian_vectors import load_vectors
from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY
from librarian.core.hlc import encode_version
from librarian.services.labeling import domain_filter
from librarian.services.migration import MigrationPlan, migrate
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

GOAL = 0.8
WALL_MS = 1_750_000_000_000  # the points' versions are made at this wall time
FENCE = encode_version(WALL_MS + 60_000, 0, 0)  # dual writes began a minute later


def fill(port: QdrantPort, vectors: np.ndarray) -> int:
    """Two domains of versioned points in "source" (its label indexed, as labelling leaves
    it), an empty "target"; the domain's size."""
    port.create_collection("source", CollectionSpec(vector_size=vectors.shape[1]))
    port.create_keyword_index("source", LABEL_KEY)
    for start in range(0, len(vectors), 1000):
        port.upsert(
            "source",
            [
                PointRecord(
                    id=i,
                    vector=vectors[i].tolist(),
                    payload={
                        LABEL_KEY: "d-0" if i % 2 == 0 else "d-1",
                        POINT_VERSION_KEY: encode_version(WALL_MS + i, 0, 1),
                        "n": i,
                    },
                )
                for i in range(start, min(start + 1000, len(vectors)))
            ],
        )
    port.create_collection("target", CollectionSpec(vector_size=vectors.shape[1]))
    return (len(vectors) + 1) // 2


def tiled(vectors: np.ndarray, n: int) -> np.ndarray:
    """``n`` unit vectors: the data set, repeated with a little noise when it has fewer."""
    rng = np.random.default_rng(0)
    out = np.resize(vectors, (n, vectors.shape[1])).astype(np.float32)
    if n > len(vectors):
        out[len(vectors) :] += rng.normal(0, 0.01, (n - len(vectors), vectors.shape[1]))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def plain_loop(port: QdrantPort, batch: int) -> int:
    selection = domain_filter("d-0")
    offset, moved = None, 0
    while True:
        page, offset = port.scroll("source", limit=batch, offset=offset, scroll_filter=selection)
        port.upsert("target", page)
        moved += len(page)
        if offset is None:
            return moved


def timed_plain(root: Path, vectors: np.ndarray, batch: int) -> float:
    port = EmbeddedQdrant("plain", root)
    try:
        fill(port, vectors)
        gc.collect()  # both timings start from a clean heap, not from the filling's garbage
        start = time.perf_counter()
        moved = plain_loop(port, batch)
        return moved / (time.perf_counter() - start)
    finally:
        port.close()


def timed_migrate(root: Path, vectors: np.ndarray, batch: int) -> float:
    port = EmbeddedQdrant("migrate", root)
    try:
        expected = fill(port, vectors)
        plan = MigrationPlan(
            name="bench",
            source_collection="source",
            target_collection="target",
            domain_id="d-0",
            batch_size=batch,
            fence_version=FENCE,
        )
        gc.collect()
        start = time.perf_counter()
        report = migrate(port, port, plan, sleep=lambda _: None)
        elapsed = time.perf_counter() - start
        exact = report.verified_points == expected == report.copied
        if not (report.verified and exact):
            raise RuntimeError(f"the migration did not move the domain exactly: {report}")
        return report.copied / elapsed
    finally:
        port.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--points", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    vectors = tiled(load_vectors(Path(args.data) if args.data else None), args.points)

    plain_rates, our_rates = [], []
    root = Path(tempfile.mkdtemp(prefix="librarian-bench-"))
    try:
        for run in range(args.repeats):
            plain_rates.append(timed_plain(root / f"plain{run}", vectors, args.batch))
            our_rates.append(timed_migrate(root / f"migrate{run}", vectors, args.batch))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    plain, ours = statistics.median(plain_rates), statistics.median(our_rates)
    # Each migrate run is compared with the plain run just before it (the same moment of a
    # shared machine's load), and the median of those ratios is the verdict.
    ratio = statistics.median(o / p for o, p in zip(our_rates, plain_rates, strict=True))
    print(
        f"{(len(vectors) + 1) // 2:,} versioned points of {vectors.shape[1]}-d moved on the "
        f"embedded engine (median of {args.repeats}): plain scroll+upsert loop {plain:,.0f} "
        f"points/s; migrate with a fence, checkpoints, catch-up and full verification "
        f"{ours:,.0f} points/s"
    )
    print(
        "each run (points/s): plain "
        + ", ".join(f"{r:,.0f}" for r in plain_rates)
        + "; migrate "
        + ", ".join(f"{r:,.0f}" for r in our_rates)
    )
    verdict = "meets" if ratio >= GOAL else "MISSES"
    print(
        f"migrate / plain loop = {ratio:.2f}x (median of the runs' ratios) {verdict} the goal >= {GOAL}x"
    )
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
