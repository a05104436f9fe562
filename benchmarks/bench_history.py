"""History scenario: linearizability and consistency through the router, over many seeds.

Runs ``librarian.testing.scenario`` once per seed: seeded clients (the official
``qdrant-client`` over real HTTP) race upserts, payload updates, deletes and
reads on a small shared id space while one cluster is stopped and brought back,
a domain moves to the other cluster (its migration killed once and resumed) and
a cluster hangs; then every copy is read from the engines, the history is
checked per id (Wing–Gong–Lowe) and the clusters' contents structurally.
Prints per seed the operations, how they ended, the violations found and the
time, then ``violations: K of N seeds``.

Goal: no violation at any seed (exit 1 otherwise). The seeds differ in what
the clients do and when the faults and the move happen; the threads'
interleavings differ from run to run, so a seed can fail in one run and pass
in the next: the count over many seeds is the measure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from librarian.testing.scenario import ScenarioConfig, run_scenario


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--clients", type=int, default=ScenarioConfig.clients)
    parser.add_argument("--ops", type=int, default=ScenarioConfig.ops, help="operations per client")
    parser.add_argument("--ids", type=int, default=ScenarioConfig.ids, help="shared id space")
    parser.add_argument("--no-faults", action="store_true", help="no outage and no hang")
    parser.add_argument("--no-move", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="every failing seed's report")
    args = parser.parse_args()
    logging.getLogger("librarian").setLevel(logging.ERROR)  # partial answers are expected

    print(
        f"{args.seeds} seeds from {args.first_seed}: {args.clients} clients, "
        f">= {args.ops} ops each, {args.ids} ids; "
        f"faults {'off' if args.no_faults else 'on'}, move {'off' if args.no_move else 'on'}"
    )
    print(
        f"{'seed':>5} {'ops':>5} {'ok':>5} {'unknown':>7} {'fail':>5} {'violations':>10} {'s':>6}"
    )
    failed: list[int] = []
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        config = ScenarioConfig(
            seed=seed,
            clients=args.clients,
            ops=args.ops,
            ids=args.ids,
            outage=not args.no_faults,
            hang=not args.no_faults,
            move=not args.no_move,
        )
        with tempfile.TemporaryDirectory(prefix="bench-history-") as path:
            result = run_scenario(config, Path(path))
        outcomes = {"ok": 0, "unknown": 0, "fail": 0}
        for by_outcome in result.ops.values():
            for outcome, n in by_outcome.items():
                outcomes[outcome] += n
        print(
            f"{seed:>5} {result.operations:>5} {outcomes['ok']:>5} {outcomes['unknown']:>7} "
            f"{outcomes['fail']:>5} {result.violations:>10} {result.elapsed_s:>6.1f}",
            flush=True,
        )
        if not result.ok:
            failed.append(seed)
            details = result.report().splitlines() if args.verbose else _first(result)
            for line in details:
                print(f"      {line}")
    total = time.perf_counter() - started
    print(f"violations: {len(failed)} of {args.seeds} seeds ({total:.0f}s)")
    if failed:
        print(f"seeds with violations: {', '.join(map(str, failed))}")
    return 1 if failed else 0


def _first(result) -> list[str]:
    """The first structural problem and the first violation of a failing seed."""
    lines = list(result.problems[:1])
    lines += [str(v) for v in result.verdict.violations[:1]]
    return [line[:300] for line in lines]


if __name__ == "__main__":
    sys.exit(main())
