"""One router for many libraries: every DomainMap it serves at one REST and one gRPC port.

Why this exists: a team with several collections would otherwise run one router
Deployment per DomainMap. A :class:`LibrarySet` holds one router (its
:class:`~librarian.router.state.RouterState` and the aiohttp application of
:func:`~librarian.router.app.create_app`) per DomainMap and puts a thin front
application before them that chooses the router by the collection a request
names:

* ``/collections/{name}/...`` goes to the library of that name. A name that no
  library has goes to the first loaded library (the primary), whose router
  answers it as a single router would: a pass-through collection of its default
  cluster, one of its aliases, or Qdrant's 404 (which then lists the libraries
  served). Two libraries with one name are
  refused with 409 naming both DomainMaps: answering from either could be the
  wrong data with a 200.
* ``GET /collections`` lists every router's collections, each name once.
* ``/readyz`` is 200 once every library is loaded, else 503 naming each library
  not loaded yet and why. Libraries found by ``--all-domainmaps`` after the
  router first became ready do not take it out of its Service while they load
  (a new DomainMap needs minutes of analysis; the others keep being served).
* ``/librarian/...``, ``/`` and the alias endpoints go to the router chosen by
  ``?library=NAME`` (a collection name, or the DomainMap as NAMESPACE/NAME or
  NAME); without it, to the only library, or for the load and status reports
  of several a 400 that lists them (a report of the wrong library would
  mislead whoever rebalances on it).
* ``/metrics`` (served apart, by :meth:`LibrarySet.metrics_app`) merges every
  router's registry, each sample labelled with its ``library`` and
  ``domainmap``: each router keeps its own registry, so nothing is registered
  twice.

Dispatch is in process: the front handler hands the request object to the
chosen router's request handler (``AppRunner.server.request_handler``, the
public attribute aiohttp's own server calls; the gRPC API calls it the same
way) with a ``request.clone()`` (the front's route is cached on the original;
the body, not read yet, is shared), which resolves its own route and runs its
own middlewares (authentication, limits, errors). No loopback hop: no second HTTP parse, no
copy of the body, no extra connection. Measured on a cheap request (``GET
/collections/{name}/exists``, 3 x 3,000 requests, client and servers in one
process on a shared 2-core machine), CPU per request was about 150 us served
by the router directly, 170 us through this front and 300 us through a
loopback HTTP forwarder with a shared connection pool: the front costs
about a tenth of the request, the forwarder doubled it. On a routed query
(a few ms) the difference is within noise. So the router's libraries share
its process, as ``librarian up`` serves them too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from librarian.kube.errors import KubernetesApiError
from librarian.router.app import create_app
from librarian.router.auth import Need, RouterKeys, authentication
from librarian.router.qdrant_api import error_response
from librarian.router.state import RouterState

__all__ = ["LibraryConflict", "LibrarySet", "ServedLibrary"]

log = logging.getLogger("librarian.router")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
FrontRoute = tuple[str, str, Need, Callable[[web.Request], Awaitable[web.StreamResponse]]]

# Answered for one library only: a report of another would mislead.
_ONE_LIBRARY_ONLY = frozenset(
    {"/librarian/status", "/librarian/load", "/librarian/predict", "/librarian/query"}
)


@dataclass
class ServedLibrary:
    """One DomainMap's router inside the set: its state and its started application."""

    domainmap: str  # NAMESPACE/NAME
    state: RouterState
    runner: web.AppRunner
    gates_readiness: bool = True

    @property
    def name(self) -> str | None:
        """The collection name it serves (``None`` until its library is loaded)."""
        library = self.state.library
        return library.name if library is not None else None

    @property
    def handler(self) -> Handler:
        server = self.runner.server
        if server is None:
            raise RuntimeError(f"the router of {self.domainmap} is not set up")
        return server.request_handler

    def named(self, wanted: str) -> bool:
        """Whether ``?library=wanted`` names this one exactly: its collection or its
        DomainMap as NAMESPACE/NAME."""
        return wanted in (self.name, self.domainmap)

    def named_short(self, wanted: str) -> bool:
        """Whether ``wanted`` is its DomainMap's name without the namespace."""
        return wanted == self.domainmap.rpartition("/")[2]


