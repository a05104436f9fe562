"""A router serving a library over real HTTP in a thread, and a cluster that can be made to fail.

Why this exists: the router's integration tests, the history scenario and its
benchmark all drive a real router (its aiohttp app on 127.0.0.1) with the
official client while they reach into its state and its clusters from the
test thread; they share these helpers instead of copying them.
"""

from __future__ import annotations

import asyncio
import os
import resource
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from aiohttp import web

from librarian.router import RouterConfig, RouterState, create_app
from librarian.router.app import create_metrics_app
from librarian.router.grpc_api import start_grpc_server
from librarian.router.library import LibraryDefinition
from librarian.router.limits import server_options
from librarian.settings import OrchestratorSettings
from librarian.storage.errors import ClusterUnreachable
from librarian.storage.fleet import Fleet
from librarian.storage.port import QdrantPort

__all__ = [
    "FlakyPort",
    "RouterThread",
    "Served",
    "make_state",
    "resident_bytes",
    "static_loader",
]

T = TypeVar("T")


class Served(Protocol):
    """What a router is built for: the clusters and the library's definition."""

    @property
    def fleet(self) -> Fleet: ...

    @property
    def definition(self) -> LibraryDefinition: ...


def static_loader(definition: LibraryDefinition) -> Callable[[], Awaitable[LibraryDefinition]]:
    """A loader that always finds ``definition``."""

    async def load() -> LibraryDefinition:
        return definition

    return load


class RouterThread:
    """Runs a router app (and its metrics listener) on 127.0.0.1 in its own thread and loop;
    with ``grpc``, also its gRPC API (on :attr:`grpc_port`). Ports are any free ones unless
    given (as a client that expects Qdrant's own, 6333 and 6334, needs)."""

    def __init__(
        self, state: RouterState, *, grpc: bool = False, port: int = 0, grpc_port: int = 0
    ) -> None:
        self.state = state
        self._port = port  # 0: any free port
        self._grpc_port = grpc_port
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.metrics_url = ""  # Prometheus' /metrics, on its own port as in a deployment
        self.grpc = grpc
        self.grpc_port = 0  # 0 until serving, and when gRPC is off
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(
            create_app(self.state, reload_in_background=False),
            access_log=None,
            **server_options(self.state.config.settings.limits),
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port)
        await site.start()
        port = runner.addresses[0][1]
        metrics = web.AppRunner(create_metrics_app(self.state), access_log=None)
        await metrics.setup()
        await web.TCPSite(metrics, "127.0.0.1", 0).start()
        grpc_server = None
        if self.grpc and runner.server is not None:
            grpc_server, self.grpc_port = await start_grpc_server(
                runner.server.request_handler,
                "127.0.0.1",
                self._grpc_port,
                max_message_bytes=self.state.config.settings.limits.max_body_bytes,
            )
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics.addresses[0][1]}/metrics"
        self._ready.set()
        await self._stop.wait()
        if grpc_server is not None:
            await grpc_server.stop(grace=1.0)
        await runner.cleanup()
        await metrics.cleanup()

    def __enter__(self) -> RouterThread:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("router did not start")
        return self

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coroutine`` in the router's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def make_state(
    library: Served, *, settings: Mapping[str, Any] | None = None, **config: Any
) -> RouterState:
    """A router state for ``library`` (every domain searched, no shadow queries by default)."""
    orchestrator = OrchestratorSettings.model_validate(
        {"routing_strategy": "accuracy_first", "shadow_fraction": 0.0, **(settings or {})}
    )
    return RouterState(
        RouterConfig(
            fleet=library.fleet,
            default_cluster=library.definition.default_cluster,
            loader=static_loader(library.definition),
            settings=orchestrator,
            **config,
        )
    )


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class FlakyPort:
    """Delegates to a real port; can be made slow (``mode = "slow"``, ``delay_s``),
    hung (``mode = "hung"``: every call blocks until :meth:`release`) or
    unreachable (``mode = "down"``).

    A slow or hung call still runs once its delay is over, whether or not its
    caller gave up waiting (as a request to a hung cluster may still be applied);
    :meth:`wait_idle` waits for the calls still under way, :meth:`wait_blocked`
    for a number of calls blocked in a hang.
    """

    def __init__(self, inner: QdrantPort) -> None:
        self.inner = inner
        self._released = threading.Event()
        self._mode = "ok"
        self.delay_s = 0.0
        self.reason = "connection refused"
        self.calls = 0
        self._busy = 0
        self._blocked = 0
        self._idle = threading.Condition()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        """Setting ``"hung"`` again after a :meth:`release` hangs again."""
        if mode == "hung":
            self._released.clear()
        self._mode = mode

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("close", "cluster"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.mode == "down":
                raise ClusterUnreachable(self.inner.cluster, self.reason)
            with self._idle:
                self._busy += 1
            try:
                if self.mode == "slow":
                    time.sleep(self.delay_s)
                elif self.mode == "hung":
                    self._hang()
                return attribute(*args, **kwargs)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        return call

    def _hang(self) -> None:
        with self._idle:
            self._blocked += 1
            self._idle.notify_all()
        self._released.wait()
        with self._idle:
            self._blocked -= 1

    @property
    def blocked(self) -> int:
        """Calls blocked in a hang right now."""
        with self._idle:
            return self._blocked

    def wait_blocked(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` calls are blocked in a hang (False when ``timeout`` passed first)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._blocked >= count, timeout)

    def release(self) -> None:
        """End the hang: blocked calls go on, later calls do not block."""
        self.mode = "ok"
        self._released.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is under way (False when ``timeout`` seconds passed first)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)
