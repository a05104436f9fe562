"""Prometheus metrics of the router (one registry per router, so tests can run several).

Why this exists: operators of the library need to see cross-cluster fan-out,
per-cluster latency, cache efficiency, how many domains each query touched and
the estimated recall, the same figures rebalancing reads.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["RouterMetrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "librarian_router_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "code"],
            registry=r,
        )
        self.cross_cluster_queries = Counter(
            "librarian_router_cross_cluster_queries",
            "Library queries fanned out to more than one cluster",
            registry=r,
        )
        self.queries = Counter(
            "librarian_router_queries", "Library queries routed", ["strategy"], registry=r
        )
        self.upstream_latency = Histogram(
            "librarian_router_upstream_latency_seconds",
            "Latency of calls to each cluster",
            ["cluster"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "librarian_router_upstream_errors",
            "Failed or timed-out calls to each cluster",
            ["cluster"],
            registry=r,
        )
        self.request_latency = Histogram(
            "librarian_router_request_latency_seconds",
            "End-to-end latency of library queries",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.domains_probed = Histogram(
            "librarian_router_domains_probed",
            "Domains asked per query",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=r,
        )
        self.cache_hits = Counter("librarian_router_cache_hits", "Result cache hits", registry=r)
        self.cache_misses = Counter(
            "librarian_router_cache_misses", "Result cache misses", registry=r
        )
        self.cache_hit_rate = Gauge(
            "librarian_router_cache_hit_rate", "Result cache hit rate", registry=r
        )
        self.cache_stale = Counter(
            "librarian_router_cache_stale",
            "Cached answers not served: a home they read is at another write generation",
            registry=r,
        )
        self.cache_uncached = Counter(
            "librarian_router_cache_uncached",
            "Answers computed but not cached, by reason",
            ["reason"],
            registry=r,
        )
        self.estimated_recall = Gauge(
            "librarian_router_estimated_recall",
            "Recall@k of routed queries estimated from shadow queries",
            registry=r,
        )
        self.shadow_queries = Counter(
            "librarian_router_shadow_queries",
            "Routed answers compared with an exhaustive search (what estimated_recall is made of)",
            registry=r,
        )
        self.target_recall = Gauge(
            "librarian_router_target_recall",
            "Recall@k the routing is calibrated to reach (the configured target_recall)",
            registry=r,
        )
        self.routing_efficiency = Gauge(
            "librarian_router_routing_efficiency",
            "Share of the library's points a routed query did not have to touch (moving average)",
            registry=r,
        )
        self.partial_results = Counter(
            "librarian_router_partial_results", "Answers missing at least one domain", registry=r
        )
        self.circuit_open = Gauge(
            "librarian_router_circuit_open",
            "1 while a cluster's circuit breaker is open",
            ["cluster"],
            registry=r,
        )
        self.library_domains = Gauge(
            "librarian_router_library_domains", "Domains in the library", registry=r
        )
        self.domain_queries = Counter(
            "librarian_router_domain_queries",
            "Calls to each domain of the library (failed ones included), by its current cluster",
            ["domain", "cluster"],
            registry=r,
        )
        self.domain_latency = Histogram(
            "librarian_router_domain_latency_seconds",
            "Latency of successful calls to each domain of the library",
            ["domain"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox_entries = Gauge(
            "librarian_router_outbox_entries",
            "Cleanups of the write path waiting for a cluster to come back",
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "librarian_router_outbox_oldest_age_seconds",
            "Age of the oldest pending cleanup (0 when none)",
            registry=r,
        )
        self.outbox_applied = Counter(
            "librarian_router_outbox_applied",
            "Pending cleanups carried out by the outbox drainer",
            registry=r,
        )
        self.reloads = Counter(
            "librarian_router_reloads", "Library reloads", ["outcome"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
