"""Discovery memory: the peak ``discover`` allocates on top of its input, per strategy.

Prints, for every strategy, the peak of Python-tracked allocations (tracemalloc,
which numpy reports to) during ``discover`` as a ratio of the input's size,
for an input of unit-length rows (what a Cosine collection stores and hands
back), and for hybrid also the same rows not normalised (discovery must then
make one normalised copy; ``--all-not-unit`` measures that for every strategy). The input itself is allocated before tracing starts, so
the ratio is what discovery adds. Goal: hybrid (the default) <= 1.3x on unit
rows; exits non-zero when it misses.

Data: a synthetic mixture of 24 Gaussian clusters on the unit sphere,
``--rows`` x ``--dim`` (default 60,000 x 64), seeded.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np

from librarian.core.discovery import STRATEGIES, discover

GOAL = 1.3


def mixture(rows: int, dim: int, seed: int, clusters: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    members = rng.integers(0, clusters, rows)
    vectors = centres[members] + 0.35 * rng.standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def peak_on_top(vectors: np.ndarray, strategy: str, seed: int) -> tuple[int, float, int]:
    """(peak bytes allocated during discover, seconds, domains found)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    result = discover(vectors, strategy=strategy, seed=seed)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, seconds, len(result.domains)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-not-unit", action="store_true")
    args = parser.parse_args()
    unit = mixture(args.rows, args.dim, args.seed)
    scaled = unit * np.float32(3.0)  # same directions, not unit length
    size = unit.nbytes
    print(
        f"discover peak memory on top of the input, {args.rows:,} x {args.dim} float32 "
        f"({size / 2**20:.1f} MiB), tracemalloc"
    )
    print(f"  {'strategy':14s} {'unit rows':>10s} {'not unit':>10s} {'domains':>8s} {'time':>7s}")
    ratios: dict[str, float] = {}
    for strategy in STRATEGIES:
        peak_unit, seconds, domains = peak_on_top(unit, strategy, args.seed)
        not_unit = "-"
        if strategy == "hybrid" or args.all_not_unit:
            not_unit = f"{peak_on_top(scaled, strategy, args.seed)[0] / size:.2f}x"
        ratios[strategy] = peak_unit / size
        print(
            f"  {strategy:14s} {peak_unit / size:9.2f}x {not_unit:>10s} "
            f"{domains:8d} {seconds:6.1f}s"
        )
    verdict = "meets" if ratios["hybrid"] <= GOAL else "MISSES"
    print(f"hybrid {ratios['hybrid']:.2f}x the input on top of it {verdict} the goal <= {GOAL}x")
    return 0 if ratios["hybrid"] <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
