"""Migration throughput: `migrate` (with verification) against a plain scroll+upsert loop.

In one run, on the same data and the same backend, prints points/s of:
- a plain loop written with qdrant-client (scroll the domain filter, upsert,
  nothing else) — the baseline;
- `librarian.services.migration.migrate` with checkpoints, catch-up and
  verification on, through the remote adapter over the same kind of client
  (goal: >= 0.8x the baseline);
- the same on the embedded engine with 1, 2 and 4 workers (the engine keeps
  the interpreter lock through each call, so the migration reads and writes in
  turn whatever the workers: the three rates agree within the noise).
The backend for the first two is qdrant-client's local mode (in-process),
since no Qdrant server runs here.
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
from qdrant_client import QdrantClient, models

from debian_vectors import load_vectors
from librarian.contracts.payload import LABEL_KEY
from librarian.services.labeling import domain_filter
from librarian.services.migration import MigrationPlan, migrate
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort
from librarian.storage.remote import RemoteQdrant

GOAL = 0.8


def fill(port: QdrantPort, vectors: np.ndarray) -> int:
    port.create_collection("source", CollectionSpec(vector_size=vectors.shape[1]))
    for s in range(0, len(vectors), 1000):
        port.upsert(
            "source",
            [
                PointRecord(
                    id=i,
                    vector=vectors[i].tolist(),
                    payload={LABEL_KEY: "d-0" if i % 2 == 0 else "d-1", "n": i},
                )
                for i in range(s, min(s + 1000, len(vectors)))
            ],
        )
    port.create_collection("target", CollectionSpec(vector_size=vectors.shape[1]))
    return (len(vectors) + 1) // 2


def plain_loop(client: QdrantClient, batch: int) -> int:
    flt = domain_filter("d-0")
    offset, moved = None, 0
    while True:
        records, offset = client.scroll(
            "source",
            scroll_filter=flt,
            limit=batch,
            offset=offset,
            with_vectors=True,
            with_payload=True,
        )
        client.upsert(
            "target",
            points=[
                models.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in records
            ],
        )
        moved += len(records)
        if offset is None:
            return moved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--points", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    vectors = load_vectors(Path(args.data) if args.data else None)[: args.points]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    plain_rates, our_rates = [], []
    for _ in range(args.repeats):  # interleaved, medians: the machine is shared and noisy
        baseline_port = RemoteQdrant.connect("baseline", ":memory:")
        domain = fill(baseline_port, vectors)
        client = baseline_port._client  # the same local-mode client, used directly
        start = time.perf_counter()
        moved = plain_loop(client, args.batch)
        plain_rates.append(moved / (time.perf_counter() - start))
        baseline_port.close()

        port = RemoteQdrant.connect("librarian", ":memory:")
        fill(port, vectors)
        plan = MigrationPlan(
            name="bench",
            source_collection="source",
            target_collection="target",
            domain_id="d-0",
            batch_size=args.batch,
            workers=1,
            verify=True,
        )
        start = time.perf_counter()
        report = migrate(port, port, plan)
        our_rates.append(report.copied / (time.perf_counter() - start))
        port.close()
        assert report.verified
        assert report.copied == domain == moved
    plain, ours = statistics.median(plain_rates), statistics.median(our_rates)
    ratio = ours / plain
    print(
        f"{domain:,} points of {vectors.shape[1]}-d moved (qdrant-client local mode, median of "
        f"{args.repeats}): plain scroll+upsert loop {plain:,.0f} points/s; migrate with "
        f"checkpoints, catch-up and verification {ours:,.0f} points/s = {ratio:.2f}x"
    )

    root = Path(tempfile.mkdtemp(prefix="librarian-bench-"))
    try:
        for workers in (1, 2, 4):
            edge = EmbeddedQdrant("edge", root / f"w{workers}")
            fill(edge, vectors)
            plan = MigrationPlan(
                name=f"w{workers}",
                source_collection="source",
                target_collection="target",
                domain_id="d-0",
                batch_size=args.batch,
                workers=workers,
            )
            start = time.perf_counter()
            report = migrate(edge, edge, plan)
            rate = report.copied / (time.perf_counter() - start)
            edge.close()
            print(
                f"embedded engine, {workers} worker(s): {rate:,.0f} points/s (verified "
                f"{report.verified})"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    verdict = "meets" if ratio >= GOAL else "MISSES"
    print(f"migrate / plain loop = {ratio:.2f}x {verdict} the goal >= {GOAL}x")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
