"""A tiny HTTP server on loopback that records requests and plays scripted answers.

It stands in for a remote Qdrant so tests can check the exact requests
``qdrant-client`` sends and how the adapter handles refusals and failures.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, Any]]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = b""


@dataclass
class Recorder:
    url: str
    requests: list[Recorded] = field(default_factory=list)


def qdrant_ok(result: Any) -> Answer:
    return 200, {"result": result, "status": "ok", "time": 0.0}


def qdrant_error(status: int, message: str) -> Answer:
    return status, {"status": {"error": message}, "time": 0.0}


@contextmanager
def recording_server(
    answer: Callable[[Recorded, int], Any],
    *,
    raw: bool = False,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Recorder]:
    """Serve on 127.0.0.1; ``answer(request, index)`` decides each response: a status and a
    JSON payload, or with ``raw`` a status and the body's exact bytes (a JSON content type).
    With ``tls`` (a server context) it serves https at ``https://localhost:<port>``."""
    recorder = Recorder(url="")
    as_bytes = raw

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            request = Recorded(self.command, self.path, dict(self.headers), body, raw)
            recorder.requests.append(request)
            status, payload = answer(request, len(recorder.requests) - 1)
            data = payload if as_bytes else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        recorder.url = f"https://localhost:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
