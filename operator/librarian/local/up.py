"""``librarian up``: the whole product in one process, on the user's own data, without a cluster.

Why this exists: a user with a collection and no Kubernetes should get the
library — discovery, specialization, routing, rebalancing — from YAML files
alone, exactly as a cluster would run it. In one process this runs:

* the emulated Kubernetes API (:mod:`librarian.local.emulator`), started from
  the state directory (:mod:`librarian.local.state`) with the given manifests
  applied over it (:mod:`librarian.local.manifests`);
* the operator, unchanged, in its own thread;
* the Job controller's part: each migration Job's own command runs in-process
  (:mod:`librarian.local.job_controller`) — the entry point hands its runner in;
* one router per DomainMap, following it as in a cluster (re-read as soon as
  the DomainMap or a ClusterSpecialization changes), behind one address
  (:mod:`librarian.local.gateway`).

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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from librarian.contracts.api import CLUSTERSPECIALIZATIONS, DOMAINMAPS, resource
from librarian.local.crds import crd_resource, packaged_crds
from librarian.local.emulator import (
    EmulatedCluster,
    ObjectChange,
    emulated_kubernetes,
    resource_name,
)
from librarian.local.gateway import Gateway, LibraryEndpoint
from librarian.local.job_controller import JOBS, CommandRunner, finished, play_job_controller
from librarian.local.manifests import ApplyPlan, ManifestError, plan_apply, read_manifests
from librarian.local.printer import PhaseReporter
from librarian.local.state import PERSISTED, StateDirectory, StateError
from librarian.operator.context import OperatorContext
from librarian.operator.runtime import operator_in_thread
from librarian.router.app import create_app
from librarian.router.main import RouterSource, kubernetes_login, prepare_router
from librarian.router.state import RouterState
from librarian.settings import Settings

__all__ = ["DEFAULT_STATE", "RunningLibrary", "UpConfig", "UpError", "local_library", "run_up"]

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


@dataclass
class RunningLibrary:
    """What a running ``up`` offers: its URL, the emulated API and the libraries it serves."""

    url: str
    api: EmulatedCluster
    libraries: list[LibraryEndpoint]


@dataclass
class _Router:
    """One DomainMap's router, served on a loopback port behind the gateway."""

    namespace: str
    domainmap: str
    name: str
    state: RouterState
    runner: web.AppRunner
    url: str = ""
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


async def _start_router(
    settings: Settings, namespace: str, domainmap: str, library_name: str
) -> _Router:
    state = await prepare_router(settings, RouterSource(domainmap=f"{namespace}/{domainmap}"))
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    router = _Router(namespace, domainmap, library_name, state, runner)
    router.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return router


async def _stop_router(router: _Router) -> None:
    await router.runner.cleanup()
    await asyncio.to_thread(router.state.config.fleet.close)


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
        await router.state.reload()
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
    """Runs migration Jobs as they are created, one at a time, until asked to stop."""

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
            except Exception as error:  # the API is local: log, and try again at the next wake
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


@asynccontextmanager
async def _running(
    config: UpConfig,
    plan: ApplyPlan,
    state: StateDirectory,
    run_command: CommandRunner,
    write: Write,
    announce: Callable[[str], None],
) -> AsyncIterator[RunningLibrary]:
    crds = packaged_crds()
    kinds = {crd_resource(crd): str(crd["spec"]["names"]["kind"]) for crd in crds}
    kinds[JOBS] = "Job"
    everything = [*plan.preload, *plan.create]
    namespaces = sorted({"default", *(b["metadata"]["namespace"] for b in everything)})
    if plan.preload:
        write(f"Resuming from {config.state_dir}/ ({len(plan.preload)} resources stored)")
    os.environ.setdefault(TIMER_TICK_ENV, str(config.timer_tick_s))
    reporter = PhaseReporter(write, kinds.values())
    routers: list[_Router] = []
    tasks: list[asyncio.Task[None]] = []
    async with emulated_kubernetes(crds, namespaces=namespaces) as api:
        api.preload(plan.preload)
        for body in sorted(plan.preload, key=_display_order):
            meta = body["metadata"]
            reporter.observe(str(body["kind"]), meta.get("namespace"), meta["name"], body)
        players = _JobPlayer(api, run_command)

        def changed(change: ObjectChange) -> None:
            state.record(change.resource, change.namespace, change.name, change.body)
            kind = kinds.get(change.resource)
            if kind is not None:
                reporter.observe(kind, change.namespace, change.name, change.body)
            if change.resource == JOBS and change.body is not None and not finished(change.body):
                players.wake.set()
            if change.resource in (resource(DOMAINMAPS), resource(CLUSTERSPECIALIZATIONS)):
                for router in routers:
                    if router.namespace == change.namespace:
                        router.dirty.set()

        api.emulator.listen(changed)
        for body in plan.create:
            await api.create(body)
        kubernetes_login(api.url)
        domainmaps = [b for b in everything if b["kind"] == "DomainMap"]
        if not domainmaps:
            raise UpError(
                f"no DomainMap in the files or in {config.state_dir}/: give one with -f FILE"
            )
        gateway_runner: web.AppRunner | None = None
        try:
            names: dict[str, str] = {}
            for body in domainmaps:
                meta = body["metadata"]
                library = str(((body.get("spec") or {}).get("source") or {}).get("collection"))
                key = f"{meta['namespace']}/{meta['name']}"
                if library in names:
                    raise UpError(
                        f"DomainMaps {names[library]} and {key} both serve a library named "
                        f"{library!r}: one address cannot tell them apart"
                    )
                names[library] = key
                routers.append(
                    await _start_router(config.settings, meta["namespace"], meta["name"], library)
                )
            endpoints = [
                LibraryEndpoint(r.name, f"{r.namespace}/{r.domainmap}", r.url) for r in routers
            ]
            gateway = Gateway(endpoints, lambda: _snapshot(api))
            gateway_runner = web.AppRunner(gateway.app(), access_log=None)
            await gateway_runner.setup()
            try:
                await web.TCPSite(gateway_runner, config.host, config.port).start()
            except OSError as error:
                raise UpError(
                    f"cannot serve on {config.host}:{config.port}: {error.strerror or error} "
                    "(is another process using it? give --port)"
                ) from None
            port = gateway_runner.addresses[0][1]
            url = f"http://{config.host}:{port}"
            announce(url)
            for router in routers:
                _describe(router, write)
            tasks = [asyncio.ensure_future(_follow(r, write)) for r in routers]
            context = OperatorContext.from_settings(config.settings)
            async with operator_in_thread(api.url, context=context):
                player = asyncio.ensure_future(players.loop())
                try:
                    yield RunningLibrary(url, api, endpoints)
                finally:
                    players.stopping.set()
                    if players.running:
                        write(
                            f"Waiting for the running migration Job to finish ({players.running}); "
                            "an interrupted one resumes at the next start"
                        )
                    await player
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if gateway_runner is not None:
                await gateway_runner.cleanup()
            for router in routers:
                await _stop_router(router)


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
