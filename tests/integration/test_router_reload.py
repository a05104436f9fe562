"""The routing model is rebuilt off the request path: the previous one serves until it is ready.

A build that blocks (injected, released by the test) stands for a slow one:
while it runs, reads are answered by the model in place, without waiting for
it; once it ends, the new model serves; a definition that did not change is
not rebuilt.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client.http import models

import librarian.router.state as router_state
from librarian.router.library import Library

from .router_support import DIM, RouterThread, build_embedded_library, client_of, make_state

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Any]:
    library = build_embedded_library(tmp_path)
    yield library
    library.fleet.close()


class _HeldBuilds:
    """``build_library`` counted; a build of ``held_version`` waits until released."""

    def __init__(self, held_version: str) -> None:
        self.held_version = held_version
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []
        self._build = router_state.build_library

    def __call__(self, definition: Any, *args: Any, **kwargs: Any) -> Library:
        self.calls.append(definition.version)
        if definition.version == self.held_version:
            self.entered.set()
            if not self.release.wait(timeout=120):
                raise AssertionError("the held build was never released")
        return self._build(definition, *args, **kwargs)


def _vector(seed: int) -> list[float]:
    row = np.random.default_rng(seed).normal(size=DIM)
    return [float(x) for x in row / np.linalg.norm(row)]


def test_reads_are_served_by_the_previous_model_while_a_new_one_builds(
    built: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _HeldBuilds("v2")
    monkeypatch.setattr(router_state, "build_library", held)
    definitions = [built.definition]

    async def loader() -> Any:
        return definitions[-1]

    state = make_state(built, settings={"routing_strategy": "hybrid"})
    state.config.loader = loader
    vector = _vector(3)
    with RouterThread(state) as router, httpx.Client(base_url=router.url) as http:
        client = client_of(router)
        assert router.run(state.reload()) is False  # loaded when serving began: unchanged
        old = state.library
        assert old is not None
        assert old.definition.version == built.definition.version
        expected = old.router.decide(vector)
        expected_points = client.query_points("library", query=vector, limit=5).points

        definitions.append(
            replace(built.definition, domains=built.definition.domains[:2], version="v2")
        )
        reloading = asyncio.run_coroutine_threadsafe(state.reload(), router.loop)
        assert held.entered.wait(60), "the new build did not start"
        try:
            # the build is held: reads are answered now, by the model in place
            for _ in range(3):
                predicted = http.post("/librarian/predict", json={"vector": vector}).json()
                assert [d["index"] for d in predicted["result"]["domains"]] == expected.units
                status = http.get("/librarian/status").json()["result"]["library"]
                assert status["version"] == built.definition.version
                assert len(status["domains"]) == 3
                points = client.query_points("library", query=vector, limit=5).points
                assert [(p.id, round(p.score, 5)) for p in points] == [
                    (p.id, round(p.score, 5)) for p in expected_points
                ]
            assert not reloading.done()
            assert state.library is old
        finally:
            held.release.set()
        assert reloading.result(timeout=120) is True
        status = http.get("/librarian/status").json()["result"]["library"]
        assert status["version"] == "v2"
        assert len(status["domains"]) == 2
        predicted = http.post("/librarian/predict", json={"vector": vector}).json()["result"]
        assert {d["index"] for d in predicted["domains"]} <= {0, 1}

        # the same definition again: nothing is rebuilt, the model stays
        current = state.library
        assert router.run(state.reload()) is False
        assert state.library is current
        assert held.calls.count("v2") == 1
        assert client.count("library", count_filter=models.Filter()).count > 0
