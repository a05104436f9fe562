"""Reading the routers' load: replicas summed, clear errors for a router that cannot tell."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from librarian.operator.load_source import LoadSourceUnreachable, fetch_router_load


@pytest.fixture
async def routers() -> AsyncIterator[Callable[[Any, int], Any]]:
    runners: list[web.AppRunner] = []

    async def start(body: Any, code: int = 200) -> str:
        async def status(request: web.Request) -> web.Response:
            if isinstance(body, str):  # not JSON
                return web.Response(text=body, status=code, content_type="text/html")
            return web.json_response(body, status=code)

        app = web.Application()
        app.router.add_get("/librarian/status", status)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/"

    yield start
    for runner in runners:
        await runner.cleanup()


def _status(domains: list[dict[str, Any]], recall: float | None) -> dict[str, Any]:
    result = {"load": {"domains": domains}, "quality": {"estimatedRecall": recall}}
    return {"result": result, "status": "ok", "time": 0.0}


async def test_replicas_add_up(routers: Callable[[Any, int], Any]) -> None:
    one = await routers(_status([{"id": "d1", "qps": 2.5, "queries": 10, "p95Ms": 4.0}], 0.97), 200)
    two = await routers(
        _status(
            [
                {"id": "d1", "qps": 1.5, "queries": 6, "p95Ms": 9.0},
                {"id": "d2", "qps": 0.5, "queries": 2, "p95Ms": None},
            ],
            0.93,
        ),
        200,
    )
    load = await fetch_router_load([one, two])
    assert load.routers == 2
    assert load.estimated_recall == 0.93
    assert (load.domains["d1"].qps, load.domains["d1"].queries) == (4.0, 16)
    assert load.domains["d1"].p95_ms == 9.0
    assert load.domains["d2"].p95_ms is None
    assert (await fetch_router_load([])).domains == {}


async def test_a_router_that_cannot_tell_is_named(routers: Callable[[Any, int], Any]) -> None:
    broken = await routers({"status": {"error": "boom"}}, 500)
    with pytest.raises(LoadSourceUnreachable, match="answered HTTP 500"):
        await fetch_router_load([broken])
    old = await routers({"result": {"ready": True}, "status": "ok"}, 200)
    with pytest.raises(LoadSourceUnreachable, match="did not return a load report"):
        await fetch_router_load([old])
    with pytest.raises(LoadSourceUnreachable, match="spec.loadSource.routerUrls"):
        await fetch_router_load(["http://127.0.0.1:9"], timeout_s=2)


async def test_a_malformed_report_is_named_with_what_is_wrong(
    routers: Callable[[Any, int], Any],
) -> None:
    wrong_qps = await routers(_status([{"id": "d1", "qps": "fast", "queries": 3}], 0.9), 200)
    with pytest.raises(LoadSourceUnreachable, match=r"did not return a load report.*qps"):
        await fetch_router_load([wrong_qps])
    no_id = await routers(_status([{"qps": 1.0}], None), 200)
    with pytest.raises(LoadSourceUnreachable, match=r"load\.domains\.0\.id"):
        await fetch_router_load([no_id])
    negative = await routers(_status([{"id": "d1", "queries": -4}], None), 200)
    with pytest.raises(LoadSourceUnreachable, match="queries"):
        await fetch_router_load([negative])
    bad_recall = await routers(_status([], 1.5), 200)
    with pytest.raises(LoadSourceUnreachable, match="estimatedRecall"):
        await fetch_router_load([bad_recall])


async def test_a_body_that_is_not_json_is_named(routers: Callable[[Any, int], Any]) -> None:
    gateway = await routers("<html>gateway</html>", 200)
    with pytest.raises(LoadSourceUnreachable, match="not JSON"):
        await fetch_router_load([gateway])
