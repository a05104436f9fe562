"""Plain manifests, CRD structure, and every example validated against its CRD schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import REPO, run, tool

CRDS = {
    (d["spec"]["group"], d["spec"]["names"]["kind"]): d
    for path in sorted((REPO / "crds").glob("*.yaml"))
    for d in yaml.safe_load_all(path.read_text())
    if d and d.get("kind") == "CustomResourceDefinition"
}


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_kustomize_base_renders_with_the_crds() -> None:
    result = run(tool("kubectl"), "kustomize", str(REPO / "manifests/base"))
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "Namespace"} <= kinds
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d["kind"] == "Deployment"
    }
    assert set(deployments) == {"operator", "router"}
    assert deployments["operator"]["spec"]["strategy"]["type"] == "Recreate"
    assert deployments["operator"]["spec"]["replicas"] == 1
    router = deployments["router"]["spec"]["template"]["spec"]["containers"][0]
    assert router["args"] == [
        "router",
        "--host",
        "0.0.0.0",
        "--port",
        "6333",
        "--metrics-port",
        "9090",
        "--grpc-port",
        "6334",
        "--domainmap",
        "qdrant-librarian/packages",
    ]
    assert router["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The router's key comes from the Secret the README names; without it, no router starts.
    keys = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in router["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert keys["LIBRARIAN_ROUTER_API_KEY"] == {"name": "librarian-router-keys", "key": "api-key"}
    assert "optional" not in keys["LIBRARIAN_ROUTER_API_KEY"]
    for optional in (
        "LIBRARIAN_ROUTER_API_KEY_SECONDARY",
        "LIBRARIAN_ROUTER_READ_ONLY_API_KEY",
        "LIBRARIAN_ROUTER_READ_ONLY_API_KEY_SECONDARY",
    ):
        assert keys[optional]["name"] == "librarian-router-keys"
        assert keys[optional]["optional"] is True
    assert {p["name"]: p["containerPort"] for p in router["ports"]} == {
        "http": 6333,
        "grpc": 6334,
        "metrics": 9090,
    }
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["ports"][0]["port"] == 6333
    assert service["spec"]["ports"][1] == {
        "name": "grpc",
        "port": 6334,
        "targetPort": "grpc",
        "appProtocol": "grpc",
    }
    assert service["spec"]["ports"][2] == {"name": "metrics", "port": 9090, "targetPort": "metrics"}
    assert service["spec"]["selector"].items() <= (
        deployments["router"]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_crds_kustomization_lists_every_crd_file() -> None:
    listed = yaml.safe_load((REPO / "crds/kustomization.yaml").read_text())["resources"]
    files = sorted(p.name for p in (REPO / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == files


@pytest.mark.parametrize("key", sorted(k for k in CRDS if k[0] == "librarian.dev"))
def test_crd_is_structural_with_status_and_columns(key: tuple[str, str]) -> None:
    crd = CRDS[key]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    assert version["subresources"] == {"status": {}}
    assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Phase", "Ready", "Age"}
    names = crd["spec"]["names"]
    assert names["categories"] == ["librarian"]
    assert names["shortNames"]
    schema = _schema(crd)
    assert schema["type"] == "object"
    assert schema["properties"]["spec"]["type"] == "object"
    assert schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True
    jsonschema.Draft4Validator.check_schema(
        {k: v for k, v in schema.items() if not k.startswith("x-")}
    )


def _examples() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted((REPO / "manifests/examples").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["apiVersion"].startswith("librarian.dev/")
    ]


def test_the_domainmap_example_exists() -> None:
    assert any(doc["kind"] == "DomainMap" for _, doc in _examples())


@pytest.mark.parametrize(("path", "doc"), _examples(), ids=lambda v: getattr(v, "name", ""))
def test_examples_validate_against_their_crd(path: Path, doc: dict[str, Any]) -> None:
    crd = CRDS[(doc["apiVersion"].split("/")[0], doc["kind"])]
    jsonschema.validate(doc, _schema(crd), cls=jsonschema.Draft4Validator)


def test_schema_rejects_a_bad_domainmap() -> None:
    schema = _schema(CRDS[("librarian.dev", "DomainMap")])
    bad = {
        "spec": {
            "source": {"cluster": "a", "collection": "b"},
            "clusters": [{"name": "a", "url": "ftp://x"}],
            "strategy": "spectral",
        }
    }
    errors = list(jsonschema.Draft4Validator(schema).iter_errors(bad))
    assert {e.validator for e in errors} >= {"enum", "pattern"}
