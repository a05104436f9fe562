"""How the deployed operator starts: peering, priorities, namespaces and metrics from its pod spec.

The chart passes these through the environment (``LIBRARIAN_PEERING``,
``LIBRARIAN_POD_NAME``, ``LIBRARIAN_METRICS_PORT``) and ``--namespace``; this
checks that ``run_operator`` turns them into the right kopf settings.
"""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from librarian.operator import runtime
from librarian.operator.runtime import (
    Peering,
    metrics_port_from_env,
    peering_from_env,
    pod_priority,
)


def test_without_peering_the_operator_is_standalone() -> None:
    assert peering_from_env({}) == Peering()
    assert Peering().standalone


def test_peering_priority_is_explicit_or_from_the_pod_name() -> None:
    assert peering_from_env({"LIBRARIAN_PEERING": "lib", "LIBRARIAN_PRIORITY": "7"}) == Peering(
        "lib", 7
    )
    pods = [f"lib-qdrant-librarian-7d9f8b6c5-{suffix}" for suffix in ("abcde", "fghij", "klmno")]
    found = [peering_from_env({"LIBRARIAN_PEERING": "lib", "LIBRARIAN_POD_NAME": p}) for p in pods]
    assert all(not p.standalone and p.name == "lib" for p in found)
    priorities = [p.priority for p in found]
    assert len(set(priorities)) == len(pods)  # distinct: kopf pauses peers of equal priority
    assert priorities == [pod_priority(p) for p in pods]  # stable across restarts of a pod
    assert all(0 < p < 2**31 for p in priorities)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LIBRARIAN_PEERING": "lib"}, "distinct priorities"),
        ({"LIBRARIAN_PEERING": "lib", "LIBRARIAN_PRIORITY": "high"}, "integer"),
    ],
)
def test_bad_peering_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        peering_from_env(env)


def test_metrics_port() -> None:
    assert metrics_port_from_env({}) is None
    assert metrics_port_from_env({"LIBRARIAN_METRICS_PORT": "9090"}) == 9090
    with pytest.raises(ValueError, match="must be a port number"):
        metrics_port_from_env({"LIBRARIAN_METRICS_PORT": "99999"})


async def test_run_operator_passes_peering_and_namespaces_to_kopf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []

    async def fake_operator(**kwargs: Any) -> None:
        calls.append(kwargs)

    monkeypatch.setattr(kopf, "operator", fake_operator)
    monkeypatch.setenv("LIBRARIAN_PEERING", "lib")
    monkeypatch.setenv("LIBRARIAN_POD_NAME", "lib-0")
    monkeypatch.delenv("LIBRARIAN_PRIORITY", raising=False)
    monkeypatch.delenv("LIBRARIAN_METRICS_PORT", raising=False)
    await runtime.run_operator(namespaces=["team-a"])
    monkeypatch.delenv("LIBRARIAN_PEERING")
    await runtime.run_operator()
    namespaced, clusterwide = calls
    assert namespaced["standalone"] is False
    assert namespaced["peering_name"] == "lib"
    assert namespaced["priority"] == pod_priority("lib-0")
    assert namespaced["namespaces"] == ["team-a"]
    assert namespaced["clusterwide"] is False
    # A namespaced operator does not scan cluster-scoped namespaces and CRDs: a Role suffices.
    assert namespaced["settings"].scanning.disabled is True
    assert clusterwide["standalone"] is True
    assert clusterwide["clusterwide"] is True
    assert clusterwide["settings"].scanning.disabled is False
