"""A router in a process of its own, for measuring it from another process over loopback.

Why this exists: a router and the client measuring it in one process share a
CPU budget, an event loop and a GIL, and "one hop" there never leaves the
process. ``bench_router_overhead.py`` starts this script once per server
(the library, and one collection through the same router as an allowlisted
pass-through), each on its own copy of an embedded engine, and reads each
one's CPU time from ``/proc``.

Usage: ``python router_process.py ENGINE_DIR DEFINITION_PICKLE``. It prints
one JSON line (``{"pid", "rest", "grpc"}``) once it serves on 127.0.0.1, and
stops when its standard input closes. Each line ``threads`` on its standard
input is answered with one JSON line naming its Python threads by thread id
(``{"<id>": "<name>"}``), so that the CPU the kernel counts per thread can be
charged to what each thread does.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys
import threading
from pathlib import Path

from librarian.router.library import LibraryDefinition
from librarian.storage.embedded import EmbeddedQdrant
from router_setup import WHOLE, router_state, start

__all__ = ["main"]


async def serve(engine_dir: Path, definition: LibraryDefinition) -> None:
    engine = EmbeddedQdrant("engine", engine_dir)
    try:
        state = router_state(engine, definition, passthrough=frozenset({WHOLE}))
        runner, grpc_server, rest_port, grpc_port = await start(state)
        print(json.dumps({"pid": os.getpid(), "rest": rest_port, "grpc": grpc_port}), flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):  # until stdin closes
            if line.strip() == "threads":
                names = {str(t.native_id): t.name for t in threading.enumerate()}
                print(json.dumps(names), flush=True)
        await grpc_server.stop(grace=None)
        await runner.cleanup()
    finally:
        engine.close()


def main() -> int:
    engine_dir, definition_file = Path(sys.argv[1]), Path(sys.argv[2])
    definition = pickle.loads(definition_file.read_bytes())
    if not isinstance(definition, LibraryDefinition):
        raise SystemExit(f"{definition_file} holds no library definition")
    asyncio.run(serve(engine_dir, definition))
    return 0


if __name__ == "__main__":
    sys.exit(main())
