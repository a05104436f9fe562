"""The Helm chart with a real helm: lint, render, CRDs from the single source, values schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, REPO, run, tool


def _render(*extra: str) -> list[dict[str, Any]]:
    result = run(
        tool("helm"), "template", "lib", str(CHART), "--namespace", "ops", "--include-crds", *extra
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_helm_lint_strict() -> None:
    result = run(tool("helm"), "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_render_runs_one_operator_safely() -> None:
    docs = _render()
    (deployment,) = _kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    container = pod["containers"][0]
    assert container["args"][0] == "operator"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LIBRARIAN_IMAGE"] == container["image"]  # migration Jobs use the same image
    assert _kind(docs, "ServiceAccount") and _kind(docs, "ClusterRoleBinding")


def test_crds_come_from_the_single_source() -> None:
    rendered = _kind(_render(), "CustomResourceDefinition")
    sources = [
        d
        for path in sorted((REPO / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d and d.get("kind") == "CustomResourceDefinition"
    ]
    assert rendered == sources
    assert (CHART / "crds").is_symlink()


def test_config_and_embedded_storage_render() -> None:
    docs = _render(
        "--set",
        "config.domain_discovery.strategy=kmeans",
        "--set",
        "embedded.enabled=true",
        "--set",
        "operator.watchNamespaces={team-a}",
    )
    (config,) = _kind(docs, "ConfigMap")
    data = yaml.safe_load(config["data"]["multi-cluster-managers.yaml"])
    assert data == {"multi_cluster_managers": {"domain_discovery": {"strategy": "kmeans"}}}
    container = _kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LIBRARIAN_CONFIG", "value": "/etc/librarian/multi-cluster-managers.yaml"} in (
        container["env"]
    )
    assert "--namespace=team-a" in container["args"]
    assert any(m["name"] == "embedded" for m in container["volumeMounts"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "operator.replicas=2"], "replicas"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "colour=blue"], "colour"),
        (["--set-string", "operator.livenessPort=http"], "livenessPort"),
    ],
)
def test_bad_values_are_rejected_by_the_schema(args: list[str], message: str) -> None:
    result = run(tool("helm"), "template", "lib", str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_rbac_covers_what_the_operator_touches() -> None:
    (role,) = _kind(_render(), "ClusterRole")
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    needed = [
        ("librarian.dev", "domainmaps", "watch"),
        ("librarian.dev", "domainmaps", "patch"),
        ("librarian.dev", "domainmaps/status", "patch"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("", "namespaces", "watch"),
        ("", "events", "create"),
        ("", "secrets", "get"),
        ("batch", "jobs", "create"),
    ]
    for item in needed:
        assert item in granted, item
    assert ("", "secrets", "list") not in granted  # least privilege: named Secrets only


def test_dockerfile_user_is_numeric_and_matches_the_chart() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    user = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER "))
    assert user.split(":")[0].isdigit()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(user.split(":")[0])


def test_packaged_chart_contains_the_crds(tmp_path: Path) -> None:
    result = run(tool("helm"), "package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    import tarfile

    (archive,) = tmp_path.glob("*.tgz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "qdrant-librarian/crds/domainmap.yaml" in names
    assert "qdrant-librarian/crds/kustomization.yaml" not in names
