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
]


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
