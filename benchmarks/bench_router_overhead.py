"""Router overhead: what serving the library costs against serving one collection, each in a
server process of its own, measured from a client process over loopback.

Setup: the Debian vectors (1,000 held out as queries) on an embedded engine,
whole in one collection and split by discovery into one collection per domain
(the library). The engine's directory is copied, and two server processes are
started (``router_process.py``), each with its own copy:

- ``library``: the router serving the library collection (routing, fan-out
  to the chosen domains, fusion; result cache off);
- ``one collection``: the same router serving the whole collection as an
  allowlisted pass-through, i.e. Qdrant's REST and gRPC API answered straight
  from the same engine. It is the baseline because it runs the very same
  server (HTTP and gRPC stack, body validation, rendering) on the same engine,
  points and queries, so the difference is what the library adds; no Qdrant
  server binary is part of this repository to put behind it instead.

This process is the client: the official ``AsyncQdrantClient`` sends the
same top-10 queries to both servers over loopback with 1 and 32 concurrent
requests, over REST and over gRPC (``prefer_grpc=True``), in rounds that
alternate between the servers so drift on a shared machine hits both alike.
Each server's CPU time (user + system, all its threads) is read from
``/proc/<pid>/stat`` around each of its rounds.

Printed per transport and concurrency: p50/p99 latency of each server,
library/one-collection ratios, p50 added by the library, and requests per
server CPU-second of each with their ratio; then each server's CPU per request
by part, from the CPU the kernel counts per thread (``/proc/<pid>/task``),
each thread charged to what it does: the event loop (HTTP and gRPC, parsing,
planning, fusion, rendering), the routing threads (the routing decision), the
threads calling the homes (request building, the engine's search in the
calling thread, conversion of its answer), the engine's own search threads,
the rest, and what the process' count holds beyond the threads' (threads
that ended, and the difference between the kernel's tick-based process count
and its per-thread nanosecond counts); with the library's difference in each,
i.e. where the gap is.
``--busy`` runs everything a second time with one CPU burner per core and
prints both.

Goal (REST, 1 and 32 clients, the run without burners): the library's
requests per server CPU-second >= 0.8x serving one collection through the
router, and p50 added <= 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qdrant_client import AsyncQdrantClient

from debian_vectors import load_vectors
from librarian.storage.embedded import EmbeddedQdrant
from process_cpu import PARTS, part_of, process_cpu_seconds, thread_cpu_seconds, thread_names
from router_setup import WHOLE, build, percentile

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
GOAL_CPU = 0.8
GOAL_ADDED_MS = 1.0
LIBRARY = "library"
TARGETS = {"library": LIBRARY, "one collection": WHOLE}


@dataclass
class Server:
    """A router process: its pid, ports and the pipe that stops it."""

    process: subprocess.Popen[str]
    pid: int
    rest: int
    grpc: int

    def python_threads(self) -> dict[int, str]:
        """The server's Python threads by thread id, as it names them."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("threads\n")
        self.process.stdin.flush()
        return {int(tid): name for tid, name in json.loads(self.process.stdout.readline()).items()}

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(engine_dir: Path, definition_file: Path) -> Server:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "router_process.py"), str(engine_dir), str(definition_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the router process for {engine_dir} exited before serving")
    ready = json.loads(line)
    return Server(process, int(ready["pid"]), int(ready["rest"]), int(ready["grpc"]))


def charge(server: Server, spent: dict[int, float], tally: Tally) -> None:
    """Add the CPU seconds ``spent`` by each thread of ``server`` to ``tally``'s parts."""
    python, kernel = server.python_threads(), thread_names(server.pid)
    for tid, seconds in spent.items():
        part = part_of(python.get(tid), kernel.get(tid, ""))
        tally.parts[part] = tally.parts.get(part, 0.0) + seconds


@contextmanager
def burners(count: int) -> Iterator[None]:
    """``count`` processes spinning on a core each, while the block runs."""
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in spinning:
            process.kill()
        for process in spinning:
            process.wait()


@dataclass
class Tally:
    """What one server did in the rounds of one configuration."""

    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)  # CPU seconds by part (PARTS)

    @property
    def per_cpu_second(self) -> float:
        return len(self.latencies) / max(self.cpu_s, 1e-9)


async def drive(
    client: AsyncQdrantClient, collection: str, rows: Sequence[list[float]], concurrency: int
) -> list[float]:
    """Send every row as a top-10 query, ``concurrency`` at a time; each one's latency."""
    latencies: list[float] = []
    queue = iter(rows)

    async def worker() -> None:
        for row in queue:
            start = time.perf_counter()
            await client.query_points(collection, query=row, limit=10)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure(
    servers: dict[str, Server],
    transport: str,
    concurrency: int,
    rows: Sequence[list[float]],
    rounds: int,
) -> dict[str, Tally]:
    clients = {
        name: AsyncQdrantClient(
            url=f"http://127.0.0.1:{server.rest}",
            grpc_port=server.grpc,
            prefer_grpc=transport == "gRPC",
            timeout=120,
            check_compatibility=False,
        )
        for name, server in servers.items()
    }
    try:
        for name, client in clients.items():  # warm up: connections, code paths
            await drive(client, TARGETS[name], rows[:50], concurrency)
        tallies = {name: Tally() for name in servers}
        chunks = np.array_split(np.arange(len(rows)), rounds)
        for index, chunk in enumerate(chunks):
            order = list(servers) if index % 2 == 0 else list(reversed(servers))
            for name in order:
                pid = servers[name].pid
                before, threads_before = process_cpu_seconds(pid), thread_cpu_seconds(pid)
                part = [rows[i] for i in chunk]
                tallies[name].latencies += await drive(
                    clients[name], TARGETS[name], part, concurrency
                )
                threads_after = thread_cpu_seconds(pid)
                used = process_cpu_seconds(pid) - before
                tallies[name].cpu_s += used
                spent = {t: s - threads_before.get(t, 0.0) for t, s in threads_after.items()}
                charge(servers[name], spent, tallies[name])
                ended = used - sum(spent.values())
                tallies[name].parts["unattributed"] = (
                    tallies[name].parts.get("unattributed", 0.0) + ended
                )
        return tallies
    finally:
        for client in clients.values():
            await client.close()


