"""Calls from the router to clusters: worker threads, timeouts, fan-out, breaker, hedging.

Why this exists: every port call blocks, so it runs in a worker thread under the
request's deadline. Each cluster has its own bounded pool of threads (a
bulkhead): a slow or hung cluster can fill only its own pool, so requests that
do not need it never wait for it, and a call still waiting for a thread is
dropped when its caller gives up. A cluster that keeps failing has its circuit opened and is
not even tried until the circuit half-opens; with the ``latency_optimized``
strategy a slow domain gets a second (hedged) request once it is late by its
own standards. Every call to a library domain counts in that domain's load.

Failures leave this layer as types, so the HTTP answer is chosen by type:
:class:`UpstreamTimeout` (a cluster did not answer in time: 504) and
:class:`UpstreamUnavailable` (unreachable, refused, circuit open: 502).
A fan-out tolerates failing domains (the answer is then partial) unless the
failure is the request's own fault (a bad request, a missing collection, a
refused API key), which is raised as is.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from librarian.core.routing import LibraryRouter
from librarian.router.library import CollectionHome, DomainRoute, Library, View
from librarian.router.load import LoadMeter
from librarian.router.metrics import RouterMetrics
from librarian.router.resilience import CircuitBreaker
from librarian.services.placement import Placement
from librarian.storage.errors import (
    AuthenticationFailed,
    ClusterUnreachable,
    CollectionNotFound,
    InvalidRequest,
    QdrantError,
)
from librarian.storage.fleet import Fleet
from librarian.storage.placing import Placer, PlacingPort
from librarian.storage.port import QdrantPort

__all__ = [
    "READ_WATCH",
    "REQUEST_DEADLINE",
    "Deadline",
    "Failure",
    "FanOut",
    "ReadWatch",
    "Upstream",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]

log = logging.getLogger("librarian.router")
T = TypeVar("T")

# Failures that are the request's fault: every domain would fail the same way, so no partial answer.
_REQUEST_FAULTS = (InvalidRequest, CollectionNotFound, AuthenticationFailed)


class Deadline:
    """When a request must be answered; its upstream calls get at most the time that remains."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._at = clock() + seconds

    def remaining(self) -> float:
        """Seconds left (a millisecond at least, so that a late call times out at once)."""
        return max(0.001, self._at - self._clock())


REQUEST_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "librarian_request_deadline", default=None
)
"""The deadline of the request being served: every upstream call it makes, its retries and
its settling included, times out by then (a call after it fails at once, as a timeout)."""


class ReadWatch(Protocol):
    """Watches the calls an answer makes (see :mod:`librarian.router.generation`)."""

    def around(
        self, home: CollectionHome, operation: Callable[[QdrantPort], T]
    ) -> Callable[[QdrantPort], T]:
        """``operation`` on ``home``, preceded by what the watch needs to know of the home."""
        ...


READ_WATCH: contextvars.ContextVar[ReadWatch | None] = contextvars.ContextVar(
    "librarian_read_watch", default=None
)
"""While an answer to be cached is computed: what every call it makes goes through, so that
the write generation of each home it reads is read first, in the same call."""


