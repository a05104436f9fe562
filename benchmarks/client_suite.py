"""qdrant-client's own congruence tests, pointed at the router the way that suite expects a server.

What it measures: the share of the tests in ``tests/congruence_tests`` of a
qdrant-client source checkout (``--suite PATH``; use the version installed
here) that pass when their "remote" Qdrant — ``localhost:6333`` over REST and
``localhost:6334`` over gRPC, as the suite hard-codes — is the router. The
suite compares each answer with qdrant-client's local mode; it is run as it
is, unmodified, in a process of its own.

The suite creates, deletes and re-creates its own collections (named dense,
sparse and multivectors), so it cannot run on a library, whose collections
come from a DomainMap: its collection names are allowlisted pass-through
collections of the router's default cluster, an embedded engine, which the
router serves through its storage port (with ``--upstream URL``, a remote
Qdrant, they are proxied byte for byte instead). The library's own
congruence, over several homes, is what ``benchmarks/congruence_report.py``
measures.

Run: ``python benchmarks/client_suite.py --suite PATH [-k EXPR] [--per-file]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

from librarian.testing import congruence
from librarian.testing.router import RouterThread, make_state

SUITE_COLLECTIONS = (
    "congruence_test_collection",
    "congruence_test_collection_small",
    "congruence_secondary_collection",
    "congruence_secondary_collection_small",
    "congruence_search_matrix_missing_vectors",
    "lookup_collection",
    "test_collection",
    "test_uuid_input_collection",
)


class _Served:
    def __init__(self, fleet: object, definition: object) -> None:
        self.fleet = fleet
        self.definition = definition


def run_suite(suite: Path, junit: Path, expression: str | None, timeout_s: float) -> int:
    """The suite's congruence tests in a process of their own; its exit code."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/congruence_tests",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "--continue-on-collection-errors",  # a file the installed client cannot import
    ]
    if expression:
        command += ["-k", expression]
    environment = {**os.environ, "PYTHONPATH": str(suite)}
    return subprocess.run(
        command, cwd=suite, env=environment, timeout=timeout_s, check=False
    ).returncode


def outcomes(junit: Path) -> dict[str, Counter[str]]:
    """Each test file's outcomes (passed / failed / error / skipped) from a JUnit report."""
    by_file: dict[str, Counter[str]] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = case.get("classname", "").rsplit(".", 1)[-1] or "?"
        kinds = {child.tag for child in case}
        outcome = next(
            (k for k in ("failure", "error", "skipped") if k in kinds), "passed"
        ).replace("failure", "failed")
        by_file.setdefault(name, Counter())[outcome] += 1
    return by_file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, required=True, help="a qdrant-client checkout")
    parser.add_argument("-k", dest="expression", help="pytest -k expression (a subset)")
    parser.add_argument("--per-file", action="store_true", help="a row per test file")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    if not (args.suite / "tests" / "congruence_tests").is_dir():
        parser.error(f"{args.suite} has no tests/congruence_tests: give a qdrant-client checkout")
    with tempfile.TemporaryDirectory() as workdir:
        fleet, definition = congruence.build_library(Path(workdir))
        state = make_state(
            _Served(fleet, definition),
            settings={"caching": {"enable_result_cache": False}},
            passthrough=frozenset(SUITE_COLLECTIONS),
        )
        junit = Path(workdir) / "junit.xml"
        try:
            with RouterThread(state, grpc=True, port=6333, grpc_port=6334):
                run_suite(args.suite, junit, args.expression, args.timeout)
        finally:
            fleet.close()
        by_file = outcomes(junit)
    total: Counter[str] = Counter()
    for counts in by_file.values():
        total.update(counts)
    if args.per_file:
        print("| test file | passed | failed | error | skipped |")
        print("|---|---|---|---|---|")
        for name, counts in sorted(by_file.items()):
            print(
                f"| {name} | {counts['passed']} | {counts['failed']} | {counts['error']} | "
                f"{counts['skipped']} |"
            )
    ran = sum(total.values())
    share = total["passed"] / ran if ran else 0.0
    print(
        f"qdrant-client congruence tests through the router: {total['passed']} of {ran} passed "
        f"({share:.0%}); failed {total['failed']}, errors {total['error']}, "
        f"skipped {total['skipped']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
