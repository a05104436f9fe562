"""One router process serving several DomainMaps, each library under its own collection name.

The router follows DomainMaps in the emulated Kubernetes API (no operator: the
DomainMaps carry an analysed status and their catalogs are published here), and
is asked through the official qdrant-client, over REST and gRPC, what a single
collection holding the library's points answers in qdrant-client's local mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.core.discovery import Domain
from librarian.kube.client import Credentials, close_session, remember_credentials
from librarian.local.emulator import EmulatedCluster, emulated_kubernetes, load_crds
from librarian.operator.load_source import LoadSourceUnreachable, fetch_router_load
from librarian.router.libraries import LibrarySet
from librarian.router.main import domainmap_router, serve_libraries
from librarian.services.catalog import write_catalog
from librarian.services.labeling import label_points
from librarian.settings import Settings
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord

REPO = Path(__file__).resolve().parents[2]
DIM = 8
CATALOG = "librarian-catalog"
DOMAINMAPS = "librarian.dev/v1alpha1/domainmaps"
# Every domain asked (the answers must equal a full search), nothing cached, reloads fast.
SETTINGS = Settings.model_validate(
    {
        "domain_library_orchestrator": {
            "routing_strategy": "accuracy_first",
            "caching": {"enable_result_cache": False},
            "reload_interval": 0.2,
        }
    }
)


@dataclass
class Published:
    """A library's source points, as a reference collection would hold them."""

    collection: str
    points: list[PointRecord]


def _points(seed: int, n: int = 240) -> tuple[list[PointRecord], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, DIM)) * 2
    vectors = centres[rng.integers(0, 3, n)] + rng.normal(size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = [
        PointRecord(i, [float(x) for x in vectors[i]], {"n": i, "seed": seed}) for i in range(n)
    ]
    return points, centres / np.linalg.norm(centres, axis=1, keepdims=True)


def publish(path: Path, owner: str, collection: str, seed: int, prefix: str = "d") -> Published:
    """A source collection labelled by three domains, and their catalog, on an embedded cluster."""
    points, centres = _points(seed)
    port = EmbeddedQdrant("general", path)
    try:
        port.create_collection(collection, CollectionSpec(vector_size=DIM))
        port.upsert(collection, points)
        domains = [
            Domain(
                id=f"{prefix}{i}",
                name=f"domain {i}",
                centroid=centres[i].astype(np.float32),
                radius=0.5,
                size=len(points) // 3,
                cohesion=0.8,
            )
            for i in range(3)
        ]
        label_points(port, collection, domains, version=1)
        write_catalog(port, CATALOG, owner, domains, 1)
    finally:
        port.close()
    return Published(collection, points)


def domainmap(
    name: str, collection: str, path: Path, *, analysed: bool = True, prefix: str = "d"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "DomainMap",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "source": {"cluster": "general", "collection": collection},
            "clusters": [{"name": "general", "embedded": str(path)}],
        },
    }
    if analysed:
        body["status"] = {
            "domains": [{"id": f"{prefix}{i}"} for i in range(3)],
            "catalog": {"cluster": "general", "collection": CATALOG},
        }
    return body


def reference(published: Published) -> QdrantClient:
    """One collection holding the library's points, in qdrant-client's local mode."""
    client = QdrantClient(":memory:")
    client.create_collection(
        published.collection,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
    )
    client.upsert(
        published.collection,
        [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in published.points],
    )
    return client


@dataclass
class Running:
    libraries: LibrarySet
    url: str
    grpc_port: int


@contextlib.asynccontextmanager
async def running_router(
    *, domainmaps: list[str] | None = None, namespace: str | None = None
) -> AsyncIterator[Running]:
    """The router process's serving loop, on ports the system chooses."""
    libraries = LibrarySet(
        max_body_bytes=SETTINGS.domain_library_orchestrator.limits.max_body_bytes
    )
    stop = asyncio.Event()
    ports: list[tuple[int, int]] = []
    task = asyncio.ensure_future(
        serve_libraries(
            libraries,
            "127.0.0.1",
            0,
            stop,
            settings=SETTINGS,
            domainmaps=domainmaps or [],
            follow_namespace=namespace,
            make_state=lambda d: domainmap_router(SETTINGS, d),
            grpc_port=_free_port(),
            started=lambda rest, grpc_port: ports.append((rest, grpc_port)),
        )
    )
    try:
        await until(lambda: bool(ports) or task.done(), "the router listens")
        if task.done():
            task.result()  # its error
        rest, grpc_port = ports[0]
        yield Running(libraries, f"http://127.0.0.1:{rest}", grpc_port)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, within_s: float = 30.0
) -> None:
    deadline = time.monotonic() + within_s
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


async def readyz(http: httpx.AsyncClient) -> tuple[int, str]:
    response = await http.get("/readyz")
    return response.status_code, response.text