class UpstreamError(Exception):
    """Clusters could not give the answer a request needs; ``clusters`` names those that failed."""

    def __init__(self, message: str, *, clusters: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.clusters = tuple(clusters)


class UpstreamUnavailable(UpstreamError):
    """A cluster is unreachable, refused the connection, or its circuit is open."""


class UpstreamTimeout(UpstreamError):
    """A cluster did not answer within the request's deadline."""


def _tolerated(error: BaseException) -> bool:
    """May a fan-out carry on without this unit (a partial answer)?"""
    if isinstance(error, UpstreamError):
        return True
    return isinstance(error, QdrantError) and not isinstance(error, _REQUEST_FAULTS)


@dataclass(frozen=True)
class Failure:
    """One unit of a fan-out that did not answer, and why."""

    route: DomainRoute
    error: BaseException


@dataclass
class FanOut(Generic[T]):
    """What a fan-out got: results by unit, and the units that failed."""

    answered: list[tuple[int, T]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """The failed units' route keys (``cluster/collection[#domain]``)."""
        return [failure.route.key for failure in self.failures]

    @property
    def results(self) -> list[T]:
        return [result for _, result in self.answered]

    def no_answer(self, message: str) -> UpstreamError:
        """The typed error for missing units: a timeout if any unit timed out."""
        clusters = sorted({failure.route.cluster for failure in self.failures})
        timed_out = any(isinstance(failure.error, UpstreamTimeout) for failure in self.failures)
        kind = UpstreamTimeout if timed_out else UpstreamUnavailable
        return kind(message, clusters=clusters)

    def complete(self, what: str = "") -> list[T]:
        """Every unit's result; raises if any unit failed (``what`` needs every domain)."""
        if self.failures:
            needs = f"{what} needs every domain; " if what else ""
            raise self.no_answer(f"{needs}no answer from {', '.join(self.failed)}")
        return self.results


class Upstream:
    """The router's way to its clusters (one per router)."""

    def __init__(
        self,
        fleet: Callable[[], Fleet],
        *,
        breaker: CircuitBreaker,
        metrics: RouterMetrics,
        load: LoadMeter,
        hedging: bool = False,
        workers_per_cluster: int = 8,
        cluster_timeout_s: float = 30.0,
    ) -> None:
        self._fleet = fleet  # read at every call: the fleet may be replaced while serving
        # A request whose client asked for less time than this (``?timeout=``) may run out of
        # it on a healthy cluster: such timeouts are the request's, not the cluster's failures.
        self.cluster_timeout_s = cluster_timeout_s
        self.breaker = breaker
        self.metrics = metrics
        self.load = load
        self.hedging = hedging
        self.workers_per_cluster = workers_per_cluster
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pools_lock = threading.Lock()
        # Homes placed by partition, by cluster and collection: every call's writes into one
        # mark each point with its partition (replaced whole at each reload); the homes whose
        # partition is the payload field (not a shard key).
        # One mapping, swapped whole: a call never sees one snapshot's placers and another's
        # layouts.
        self.placers: Mapping[str, tuple[Mapping[str, Placer], frozenset[str]]] = {}

    def place_writes(self, placements: Mapping[CollectionHome, Placement]) -> None:
        """Follow a library snapshot's homes placed by partition (see :attr:`placers`)."""
        by_cluster: dict[str, dict[str, Placer]] = {}
        by_field: dict[str, set[str]] = {}
        for home, placement in placements.items():
            by_cluster.setdefault(home.cluster, {})[home.collection] = placement.writes
            if placement.by_field:
                by_field.setdefault(home.cluster, set()).add(home.collection)
        self.placers = {
            cluster: (placers, frozenset(by_field.get(cluster, ())))
            for cluster, placers in by_cluster.items()
        }

    def port(self, cluster: str) -> QdrantPort:
        """The cluster's port, its writes into homes placed by partition marked with it."""
        port = self._fleet().get(cluster)
        placing = self.placers.get(cluster)
        if not placing:
            return port
        return PlacingPort(port, *placing)

    def pool(self, cluster: str) -> ThreadPoolExecutor:
        """The cluster's own threads: at most ``workers_per_cluster`` of its calls run at once."""
        with self._pools_lock:
            pool = self._pools.get(cluster)
            if pool is None:
                pool = ThreadPoolExecutor(
                    self.workers_per_cluster, thread_name_prefix=f"upstream-{cluster}"
                )
                self._pools[cluster] = pool
            return pool

    def close(self) -> None:
        """Stop the clusters' threads; calls still waiting for one are dropped."""
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)

    async def call(
        self,
        route: DomainRoute,
        operation: Callable[[QdrantPort], T],
        timeout: float,
        *,
        library: Library | None = None,
        unit: int | None = None,
        domain: bool = False,
    ) -> T:
        """Run ``operation`` on the route's cluster in a thread, with timeout, breaker and metrics.

        ``library`` and ``unit`` name the library snapshot the request uses and the
        unit the route is in it: the call's latency is recorded there (and drives
        hedging). ``domain`` says the call counts in the domain's load (a failure
        as an error).
        """
        cluster = route.cluster
        watch = READ_WATCH.get()
        if watch is not None:
            operation = watch.around(route.home, operation)
        deadline = REQUEST_DEADLINE.get()
        cut_by_deadline = deadline is not None and deadline.seconds < self.cluster_timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline.remaining())
        if not self.breaker.allow(cluster):
            if domain:
                self._record_domain(route, 0.0, ok=False)
            raise UpstreamUnavailable(
                f"circuit open after repeated failures of cluster {cluster!r}", clusters=[cluster]
            )
        port = self.port(cluster)
        target = _unit_of(library, unit)
        hedge = target[0].hedge_after(target[1]) if target and self.hedging else None
        started = time.perf_counter()
        try:
            result = await _hedged(lambda: operation(port), timeout, hedge, self.pool(cluster))
        except asyncio.CancelledError:  # the caller gave up (its deadline): not the cluster's fault
            self.breaker.abandon(cluster)
            raise
        except (TimeoutError, ClusterUnreachable) as error:
            raise self._unanswered(
                route, error, timeout, started, domain=domain, cut_by_deadline=cut_by_deadline
            ) from None
        except Exception:
            if domain:
                self._record_domain(route, time.perf_counter() - started, ok=False)
            raise
        elapsed = time.perf_counter() - started
        self.breaker.success(cluster)
        self.metrics.circuit_open.labels(cluster).set(0)
        self.metrics.upstream_latency.labels(cluster).observe(elapsed)
        if domain:
            self._record_domain(route, elapsed, ok=True)
        if target is not None:
            target[0].record_latency(target[1], elapsed)
        return result

    def _unanswered(
        self,
        route: DomainRoute,
        error: BaseException,
        timeout: float,
        started: float,
        *,
        domain: bool,
        cut_by_deadline: bool,
    ) -> UpstreamError:
        """A call that timed out or found its cluster unreachable, typed: a failure of the
        cluster, unless it timed out within a deadline the client set below the router's own
        timeout (then the request ran out of time, not the cluster: its breaker does not
        count it)."""
        if cut_by_deadline and isinstance(error, TimeoutError):
            self.breaker.abandon(route.cluster)
            return UpstreamTimeout(
                f"cluster {route.cluster!r} did not answer within {timeout:g}s "
                "(what remained of the request's time)",
                clusters=[route.cluster],
            )
        if domain:
            self._record_domain(route, time.perf_counter() - started, ok=False)
        return self._failure(route.cluster, error, timeout)

    def _failure(self, cluster: str, error: BaseException, timeout: float) -> UpstreamError:
        """Count a cluster's failure (breaker, metrics) and type it."""
        self.breaker.failure(cluster)
        self.metrics.upstream_errors.labels(cluster).inc()
        self.metrics.circuit_open.labels(cluster).set(
            1 if self.breaker.state(cluster) == "open" else 0
        )
        if isinstance(error, TimeoutError):
            return UpstreamTimeout(
                f"cluster {cluster!r} did not answer within {timeout:g}s", clusters=[cluster]
            )
        return UpstreamUnavailable(str(error), clusters=[cluster])

    def _record_domain(self, route: DomainRoute, elapsed_s: float, *, ok: bool) -> None:
        self.load.record(route.domain_id, route.cluster, elapsed_s, ok)
        self.metrics.domain_queries.labels(route.domain_id, route.cluster).inc()
        if ok:
            self.metrics.domain_latency.labels(route.domain_id).observe(elapsed_s)

    async def fan_out(
        self,
        view: View,
        units: Sequence[int],
        operation: Callable[[DomainRoute], Callable[[QdrantPort], T]],
        timeout: float,
    ) -> FanOut[T]:
        """Run one operation per unit concurrently; raises only if no unit answered."""
        routes = [view.routes[u] for u in units]
        outcomes = await asyncio.gather(
            *(
                self.call(
                    route,
                    operation(route),
                    timeout,
                    library=view.library,
                    unit=unit if view.routed else None,
                    domain=view.routed,
                )
                for route, unit in zip(routes, units, strict=True)
            ),
            return_exceptions=True,
        )
        result: FanOut[T] = FanOut()
        for unit, route, outcome in zip(units, routes, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                result.failures.append(Failure(route, outcome))
                log.warning("unit %s failed: %s", route.key, outcome)
            else:
                result.answered.append((unit, outcome))
        if result.answered or not units:
            if result.failures:
                self.metrics.partial_results.inc()
            return result
        fatal = [f.error for f in result.failures if not _tolerated(f.error)]
        if fatal:
            raise fatal[0]
        raise result.no_answer(f"no cluster answered ({', '.join(result.failed)})")


def _unit_of(library: Library | None, unit: int | None) -> tuple[LibraryRouter, int] | None:
    """The routing model of the request's library snapshot and the unit in it, if any."""
    if library is None or unit is None or not 0 <= unit < library.router.unit_count:
        return None
    return library.router, unit


def _in_pool(pool: ThreadPoolExecutor, blocking: Callable[[], T]) -> asyncio.Future[T]:
    """``blocking`` on one of ``pool``'s threads (with the caller's context, as ``to_thread``)."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(pool, functools.partial(context.run, blocking))


async def _hedged(
    blocking: Callable[[], T], timeout: float, hedge_after: float | None, pool: ThreadPoolExecutor
) -> T:
    """``blocking`` in ``pool`` within ``timeout``; a second try after ``hedge_after`` seconds."""
    first = _in_pool(pool, blocking)
    if hedge_after is None or hedge_after >= timeout:
        return await asyncio.wait_for(first, timeout)
    tries = {first}
    try:
        done, _ = await asyncio.wait(tries, timeout=hedge_after)
        if done:
            return first.result()
        tries.add(_in_pool(pool, blocking))
        done, _ = await asyncio.wait(
            tries, timeout=timeout - hedge_after, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            raise TimeoutError
        return done.pop().result()
    finally:  # a try still waiting for a thread is dropped; a running one ends on its own
        for attempt in tries:
            attempt.cancel()
