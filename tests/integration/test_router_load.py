"""The router measures the load of each domain, reports it, and follows moved domains.

Over real HTTP with the official client: queries aimed at one domain make it
the hottest in ``/librarian/load`` and ``/librarian/status``, with the clusters
named right and the figures in ``/metrics``; a domain moved to another cluster
is reported there; failed calls count as errors. The Kubernetes loader reads
the ClusterSpecialization that is not superseded when a domain has two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient

from librarian.contracts.metadata import SUPERSEDED_ANNOTATION
from librarian.core.discovery import Domain
from librarian.kube.client import Credentials, close_session, remember_credentials
from librarian.local.emulator import emulated_kubernetes, load_crds
from librarian.operator.load_source import fetch_router_load
from librarian.router import RouterConfig, RouterState
from librarian.router.library import LibraryDefinition
from librarian.router.loader import kubernetes_loader
from librarian.services.catalog import write_catalog
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import ClusterUnreachable
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, QdrantPort

from .router_support import DIM, Library, RouterThread, build_embedded_library, make_state

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]
SPECIALIZATIONS = "librarian.dev/v1alpha1/clusterspecializations"
AFFINITY = {"routing_strategy": "domain_affinity", "caching": {"enable_result_cache": False}}


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Library]:
    built = build_embedded_library(tmp_path)
    yield built
    built.fleet.close()


def _near(centroid: tuple[float, ...], seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    vector = np.asarray(centroid) + rng.normal(scale=0.05, size=DIM)
    return [float(x) for x in vector / np.linalg.norm(vector)]


def _by_id(entries: list[dict[str, Any]], key: str = "id") -> dict[str, dict[str, Any]]:
    return {entry[key]: entry for entry in entries}


def test_queries_to_one_domain_make_it_the_hottest(library: Library) -> None:
    hot = library.definition.domains[2]  # d2, on west
    cool = library.definition.domains[0]  # d0, on east
    state = make_state(library, settings=AFFINITY)
    with (
        RouterThread(state) as router,
        httpx.Client(base_url=router.url) as http,
        closing(QdrantClient(url=router.url, timeout=30, check_compatibility=False)) as client,
    ):
        for seed in range(40):
            points = client.query_points("library", query=_near(hot.centroid, seed), limit=5)
            assert len(points.points) == 5
        for seed in range(4):
            client.query_points("library", query=_near(cool.centroid, 100 + seed), limit=5)

        load = http.get("/librarian/load").json()["result"]
        assert set(load) == {"uptimeSeconds", "windowSeconds", "domains", "clusters"}
        assert load["windowSeconds"] == 60.0
        assert load["uptimeSeconds"] > 0
        domains = _by_id(load["domains"])
        assert set(domains) == {"d0", "d1", "d2"}  # every domain of the library, called or not
        assert {d: domains[d]["cluster"] for d in domains} == {
            "d0": "east",
            "d1": "east",
            "d2": "west",
        }
        assert domains["d2"]["queries"] >= 40
        assert domains["d2"]["queries"] > domains["d0"]["queries"] >= 4
        assert domains["d2"]["queries"] > domains["d1"]["queries"]
        assert domains["d2"]["qps"] > domains["d0"]["qps"] > 0
        assert domains["d2"]["errors"] == 0
        assert isinstance(domains["d2"]["p95Ms"], float)
        assert domains["d2"]["p95Ms"] > 0
        clusters = _by_id(load["clusters"], "name")
        assert set(clusters) == {"east", "west"}
        assert clusters["west"]["queries"] == domains["d2"]["queries"]
        assert clusters["west"]["qps"] > clusters["east"]["qps"] > 0
        assert isinstance(clusters["west"]["p95Ms"], float)

        status = http.get("/librarian/status").json()["result"]
        assert [d["id"] for d in status["load"]["domains"]] == ["d0", "d1", "d2"]
        assert _by_id(status["load"]["domains"])["d2"]["queries"] == domains["d2"]["queries"]
        assert set(status) == {
            "ready",
            "loadError",
            "cache",
            "circuits",
            "quality",
            "outbox",
            "fences",
            "writesRefused",
            "routingEfficiency",
            "fusion",
            "authentication",
            "load",
            "library",
        }
        assert set(status["quality"]) == {
            "estimatedRecall",
            "shadowQueries",
            "shadowFraction",
            "learnedFusionFitted",
        }
        assert set(status["library"]["domains"][0]) == {
            "id",
            "name",
            "cluster",
            "collection",
            "points",
            "specialized",
            "circuit",
            "partitions",
            "partitionLayout",
            "shardedByPartition",
        }
        # what a rebalance policy reads is what the router serves
        seen = asyncio.run(fetch_router_load([router.url]))
        assert seen.routers == 1
        assert set(seen.domains) == {"d0", "d1", "d2"}
        assert seen.domains["d2"].queries == domains["d2"]["queries"]
        assert seen.domains["d2"].p95_ms is not None
        assert seen.domains["d2"].qps > 0

        metrics = httpx.get(router.metrics_url).text
        counted = f'librarian_router_domain_queries_total{{cluster="west",domain="d2"}} {float(domains["d2"]["queries"])}'
        assert counted in metrics
        assert 'librarian_router_domain_latency_seconds_bucket{domain="d2",le="0.5"}' in metrics
        assert 'librarian_router_domain_queries_total{cluster="east",domain="d0"}' in metrics


def test_load_is_reported_before_the_library_is_loaded(library: Library) -> None:
    async def nothing_yet() -> LibraryDefinition | None:
        return None

    state = RouterState(
        RouterConfig(
            fleet=library.fleet, default_cluster="east", loader=nothing_yet, load_window_s=30
        )
    )
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        status = http.get("/librarian/status").json()["result"]
        assert status["ready"] is False
        assert status["load"]["domains"] == []
        assert status["load"]["clusters"] == []
        assert status["load"]["windowSeconds"] == 30.0
        load = http.get("/librarian/load")
        assert load.status_code == 200
        assert load.json()["result"]["domains"] == []


def test_a_moved_domain_is_reported_under_its_new_cluster(library: Library) -> None:
    east, west = library.fleet.get("east"), library.fleet.get("west")
    records, _ = west.scroll("library-d2", limit=10_000, with_vectors=True)
    east.create_collection("library-d2-moved", CollectionSpec(vector_size=DIM))
    east.upsert("library-d2-moved", records)
    d0, d1, d2 = library.definition.domains
    moved = replace(
        library.definition,
        domains=(d0, d1, replace(d2, cluster="east", collection="library-d2-moved")),
        version="v2",
    )
    definitions = [library.definition]

    async def loader() -> LibraryDefinition:
        return definitions[-1]

    state = make_state(library, settings=AFFINITY)
    state.config.loader = loader
    with (
        RouterThread(state) as router,
        httpx.Client(base_url=router.url) as http,
        closing(QdrantClient(url=router.url, timeout=30, check_compatibility=False)) as client,
    ):
        for seed in range(10):
            client.query_points("library", query=_near(d2.centroid, seed), limit=3)
        before = _by_id(http.get("/librarian/load").json()["result"]["domains"])["d2"]
        assert before["cluster"] == "west"
        assert before["queries"] >= 10

        definitions.append(moved)
        assert router.run(state.reload()) is True
        after = http.get("/librarian/load").json()["result"]
        assert _by_id(after["domains"])["d2"]["cluster"] == "east"  # at once, before any call
        assert _by_id(after["domains"])["d2"]["queries"] == before["queries"]

        for seed in range(10):
            client.query_points("library", query=_near(d2.centroid, 50 + seed), limit=3)
        after = http.get("/librarian/load").json()["result"]
        d2_now = _by_id(after["domains"])["d2"]
        assert d2_now["cluster"] == "east"
        assert d2_now["queries"] >= before["queries"] + 10
        assert [c["name"] for c in after["clusters"]] == ["east"]  # west serves nothing now
        assert 'librarian_router_domain_queries_total{cluster="east",domain="d2"}' in (
            httpx.get(router.metrics_url).text
        )


class _Unreachable:
    """A cluster that refuses every call."""

    def __init__(self, inner: QdrantPort) -> None:
        self.inner = inner
        self.cluster = inner.cluster

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise ClusterUnreachable(self.cluster, "connection refused")

        return refuse


def test_failed_calls_count_as_errors(library: Library) -> None:
    hot = library.definition.domains[2]
    state = make_state(library, settings=AFFINITY)
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        state.config.fleet = Fleet.of_ports(
            {"east": library.fleet.get("east"), "west": _Unreachable(library.fleet.get("west"))}  # type: ignore[dict-item]
        )
        for seed in range(3):
            response = http.post(
                "/collections/library/points/query",
                json={"query": _near(hot.centroid, seed), "limit": 3},
            )
            assert response.status_code in (200, 502)
        d2 = _by_id(http.get("/librarian/load").json()["result"]["domains"])["d2"]
        assert d2["errors"] == d2["queries"] >= 3
        assert d2["p95Ms"] is None  # failures carry no latency


# ---------------------------------------------------------------------- the Kubernetes loader


def _specialization(
    name: str,
    domain_id: str,
    cluster: str,
    collection: str,
    *,
    created: str,
    phase: str = "Ready",
    superseded_by: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "default", "creationTimestamp": created}
    if superseded_by:
        metadata["annotations"] = {SUPERSEDED_ANNOTATION: superseded_by}
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "ClusterSpecialization",
        "metadata": metadata,
        "spec": {
            "domainMap": "lib",
            "domain": domain_id,
            "target": {"cluster": cluster, "collection": f"{collection}-requested"},
        },
        "status": {"phase": phase, "domainId": domain_id, "targetCollection": collection},
    }


async def test_loader_reads_the_specialization_that_is_not_superseded(tmp_path: Path) -> None:
    catalog_port = EmbeddedQdrant("general", tmp_path / "general")
    rng = np.random.default_rng(3)
    domains = [
        Domain(
            id=f"d{i}",
            name=f"domain {i}",
            centroid=rng.normal(size=DIM).astype(np.float32),
            radius=0.3,
            size=10,
            cohesion=0.8,
        )
        for i in range(3)
    ]
    write_catalog(catalog_port, "librarian-catalog", "default/lib", domains, 1)
    fleet = Fleet.of_ports({"general": catalog_port})
    try:
        async with emulated_kubernetes(load_crds(REPO / "crds")) as api:
            remember_credentials(Credentials(server=api.url))
            await api.create(
                {
                    "apiVersion": "librarian.dev/v1alpha1",
                    "kind": "DomainMap",
                    "metadata": {"name": "lib", "namespace": "default"},
                    "spec": {
                        "source": {"cluster": "general", "collection": "packages"},
                        "clusters": [{"name": "general", "embedded": str(tmp_path / "general")}],
                    },
                    "status": {
                        "domains": [{"id": d.id} for d in domains],
                        "catalog": {"cluster": "general", "collection": "librarian-catalog"},
                    },
                }
            )
            # d1 moved from east to west: the old home is newer here on purpose, so only the
            # annotation can decide.
            for body in (
                _specialization(
                    "lib-d1-east",
                    "d1",
                    "east",
                    "lib-d1-e",
                    created="2030-01-02T00:00:00Z",
                    superseded_by="lib-d1-west",
                ),
                _specialization(
                    "lib-d1-west", "d1", "west", "lib-d1-w", created="2030-01-01T00:00:00Z"
                ),
                # d2: two Ready and neither superseded -> the newest; a newer one not Ready is ignored
                _specialization(
                    "lib-d2-a", "d2", "east", "lib-d2-a", created="2030-01-01T00:00:00Z"
                ),
                _specialization(
                    "lib-d2-b", "d2", "fast", "lib-d2-b", created="2030-01-03T00:00:00Z"
                ),
                _specialization(
                    "lib-d2-c",
                    "d2",
                    "slow",
                    "lib-d2-c",
                    created="2030-01-09T00:00:00Z",
                    phase="Migrating",
                ),
            ):
                await api.create(body)
            stored = await api.get(SPECIALIZATIONS, "default", "lib-d1-east")
            assert stored is not None
            assert stored["status"]["phase"] == "Ready"

            load: Callable[[], Awaitable[LibraryDefinition | None]] = kubernetes_loader(
                fleet, "default", "lib"
            )
            definition = await load()
            assert definition is not None
            homes = {
                r.domain_id: (r.cluster, r.collection, r.specialized) for r in definition.domains
            }
            assert homes == {
                "d0": ("general", "packages", False),
                "d1": ("west", "lib-d1-w", True),
                "d2": ("fast", "lib-d2-b", True),
            }

            # the move of d2 back to east completes: b is superseded, so a serves again
            await api.patch(
                SPECIALIZATIONS,
                "default",
                "lib-d2-b",
                {"metadata": {"annotations": {SUPERSEDED_ANNOTATION: "lib-d2-a"}}},
            )
            changed = await load()
            assert changed is not None
            assert {r.domain_id: r.cluster for r in changed.domains}["d2"] == "east"
            assert changed.version != definition.version  # the router rebuilds

            # every one superseded: the newest still serves rather than none
            await api.patch(
                SPECIALIZATIONS,
                "default",
                "lib-d2-a",
                {"metadata": {"annotations": {SUPERSEDED_ANNOTATION: "lib-d2-b"}}},
            )
            both = await load()
            assert both is not None
            assert {r.domain_id: r.cluster for r in both.domains}["d2"] == "fast"
    finally:
        await close_session()
        fleet.close()