@contextlib.asynccontextmanager
async def kubernetes() -> AsyncIterator[EmulatedCluster]:
    async with emulated_kubernetes(load_crds(REPO / "crds")) as api:
        remember_credentials(Credentials(server=api.url))
        try:
            yield api
        finally:
            await close_session()


def _same(got: list[models.ScoredPoint], want: list[models.ScoredPoint]) -> None:
    assert [p.id for p in got] == [p.id for p in want]
    assert np.allclose([p.score for p in got], [p.score for p in want], atol=1e-4)


async def test_one_router_answers_each_library_like_its_own_collection(tmp_path: Path) -> None:
    books = publish(tmp_path / "a", "default/books", "books", seed=1)
    papers = publish(tmp_path / "b", "default/papers", "papers", seed=2, prefix="p")
    async with kubernetes() as api:
        await api.create(domainmap("books", "books", tmp_path / "a"))
        await api.create(domainmap("papers", "papers", tmp_path / "b", prefix="p"))
        await api.create(domainmap("later", "later", tmp_path / "c", analysed=False))
        async with (
            running_router(
                domainmaps=["default/books", "default/papers", "default/later"]
            ) as router,
            httpx.AsyncClient(base_url=router.url, timeout=30) as http,
        ):
            # not ready while one library cannot load: the answer names it and why
            await until(
                lambda: all(s.state.library for s in router.libraries.libraries[:2]), "loaded"
            )
            status, text = await readyz(http)
            assert status == 503
            assert "default/later" in text
            assert "default/books" not in text
            # the loaded ones are served meanwhile
            listed = (await http.get("/collections")).json()["result"]["collections"]
            assert {c["name"] for c in listed} == {"books", "papers"}

            rest = AsyncQdrantClient(url=router.url, timeout=30, check_compatibility=False)
            over_grpc = AsyncQdrantClient(
                url=router.url,
                prefer_grpc=True,
                grpc_port=router.grpc_port,
                timeout=30,
                check_compatibility=False,
            )
            try:
                for published in (books, papers):
                    local = reference(published)
                    rng = np.random.default_rng(7)
                    for _ in range(5):
                        query = rng.normal(size=DIM).tolist()
                        want = local.query_points(published.collection, query, limit=10).points
                        for client in (rest, over_grpc):
                            got = (
                                await client.query_points(published.collection, query, limit=10)
                            ).points
                            _same(got, want)
                    count = await rest.count(published.collection, exact=True)
                    assert count.count == len(published.points)
                    local.close()
                # the same query answered from the two libraries differs: each has its points
                query = [1.0] + [0.0] * (DIM - 1)
                first = (await rest.query_points("books", query, limit=3, with_payload=True)).points
                second = (
                    await rest.query_points("papers", query, limit=3, with_payload=True)
                ).points
                assert {p.payload["seed"] for p in first} == {1}  # type: ignore[index]
                assert {p.payload["seed"] for p in second} == {2}  # type: ignore[index]

                # an unknown collection: Qdrant's 404, over REST and gRPC
                with pytest.raises(UnexpectedResponse) as refused:
                    await rest.query_points("nowhere", query, limit=3)
                assert refused.value.status_code == 404
                assert "doesn't exist" in refused.value.content.decode()
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await over_grpc.query_points("nowhere", query, limit=3)
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND
                # listing over gRPC answers for every library
                names = {c.name for c in (await over_grpc.get_collections()).collections}
                assert names == {"books", "papers"}
            finally:
                await rest.close()
                await over_grpc.close()

            # each library's report, chosen by collection or DomainMap name
            report = (await http.get("/librarian/status", params={"library": "papers"})).json()
            assert report["result"]["library"]["name"] == "papers"
            by_domainmap = await http.get("/librarian/status", params={"library": "default/books"})
            assert by_domainmap.json()["result"]["library"]["name"] == "books"
            ambiguous = await http.get("/librarian/status")
            assert ambiguous.status_code == 400
            assert "?library=NAME" in ambiguous.json()["status"]["error"]
            unknown = await http.get("/librarian/status", params={"library": "nope"})
            assert unknown.status_code == 404
            # what a RebalancePolicy reads: its own DomainMap's load, or a clear refusal
            load = await fetch_router_load([router.url], library="default/papers")
            assert set(load.domains) == {"p0", "p1", "p2"}
            assert all(traffic.queries > 0 for traffic in load.domains.values())
            with pytest.raises(LoadSourceUnreachable, match="HTTP 400"):
                await fetch_router_load([router.url])

            # the metrics of every library, each labelled with its own
            async with TestClient(TestServer(router.libraries.metrics_app())) as metrics:
                text = await (await metrics.get("/metrics")).text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            queries = families["librarian_router_queries"]
            assert {s.labels["library"] for s in queries.samples if s.value} == {"books", "papers"}
            assert {
                s.labels["domainmap"] for s in families["librarian_router_library_domains"].samples
            } == {
                "default/books",
                "default/papers",
                "default/later",
            }

            # the late DomainMap analysed: the router becomes ready
            publish(tmp_path / "c", "default/later", "later", seed=3)
            analysed = domainmap("later", "later", tmp_path / "c")
            await api.patch(DOMAINMAPS, "default", "later", {"status": analysed["status"]})
            await until(lambda: _is_ready(http), "every library is loaded")


