"""Congruence report: every operation of the official client through the router, judged.

What it measures: a library of four domains on two embedded clusters, routed
on the named vector ``text`` (points also carry ``image``, ``code``, a sparse
and a multivector; some lack some), filled through the router; the same points
in one collection of qdrant-client's local mode (the reference). Every case of
``librarian.testing.congruence`` (reads of every query kind, groups, facets,
matrices, scroll, count, retrieve, collection calls; writes, each followed by
a comparison of the whole collection; then the reads again, over the tombstones,
moved points and changed payloads the writes left) runs on both, through each transport
(REST and gRPC, sync and async clients), and is judged correct, refused (a
4xx, with its reason) or wrong. The goal: wrong = 0.

Run: ``python benchmarks/congruence_report.py [--transports rest,grpc,rest-async,grpc-async]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from librarian.testing import congruence


def judge_transport(transport: str, points: list[Any]) -> list[congruence.Verdict]:
    with tempfile.TemporaryDirectory() as workdir:
        return congruence.judge_transport(Path(workdir), transport, points)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transports", default=",".join(congruence.TRANSPORTS))
    parser.add_argument("--points", type=int, default=400)
    parser.add_argument("--reasons", action="store_true", help="print each refusal's reason")
    args = parser.parse_args()
    points = congruence.congruence_points(args.points)
    transports = [t for t in args.transports.split(",") if t]
    results: dict[str, list[tuple[str, int, int, int, list[str]]]] = {}
    for transport in transports:
        started = time.perf_counter()
        results[transport] = congruence.summary(judge_transport(transport, points))
        print(f"{transport}: judged in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    operations = list(dict.fromkeys(row[0] for rows in results.values() for row in rows))
    header = "| operation | " + " | ".join(f"{t} ok / refused / wrong" for t in transports) + " |"
    print(header)
    print("|" + "---|" * (len(transports) + 1))
    totals = {t: [0, 0, 0] for t in transports}
    reasons: dict[str, list[str]] = {}
    for operation in operations:
        cells = []
        for transport in transports:
            row = next((r for r in results[transport] if r[0] == operation), None)
            if row is None:
                cells.append("-")
                continue
            _, ok, refused, wrong, why = row
            totals[transport] = [
                a + b for a, b in zip(totals[transport], (ok, refused, wrong), strict=True)
            ]
            cells.append(f"{ok} / {refused} / {wrong}")
            for reason in why:
                said = reasons.setdefault(operation, [])
                if f"[{transport}] {reason}" not in said:
                    said.append(f"[{transport}] {reason}")
        print(f"| {operation} | " + " | ".join(cells) + " |")
    print(
        "| **total** | " + " | ".join("{} / {} / {}".format(*totals[t]) for t in transports) + " |"
    )
    if args.reasons and reasons:
        print("\nNot correct, with the router's answer:")
        for operation, why in reasons.items():
            for reason in why:
                print(f"- {operation}: {reason}")
    wrong = sum(totals[t][2] for t in transports)
    print(f"\nwrong answers: {wrong} (goal: 0)")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
