"""A router started before its DomainMap exists serves, says why it is not ready, and keeps trying."""

from __future__ import annotations

import base64
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from librarian.kube.client import Credentials, remember_credentials
from librarian.local.emulator import emulated_kubernetes, load_crds
from librarian.router import create_app
from librarian.router.main import RouterSource, prepare_router
from librarian.settings import CredentialSettings, Settings
from tests.integration.recording_server import qdrant_error, recording_server

REPO = Path(__file__).resolve().parents[2]


async def test_router_reports_not_ready_until_the_domainmap_exists() -> None:
    async with emulated_kubernetes(load_crds(REPO / "crds")) as api:
        remember_credentials(Credentials(server=api.url))
        state = await prepare_router(Settings(), RouterSource(domainmap="default/missing"))
        app = create_app(state, reload_in_background=False)
        async with TestClient(TestServer(app)) as client:
            ready = await client.get("/readyz")
            assert ready.status == 503
            assert "not ready" in await ready.text()
            assert state.load_error
            assert (await client.get("/healthz")).status == 200  # alive: no crash loop
            query = await client.post("/collections/packages/points/query", json={"query": [0.1]})
            assert query.status == 503
            assert "library not loaded" in (await query.json())["status"]["error"]
            assert await state.reload() is False  # still missing: keeps serving, keeps trying


async def test_router_refuses_the_keys_the_operator_would_refuse() -> None:
    """The router reads its DomainMap's Secrets itself: the same rules, before any request."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "author-key", "namespace": "default"},
        "data": {"api-key": base64.b64encode(b"router-held-key").decode()},
    }
    with recording_server(lambda request, index: qdrant_error(404, "no")) as author:
        async with emulated_kubernetes(load_crds(REPO / "crds")) as api:
            remember_credentials(Credentials(server=api.url))
            await api.create(secret)
            await api.create(
                {
                    "apiVersion": "librarian.dev/v1alpha1",
                    "kind": "DomainMap",
                    "metadata": {"name": "authored", "namespace": "default"},
                    "spec": {
                        "source": {"cluster": "general", "collection": "packages"},
                        "clusters": [
                            {
                                "name": "general",
                                "url": author.url,
                                "apiKeySecretRef": {"name": "author-key"},
                            }
                        ],
                    },
                }
            )
            loopback = Settings(credentials=CredentialSettings(insecureHosts=["127.0.0.1"]))
            for settings, reason, fix in (
                (Settings(), "InsecureTransport", "use an https:// url"),
                (loopback, "SecretNotAllowed", "librarian.dev/qdrant-credentials"),
            ):
                state = await prepare_router(settings, RouterSource(domainmap="default/authored"))
                assert await state.reload() is False
                assert state.load_error is not None
                assert state.load_error.startswith(reason), state.load_error
                assert fix in state.load_error
                assert "router-held-key" not in state.load_error
    assert author.requests == []
