"""https Qdrant behind an internal CA: trusted through LIBRARIAN_CA_BUNDLE, refused without it.

A real TLS server on loopback with a certificate from a throwaway CA (made by
``openssl``) stands in for a Qdrant cluster; the adapter's qdrant-client and the
router's pass-through session must verify it with the CA bundle, keep trusting
the public CAs, and refuse it (with a clear error) when the bundle is missing or
not a bundle.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import certifi
import pytest

from librarian.storage.errors import ClusterUnreachable
from librarian.storage.remote import RemoteQdrant
from librarian.storage.tls import CA_BUNDLE_ENV, CaBundleError, qdrant_ssl_context

from .recording_server import Recorded, qdrant_ok, recording_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def internal_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a certificate for localhost it signed (what an internal PKI hands out)."""
    where = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=Internal Test CA", "-keyout", "ca.key", "-out", "ca.crt",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=where)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=where)  # fmt: skip
    (where / "san.ext").write_text(
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=where)  # fmt: skip
    return {name: where / name for name in ("ca.crt", "server.crt", "server.key")}


def _server_tls(pki: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server.crt"], pki["server.key"])
    return context


def _collections(request: Recorded, index: int) -> tuple[int, dict[str, object]]:
    return qdrant_ok({"collections": [{"name": "packages"}]})


def test_the_adapter_trusts_the_internal_ca_from_the_environment(
    internal_ca: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with recording_server(_collections, tls=_server_tls(internal_ca)) as server:
        assert server.url.startswith("https://")
        # Without the bundle the certificate is refused (public CAs only).
        monkeypatch.delenv(CA_BUNDLE_ENV, raising=False)
        untrusting = RemoteQdrant.connect("internal", server.url, retries=0)
        with pytest.raises(ClusterUnreachable, match="(?i)certificate"):
            untrusting.ping()
        assert server.requests == []  # nothing reached it: the handshake failed
        # With it (as the chart mounts it into every pod) the same call goes through.
        monkeypatch.setenv(CA_BUNDLE_ENV, str(internal_ca["ca.crt"]))
        RemoteQdrant.connect("internal", server.url, retries=0).ping()
        assert [r.path for r in server.requests] == ["/collections"]


def test_the_bundle_adds_to_the_public_cas(internal_ca: dict[str, Path]) -> None:
    """A cluster with a public certificate (Qdrant Cloud) still verifies: the context holds
    certifi's CAs and the internal one, where SSL_CERT_FILE would have replaced them."""
    public = ssl.create_default_context(cafile=certifi.where()).get_ca_certs()
    trusted = qdrant_ssl_context(str(internal_ca["ca.crt"]))
    assert trusted is not None
    subjects = [dict(pair for rdn in c["subject"] for pair in rdn) for c in trusted.get_ca_certs()]
    assert {"commonName": "Internal Test CA"} in subjects
    assert len(subjects) == len(public) + 1
    assert trusted.verify_mode == ssl.CERT_REQUIRED
    assert trusted.check_hostname


def test_no_bundle_keeps_the_clients_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_BUNDLE_ENV, raising=False)
    assert qdrant_ssl_context() is None


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_missing_or_broken_bundle_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None
) -> None:
    bundle = tmp_path / "ca.crt"
    if content is not None:
        bundle.write_text(content)
    with pytest.raises(CaBundleError, match=f"{CA_BUNDLE_ENV}={bundle}"):
        qdrant_ssl_context(str(bundle))
    # The adapter reports it as the cluster being unreachable, naming the bundle.
    monkeypatch.setenv(CA_BUNDLE_ENV, str(bundle))
    with pytest.raises(ClusterUnreachable, match="CA"):
        RemoteQdrant.connect("internal", "https://qdrant.internal:6333")
    # A plain-http cluster does not need it.
    RemoteQdrant.connect("plain", "http://qdrant.internal:6333")


async def test_the_router_pass_through_trusts_the_internal_ca(
    internal_ca: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router forwards pass-through collections with aiohttp: same trust as qdrant-client."""
    from librarian.router.passthrough import PassthroughProxy

    monkeypatch.setenv(CA_BUNDLE_ENV, str(internal_ca["ca.crt"]))
    with recording_server(_collections, tls=_server_tls(internal_ca)) as server:
        proxy = PassthroughProxy(server.url, None, connect_timeout_s=5)
        session = proxy._client()
        try:
            async with session.get(f"{server.url}/collections") as answer:
                assert answer.status == 200
        finally:
            await session.close()
        monkeypatch.delenv(CA_BUNDLE_ENV)
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await plain.get(f"{server.url}/collections")


async def test_the_operator_reads_routers_behind_the_internal_ca(
    internal_ca: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RebalancePolicy's routerUrls over https: verified with the same bundle."""
    from librarian.operator.load_source import LoadSourceUnreachable, fetch_router_load

    def status(request: Recorded, index: int) -> tuple[int, dict[str, object]]:
        domains = [{"id": "d1", "qps": 2.0, "queries": 8, "p95Ms": 3.0}]
        return qdrant_ok({"load": {"domains": domains}, "quality": {"estimatedRecall": 0.97}})

    with recording_server(status, tls=_server_tls(internal_ca)) as router:
        monkeypatch.delenv(CA_BUNDLE_ENV, raising=False)
        with pytest.raises(LoadSourceUnreachable, match="Certificate"):
            await fetch_router_load([router.url])
        monkeypatch.setenv(CA_BUNDLE_ENV, str(internal_ca["ca.crt"]))
        load = await fetch_router_load([router.url])
        assert load.domains["d1"].queries == 8
        assert [r.path for r in router.requests] == ["/librarian/status"]