@dataclass(frozen=True)
class LibraryConflict:
    """A collection name claimed by more than one DomainMap."""

    name: str
    domainmaps: tuple[str, ...]

    @property
    def message(self) -> str:
        return (
            f"Conflict: collection `{self.name}` is the library of several DomainMaps "
            f"({', '.join(self.domainmaps)}); give one of them another source collection, "
            "or serve them from different routers"
        )


@dataclass
class LibrarySet:
    """The routers of several DomainMaps behind one front application."""

    keys: RouterKeys = field(default_factory=RouterKeys)
    insecure: bool = False  # serve beyond loopback without keys (the routers' own setting)
    max_body_bytes: int = 32 * 1024 * 1024
    reload_in_background: bool = True
    waiting_reason: str | None = None  # why the set may be incomplete (e.g. not listed yet)
    _libraries: dict[str, ServedLibrary] = field(default_factory=dict)
    _ready_once: bool = False

    # ------------------------------------------------------------------ membership

    @property
    def libraries(self) -> list[ServedLibrary]:
        return list(self._libraries.values())

    def __contains__(self, domainmap: object) -> bool:
        return domainmap in self._libraries

    async def add(self, domainmap: str, state: RouterState) -> ServedLibrary:
        """Start ``state``'s application (its first load included) and serve it."""
        if domainmap in self._libraries:
            raise ValueError(f"DomainMap {domainmap} is served already")
        runner = web.AppRunner(
            create_app(state, reload_in_background=self.reload_in_background), access_log=None
        )
        await runner.setup()
        # A library found after the router became ready does not make it unready.
        served = ServedLibrary(domainmap, state, runner, gates_readiness=not self._ready_once)
        self._libraries[domainmap] = served
        log.info("serving the library of DomainMap %s", domainmap)
        return served

    async def remove(self, domainmap: str) -> None:
        """Stop serving ``domainmap``'s library and release its clusters."""
        served = self._libraries.pop(domainmap, None)
        if served is None:
            return
        log.info("no longer serving the library of DomainMap %s", domainmap)
        await served.runner.cleanup()
        await asyncio.to_thread(served.state.config.fleet.close)

    async def close(self) -> None:
        for domainmap in list(self._libraries):
            await self.remove(domainmap)

    # ------------------------------------------------------------------ choosing

    def conflicts(self) -> list[LibraryConflict]:
        """Collection names loaded by more than one DomainMap."""
        claims: dict[str, list[str]] = {}
        for served in self._libraries.values():
            if served.name is not None:
                claims.setdefault(served.name, []).append(served.domainmap)
        return [
            LibraryConflict(name, tuple(sorted(owners)))
            for name, owners in claims.items()
            if len(owners) > 1
        ]

    def _claimants(self, name: str) -> list[ServedLibrary]:
        return [s for s in self._libraries.values() if s.name == name]

    def _primary(self) -> ServedLibrary | None:
        """The first loaded library: it answers names no library has (pass-through, aliases)."""
        if len(self._libraries) == 1:
            return next(iter(self._libraries.values()))
        return next((s for s in self._libraries.values() if s.name is not None), None)

    def _known(self) -> str:
        return ", ".join(
            f"{s.name or '(not loaded)'} ({s.domainmap})" for s in self._libraries.values()
        )

    def _names(self) -> str:
        return ", ".join(sorted({s.name for s in self._libraries.values() if s.name}))

    def _chosen(self, request: web.Request) -> ServedLibrary:
        """The library ``?library=`` names; without it the only one (or the primary)."""
        wanted = request.query.get("library")
        if wanted:
            for named in (ServedLibrary.named, ServedLibrary.named_short):
                found = [s for s in self._libraries.values() if named(s, wanted)]
                if len(found) == 1:
                    return found[0]
                if len(found) > 1:
                    raise _Refusal(
                        400,
                        f"Bad request: {wanted!r} names several libraries: name one as "
                        f"NAMESPACE/NAME (libraries: {self._known()})",
                    )
            raise _Refusal(404, f"Not found: no library {wanted!r} (libraries: {self._known()})")
        if len(self._libraries) > 1 and request.path in _ONE_LIBRARY_ONLY:
            raise _Refusal(
                400,
                f"Bad request: this router serves several libraries: name one with "
                f"?library=NAME (libraries: {self._known()})",
            )
        primary = self._primary() or next(iter(self._libraries.values()), None)
        if primary is None:
            raise _Refusal(503, f"Service unavailable: {self._not_ready_text()}")
        return primary

    # ------------------------------------------------------------------ the front

    def app(self, extra: Sequence[FrontRoute] = ()) -> web.Application:
        """The front application: one REST API for every library.

        ``extra``: routes the front answers itself (method, path, the right it needs,
        handler), matched before the libraries' routes.
        """
        routes: tuple[FrontRoute, ...] = (
            *extra,
            ("GET", "/healthz", Need.OPEN, self._healthz),
            ("GET", "/livez", Need.OPEN, self._healthz),
            ("GET", "/readyz", Need.OPEN, self._readyz),
            ("GET", "/collections", Need.READ_ANY, self._collections),
            ("POST", "/collections/aliases", Need.OPEN, self._other),
            ("*", "/collections/{name}", Need.OPEN, self._collection),
            ("*", "/collections/{name}/{tail:.*}", Need.OPEN, self._collection),
            ("*", "/{tail:.*}", Need.OPEN, self._other),
        )
        # Dispatched routes are checked by the router that answers them (Need.OPEN here);
        # the front checks only what it answers itself.
        needs: dict[tuple[str, str], Need] = {}
        app = web.Application(
            middlewares=[authentication(self.keys, needs)], client_max_size=self.max_body_bytes
        )
        for method, path, need, handler in routes:
            route = app.router.add_route(method, path, handler)
            methods = ("GET", "POST", "PUT", "PATCH", "DELETE") if method == "*" else (method,)
            for one in methods:
                needs.setdefault((one, route.resource.canonical if route.resource else path), need)
        return app

    async def _dispatch(self, served: ServedLibrary, request: web.Request) -> web.StreamResponse:
        # A clone: the front's route lookup is cached on the request it matched (its body,
        # not read yet, is shared).
        return await served.handler(request.clone())

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="healthz check passed")

    def not_ready(self) -> list[str]:
        """Each library that holds readiness back, with its reason."""
        waiting = []
        conflicted = {d for c in self.conflicts() for d in c.domainmaps}
        for served in self._libraries.values():
            if not served.gates_readiness:
                continue
            if served.domainmap in conflicted:
                waiting.append(f"{served.domainmap}: collection `{served.name}` is not unique")
            elif served.state.library is None:
                reason = served.state.load_error or "library not loaded yet"
                waiting.append(f"{served.domainmap}: {reason}")
        return waiting

    def _not_ready_text(self) -> str:
        waiting = self.not_ready()
        if self.waiting_reason:
            waiting.insert(0, self.waiting_reason)
        elif not self._libraries:
            waiting.insert(0, "no library to serve yet")
        return "not ready: " + "; ".join(waiting)

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.waiting_reason or not self._libraries or self.not_ready():
            return web.Response(status=503, text=self._not_ready_text())
        self._ready_once = True
        return web.Response(text="all shards are ready")

    async def _collections(self, request: web.Request) -> web.StreamResponse:
        """Every router's collections (its library and pass-through ones), each name once."""
        started = time.perf_counter()
        names: dict[str, None] = {}
        for served in self.libraries:
            if served.name is None:
                continue  # nothing to list before its library (and default cluster) is known
            names.setdefault(served.name, None)
            response = await self._dispatch(served, request)
            body = response.body if isinstance(response, web.Response) else None
            if response.status != 200 or not isinstance(body, bytes):
                continue
            for entry in json.loads(body).get("result", {}).get("collections", []):
                names.setdefault(str(entry.get("name")), None)
        return web.json_response(
            {
                "result": {"collections": [{"name": name} for name in names]},
                "status": "ok",
                "time": time.perf_counter() - started,
            }
        )

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        claimants = self._claimants(name)
        if len(claimants) > 1:
            conflict = LibraryConflict(name, tuple(sorted(s.domainmap for s in claimants)))
            return error_response(409, conflict.message, time.perf_counter())
        if claimants:
            return await self._dispatch(claimants[0], request)
        started = time.perf_counter()
        primary = self._primary()
        if primary is None:
            return error_response(
                404, f"Not found: Collection `{name}` doesn't exist! ({self._known()})", started
            )
        response = await self._dispatch(primary, request)
        if response.status == 404 and len(self._libraries) > 1:
            # Not a pass-through collection or an alias either: say what is served here.
            return error_response(
                404,
                f"Not found: Collection `{name}` doesn't exist! (libraries: {self._names()})",
                started,
            )
        return response

    async def _other(self, request: web.Request) -> web.StreamResponse:
        try:
            served = self._chosen(request)
        except _Refusal as refusal:
            return error_response(refusal.status, refusal.message, time.perf_counter())
        return await self._dispatch(served, request)

    # ------------------------------------------------------------------ metrics

    async def metrics(self, request: web.Request) -> web.Response:
        """Every library's metrics, each sample labelled with its library and DomainMap."""
        return web.Response(
            body=generate_latest(_LabelledLibraries(self)),
            content_type="text/plain",
            charset="utf-8",
        )

    def metrics_app(self) -> web.Application:
        """Prometheus' ``/metrics`` of every library, on a listener of its own."""
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        return app

    # ------------------------------------------------------------------ following

    async def follow(
        self,
        list_domainmaps: Callable[[], Awaitable[Sequence[str]]],
        make_state: Callable[[str], RouterState],
        interval_s: float,
    ) -> None:
        """Serve exactly the DomainMaps ``list_domainmaps`` returns, re-listed every
        ``interval_s``: a new one is added, a deleted one removed (until cancelled)."""
        while True:
            await self.sync(list_domainmaps, make_state)
            await asyncio.sleep(interval_s)

    async def sync(
        self,
        list_domainmaps: Callable[[], Awaitable[Sequence[str]]],
        make_state: Callable[[str], RouterState],
    ) -> None:
        """One pass of :meth:`follow`; a failed listing keeps what is served and says why."""
        try:
            wanted = list(await list_domainmaps())
        except KubernetesApiError as error:  # the API server may be away for a while
            log.warning("cannot list DomainMaps: %s", error)
            if not self._ready_once:
                self.waiting_reason = f"cannot list DomainMaps: {error}"
            return
        self.waiting_reason = None
        for domainmap in [d for d in self._libraries if d not in wanted]:
            await self.remove(domainmap)
        for domainmap in wanted:
            if domainmap not in self._libraries:
                await self.add(domainmap, make_state(domainmap))


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _LabelledLibraries(Collector):
    """Every router's registry as one: each sample gains ``library`` and ``domainmap``."""

    def __init__(self, libraries: LibrarySet) -> None:
        self._libraries = libraries

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for served in self._libraries.libraries:
            extra = {"library": served.name or "", "domainmap": served.domainmap}
            for family in served.state.metrics.registry.collect():
                into = merged.get(family.name)
                if into is None:
                    into = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = into
                into.samples.extend(
                    sample._replace(labels={**sample.labels, **extra}) for sample in family.samples
                )
        yield from merged.values()
