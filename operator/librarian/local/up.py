"""``librarian up``: the whole product in one process, on the user's own data, without a cluster.

Why this exists: a user with a collection and no Kubernetes should get the
library — discovery, specialization, routing, rebalancing — from YAML files
alone, exactly as a cluster would run it. In one process this runs:

* the emulated Kubernetes API (:mod:`librarian.local.emulator`), started from
  the state directory (:mod:`librarian.local.state`) with the given manifests
  applied over it (:mod:`librarian.local.manifests`);
* the operator, unchanged, in its own thread;
* the Job controller's part: each Job's own command (migrations, labeling) runs in-process
  (:mod:`librarian.local.job_controller`) — the entry point hands its runner in;
* one router per DomainMap, following it as in a cluster (re-read as soon as
  the DomainMap or a ClusterSpecialization changes), all at one address as a
  router of several libraries serves them (:mod:`librarian.router.libraries`),
  which also answers ``GET /librarian/resources`` (the emulated API's objects,
  no Secrets, for ``librarian status --port``) and ``/metrics``.

Every change is written to the state directory and each phase change printed
(:mod:`librarian.local.printer`). Stopping lets a running migration Job
finish, stops the operator, closes the routers (and with them the embedded
shards) and the API; started again on the same state, nothing finished is
done again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from librarian.contracts.api import CLUSTERSPECIALIZATIONS, DOMAINMAPS, resource
from librarian.kube import client as kube_client
from librarian.local.crds import crd_resource, packaged_crds
from librarian.local.emulator import (
    EmulatedCluster,
    ObjectChange,
    emulated_kubernetes,
    resource_name,
)
from librarian.local.job_controller import JOBS, CommandRunner, finished, play_job_controller
from librarian.local.manifests import ApplyPlan, ManifestError, plan_apply, read_manifests
from librarian.local.printer import PhaseReporter
from librarian.local.state import PERSISTED, StateDirectory, StateError
from librarian.operator.context import OperatorContext
from librarian.operator.runtime import operator_in_thread
from librarian.router.auth import InsecureBind, Need, RouterKeys, check_bind
from librarian.router.libraries import LibrarySet
from librarian.router.main import RouterSource, kubernetes_login, prepare_router
from librarian.router.state import RouterState
from librarian.settings import Settings

__all__ = [
    "DEFAULT_STATE",
    "LibraryEndpoint",
    "RunningLibrary",
    "UpConfig",
    "UpError",
    "front_app",
    "local_library",
    "run_up",
]

log = logging.getLogger("librarian.up")

DEFAULT_STATE = Path(".librarian")
TIMER_TICK_ENV = "LIBRARIAN_TIMER_TICK_SECONDS"
RELOAD_SPACING_S = 0.5
"""Least time between two router reloads that changes trigger (a rate limit)."""
DESCRIBE_EVERY_S = 2.0
"""How often a library built by the router's own periodic reload is reported."""
JOB_RESCAN_S = 5.0
"""Jobs are run as soon as they are created; this rescan is only a safety net."""

Write = Callable[[str], None]


class UpError(RuntimeError):
    """``up`` cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class UpConfig:
    """What ``librarian up`` was asked for."""

    files: Sequence[Path]
    state_dir: Path = DEFAULT_STATE
    host: str = "127.0.0.1"
    port: int = 6333
    settings: Settings = field(default_factory=Settings)
    timer_tick_s: float = (
        1.0  # the operator's timers (10 s in a cluster): a local run waits on them
    )
    load_window_s: float = 60.0  # the routers' sliding window of the load policies read
    keys: RouterKeys = field(default_factory=RouterKeys)  # none: callers are not authenticated
    insecure: bool = False  # told to serve without keys beyond loopback
    passthrough: frozenset[str] = frozenset()  # other collections served as they are


@dataclass(frozen=True)
class LibraryEndpoint:
    """A library served by ``up``: its collection name and the DomainMap it follows."""

    name: str
    domainmap: str  # NAMESPACE/NAME


@dataclass
class RunningLibrary:
    """What a running ``up`` offers: its URL, the emulated API and the libraries it serves."""

    url: str
    api: EmulatedCluster
    libraries: list[LibraryEndpoint]


@dataclass
class _Router:
    """One DomainMap's router, served with the others at ``up``'s address."""

    namespace: str
    domainmap: str
    name: str
    state: RouterState
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    described: str | None = None  # the library version last reported


def _stamp(write: Write) -> Write:
    return lambda line: write(f"{time.strftime('%H:%M:%S')} {line}")


def _snapshot(api: EmulatedCluster) -> list[dict[str, Any]]:
    """The persisted kinds' objects as the API holds them now."""
    return [
        dict(stored.raw)
        for (res, _, _), stored in list(api.emulator.objects.items())
        if resource_name(res) in PERSISTED and not stored.deleted
    ]


