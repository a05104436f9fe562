"""One address for every library of ``librarian up``: Qdrant's REST API at ``http://HOST:PORT``.

Why this exists: ``up`` runs one router per DomainMap, as a cluster would run
one router Deployment per library, but the user gets one URL. The gateway
answers ``/readyz`` itself (200 once every library is loaded, 503 with each
reason before), lists every library under ``GET /collections``, and sends
``/collections/{name}/...`` to the router whose library has that name (with a
single library, everything else too: passthrough collections behave as in a
cluster). ``/metrics`` (read access needed) serves the chosen router's metrics.
Other paths (``/``, ``/librarian/...``) go to the
router chosen by ``?library=NAME``, the first library by default.
``GET /librarian/resources`` returns the resources of the emulated API (no
Secrets), for ``librarian status --port``. Callers authenticate as with a
router: the routers check what is forwarded, the gateway its own listings.

Requests are forwarded over loopback HTTP with one shared connection pool:
the routers stay exactly what they are in a cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from librarian.router.auth import RouterKeys
from librarian.router.qdrant_api import ApiError

__all__ = ["Gateway", "LibraryEndpoint"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
MAX_BODY = 256 * 1024 * 1024  # as the router's own limit


@dataclass(frozen=True)
class LibraryEndpoint:
    """A library (its collection name), the DomainMap it follows, and its router's local URL."""

    name: str
    domainmap: str
    url: str
    metrics_url: str = ""  # its router's Prometheus /metrics


def _qdrant_error(status: int, message: str) -> web.Response:
    return web.json_response({"status": {"error": message}, "time": 0.0}, status=status)


class Gateway:
    """The front aiohttp application of ``librarian up``."""

    def __init__(
        self,
        libraries: Sequence[LibraryEndpoint],
        resources: Callable[[], list[dict[str, Any]]],
        *,
        timeout_s: float = 300.0,
        keys: RouterKeys | None = None,
    ) -> None:
        if not libraries:
            raise ValueError("the gateway needs at least one library")
        self.libraries = list(libraries)
        self._by_name = {library.name: library for library in self.libraries}
        self._resources = resources
        self._keys = keys or RouterKeys()
        # The gateway's own calls to the routers (listings, probes) use the read-write key.
        self._own_headers = {"api-key": self._keys.read_write[0]} if self._keys.configured else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/livez", self.healthz)
        app.router.add_get("/librarian/resources", self.resources)
        app.router.add_get("/collections", self.collections)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_route("*", "/collections/{name}", self.collection)
        app.router.add_route("*", "/collections/{name}/{tail:.*}", self.collection)
        app.router.add_route("*", "/{tail:.*}", self.other)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application) -> Any:
        self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        yield
        await self._session.close()

    # ------------------------------------------------------------------ own answers

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="healthz check passed")

    async def readyz(self, request: web.Request) -> web.Response:
        """200 once every library is loaded; 503 with each library's reason before."""
        waiting = []
        for library in self.libraries:
            status, text = await self._get_text(library, "/readyz")
            if status != 200:
                waiting.append(f"{library.name} ({library.domainmap}): {text.strip()}")
        if waiting:
            return web.Response(status=503, text="not ready: " + "; ".join(waiting))
        return web.Response(text="all shards are ready")

    def _refusal(self, request: web.Request) -> web.Response | None:
        """The gateway's own listings need what a router's do: read access to everything."""
        if not self._keys.configured:
            return None
        try:
            access = self._keys.access_of(request)
        except ApiError as error:
            return _qdrant_error(error.status, error.message)
        if not access.can_read_all():
            return _qdrant_error(403, "Forbidden: this endpoint needs read access to everything")
        return None

    async def resources(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return web.json_response({"items": self._resources()})

    async def collections(self, request: web.Request) -> web.Response:
        """Every router's collections (libraries and passthrough ones), each name once."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        started = time.perf_counter()
        names: dict[str, None] = {}
        for library in self.libraries:
            status, text = await self._get_text(library, "/collections")
            if status == 200:
                for entry in json.loads(text).get("result", {}).get("collections", []):
                    names.setdefault(str(entry.get("name")), None)
            else:
                names.setdefault(library.name, None)
        return web.json_response(
            {
                "result": {"collections": [{"name": name} for name in names]},
                "status": "ok",
                "time": time.perf_counter() - started,
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """The chosen library's router's metrics (``?library=NAME``; the first by default)."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        chosen = request.query.get("library")
        library = self._by_name.get(chosen) if chosen else self.libraries[0]
        if library is None or not library.metrics_url:
            return _qdrant_error(404, f"Not found: no metrics for library {chosen!r}")
        assert self._session is not None
        try:
            async with self._session.get(library.metrics_url) as response:
                return web.Response(
                    status=response.status,
                    body=await response.read(),
                    content_type="text/plain",
                    charset="utf-8",
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            return _qdrant_error(502, f"Service unavailable: no metrics ({type(error).__name__})")

    # ------------------------------------------------------------------ forwarding

    async def collection(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        library = self._by_name.get(name)
        if library is None:
            if len(self.libraries) > 1:
                known = ", ".join(sorted(self._by_name))
                return _qdrant_error(
                    404, f"Not found: Collection `{name}` doesn't exist! (libraries: {known})"
                )
            library = self.libraries[0]
        return await self._forward(request, library)

    async def other(self, request: web.Request) -> web.StreamResponse:
        chosen = request.query.get("library")
        library = self._by_name.get(chosen) if chosen else self.libraries[0]
        if library is None:
            known = ", ".join(sorted(self._by_name))
            return _qdrant_error(404, f"Not found: no library {chosen!r} (libraries: {known})")
        return await self._forward(request, library)

    async def _get_text(self, library: LibraryEndpoint, path: str) -> tuple[int, str]:
        assert self._session is not None
        try:
            async with self._session.get(library.url + path, headers=self._own_headers) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            return 502, f"its router does not answer ({type(error).__name__})"

    async def _forward(self, request: web.Request, library: LibraryEndpoint) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read() if request.can_read_body else None
        try:
            async with self._session.request(
                request.method,
                library.url + request.rel_url.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                kept = CIMultiDict(
                    (k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
                )
                return web.Response(status=upstream.status, body=payload, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as error:
            return _qdrant_error(
                502,
                f"Service unavailable: the router of {library.name} did not answer "
                f"({type(error).__name__})",
            )
