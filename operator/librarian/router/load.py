"""How much query load each domain, and each cluster, gets from this router.

Why this exists: rebalancing moves domains between clusters according to the
load they carry, and only the router sees that load. For every call the router
makes to a domain it records the outcome and the latency; this module keeps,
per domain, the totals since the router started and a sliding window of recent
traffic (queries per second and p95 latency), cheap enough to update on every
call. Its report is what ``/librarian/status`` and ``/librarian/load`` serve
and what a rebalance policy reads.

Counting rules: every call counts as a query (failed ones also as an error);
only successful calls feed the latency percentile, so a fast rejection does not
hide a slow cluster. A domain is reported under the cluster it was last served
from: when its home changes, its figures move with it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from librarian.contracts.router_report import ClusterLoad, DomainLoad, LoadReport

__all__ = ["LoadMeter"]

_LATENCIES_KEPT = 512  # per domain: enough for a stable p95, bounded memory


@dataclass
class _DomainLoad:
    """One domain's counters: totals, per-second call buckets, recent latencies."""

    cluster: str
    buckets: int
    queries: int = 0
    errors: int = 0
    counts: list[int] = field(init=False)
    seconds: list[int] = field(init=False)  # which whole second each bucket currently holds
    latencies: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=_LATENCIES_KEPT)
    )

    def __post_init__(self) -> None:
        self.counts = [0] * self.buckets
        self.seconds = [-1] * self.buckets

    def add(self, second: int) -> None:
        slot = second % self.buckets
        if self.seconds[slot] != second:
            self.seconds[slot] = second
            self.counts[slot] = 0
        self.counts[slot] += 1

    def recent_calls(self, second: int) -> int:
        """Calls in the buckets of the last ``buckets`` whole seconds (the current one included)."""
        oldest = second - self.buckets
        return sum(c for c, s in zip(self.counts, self.seconds, strict=True) if s > oldest)

    def recent_latencies(self, since: float) -> list[float]:
        return [latency for at, latency in self.latencies if at > since]


@dataclass
class _ClusterTotal:
    queries: int = 0
    qps: float = 0.0
    latencies: list[float] = field(default_factory=list)


def _p95_ms(latencies_s: Iterable[float]) -> float | None:
    values = np.fromiter(latencies_s, dtype=np.float64)
    if values.size == 0:
        return None
    return round(float(np.percentile(values, 95)) * 1000.0, 3)


class LoadMeter:
    """Per-domain query counts, queries per second and p95 latency over a sliding window.

    ``record`` is O(1); ``snapshot`` walks the domains. Safe to call from several
    threads. ``clock`` returns seconds (monotonic); tests pass a fake one.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not math.isfinite(window_s) or window_s < 1.0:
            raise ValueError(f"the load window must be at least 1 second, got {window_s!r}")
        self.window_s = float(window_s)
        self._clock = clock
        self._started = clock()
        self._buckets = math.ceil(self.window_s)
        self._domains: dict[str, _DomainLoad] = {}
        self._lock = threading.Lock()

    def _second(self, now: float) -> int:
        return math.floor(now - self._started)

    def _domain(self, domain_id: str, cluster: str) -> _DomainLoad:
        entry = self._domains.get(domain_id)
        if entry is None:
            entry = self._domains[domain_id] = _DomainLoad(cluster, self._buckets)
        else:
            entry.cluster = cluster  # the current home wins
        return entry

    def record(self, domain_id: str, cluster: str, latency_s: float, ok: bool) -> None:
        """One call the router made to ``domain_id`` on ``cluster``."""
        now = self._clock()
        with self._lock:
            entry = self._domain(domain_id, cluster)
            entry.queries += 1
            entry.add(self._second(now))
            if ok:
                entry.latencies.append((now, max(float(latency_s), 0.0)))
            else:
                entry.errors += 1

    def track(self, homes: Mapping[str, str]) -> None:
        """Declare the library's domains and their current clusters (after a reload).

        Domains not called yet are then reported with zero load, and a domain
        whose home changed is reported under its new cluster at once.
        """
        with self._lock:
            for domain_id, cluster in homes.items():
                self._domain(domain_id, cluster)

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe figures (the wire form of :meth:`report`)."""
        return self.report().to_json()

    def report(self) -> LoadReport:
        """Per domain and per cluster, sorted by name."""
        now = self._clock()
        uptime = max(now - self._started, 0.0)
        # Until a whole window has passed, rates are over the time the router has been up
        # (at least a second, so the first call does not read as a huge rate).
        span = min(self.window_s, max(uptime, 1.0))
        second = self._second(now)
        since = now - self.window_s
        domains: list[DomainLoad] = []
        clusters: dict[str, _ClusterTotal] = {}
        with self._lock:
            for domain_id in sorted(self._domains):
                entry = self._domains[domain_id]
                latencies = entry.recent_latencies(since)
                qps = entry.recent_calls(second) / span
                domains.append(
                    DomainLoad(
                        id=domain_id,
                        cluster=entry.cluster,
                        queries=entry.queries,
                        errors=entry.errors,
                        qps=round(qps, 4),
                        p95_ms=_p95_ms(latencies),
                    )
                )
                total = clusters.setdefault(entry.cluster, _ClusterTotal())
                total.queries += entry.queries
                total.qps += qps
                total.latencies += latencies
        return LoadReport(
            uptime_seconds=round(uptime, 3),
            window_seconds=self.window_s,
            domains=domains,
            clusters=[
                ClusterLoad(
                    name=name,
                    queries=clusters[name].queries,
                    qps=round(clusters[name].qps, 4),
                    p95_ms=_p95_ms(clusters[name].latencies),
                )
                for name in sorted(clusters)
            ],
        )
