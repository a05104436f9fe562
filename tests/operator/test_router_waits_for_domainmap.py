"""A router started before its DomainMap exists serves, says why it is not ready, and keeps trying."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from librarian.kube.client import Credentials, remember_credentials
from librarian.local.emulator import emulated_kubernetes, load_crds
from librarian.router import create_app
from librarian.router.main import RouterSource, prepare_router
from librarian.settings import Settings

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
