"""One RebalancePolicy tick, driven by hand, when kopf's body lags behind the API.

kopf hands a timer the body its watch stream delivered last. These tests give
a tick such a stale body on purpose (what kopf does when its stream is slow or
it retries another patch) and check that nothing is reported or handled twice,
and that an annotation the user changed meanwhile is neither lost nor
overwritten. kopf itself does not run here: the test applies a tick's status
patch the way kopf would, and records the Events the tick posts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import kopf
import pytest

from librarian.kube import client as kube_client
from librarian.kube.client import Credentials
from librarian.local.emulator import EmulatedCluster, emulated_kubernetes, load_crds
from librarian.operator.context import OperatorContext
from librarian.operator.rebalance import reconcile_policy

from .conftest import REPO

POLICIES = "librarian.dev/v1alpha1/rebalancepolicies"
DOMAINMAPS = "librarian.dev/v1alpha1/domainmaps"
KEY = "librarian.dev/rebalance"
LOG = logging.getLogger("tests.rebalance_ticks")


@pytest.fixture
async def api() -> AsyncIterator[EmulatedCluster]:
    async with emulated_kubernetes(load_crds(REPO / "crds"), record_requests=True) as cluster:
        previous = kube_client._credentials
        kube_client.remember_credentials(Credentials(server=cluster.url))
        try:
            yield cluster
        finally:
            kube_client._credentials = previous


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(type, reason) of every Event a tick posts."""
    posted: list[tuple[str, str]] = []

    def event(objs: Any, *, type: str, reason: str, message: str = "", **_: Any) -> None:
        posted.append((type, reason))

    def info(objs: Any, *, reason: str, message: str = "", **_: Any) -> None:
        posted.append(("Normal", reason))

    monkeypatch.setattr(kopf, "event", event)
    monkeypatch.setattr(kopf, "info", info)
    return posted


def _policy(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "domainMap": "packages",
        "mode": "approve",
        "analysisInterval": "1h",
        "loadSource": {"routerUrls": ["http://127.0.0.1:9"]},
    }
    body.update(spec)
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "RebalancePolicy",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
        "spec": body,
    }


async def _library(api: EmulatedCluster) -> None:
    """A DomainMap already analysed (its status holds domains): enough for a policy to read."""
    await api.create(
        {
            "apiVersion": "librarian.dev/v1alpha1",
            "kind": "DomainMap",
            "metadata": {"name": "packages", "namespace": "default"},
            "spec": {
                "source": {"cluster": "general", "collection": "packages"},
                "clusters": [{"name": "general", "embedded": "/nonexistent/general"}],
            },
            "status": {"phase": "Ready", "domains": [{"id": "d0", "size": 10}]},
        }
    )


async def _tick(api: EmulatedCluster, body: dict[str, Any]) -> kopf.Patch:
    """One tick on ``body`` (as kopf would hand it); its status patch applied as kopf would."""
    patch = kopf.Patch()
    await reconcile_policy(kopf.Body(cast(kopf.RawBody, body)), patch, OperatorContext(), LOG)
    if patch:
        await api.patch(POLICIES, "default", body["metadata"]["name"], dict(patch))
    return patch


async def _annotations(api: EmulatedCluster, name: str) -> dict[str, str]:
    obj = await api.get(POLICIES, "default", name)
    assert obj is not None
    return dict(obj["metadata"].get("annotations") or {})


async def test_a_stale_body_does_not_report_a_problem_twice(
    api: EmulatedCluster, events: list[tuple[str, str]]
) -> None:
    created = await api.create(_policy("broken", strategy="fastest"))
    first = await _tick(api, created)
    assert first.status["phase"] == "Failed"
    assert events == [("Warning", "InvalidSpec")]
    stored = await api.get(POLICIES, "default", "broken")
    assert stored is not None
    assert stored["status"]["message"].startswith("invalid spec")
    for _ in range(3):  # kopf's body still predates the first tick's status
        assert not await _tick(api, created)
    assert events == [("Warning", "InvalidSpec")]
    requests = len(api.requests())
    assert not await _tick(api, stored)  # once the body catches up: idle, no API call
    assert len(api.requests()) == requests


async def test_a_stale_body_does_not_handle_an_approval_twice(
    api: EmulatedCluster, events: list[tuple[str, str]]
) -> None:
    await _library(api)
    created = await api.create(_policy("twice", annotations={KEY: "approve"}))
    await _tick(api, created)
    assert await _annotations(api, "twice") == {}  # handled, so removed
    assert ("Warning", "NothingToApprove") in events  # no proposal yet
    await _tick(api, created)  # the body still shows the annotation
    assert events.count(("Warning", "NothingToApprove")) == 1


async def test_a_newer_annotation_is_not_overwritten_and_is_handled_next(
    api: EmulatedCluster, events: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    await _library(api)
    await api.create(_policy("halt", annotations={KEY: "approve"}))
    seen = await api.get(POLICIES, "default", "halt")  # what the tick reads ...
    assert seen is not None
    await api.patch(  # ... and the user's change that lands right after the read
        POLICIES, "default", "halt", {"metadata": {"annotations": {KEY: "stop"}}}
    )
    real_get = kube_client.get_json

    async def read_before_the_change(path: str, **kwargs: Any) -> dict[str, Any]:
        return seen if path.endswith("/rebalancepolicies/halt") else await real_get(path, **kwargs)

    monkeypatch.setattr(kube_client, "get_json", read_before_the_change)
    assert not await _tick(api, seen)  # the approval changed under it: nothing done
    assert await _annotations(api, "halt") == {KEY: "stop"}  # and the user's word is kept
    assert events == []
    monkeypatch.setattr(kube_client, "get_json", real_get)
    fresh = await api.get(POLICIES, "default", "halt")
    assert fresh is not None
    patch = await _tick(api, fresh)
    assert patch.status["stopped"] is True
    assert await _annotations(api, "halt") == {}
    assert ("Normal", "Stopped") in events
    assert ("Normal", "Approved") not in events
