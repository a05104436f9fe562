"""The write path's cost: versioned, conditional upserts through the library vs one collection.

One embedded engine holds the Debian vectors twice: whole, in one collection,
and split by discovery into one collection per domain (the library). The
official ``qdrant-client`` (sync, HTTP) upserts the same points, in batches,
two ways through one router process:

- ``one collection``: the router's pass-through to the whole collection —
  Qdrant's REST API served straight from the engine, what an application
  writing to Qdrant directly pays;
- ``library``: the library collection — every batch looks up its ids' versions
  in every home, takes a version, writes each point conditionally into its
  nearest domain, then settles the other homes.

The two paths alternate batch by batch (drift on a shared machine hits both
alike) and rewrite the same ids with new payloads, so the library also pays
for points that change domain. Goal: library upserts/s >= 0.5x one collection.

Then the write path's two other figures, each its own script run here in turn:
a move's points/s against a plain scroll+upsert loop with dual writes'
fence, versions and full verification on (``bench_migration_speed.py``, goal
>= 0.8x), and the history scenario at 20 seeds (``bench_history.py``, goal:
no violation). ``--parts`` picks which run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

from bench_router_overhead import build, router_state, serve
from debian_vectors import load_vectors
from librarian.storage.embedded import EmbeddedQdrant

GOAL = 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--points", type=int, default=6000, help="points written per path")
    parser.add_argument("--batch", type=int, default=64, help="points per upsert request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default="upserts,move,history", help="which figures to print")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    missed = []
    if "upserts" in parts and upserts(args) != 0:
        missed.append("upserts")
    here = Path(__file__).parent
    for part, script in (("move", "bench_migration_speed.py"), ("history", "bench_history.py")):
        if part in parts:
            print(f"--- {part}: {script}", flush=True)
            if subprocess.run([sys.executable, str(here / script)], check=False).returncode:
                missed.append(part)
    print(f"write path goals: {'all met' if not missed else 'MISSED: ' + ', '.join(missed)}")
    return 1 if missed else 0


def upserts(args: argparse.Namespace) -> int:
    """Versioned upserts through the library vs one collection; 0 when the goal is met."""
    vectors = load_vectors(Path(args.data) if args.data else None)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(args.seed)
    data = vectors[rng.permutation(len(vectors))]
    with tempfile.TemporaryDirectory() as tmp:
        engine = EmbeddedQdrant("engine", Path(tmp) / "engine")
        definition, domains = build(engine, data, args.seed)

        state = router_state(engine, definition)
        url, _, stop = serve(state)
        client = QdrantClient(url=url, timeout=120, check_compatibility=False)
        # Rewrite existing ids with the vector of another point: about as many change domain
        # as a random rewrite would; payloads are new each time.
        ids = rng.choice(len(data), size=args.points, replace=False)
        sources = rng.permutation(len(data))[: args.points]
        batches = [
            [
                models.PointStruct(
                    id=int(i), vector=[float(x) for x in data[s]], payload={"rewrite": int(s)}
                )
                for i, s in zip(ids[k : k + args.batch], sources[k : k + args.batch], strict=True)
            ]
            for k in range(0, args.points, args.batch)
        ]
        for batch in batches[:3]:  # warm up both paths
            client.upsert("whole", batch)
            client.upsert("library", batch)
        elapsed = {"one collection": 0.0, "library": 0.0}
        for batch in batches:
            for path, collection in (("one collection", "whole"), ("library", "library")):
                started = time.perf_counter()
                client.upsert(collection, batch)
                elapsed[path] += time.perf_counter() - started
        written = sum(len(b) for b in batches)
        rates = {path: written / max(seconds, 1e-9) for path, seconds in elapsed.items()}
        print(
            f"{len(data):,} points, {domains} domains, {written:,} points upserted per path "
            f"in batches of {args.batch}"
        )
        for path, rate in rates.items():
            print(f"{path:<16}{rate:>10,.0f} points/s")
        ratio = rates["library"] / rates["one collection"]
        ok = ratio >= GOAL
        print(
            f"library / one collection: {ratio:.2f}x (goal >= {GOAL}x: {'met' if ok else 'MISSED'})"
        )
        client.close()
        stop.set()
        time.sleep(0.3)
        engine.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
