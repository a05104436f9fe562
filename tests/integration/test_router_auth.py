"""Who may call the router: Qdrant's API keys and JWTs, over real HTTP with the official client.

A router with a read-write and a read-only key (each with a secondary)
serves the embedded library; the official client and raw requests check
that a caller without a valid credential gets 401, a reader gets 403 on a
write, a JWT's claims are honoured, the probes stay open, ``/metrics`` is on
its own port, a router without keys refuses to listen beyond loopback, and
the product's own collections never pass through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from click.testing import CliRunner
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from librarian.cli import main
from librarian.contracts.router_keys import caller_key
from librarian.local.up import front_app
from librarian.operator.load_source import LoadSourceUnreachable, fetch_router_load
from librarian.router import RouterConfig, RouterState
from librarian.router.app import PointEndpoints, create_app, route_table
from librarian.router.auth import InsecureBind, Need, RouterKeys, check_bind
from librarian.router.collections import CollectionEndpoints
from librarian.router.libraries import LibrarySet
from librarian.router.main import serve
from librarian.router.status import StatusEndpoints
from librarian.storage.port import CollectionSpec, PointRecord

from .router_support import DIM, Library, RouterThread, build_embedded_library, make_state, near

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection"),
]

ADMIN, ADMIN_NEXT = "admin-key-0123456789abcdef0123456789", "admin-key-rotated-0123456789abcdef"
READER, READER_NEXT = "reader-key-0123456789abcdef0123456789", "reader-key-rotated-0123456789abcd"
KEYS = RouterKeys(read_write=(ADMIN, ADMIN_NEXT), read_only=(READER, READER_NEXT))
CATALOG = "librarian-catalog-library"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    library = build_embedded_library(tmp_path_factory.mktemp("library"))
    library.fleet.get("east").create_collection(CATALOG, CollectionSpec(vector_size=DIM))
    yield library
    library.fleet.close()


@pytest.fixture(scope="module")
def router(built: Library) -> Iterator[RouterThread]:
    # Everything asked to pass through: only "reference" may.
    allowlist = frozenset({"reference", CATALOG, "library-d0", "librarian-migrations"})
    state = make_state(built, keys=KEYS, passthrough=allowlist)
    with RouterThread(state) as server:
        yield server


def _client(router: RouterThread, api_key: str | None = None) -> QdrantClient:
    return QdrantClient(url=router.url, api_key=api_key, timeout=30, check_compatibility=False)


def _token(claims: dict[str, Any], key: str = ADMIN) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _query(vector: list[float]) -> dict[str, Any]:
    return {"query": vector, "limit": 3}


def _qdrant_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "time"}, body
    return str(body["status"]["error"])


def _point(built: Library, point_id: int) -> PointRecord:
    return PointRecord(point_id, near(built, 0, seed=point_id), {"n": point_id})


def test_no_wrong_or_garbage_credentials_are_refused_with_401(
    router: RouterThread, built: Library
) -> None:
    path = f"{router.url}/collections/library/points/query"
    body = _query(near(built, 0))
    for headers in (
        {},
        {"api-key": "wrong"},
        {"api-key": ""},
        {"api-key": ADMIN + "x"},
        {"api-key": ADMIN[:-1]},
        _bearer("garbage"),
        _bearer("a.b.c"),
        {"Authorization": f"Basic {ADMIN}"},
        {"Authorization": "Bearer"},
    ):
        error = _qdrant_error(httpx.post(path, json=body, headers=headers), 401)
        assert ADMIN not in error
        assert READER not in error
    # An unknown path does not tell a caller without a key that it does not exist.
    _qdrant_error(httpx.get(f"{router.url}/nothing/here"), 401)
    with closing(_client(router, "wrong")) as client, pytest.raises(UnexpectedResponse) as raised:
        client.query_points("library", query=near(built, 0), limit=3)
    assert raised.value.status_code == 401


def test_the_read_only_key_reads_and_is_refused_writes_with_403(
    router: RouterThread, built: Library
) -> None:
    for key in (READER, READER_NEXT):
        with closing(_client(router, key)) as client:
            assert len(client.query_points("library", query=near(built, 1), limit=3).points) == 3
            assert client.count("library").count > 0
            assert client.retrieve("library", ids=[1])
            assert client.scroll("library", limit=2)[0]
            assert client.get_collection("library").points_count
            with pytest.raises(UnexpectedResponse) as raised:
                client.upsert(
                    "library",
                    [models.PointStruct(id=5001, vector=near(built, 0), payload={})],
                )
            assert raised.value.status_code == 403
            with pytest.raises(UnexpectedResponse) as raised:
                client.delete("library", points_selector=models.PointIdsList(points=[1]))
            assert raised.value.status_code == 403
    status = httpx.get(f"{router.url}/librarian/status", headers={"api-key": READER})
    assert status.status_code == 200


def test_the_read_write_key_and_its_secondary_write(router: RouterThread, built: Library) -> None:
    for point_id, key in ((5101, ADMIN), (5102, ADMIN_NEXT)):
        with closing(_client(router, key)) as client:
            client.upsert(
                "library",
                [models.PointStruct(id=point_id, vector=near(built, 0), payload={"k": key[:5]})],
            )
            assert client.retrieve("library", ids=[point_id])[0].payload == {"k": key[:5]}


def test_a_jwt_with_read_access_reads_and_is_refused_writes(
    router: RouterThread, built: Library
) -> None:
    token = _token({"access": "r", "exp": int(time.time()) + 600})
    with closing(_client(router, token)) as client:  # Qdrant's clients send a JWT as the api-key
        assert client.query_points("library", query=near(built, 2), limit=3).points
        with pytest.raises(UnexpectedResponse) as raised:
            client.upsert(
                "library", [models.PointStruct(id=5201, vector=near(built, 0), payload={})]
            )
        assert raised.value.status_code == 403
    upsert = {"points": [{"id": 5202, "vector": near(built, 0), "payload": {}}]}
    response = httpx.put(
        f"{router.url}/collections/library/points", json=upsert, headers=_bearer(token)
    )
    assert "Forbidden" in _qdrant_error(response, 403)


def test_a_jwt_with_management_access_writes(router: RouterThread, built: Library) -> None:
    upsert = {"points": [{"id": 5301, "vector": near(built, 0), "payload": {"by": "jwt"}}]}
    response = httpx.put(
        f"{router.url}/collections/library/points",
        json=upsert,
        headers=_bearer(_token({"access": "m"})),
    )
    assert response.status_code == 200, response.text


def test_per_collection_access_reaches_only_its_collections(
    router: RouterThread, built: Library
) -> None:
    reader = _bearer(_token({"access": [{"collection": "library", "access": "r"}]}))
    writer = _bearer(_token({"access": [{"collection": "library", "access": "rw"}]}))
    url = router.url
    query = _query(near(built, 0))
    assert httpx.post(
        f"{url}/collections/library/points/query", json=query, headers=reader
    ).is_success
    _qdrant_error(
        httpx.post(f"{url}/collections/reference/points/query", json=query, headers=reader), 403
    )
    _qdrant_error(httpx.get(f"{url}/librarian/status", headers=reader), 403)
    _qdrant_error(httpx.get(f"{url}/collections", headers=reader), 403)
    upsert = {"points": [{"id": 5401, "vector": near(built, 0), "payload": {}}]}
    _qdrant_error(httpx.put(f"{url}/collections/library/points", json=upsert, headers=reader), 403)
    assert httpx.put(f"{url}/collections/library/points", json=upsert, headers=writer).is_success
    _qdrant_error(
        httpx.put(f"{url}/collections/reference/points", json=upsert, headers=writer), 403
    )


def test_expired_forged_or_malformed_tokens_are_refused_with_401(
    router: RouterThread, built: Library
) -> None:
    path = f"{router.url}/collections/library/points/query"
    body = _query(near(built, 0))
    for token in (
        _token({"access": "m", "exp": int(time.time()) - 5}),  # expired
        _token({"access": "m"}, key=READER),  # signed with the read-only key
        _token({"access": "m"}, key="someone-else-0123456789abcdef0123456789"),
        jwt.encode({"access": "m"}, ADMIN, algorithm="HS512"),  # not Qdrant's algorithm
        jwt.encode({"access": "m"}, None, algorithm="none"),  # unsigned
        _token({}),  # no access claim
        _token({"access": "admin"}),
        _token({"access": [{"collection": "library", "access": "everything"}]}),
        _token({"access": [{"access": "rw"}]}),
        # Restrictions the router cannot enforce must not widen into full access.
        _token({"access": [{"collection": "library", "access": "r", "payload": {"t": "1"}}]}),
        _token({"access": "r", "value_exists": {"collection": "users", "matches": []}}),
        _token({"access": 5}),
    ):
        _qdrant_error(httpx.post(path, json=body, headers=_bearer(token)), 401)
        _qdrant_error(httpx.post(path, json=body, headers={"api-key": token}), 401)


def test_probes_are_open_and_the_router_s_own_api_needs_a_key(router: RouterThread) -> None:
    assert httpx.get(f"{router.url}/healthz").status_code == 200
    assert httpx.get(f"{router.url}/readyz").status_code == 200
    _qdrant_error(httpx.get(f"{router.url}/librarian/status"), 401)
    _qdrant_error(httpx.get(f"{router.url}/librarian/load"), 401)
    _qdrant_error(httpx.post(f"{router.url}/librarian/predict", json={}), 401)
    status = httpx.get(f"{router.url}/librarian/status", headers={"api-key": ADMIN})
    assert status.json()["result"]["authentication"].startswith("api-key")


def test_rebalancing_reads_the_load_with_the_router_s_key(router: RouterThread) -> None:
    load = asyncio.run(fetch_router_load([router.url], api_key=READER))
    assert load.routers == 1
    with pytest.raises(LoadSourceUnreachable, match="LIBRARIAN_ROUTER_READ_ONLY_API_KEY"):
        asyncio.run(fetch_router_load([router.url]))
    assert caller_key({"LIBRARIAN_ROUTER_API_KEY": ADMIN}) == ADMIN
    both = {"LIBRARIAN_ROUTER_API_KEY": ADMIN, "LIBRARIAN_ROUTER_READ_ONLY_API_KEY": READER}
    assert caller_key(both) == READER
    assert caller_key({}) is None


def test_metrics_are_served_on_their_own_port_only(router: RouterThread) -> None:
    assert "librarian_router_requests_total" in httpx.get(router.metrics_url).text
    api = httpx.get(f"{router.url}/metrics", headers={"api-key": ADMIN})
    assert api.status_code == 404


def test_deleting_by_an_empty_filter_needs_management_rights(
    router: RouterThread, built: Library
) -> None:
    writer = _bearer(_token({"access": [{"collection": "library", "access": "rw"}]}))
    url = f"{router.url}/collections/library/points"
    everything: list[dict[str, Any]] = [
        {"filter": {}},
        {"filter": {"must": [], "should": [], "must_not": []}},
    ]
    for selector in everything:
        _qdrant_error(httpx.post(f"{url}/delete", json=selector, headers=writer), 403)
        batch = {"operations": [{"delete": selector}]}
        _qdrant_error(httpx.post(f"{url}/batch", json=batch, headers=writer), 403)
    with closing(_client(router, ADMIN)) as client:
        before = client.count("library").count
    assert before > 0  # nothing was deleted
    # A delete that selects something is a plain write.
    narrow = {"filter": {"must": [{"key": "n", "match": {"value": 10}}]}}
    assert httpx.post(f"{url}/delete", json=narrow, headers=writer).is_success
    # The admin key may erase the library.
    with closing(_client(router, ADMIN)) as client:
        client.upsert("library", [models.PointStruct(id=5501, vector=near(built, 1), payload={})])
        client.delete("library", points_selector=models.FilterSelector(filter=models.Filter()))
        assert client.count("library").count == 0
        # Put the library back for the tests that follow.
        client.upsert(
            "library",
            [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in built.points],
        )


def test_the_product_s_collections_never_pass_through(router: RouterThread) -> None:
    admin = {"api-key": ADMIN}
    for name in (CATALOG, "library-d0", "librarian-migrations", "absent"):
        for response in (
            httpx.get(f"{router.url}/collections/{name}", headers=admin),
            httpx.post(f"{router.url}/collections/{name}/points/scroll", json={}, headers=admin),
        ):
            assert f"Collection `{name}` doesn't exist!" in _qdrant_error(response, 404)
    assert httpx.get(f"{router.url}/collections/reference", headers=admin).is_success
    listed = httpx.get(f"{router.url}/collections", headers=admin).json()["result"]
    assert {c["name"] for c in listed["collections"]} == {"library", "reference"}


def test_pass_through_is_off_by_default(built: Library) -> None:
    with RouterThread(make_state(built)) as router:
        response = httpx.post(f"{router.url}/collections/reference/points/scroll", json={})
        assert "Collection `reference` doesn't exist!" in _qdrant_error(response, 404)
        listed = httpx.get(f"{router.url}/collections").json()["result"]["collections"]
        assert [c["name"] for c in listed] == ["library"]
        assert httpx.post(f"{router.url}/collections/library/points/count", json={}).is_success


def test_nothing_passes_through_before_the_library_is_known(built: Library) -> None:
    """Until the library loads, its domain collections are not known: none may leak."""

    async def not_yet() -> None:
        return None

    config = RouterConfig(
        fleet=built.fleet,
        default_cluster="east",
        loader=not_yet,
        passthrough=frozenset({"reference", "library-d0"}),
    )
    with RouterThread(RouterState(config)) as router:
        for name in ("reference", "library-d0"):
            response = httpx.post(f"{router.url}/collections/{name}/points/scroll", json={})
            assert "library not loaded" in _qdrant_error(response, 503)


def test_every_route_has_a_need_and_an_unlisted_one_is_refused(built: Library) -> None:
    state = make_state(built, keys=KEYS)
    app = create_app(state, reload_in_background=False)
    table = route_table(StatusEndpoints(state), PointEndpoints(state), CollectionEndpoints(state))
    needs = {(method, path): need for method, path, need, _ in table}
    for route in app.router.routes():
        assert route.resource is not None
        assert (route.method, route.resource.canonical) in needs
    opened = {path for (_, path), need in needs.items() if need is Need.OPEN}
    assert opened == {"/", "/healthz", "/livez", "/readyz"}
    assert needs[("PUT", "/collections/{name}/points")] is Need.WRITE

    async def forgotten(request: web.Request) -> web.Response:
        return web.json_response({"leaked": True})

    app.router.add_get("/librarian/forgotten", forgotten)

    async def call() -> tuple[int, int]:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/librarian/forgotten"
        try:
            async with httpx.AsyncClient() as http:
                anonymous = await http.get(url)
                admin = await http.get(url, headers={"api-key": ADMIN})
        finally:
            await runner.cleanup()
        assert "leaked" not in admin.text
        return anonymous.status_code, admin.status_code

    assert asyncio.run(call()) == (401, 403)


def test_a_router_without_keys_listens_on_loopback_only_unless_insecure(
    built: Library, caplog: pytest.LogCaptureFixture
) -> None:
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(InsecureBind, match="LIBRARIAN_ROUTER_API_KEY"):
            check_bind(host, RouterKeys(), insecure=False)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, RouterKeys(), insecure=False)
    check_bind("0.0.0.0", KEYS, insecure=False)
    with caplog.at_level("WARNING", logger="librarian.router.auth"):
        check_bind("0.0.0.0", RouterKeys(), insecure=True)
    assert "without authentication" in caplog.text

    state = make_state(built)
    with pytest.raises(InsecureBind):
        asyncio.run(serve(state, "0.0.0.0", 0, asyncio.Event()))

    insecure = make_state(built, insecure=True)
    with RouterThread(insecure) as router:
        status = httpx.get(f"{router.url}/librarian/status").json()["result"]
        assert "--insecure" in status["authentication"]


def test_the_router_command_refuses_a_public_bind_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LIBRARIAN_ROUTER_API_KEY", "LIBRARIAN_ROUTER_API_KEY_SECONDARY"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(
        main,
        ["router", "--host", "0.0.0.0", "--cluster", f"c=embedded:{tmp_path}",
         "--source", "c/s", "--catalog", "c/k"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--insecure" in " ".join(result.output.split())
    # A read-only key alone would leave writes open: refused too.
    monkeypatch.setenv("LIBRARIAN_ROUTER_READ_ONLY_API_KEY", READER)
    result = CliRunner().invoke(main, ["router", "--host", "127.0.0.1", "--domainmap", "a/b"])
    assert result.exit_code != 0
    assert "LIBRARIAN_ROUTER_API_KEY" in result.output


def test_up_refuses_a_public_bind_without_a_key(tmp_path: Path) -> None:
    no_keys = {"LIBRARIAN_ROUTER_API_KEY": None, "LIBRARIAN_ROUTER_API_KEY_SECONDARY": None}
    result = CliRunner().invoke(
        main, ["up", "--host", "0.0.0.0", "--state", str(tmp_path / "state")], env=no_keys
    )
    assert result.exit_code == 2
    assert "--insecure" in " ".join(result.output.split())
    assert not (tmp_path / "state").exists()  # refused before anything started


def test_keys_come_from_the_environment() -> None:
    keys = RouterKeys.from_env(
        {
            "LIBRARIAN_ROUTER_API_KEY": "a",
            "LIBRARIAN_ROUTER_API_KEY_SECONDARY": "b",
            "LIBRARIAN_ROUTER_READ_ONLY_API_KEY": "c",
            "LIBRARIAN_ROUTER_READ_ONLY_API_KEY_SECONDARY": "",
        }
    )
    assert keys == RouterKeys(read_write=("a", "b"), read_only=("c",))
    assert not RouterKeys.from_env({}).configured
    assert ADMIN not in repr(KEYS)  # never printed by accident
    assert READER not in repr(KEYS)


def test_up_s_address_checks_its_own_listings_and_hands_credentials_on(tmp_path: Path) -> None:
    """``up`` serves its libraries as a router of several does: the front checks what it
    answers itself, each library's router the requests handed to it."""
    built = build_embedded_library(tmp_path)
    allowlist = frozenset({"reference", CATALOG})

    async def calls() -> dict[str, tuple[int, int]]:
        libraries = LibrarySet(keys=KEYS)
        await libraries.add("default/library", make_state(built, keys=KEYS, passthrough=allowlist))
        runner = web.AppRunner(front_app(libraries, list))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        answers = {}
        try:
            async with httpx.AsyncClient(base_url=url) as http:
                for path in ("/collections", "/librarian/resources", "/metrics"):
                    anonymous = await http.get(path)
                    reader = await http.get(path, headers={"api-key": READER})
                    answers[path] = (anonymous.status_code, reader.status_code)
                query = "/collections/library/points/query"
                body = _query(near(built, 0))
                anonymous = await http.post(query, json=body)
                reader = await http.post(query, json=body, headers={"api-key": READER})
                answers[query] = (anonymous.status_code, reader.status_code)
                listed = (await http.get("/collections", headers={"api-key": READER})).json()
                answers["listed"] = (len(listed["result"]["collections"]), 0)
            # librarian status --port asks the gateway with the key of the environment.
            port = url.rsplit(":", 1)[1]
            status = [
                await asyncio.to_thread(
                    CliRunner().invoke, main, ["status", "--port", port], env=env
                )
                for env in (
                    {"LIBRARIAN_ROUTER_READ_ONLY_API_KEY": None, "LIBRARIAN_ROUTER_API_KEY": None},
                    {"LIBRARIAN_ROUTER_READ_ONLY_API_KEY": READER},
                )
            ]
            answers["status"] = (status[0].exit_code, status[1].exit_code)
            assert "LIBRARIAN_ROUTER_READ_ONLY_API_KEY" in " ".join(status[0].output.split())
        finally:
            await runner.cleanup()
            await libraries.close()
        return answers

    answers = asyncio.run(calls())
    assert answers["/collections"] == (401, 200)
    assert answers["/librarian/resources"] == (401, 200)
    assert answers["/metrics"] == (401, 200)
    assert answers["/collections/library/points/query"] == (401, 200)
    assert answers["listed"] == (2, 0)  # the library and its router's pass-through collection
    assert answers["status"] == (1, 0)