def _router_state(config: UpConfig, namespace: str, domainmap: str) -> Awaitable[RouterState]:
    return prepare_router(
        config.settings,
        RouterSource(domainmap=f"{namespace}/{domainmap}"),
        load_window_s=config.load_window_s,
        access={
            "keys": config.keys,
            "insecure": config.insecure,
            "passthrough": config.passthrough,
        },
    )


def _describe(router: _Router, write: Write) -> None:
    """Say what the library serves now, once per version (whichever reload built it)."""
    library = router.state.library
    if library is None or library.definition.version == router.described:
        return
    router.described = library.definition.version
    specialized = sum(1 for d in library.domains if d.specialized)
    write(
        f"Library {router.name}: serving {len(library.domains)} domains, "
        f"{specialized} from specialized collections"
    )


async def _follow(router: _Router, write: Write) -> None:
    """Re-read the library whenever its DomainMap or a ClusterSpecialization changes."""
    while True:
        try:
            await asyncio.wait_for(router.dirty.wait(), DESCRIBE_EVERY_S)
        except TimeoutError:  # nothing changed: the router's own periodic reload may have
            _describe(router, write)
            continue
        router.dirty.clear()
        if await router.state.reload():
            await router.state.register()  # acknowledge a move's new phase at once
        _describe(router, write)
        await asyncio.sleep(RELOAD_SPACING_S)


async def _wait_either(first: asyncio.Event, second: asyncio.Event, timeout_s: float) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _display_order(body: Mapping[str, Any]) -> tuple[int, str]:
    kinds = ("DomainMap", "ClusterSpecialization", "RebalancePolicy", "Job")
    kind = str(body.get("kind"))
    return (kinds.index(kind) if kind in kinds else len(kinds), str(body["metadata"]["name"]))


@dataclass
class _JobPlayer:
    """Runs Jobs (migrations, labeling) as they are created, one at a time, until asked to stop."""

    api: EmulatedCluster
    run: CommandRunner
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    running: str | None = None
    done: set[str] = field(default_factory=set)

    async def loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                await play_job_controller(self.api, None, self.done, self._tracked)
            except (RuntimeError, KeyError, aiohttp.ClientError, TimeoutError) as error:
                # the API is local: say so, and try again at the next wake
                log.warning("playing the Job controller failed: %s", error)
            await _wait_either(self.wake, self.stopping, JOB_RESCAN_S)

    def _tracked(self, args: Sequence[str], environment: Any) -> tuple[bool, str]:
        self.running = " ".join(str(a) for a in args[:3])
        try:
            return self.run(args, environment)
        finally:
            self.running = None


@asynccontextmanager
async def local_library(
    config: UpConfig, *, run_command: CommandRunner, write: Write
) -> AsyncIterator[RunningLibrary]:
    """Start everything; stop it all (cleanly, state written) when the block ends."""
    write = _stamp(write)
    try:
        manifests = read_manifests(config.files) if config.files else []
    except ManifestError as error:
        raise UpError(str(error)) from None
    state = StateDirectory(config.state_dir)
    try:
        with state.lock() as announce:
            plan = plan_apply(state.load(), manifests)
            for body in plan.changed:
                state.save(body)
            async with _running(config, plan, state, run_command, write, announce) as running:
                yield running
    except StateError as error:
        raise UpError(str(error)) from None


def _libraries(config: UpConfig, plan: ApplyPlan) -> list[tuple[str, str, str]]:
    """``(namespace, DomainMap, library name)`` of every DomainMap; one name per library."""
    found: dict[str, tuple[str, str, str]] = {}
    for body in [*plan.preload, *plan.create]:
        if body["kind"] != "DomainMap":
            continue
        meta = body["metadata"]
        library = str(((body.get("spec") or {}).get("source") or {}).get("collection"))
        if library in found:
            namespace, name, _ = found[library]
            raise UpError(
                f"DomainMaps {namespace}/{name} and {meta['namespace']}/{meta['name']} both serve "
                f"a library named {library!r}: one address cannot tell them apart"
            )
        found[library] = (str(meta["namespace"]), str(meta["name"]), library)
    if not found:
        raise UpError(f"no DomainMap in the files or in {config.state_dir}/: give one with -f FILE")
    return list(found.values())


@dataclass
class _Session:
    """What follows the API's changes: the state directory, the phase lines, routers, Jobs."""

    state: StateDirectory
    reporter: PhaseReporter
    kinds: Mapping[str, str]
    player: _JobPlayer
    routers: list[_Router] = field(default_factory=list)

    def changed(self, change: ObjectChange) -> None:
        self.state.record(change.resource, change.namespace, change.name, change.body)
        kind = self.kinds.get(change.resource)
        if kind is not None:
            self.reporter.observe(kind, change.namespace, change.name, change.body)
        if change.resource == JOBS and change.body is not None and not finished(change.body):
            self.player.wake.set()
        if change.resource in (resource(DOMAINMAPS), resource(CLUSTERSPECIALIZATIONS)):
            for router in self.routers:
                if router.namespace == change.namespace:
                    router.dirty.set()