def report(mode: str, results: dict[tuple[str, int], dict[str, Tally]]) -> list[str]:
    """Print one table; return the goals missed (REST rows)."""
    print(
        f"[{mode}] {'transport':<9} {'clients':>7} {'server':<15}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'req/server-CPU-s':>18}"
    )
    missed = []
    for (transport, concurrency), tallies in results.items():
        for name, tally in tallies.items():
            print(
                f"[{mode}] {transport:<9} {concurrency:>7} {name:<15}"
                f"{percentile(tally.latencies, 50):>8.2f}{percentile(tally.latencies, 99):>8.2f}"
                f"{tally.per_cpu_second:>18.0f}"
            )
        library, whole = tallies["library"], tallies["one collection"]
        p50 = (percentile(library.latencies, 50), percentile(whole.latencies, 50))
        p99 = (percentile(library.latencies, 99), percentile(whole.latencies, 99))
        cpu = library.per_cpu_second / whole.per_cpu_second
        added = p50[0] - p50[1]
        print(
            f"[{mode}] {transport:<9} {concurrency:>7} library/one collection: p50 "
            f"{p50[0] / p50[1]:.2f}x, p99 {p99[0] / p99[1]:.2f}x, p50 added {added:+.2f} ms, "
            f"requests per server CPU-second {cpu:.2f}x"
        )
        per_request = {
            part: (
                1e3 * library.parts.get(part, 0.0) / len(library.latencies),
                1e3 * whole.parts.get(part, 0.0) / len(whole.latencies),
            )
            for part in PARTS
        }
        totals = (
            1e3 * library.cpu_s / len(library.latencies),
            1e3 * whole.cpu_s / len(whole.latencies),
        )
        print(
            f"[{mode}] {transport:<9} {concurrency:>7} server CPU ms per request, library vs one "
            f"collection (difference): total {totals[0]:.2f} vs {totals[1]:.2f} "
            f"({totals[0] - totals[1]:+.2f}); "
            + "; ".join(
                f"{part} {a:.2f} vs {b:.2f} ({a - b:+.2f})" for part, (a, b) in per_request.items()
            )
        )
        if transport == "REST":
            if cpu < GOAL_CPU:
                missed.append(f"{concurrency} client(s): requests per CPU-second {cpu:.2f}x")
            if added > GOAL_ADDED_MS:
                missed.append(f"{concurrency} client(s): p50 added {added:+.2f} ms")
    return missed


def main() -> int:
    # A stop request unwinds normally, so the server processes and burners are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6, help="alternations between the servers")
    parser.add_argument("--clients", default="1,32", help="concurrent requests, comma-separated")
    parser.add_argument("--transports", default="REST,gRPC")
    parser.add_argument(
        "--busy", action="store_true", help="also run with one CPU burner per core; print both"
    )
    args = parser.parse_args()
    vectors = load_vectors(Path(args.data) if args.data else None)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = np.random.default_rng(0).permutation(len(vectors))
    queries, data = vectors[order[: args.queries]], vectors[order[args.queries :]]
    rows = [[float(x) for x in q] for q in queries]
    concurrencies = [int(c) for c in args.clients.split(",")]
    transports = [t.strip() for t in args.transports.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / "engine"
        engine = EmbeddedQdrant("engine", built)
        definition, domains = build(engine, data, seed=0)
        engine.close()
        definition_file = Path(tmp) / "definition.pickle"
        definition_file.write_bytes(pickle.dumps(definition))
        copies = {}
        for name in TARGETS:
            copies[name] = Path(tmp) / name.replace(" ", "-")
            shutil.copytree(built, copies[name])
        servers: dict[str, Server] = {}
        try:
            for name, directory in copies.items():
                servers[name] = start_server(directory, definition_file)
            print(
                f"{len(data):,} points, {domains} domains, {len(rows):,} queries (top-10, cache "
                f"off); client pid {os.getpid()}, library server pid {servers['library'].pid}, "
                f"one-collection server pid {servers['one collection'].pid}; "
                f"{os.cpu_count()} CPUs"
            )
            modes = ["quiet", "busy"] if args.busy else ["quiet"]
            missed: list[str] = []
            for mode in modes:
                with burners(os.cpu_count() or 1) if mode == "busy" else _nothing():
                    load_before = os.getloadavg()[0]
                    results = {
                        (transport, concurrency): asyncio.run(
                            measure(servers, transport, concurrency, rows, args.rounds)
                        )
                        for transport in transports
                        for concurrency in concurrencies
                    }
                    load_after = os.getloadavg()[0]
                print(
                    f"[{mode}] the machine's 1-minute load average: {load_before:.1f} before, "
                    f"{load_after:.1f} after ({os.cpu_count()} CPUs)"
                )
                found = report(mode, results)
                if mode == "quiet":
                    missed = found
        finally:
            for server in servers.values():
                server.stop()
    print(
        f"goal (REST, no burners): library requests per server CPU-second >= {GOAL_CPU}x one "
        f"collection's, p50 added <= {GOAL_ADDED_MS} ms: "
        + ("met" if not missed else "MISSED (" + "; ".join(missed) + ")")
    )
    return 0 if not missed else 1


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    sys.exit(main())