async def _is_ready(http: httpx.AsyncClient) -> bool:
    return (await readyz(http))[0] == 200


async def test_two_libraries_with_one_name_are_refused_naming_both(tmp_path: Path) -> None:
    publish(tmp_path / "a", "default/first", "books", seed=1)
    publish(tmp_path / "b", "default/second", "books", seed=2, prefix="s")
    async with kubernetes() as api:
        await api.create(domainmap("first", "books", tmp_path / "a"))
        await api.create(domainmap("second", "books", tmp_path / "b", prefix="s"))
        async with (
            running_router(domainmaps=["default/first", "default/second"]) as router,
            httpx.AsyncClient(base_url=router.url, timeout=30) as http,
        ):
            await until(lambda: all(s.state.library for s in router.libraries.libraries), "loaded")
            answer = await http.post("/collections/books/points/query", json={"query": [0.1] * DIM})
            assert answer.status_code == 409
            error = answer.json()["status"]["error"]
            assert "default/first" in error
            assert "default/second" in error
            status, text = await readyz(http)
            assert status == 503
            assert "not unique" in text
            # a report names one library: by its DomainMap when the collection is ambiguous
            ambiguous = await http.get("/librarian/status", params={"library": "books"})
            assert ambiguous.status_code == 400
            assert "NAMESPACE/NAME" in ambiguous.json()["status"]["error"]
            for wanted in ("second", "default/second"):
                report = await http.get("/librarian/status", params={"library": wanted})
                assert report.status_code == 200
                domains = report.json()["result"]["library"]["domains"]
                assert [d["id"] for d in domains] == ["s0", "s1", "s2"]


async def test_all_domainmaps_follows_creation_and_deletion(tmp_path: Path) -> None:
    books = publish(tmp_path / "a", "default/books", "books", seed=1)
    publish(tmp_path / "b", "default/papers", "papers", seed=2)
    async with kubernetes() as api:
        await api.create(domainmap("books", "books", tmp_path / "a"))
        async with (
            running_router(namespace="default") as router,
            httpx.AsyncClient(base_url=router.url, timeout=30) as http,
        ):
            await until(lambda: _is_ready(http), "the first library is ready")
            assert await _names(http) == {"books"}

            # a DomainMap created later and not analysed yet: followed, but a ready router
            # stays in its Service meanwhile
            await api.create(domainmap("draft", "draft", tmp_path / "d", analysed=False))
            await until(lambda: "default/draft" in router.libraries, "the draft is followed")
            assert (await readyz(http))[0] == 200

            await api.create(domainmap("papers", "papers", tmp_path / "b"))
            await until(lambda: _has(http, "papers"), "the new DomainMap is served")
            query = {"query": books.points[0].vector, "limit": 1}
            answer = await http.post("/collections/papers/points/query", json=query)
            assert answer.status_code == 200

            await api.delete(DOMAINMAPS, "default", "papers")
            await until(lambda: _lacks(http, "papers"), "the deleted DomainMap is dropped")
            gone = await http.post("/collections/papers/points/query", json=query)
            assert gone.status_code == 404
            assert "papers" not in [s.domainmap for s in router.libraries.libraries]
            kept = await http.post("/collections/books/points/query", json=query)
            assert kept.json()["result"]["points"][0]["id"] == 0
            assert (await readyz(http))[0] == 200


async def _names(http: httpx.AsyncClient) -> set[str]:
    listed = (await http.get("/collections")).json()["result"]["collections"]
    return {c["name"] for c in listed}


async def _has(http: httpx.AsyncClient, name: str) -> bool:
    return name in await _names(http)


async def _lacks(http: httpx.AsyncClient, name: str) -> bool:
    return name not in await _names(http)


def test_each_library_keeps_its_pending_cleanups_in_a_file_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outbox drains cleanups against its library's clusters: never shared between two."""
    monkeypatch.setenv("LIBRARIAN_ROUTER_OUTBOX", str(tmp_path / "outbox.db"))
    states = [domainmap_router(SETTINGS, d) for d in ("search/books", "search/papers")]
    try:
        paths = [state.config.outbox_path for state in states]
        assert paths == [
            str(tmp_path / "outbox-search-books.db"),
            str(tmp_path / "outbox-search-papers.db"),
        ]
        assert all(Path(str(path)).exists() for path in paths)
    finally:
        for state in states:
            state.close()