def front_app(
    libraries: LibrarySet, resources: Callable[[], list[dict[str, Any]]]
) -> web.Application:
    """What ``up`` serves at its address: every library, as a router of several serves them,
    plus ``GET /librarian/resources`` (``resources()``: the emulated API's objects, no
    Secrets) and ``/metrics`` of every library, both for callers with read access."""

    async def listed(request: web.Request) -> web.Response:
        return web.json_response({"items": resources()})

    return libraries.app(
        extra=[
            ("GET", "/librarian/resources", Need.READ_ANY, listed),
            ("GET", "/metrics", Need.READ_ANY, libraries.metrics),
        ]
    )


@asynccontextmanager
async def _serving(
    config: UpConfig, api: EmulatedCluster, libraries: LibrarySet
) -> AsyncIterator[str]:
    """Every library at HOST:PORT, with the emulated API's resources: its URL."""
    try:
        check_bind(config.host, config.keys, insecure=config.insecure)
    except InsecureBind as error:
        raise UpError(str(error)) from None

    runner = web.AppRunner(front_app(libraries, lambda: _snapshot(api)), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, config.host, config.port).start()
        except OSError as error:
            raise UpError(
                f"cannot serve on {config.host}:{config.port}: {error.strerror or error} "
                "(is another process using it? give --port)"
            ) from None
        yield f"http://{config.host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _routers(
    config: UpConfig, libraries: Sequence[tuple[str, str, str]], write: Write
) -> AsyncIterator[tuple[LibrarySet, list[_Router]]]:
    """One router per DomainMap, each re-read as its resources change, in one set."""
    served = LibrarySet(
        keys=config.keys,
        insecure=config.insecure,
        max_body_bytes=config.settings.domain_library_orchestrator.limits.max_body_bytes,
    )
    routers: list[_Router] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for namespace, domainmap, library in libraries:
            state = await _router_state(config, namespace, domainmap)
            await served.add(f"{namespace}/{domainmap}", state)
            routers.append(_Router(namespace, domainmap, library, state))
        tasks = [asyncio.ensure_future(_follow(r, write)) for r in routers]
        yield served, routers
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await served.close()


@asynccontextmanager
async def _jobs_played(player: _JobPlayer, write: Write) -> AsyncIterator[None]:
    """Run migration Jobs until the block ends; a running one is let finish."""
    task = asyncio.ensure_future(player.loop())
    try:
        yield
    finally:
        player.stopping.set()
        if player.running:
            write(
                f"Waiting for the running migration Job to finish ({player.running}); "
                "an interrupted one resumes at the next start"
            )
        await task


@asynccontextmanager
async def _running(
    config: UpConfig,
    plan: ApplyPlan,
    state: StateDirectory,
    run_command: CommandRunner,
    write: Write,
    announce: Callable[[str], None],
) -> AsyncIterator[RunningLibrary]:
    libraries = _libraries(config, plan)
    crds = packaged_crds()
    kinds = {crd_resource(crd): str(crd["spec"]["names"]["kind"]) for crd in crds} | {JOBS: "Job"}
    everything = [*plan.preload, *plan.create]
    namespaces = sorted({"default", *(b["metadata"]["namespace"] for b in everything)})
    if plan.preload:
        write(f"Resuming from {config.state_dir}/ ({len(plan.preload)} resources stored)")
    os.environ.setdefault(TIMER_TICK_ENV, str(config.timer_tick_s))
    async with emulated_kubernetes(crds, namespaces=namespaces) as api:
        session = _Session(
            state, PhaseReporter(write, kinds.values()), kinds, _JobPlayer(api, run_command)
        )
        api.preload(plan.preload)
        for body in sorted(plan.preload, key=_display_order):
            meta = body["metadata"]
            session.reporter.observe(str(body["kind"]), meta.get("namespace"), meta["name"], body)
        api.emulator.listen(session.changed)
        for body in plan.create:
            await api.create(body)
        kubernetes_login(api.url)
        try:
            async with (
                _routers(config, libraries, write) as (served, routers),
                _serving(config, api, served) as url,
            ):
                endpoints = [
                    LibraryEndpoint(r.name, f"{r.namespace}/{r.domainmap}") for r in routers
                ]
                session.routers.extend(routers)
                announce(url)
                for router in routers:
                    _describe(router, write)
                context = OperatorContext.from_settings(config.settings)
                async with (
                    operator_in_thread(api.url, context=context),
                    _jobs_played(session.player, write),
                ):
                    yield RunningLibrary(url, api, endpoints)
        finally:
            await kube_client.close_session()  # the routers' loaders read the API in this loop


async def run_up(
    config: UpConfig,
    *,
    run_command: CommandRunner,
    write: Write,
    stop: asyncio.Event,
    on_ready: Callable[[RunningLibrary], None] | None = None,
) -> None:
    """Run until ``stop`` is set."""
    async with local_library(config, run_command=run_command, write=write) as running:
        if on_ready is not None:
            on_ready(running)
        await stop.wait()
