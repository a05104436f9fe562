"""The Argo CD health check (Lua), run with a real Lua interpreter over many statuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from .conftest import REPO

ARGOCD = REPO / "manifests/argocd"
CHECKS = sorted((ARGOCD / "resource_customizations/librarian.dev").glob("*/health.lua"))


def health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    lua.globals().obj = to_lua(obj)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"])


def _obj(generation: int = 1, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "x", "generation": generation}}
    if status:
        body["status"] = status
    return body


def _ready(status: str, reason: str = "Analyzed", message: str = "m") -> list[dict[str, Any]]:
    return [{"type": "Ready", "status": status, "reason": reason, "message": message}]


CASES = [
    (_obj(), "Progressing"),
    (_obj(phase="Ready", observedGeneration=1, conditions=_ready("True")), "Healthy"),
    (_obj(2, phase="Ready", observedGeneration=1, conditions=_ready("True")), "Progressing"),
    (
        _obj(phase="Analyzing", observedGeneration=1, conditions=_ready("Unknown", "Analyzing")),
        "Progressing",
    ),
    (
        _obj(
            phase="Failed", observedGeneration=1, conditions=_ready("False", "InvalidSpec", "bad")
        ),
        "Degraded",
    ),
    (
        _obj(
            phase="Pending", observedGeneration=1, conditions=_ready("False", "ClusterUnreachable")
        ),
        "Progressing",
    ),
    (_obj(phase="Ready", observedGeneration=1, conditions=_ready("False", "Broken")), "Degraded"),
    (_obj(phase="Ready", observedGeneration=1), "Progressing"),
    (
        _obj(
            phase="Migrating",
            observedGeneration=1,
            conditions=[
                *_ready("False", "Migrating"),
                {"type": "Stalled", "status": "True", "reason": "ImagePullBackOff", "message": "m"},
            ],
        ),
        "Degraded",
    ),
    (
        _obj(
            phase="Migrating",
            observedGeneration=1,
            conditions=[
                *_ready("False", "Migrating"),
                {"type": "Stalled", "status": "False", "reason": "JobRunning", "message": "m"},
            ],
        ),
        "Progressing",
    ),
]


def test_a_stalled_job_is_degraded_with_the_pods_reason() -> None:
    obj = _obj(
        phase="Labeling",
        observedGeneration=1,
        conditions=[
            *_ready("True"),
            {
                "type": "Stalled",
                "status": "True",
                "reason": "Unschedulable",
                "message": "pod p of Job j is not scheduled",
            },
        ],
    )
    assert health(CHECKS[0].read_text(), obj) == (
        "Degraded",
        "Unschedulable: pod p of Job j is not scheduled",
    )


@pytest.mark.parametrize("check", CHECKS, ids=lambda p: p.parent.name)
@pytest.mark.parametrize(("obj", "expected"), CASES)
def test_health(check: Path, obj: dict[str, Any], expected: str) -> None:
    status, message = health(check.read_text(), obj)
    assert status == expected, message


def test_failed_message_is_the_condition_message() -> None:
    obj = _obj(
        phase="Failed",
        observedGeneration=1,
        conditions=_ready("False", "InvalidSpec", "spec.strategy is unknown"),
    )
    assert health(CHECKS[0].read_text(), obj) == ("Degraded", "spec.strategy is unknown")


def _policy(
    phase: str,
    ready: str,
    reason: str = "Analyzed",
    *,
    proposal: str | None = None,
    generation: int = 1,
    observed: int = 1,
    message: str | None = None,
) -> dict[str, Any]:
    """A RebalancePolicy as the operator reports it (ProposalPending when a proposal exists)."""
    conditions = _ready(ready, reason, "imbalance 0.42 over the limit 0.3")
    status: dict[str, Any] = {"phase": phase, "observedGeneration": observed}
    if proposal is not None:
        conditions.append(
            {"type": "ProposalPending", "status": "True", "reason": phase, "message": proposal}
        )
        status["proposal"] = {
            "id": "5e0c1d2a9b7f",
            "moves": [{"domain": "d3", "source": "general", "target": "fast"}] * 2,
        }
    if message is not None:
        status["message"] = message
    body = _obj(generation, conditions=conditions, **status)
    body["metadata"]["namespace"] = "default"
    return body


APPROVE = "kubectl -n default annotate rebalancepolicy x librarian.dev/rebalance=approve"

# (policy, expected health, a text its message contains)
POLICY_CASES = [
    (_policy("Observing", "True"), "Healthy", "imbalance 0.42"),
    (_policy("Balanced", "True"), "Healthy", "imbalance 0.42"),
    (
        _policy("ProposalReady", "True", proposal="proposal 5e0c1d2a9b7f ready"),
        "Healthy",
        "proposal 5e0c1d2a9b7f ready",
    ),
    (
        _policy(
            "ProposalReady",
            "True",
            proposal="p",
            message="proposal 5e0c1d2a9b7f (observe mode: not executed)",
        ),
        "Healthy",
        "(observe mode: not executed)",
    ),
    (
        _policy("AwaitingApproval", "True", proposal="waits"),
        "Suspended",
        "Proposal 5e0c1d2a9b7f (2 moves) awaits approval: " + APPROVE,
    ),
    (_policy("AwaitingApproval", "Unknown"), "Suspended", "Proposal awaits approval: " + APPROVE),
    (
        _policy("AwaitingApproval", "False", "LoadSourceUnreachable", proposal="waits"),
        "Degraded",
        "LoadSourceUnreachable",
    ),
    (_policy("Executing", "True"), "Progressing", "imbalance 0.42"),
    (
        _policy("Executing", "True", message="1 move(s) running, 2 waiting"),
        "Progressing",
        "1 move(s) running, 2 waiting",
    ),
    (_policy("Executing", "False", "LoadSourceUnreachable"), "Progressing", "imbalance"),
    (
        _policy("AwaitingApproval", "True", proposal="waits", generation=2),
        "Progressing",
        "observe generation 2",
    ),
    (_policy("Executing", "True", generation=3, observed=2), "Progressing", "generation 3"),
    (_policy("Failed", "False", "MoveFailed"), "Degraded", "imbalance 0.42"),
    (_policy("Observing", "False", "DomainMapNotFound"), "Degraded", "DomainMapNotFound"),
    (_policy("Observing", "False", "InvalidSpec"), "Degraded", "InvalidSpec"),
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda p: p.parent.name)
@pytest.mark.parametrize(("obj", "expected", "text"), POLICY_CASES)
def test_policy_health(check: Path, obj: dict[str, Any], expected: str, text: str) -> None:
    status, message = health(check.read_text(), obj)
    assert (status, text in message) == (expected, True), message


def test_every_kind_shares_one_script() -> None:
    """One script: a fix for one kind is a fix for all (the files are links to it)."""
    (original,) = [c for c in CHECKS if not c.is_symlink()]
    assert all(c.resolve() == original.resolve() for c in CHECKS)


def test_argocd_cm_snippet_matches_the_lua_files() -> None:
    config = yaml.safe_load((ARGOCD / "argocd-cm-health.yaml").read_text())
    for check in CHECKS:
        key = f"resource.customizations.health.librarian.dev_{check.parent.name}"
        assert config["data"][key] == check.read_text()


def test_every_crd_kind_has_a_health_check() -> None:
    kinds = {
        d["spec"]["names"]["kind"]
        for p in (REPO / "crds").glob("*.yaml")
        for d in yaml.safe_load_all(p.read_text())
        if d
        and d.get("kind") == "CustomResourceDefinition"
        and d["spec"]["group"] == "librarian.dev"
    }
    assert kinds <= {c.parent.name for c in CHECKS}
