"""The Kubernetes client: typed errors with the API server's message, one session, timeouts."""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from librarian.kube import client
from librarian.kube.client import Credentials
from librarian.kube.errors import (
    ApiUnreachable,
    Conflict,
    Forbidden,
    Invalid,
    KubernetesApiError,
    LoginFailed,
    NotFound,
    NotLoggedIn,
    SecretNotFound,
    TooManyRequests,
    Unauthorized,
)

SECRET_VALUE = "s3cr3t-value"


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }
    headers = {"Retry-After": "7"} if code == 429 else {}
    return web.json_response(body, status=code, headers=headers)


class FakeApi:
    """A small API server: answers by path, remembers each call's client port and headers."""

    def __init__(self) -> None:
        self.peers: list[int] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[Any] = []
        self.hang = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(peer[1] if peer else -1)
        self.headers.append(dict(request.headers))
        self.bodies.append(await request.text())
        name = request.match_info["name"]
        if name == "hang":
            await self.hang.wait()
        if name.startswith("code-"):
            code = int(name.removeprefix("code-"))
            return _status(code, f"Reason{code}", f"the server says {code} for {request.method}")
        if name == "proxy-error":
            return web.Response(status=502, text="<html>bad gateway</html>")
        if name == "secret":
            encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
            return web.json_response({"kind": "Secret", "data": {"api-key": encoded}})
        if name == "missing":
            return _status(404, "NotFound", 'secrets "missing" not found')
        return web.json_response({"kind": "Thing", "metadata": {"name": name}})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApi, str]]:
    api = FakeApi()
    app = web.Application()
    app.router.add_route("*", "/api/v1/namespaces/default/secrets/{name}", api.handle)
    app.router.add_route("*", "/things/{name}", api.handle)
    server = TestServer(app)
    await server.start_server()
    previous = client._credentials
    client.remember_credentials(Credentials(server=str(server.make_url("/")).rstrip("/")))
    try:
        yield api, str(server.make_url("/"))
    finally:
        api.hang.set()
        await client.close_session()
        client._credentials = previous
        await server.close()


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (422, Invalid),
        (429, TooManyRequests),
        (500, KubernetesApiError),
    ],
)
async def test_each_failure_has_its_class_and_keeps_the_servers_message(
    fake: tuple[FakeApi, str], code: int, cls: type[KubernetesApiError]
) -> None:
    with pytest.raises(KubernetesApiError) as caught:
        await client.get_json(f"/things/code-{code}")
    error = caught.value
    assert type(error) is cls
    assert error.status == code
    assert error.reason == f"Reason{code}"
    assert error.server_message == f"the server says {code} for GET"
    assert str(error) == (
        f"GET /things/code-{code} failed with HTTP {code} (Reason{code}): "
        f"the server says {code} for GET"
    )
    if cls is TooManyRequests:
        assert isinstance(error, TooManyRequests)
        assert error.retry_after_s == 7.0


async def test_an_answer_that_is_not_a_status_is_left_out(fake: tuple[FakeApi, str]) -> None:
    with pytest.raises(KubernetesApiError) as caught:
        await client.get_json("/things/proxy-error")
    assert str(caught.value) == "GET /things/proxy-error failed with HTTP 502"
    assert "html" not in str(caught.value)


async def test_create_and_delete_are_idempotent_on_conflict_and_not_found(
    fake: tuple[FakeApi, str],
) -> None:
    assert await client.create_object("/things/code-409", {"kind": "Thing"}) is False
    assert await client.delete_object("/things/code-404") is False
    assert await client.create_object("/things/new", {"kind": "Thing"}) is True
    assert await client.delete_object("/things/old") is True
    with pytest.raises(Forbidden):
        await client.create_object("/things/code-403", {"kind": "Thing"})


async def test_patches_send_their_content_type(fake: tuple[FakeApi, str]) -> None:
    api, _ = fake
    await client.patch_object("/things/a", {"metadata": {"labels": {"x": "y"}}})
    ops = [{"op": "test", "path": "/metadata/name", "value": "a"}]
    assert (await client.json_patch_object("/things/a", ops))["metadata"] == {"name": "a"}
    assert [h["Content-Type"] for h in api.headers] == [
        "application/merge-patch+json",
        "application/json-patch+json",
    ]
    assert api.bodies[1] == '[{"op": "test", "path": "/metadata/name", "value": "a"}]'


