"""The live router: its configuration, the current library snapshot, and reloading it.

Why this exists: a router serves one library whose definition (domains and
their homes) changes as the operator specializes and moves domains. The state
keeps the snapshot requests start from, rebuilds it when the definition's
version changes (keeping the previous one when a reload fails), and holds what
outlives a request: the result cache, the circuit breakers, the recall
estimate, the metrics, the load meter and the way to the clusters.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from librarian.contracts.reserved import is_reserved_collection
from librarian.core.hlc import EPOCH_MS, MAX_NODE, HybridLogicalClock, encode_version
from librarian.router.aliases import AliasStore
from librarian.router.auth import RouterKeys
from librarian.router.cleanup import Homes
from librarian.router.deciding import Decisions
from librarian.router.generation import Generations
from librarian.router.library import (
    CollectionHome,
    DomainRoute,
    Library,
    LibraryDefinition,
    View,
    build_library,
    home_placements,
    home_route,
)
from librarian.router.load import LoadMeter
from librarian.router.metrics import RouterMetrics
from librarian.router.outbox import Outbox
from librarian.router.passthrough import PassthroughProxy
from librarian.router.qdrant_api import ApiError
from librarian.router.quality import RecallEstimator
from librarian.router.registration import Registration
from librarian.router.resilience import CircuitBreaker, ResultCache
from librarian.router.upstream import READ_WATCH, REQUEST_DEADLINE, Upstream
from librarian.settings import OrchestratorSettings
from librarian.storage.errors import CollectionNotFound, UnknownCluster
from librarian.storage.fleet import Fleet

__all__ = ["Loader", "RouterConfig", "RouterState", "strategy_name"]

log = logging.getLogger("librarian.router")

_STRATEGY_ALIASES = {
    "nearest": "domain_affinity",
    "threshold": "domain_affinity",
    "all": "accuracy_first",
}


def strategy_name(name: Any) -> str | None:
    """The routing strategy for a configured or requested name (seed aliases mapped)."""
    if name is None or name == "":
        return None
    return _STRATEGY_ALIASES.get(str(name), str(name))


Loader = Callable[[], Awaitable[LibraryDefinition | None]]


@dataclass
class RouterConfig:
    """What a router needs: the fleet, where the library definition comes from, settings."""

    fleet: Fleet
    default_cluster: str
    loader: Loader
    settings: OrchestratorSettings = field(default_factory=OrchestratorSettings)
    sample_budget: int = 20_000
    routing_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    load_window_s: float = 60.0  # sliding window of the per-domain load figures
    node_id: int | None = None  # breaks ties between routers' versions; random when not given
    wall_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    outbox_path: str | None = None  # a file keeps pending cleanups across restarts
    outbox_max_entries: int = 100_000
    outbox_interval_s: float = 1.0
    settle_timeout_s: float = 2.0  # how long a write waits for a home it leaves
    tombstone_retention_s: float = 3600.0
    fence_wait_s: float | None = None  # how long a new move phase waits for older writes
    keys: RouterKeys = field(default_factory=RouterKeys)  # none: authentication is off
    insecure: bool = False  # told to serve without keys beyond loopback
    passthrough: frozenset[str] = frozenset()  # other collections of the default cluster served
    reserved: frozenset[str] = frozenset()  # the product's own collections (e.g. the catalog)
    aliases_cluster: str | None = None  # where aliases are stored (default: the default cluster)

    @property
    def strategy(self) -> str:
        name = self.settings.routing_strategy
        return strategy_name(name) or "auto"


class RouterState:
    """The live router: current library snapshot, cache, breakers, quality estimate, metrics."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        settings = config.settings
        self.library: Library | None = None
        self.load_error: str | None = None
        self.last_reload: float | None = None
        self.cache = ResultCache(
            ttl_s=settings.caching.cache_ttl,
            max_entries=settings.caching.max_entries,
            max_bytes=settings.limits.cache_max_bytes,
            enabled=settings.caching.enable_result_cache,
            clock=lambda: config.wall_ms() / 1000.0,
        )
        self.breaker = CircuitBreaker(
            settings.circuit_breaker.failure_threshold, settings.circuit_breaker.reset_timeout
        )
        self.estimator = RecallEstimator(fraction=settings.shadow_fraction, seed=config.seed)
        self.metrics = RouterMetrics()
        # What estimated_recall is held against (dashboards and alerts compare the two).
        self.metrics.target_recall.set(settings.target_recall)
        self.load = LoadMeter(window_s=config.load_window_s)
        self.upstream = Upstream(
            lambda: self.config.fleet,
            breaker=self.breaker,
            metrics=self.metrics,
            load=self.load,
            hedging=config.strategy == "latency_optimized",
            workers_per_cluster=settings.limits.upstream_workers_per_cluster,
            cluster_timeout_s=settings.timeout,
        )
        self.decisions = Decisions(settings.limits.routing_workers)
        self.generations = Generations(
            self.upstream, wall_ms=config.wall_ms, settle_s=settings.caching.settle_window
        )
        node = config.node_id if config.node_id is not None else secrets.randbelow(MAX_NODE + 1)
        self.clock = HybridLogicalClock(node, config.wall_ms)
        self.outbox = Outbox(
            config.outbox_path,
            max_entries=config.outbox_max_entries,
            clock=lambda: config.wall_ms() / 1000.0,
        )
        self.homes = Homes(self.upstream, self.outbox)
        self.registration: Registration | None = None  # set when serving a DomainMap's library
        self._writes: Counter[int] = Counter()  # writes in flight, by the snapshot they use
        self._write_ended: asyncio.Event | None = None
        self._acknowledged: dict[str, str] | None = None  # fences the Lease last reported
        self.touched_share: float | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self._proxy: tuple[str, PassthroughProxy | None] | None = None

    # ------------------------------------------------------------------ library

    async def reload(self) -> bool:
        """Re-read the library definition; rebuild the routing model when it changed."""
        async with self._reload_lock:
            try:
                library = await self._rebuilt()
            except Exception as error:  # noqa: BLE001 - keep serving the previous snapshot
                self.load_error = f"{type(error).__name__}: {error}"
                self.metrics.reloads.labels("failed").inc()
                log.warning("library reload failed: %s", self.load_error)
                return False
            if library is None:
                return False
            current = self.library
            self.upstream.place_writes(library.placements)
            if current is not None and library.router is current.router:
                self.library = library  # only a move's phase changed: reads and cache stand
                log.info("library %s: moves %s", library.name, View.of(library).fences())
                return True
            self._install(library)
            return True

    async def _rebuilt(self) -> Library | None:
        """A new snapshot, or None when there is no definition or it did not change."""
        definition = await self.config.loader()
        if definition is None:
            self.load_error = "no library definition yet (is the DomainMap analysed?)"
            return None
        if self.library is not None and self.library.definition.version == definition.version:
            self.load_error = None
            if self.library.definition.moves != definition.moves:
                # a move changed phase: the same routing model, writes follow the new phase
                # (into its homes, placed by partition where they are sharded so)
                placements = await asyncio.to_thread(
                    home_placements, definition, self.config.fleet, self.library.vector
                )
                return replace(self.library, definition=definition, placements=placements)
            return None
        return await asyncio.to_thread(
            build_library,
            definition,
            self.config.fleet,
            sample_budget=self.config.sample_budget,
            strategy=self.config.strategy,
            target_recall=self.config.settings.target_recall,
            seed=self.config.seed,
            **self.config.routing_options,
        )

    def _install(self, library: Library) -> None:
        definition = library.definition
        self.library = library
        self.load_error = None
        self.last_reload = time.time()
        self.cache.clear()
        self.metrics.reloads.labels("changed").inc()
        self.metrics.library_domains.set(len(definition.domains))
        self.load.track({r.domain_id: r.cluster for r in library.domains})
        log.info(
            "library %s loaded: %d domains (version %s)",
            definition.name,
            len(definition.domains),
            definition.version,
        )

    async def reload_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.settings.reload_interval)
            if await self.reload():
                await self.register()  # acknowledge a new move phase at once

    # ------------------------------------------------------------------ registration

    def fences(self) -> dict[str, str]:
        """The phase of every move the served library's writes follow, by move name."""
        return View.of(self.library).fences() if self.library is not None else {}

    async def register(self) -> None:
        """Renew this replica's Lease (when it serves a DomainMap's library).

        A new move phase is acknowledged only once the writes that started under an
        older snapshot (which may not follow it) have ended; until then the Lease
        keeps the phases it acknowledged before.
        """
        if self.registration is None:
            return
        fences = self.fences()
        if fences != self._acknowledged and not await self.older_writes_ended():
            fences = self._acknowledged or {}
        if await self.registration.renew(fences, loaded=self.library is not None):
            self._acknowledged = fences

    @contextlib.asynccontextmanager
    async def writing(self, view: View) -> AsyncIterator[None]:
        """Count a write in flight against the snapshot it uses."""
        key = id(view.library)
        self._writes[key] += 1
        try:
            yield
        finally:
            self._writes[key] -= 1
            if not self._writes[key]:
                del self._writes[key]
            if self._write_ended is not None:
                self._write_ended.set()

    async def older_writes_ended(self) -> bool:
        """Wait (at most a request's timeout) until no write uses an older snapshot.

        Only then does this replica follow the served snapshot's move phases in every
        write it makes, and may acknowledge them.
        """
        current = id(self.library)
        wait_s = self.config.fence_wait_s
        deadline = asyncio.get_running_loop().time() + (
            self.config.settings.timeout if wait_s is None else wait_s
        )
        while any(key != current for key in self._writes):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self._write_ended = self._write_ended or asyncio.Event()
            self._write_ended.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._write_ended.wait(), remaining)
        return True

    async def register_forever(self) -> None:
        if self.registration is None:
            return
        while True:
            await self.register()
            await asyncio.sleep(self.registration.renew_every_s)

    def write_refusal(self) -> str | None:
        """Why writes are refused now (None when they are served)."""
        return self.registration.write_refusal() if self.registration is not None else None

    async def maintain(self) -> None:
        """One round of write-path upkeep: retry pending cleanups, compact old tombstones."""
        timeout = min(self.config.settings.timeout, self.config.settle_timeout_s)
        library = self.library
        done = await self.homes.drain(
            timeout,
            homes=lambda: list(View.of(library).homes()) if library is not None else [],
            now=self.config.wall_ms() / 1000.0,
        )
        self.metrics.outbox_applied.inc(done)
        summary = await asyncio.to_thread(self.outbox.summary)
        self.metrics.outbox_entries.set(summary["entries"])
        self.metrics.outbox_oldest_age.set(summary["oldestAgeSeconds"] or 0.0)
        if library is not None and not summary["entries"]:
            horizon_ms = self.config.wall_ms() - int(self.config.tombstone_retention_s * 1000)
            if horizon_ms > EPOCH_MS:
                homes = list(View.of(library).homes())
                await self.homes.compact(homes, encode_version(horizon_ms, 0, 0), timeout)

    async def maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.outbox_interval_s)
            try:
                await self.maintain()
            except Exception as error:  # noqa: BLE001 - upkeep retries at the next round
                log.warning("write-path upkeep failed: %s", error)

    def close(self) -> None:
        self.decisions.close()
        self.upstream.close()
        self.outbox.close()

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        # background work outlives the request that started it: not bound by its deadline
        context = contextvars.copy_context()
        context.run(REQUEST_DEADLINE.set, None)
        context.run(READ_WATCH.set, None)  # nor is it part of the answer the request caches
        task = asyncio.get_running_loop().create_task(_awaited(coroutine), context=context)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background work (shadow queries); used by tests and shutdown."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # ------------------------------------------------------------------ views

    def require_library(self) -> Library:
        """The current snapshot; a 503 while none is loaded."""
        if self.library is None:
            raise self._not_loaded()
        return self.library

    def _not_loaded(self) -> ApiError:
        return ApiError(
            503, f"Service unavailable: library not loaded ({self.load_error or 'starting'})"
        )

    def _passes_through(self, collection: str, library: Library | None) -> bool:
        """Whether ``collection`` is served as it is: allowlisted, and not the product's own."""
        if library is None or collection not in self.config.passthrough:
            return False
        if collection in self.config.reserved or is_reserved_collection(collection):
            return False
        definition = library.definition
        owned = {route.collection for route in definition.domains}
        owned |= {
            home.collection for move in definition.moves for home in (move.source, move.target)
        }
        return collection not in owned

    def visible_collections(self, names: list[str]) -> list[str]:
        """Of the default cluster's ``names``, those a client may see through the router."""
        return [n for n in names if self._passes_through(n, self.library)]

    @property
    def aliases(self) -> AliasStore:
        """Where the aliases served by this router are stored (see :mod:`~.aliases`)."""
        library = self.library
        cluster = (
            self.config.aliases_cluster
            or self.config.default_cluster
            or (library.definition.default_cluster if library is not None else "")
        )
        if not cluster:
            raise self._not_loaded()
        return AliasStore(cluster)

    async def on_alias_cluster(self, operation: Callable[[Any], T]) -> T:
        """Run a port call on the cluster that stores the aliases, within the request timeout."""
        store = self.aliases
        route = home_route(CollectionHome(store.cluster, store.collection))
        return await self.upstream.call(route, operation, self.config.settings.timeout)

    def passes_through(self, collection: str) -> bool:
        """Whether ``collection`` is an allowlisted collection of the default cluster."""
        return self._passes_through(collection, self.library)

    async def target(self, name: str) -> str:
        """The collection a request to ``name`` addresses, its alias resolved: the library's
        name, or an allowlisted collection of the default cluster; a 404 otherwise."""
        library = self.library
        if library is not None and name == library.name:
            return name
        if library is None or not self.config.default_cluster:
            # Until the library is known, neither is what it owns: nothing passes through.
            raise self._not_loaded()
        aliased = await self.aliases.resolve(self.on_alias_cluster, name)
        if aliased is not None:
            if aliased == library.name:
                return aliased
            name = aliased
        if not self._passes_through(name, library):
            raise ApiError(404, f"Not found: Collection `{name}` doesn't exist!")
        return name

    def proxy(self) -> PassthroughProxy | None:
        """The proxy to the default cluster's server (``None`` when it is embedded)."""
        cluster = self.config.default_cluster
        if self._proxy is None or self._proxy[0] != cluster:
            proxy = None
            try:
                config = self.config.fleet.config(cluster) if cluster else None
            except UnknownCluster:
                config = None  # ports given as they are: served through the port
            if config is not None and config.url is not None and config.url != ":memory:":
                proxy = PassthroughProxy(
                    config.url, config.api_key, connect_timeout_s=config.timeout_s
                )
            self._proxy = (cluster, proxy)
        return self._proxy[1]

    async def close_proxy(self) -> None:
        if self._proxy is not None and self._proxy[1] is not None:
            await self._proxy[1].close()

    async def view(self, collection: str) -> View:
        """What a request to ``collection`` addresses: the library, or a passthrough collection."""
        library = self.library
        target = await self.target(collection)
        if library is not None and target == library.name:
            return View.of(library)
        cluster = self.config.default_cluster
        route = DomainRoute(target, target, cluster, target, (), 0)
        try:  # on the cluster's own threads, within the request timeout (a hung cluster holds no other)
            info = await self.upstream.call(
                route, lambda port: port.collection_info(target), self.config.settings.timeout
            )
        except CollectionNotFound:
            raise ApiError(404, f"Not found: Collection `{target}` doesn't exist!") from None
        route = replace(route, size=info.points_count)
        return View(
            (route,),
            None,
            info.vector_size or 0,
            info.distance not in ("Euclid", "Manhattan"),
            spec=info.spec,
        )


T = TypeVar("T")


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