async def test_secrets_are_read_and_never_shown(fake: tuple[FakeApi, str]) -> None:
    assert await client.read_secret_value("default", "secret", "api-key") == SECRET_VALUE
    with pytest.raises(SecretNotFound) as missing_key:
        await client.read_secret_value("default", "secret", "token")
    assert "keys: api-key" in str(missing_key.value)
    assert SECRET_VALUE not in str(missing_key.value)
    assert base64.b64encode(SECRET_VALUE.encode()).decode() not in str(missing_key.value)
    with pytest.raises(SecretNotFound) as missing:
        await client.read_secret_value("default", "missing", "api-key")
    assert missing.value.status == 404
    assert "Secret default/missing does not exist" in str(missing.value)


async def test_one_session_serves_many_calls(fake: tuple[FakeApi, str]) -> None:
    api, _ = fake
    session = client._session()
    for index in range(20):
        await client.get_json(f"/things/t{index}")
    await asyncio.gather(*(client.get_json(f"/things/p{index}") for index in range(5)))
    assert client._session() is session
    assert len(api.peers) == 25
    assert len(set(api.peers[:20])) == 1  # sequential calls reuse one connection
    assert all(h["User-Agent"].startswith("qdrant-librarian/") for h in api.headers)
    await client.close_session()
    assert session.closed
    await client.get_json("/things/after")  # a new session opens on the next call
    assert client._session() is not session


async def test_every_call_has_a_timeout(fake: tuple[FakeApi, str]) -> None:
    with pytest.raises(ApiUnreachable) as caught:
        await client.get_json("/things/hang", timeout_s=0.2)
    assert "TimeoutError" in str(caught.value)


async def test_no_credentials_no_call() -> None:
    previous = client._credentials
    client._credentials = None
    try:
        with pytest.raises(NotLoggedIn):
            await client.get_json("/api/v1/namespaces")
    finally:
        client._credentials = previous


async def test_an_unreachable_server_is_named(unused_tcp_port: int) -> None:
    previous = client._credentials
    client.remember_credentials(Credentials(server=f"http://127.0.0.1:{unused_tcp_port}"))
    try:
        with pytest.raises(ApiUnreachable) as caught:
            await client.get_json("/api")
        assert f"127.0.0.1:{unused_tcp_port}" in str(caught.value)
    finally:
        await client.close_session()
        client._credentials = previous


def test_credentials_make_the_authorization_header(tmp_path: Path) -> None:
    assert Credentials(server="http://x").authorization() == {}
    assert Credentials(server="http://x", token="t").authorization() == {
        "Authorization": "Bearer t"
    }
    basic = Credentials(server="http://x", username="u", password="p").authorization()
    assert basic == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    rotating = Credentials(server="http://x", token_file=str(token_file))
    assert rotating.authorization() == {"Authorization": "Bearer first"}
    token_file.write_text("second")  # the kubelet rotates it on disk
    assert rotating.authorization() == {"Authorization": "Bearer second"}
    token_file.unlink()
    with pytest.raises(LoginFailed):
        rotating.authorization()
    shown = repr(Credentials(server="http://x", token="t0k3n", password="pw", key_data="KEY"))
    assert "t0k3n" not in shown
    assert "pw" not in shown
    assert "KEY" not in shown


@pytest.fixture
def certificate(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 and its key (made with openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_with_a_ca_and_a_client_certificate_from_memory(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(cert))
    server_context.load_cert_chain(str(cert), str(key))
    server_context.verify_mode = ssl.CERT_REQUIRED  # the client must show its certificate

    async def thing(request: web.Request) -> web.Response:
        return web.json_response({"kind": "Thing"})

    app = web.Application()
    app.router.add_get("/things/one", thing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    previous = client._credentials
    try:
        client.remember_credentials(
            Credentials(
                server=f"https://127.0.0.1:{port}",
                ca_data=cert.read_text(),
                certificate_data=cert.read_text(),
                key_data=key.read_text(),
            )
        )
        assert await client.get_json("/things/one") == {"kind": "Thing"}
        client.remember_credentials(Credentials(server=f"https://127.0.0.1:{port}"))
        with pytest.raises(ApiUnreachable):  # an unknown CA: refused, not ignored
            await client.get_json("/things/one")
    finally:
        await client.close_session()
        client._credentials = previous
        await runner.cleanup()
