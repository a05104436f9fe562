"""The Helm chart with a real helm: lint, render, CRDs from the single source, values schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, REPO, ROUTER_KEYS, helm_template, run, tool

_render = helm_template


def _kind(
    docs: list[dict[str, Any]], kind: str, component: str | None = None
) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (
            component is None
            or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        )
    ]


def _pod(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (deployment,) = _kind(docs, "Deployment", component)
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_helm_lint_strict() -> None:
    result = run(tool("helm"), "lint", "--strict", str(CHART), *ROUTER_KEYS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_render_runs_one_operator_safely() -> None:
    docs = _render()
    (deployment,) = _kind(docs, "Deployment", "operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
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
    assert "LIBRARIAN_PEERING" not in env  # standalone: no peering with one replica
    assert _kind(docs, "ServiceAccount")
    assert _kind(docs, "RoleBinding")
    assert not _kind(docs, "KopfPeering")
    assert not _kind(docs, "ClusterKopfPeering")


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
    container = _pod(docs, "operator")["containers"][0]
    assert {"name": "LIBRARIAN_CONFIG", "value": "/etc/librarian/multi-cluster-managers.yaml"} in (
        container["env"]
    )
    assert "--namespace=team-a" in container["args"]
    assert any(m["name"] == "embedded" for m in container["volumeMounts"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=0"], "replicaCount"),
        (["--set", "operator.replicas=2"], "replicas"),
        (["--set", "router.domainMap=Not/A Name"], "domainMap"),
        (["--set", "router.domainMaps={ok,Not/A Name}"], "domainMaps"),
        (["--set", "router.domainMaps={same,same}"], "domainMaps"),
        (["--set", "router.allDomainMaps=yes"], "allDomainMaps"),
        (["--set", "router.credentialSecrets={a/b/c}"], "credentialSecrets"),
        (["--set", "router.port=70000"], "port"),
        (["--set", "metrics.serviceMonitor.interval=often"], "interval"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "colour=blue"], "colour"),
        (["--set-string", "operator.livenessPort=http"], "livenessPort"),
    ],
)
def test_bad_values_are_rejected_by_the_schema(args: list[str], message: str) -> None:
    result = run(tool("helm"), "template", "lib", str(CHART), *ROUTER_KEYS, *args)
    assert result.returncode != 0
    assert message in result.stderr


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


def test_several_replicas_use_kopf_peering_with_distinct_priorities() -> None:
    docs = _render("--set", "replicaCount=3")
    (deployment,) = _kind(docs, "Deployment", "operator")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    (peering,) = _kind(docs, "KopfPeering")
    assert peering["metadata"]["namespace"] == "ops"
    assert env["LIBRARIAN_PEERING"]["value"] == peering["metadata"]["name"]
    # Each pod's priority comes from its own name (see librarian.operator.runtime.peering_from_env).
    assert env["LIBRARIAN_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    crds = {d["metadata"]["name"] for d in _kind(docs, "CustomResourceDefinition")}
    assert {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds

    docs = _render("--set", "replicaCount=2", "--set", "rbac.clusterWide=true")
    assert len(_kind(docs, "ClusterKopfPeering")) == 1
    assert not _kind(docs, "KopfPeering")


def test_router_deployment_and_service() -> None:
    docs = _render("--set", "router.domainMap=search/library", "--set", "router.replicas=2")
    (deployment,) = _kind(docs, "Deployment", "router")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "router",
        "--host",
        "0.0.0.0",
        "--port",
        "6333",
        "--domainmap",
        "search/library",
        "--metrics-port",
        "9090",
        "--grpc-port",
        "6334",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 6333, "grpc": 6334, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (service,) = _kind(docs, "Service", "router")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 6333, "targetPort": "http"},
        {"name": "grpc", "port": 6334, "targetPort": "grpc", "appProtocol": "grpc"},
        {"name": "metrics", "port": 9090, "targetPort": "metrics"},
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    operator_labels = _kind(docs, "Deployment", "operator")[0]["spec"]["template"]["metadata"]
    assert not service["spec"]["selector"].items() <= operator_labels["labels"].items()


def test_the_router_s_grpc_port_follows_values_and_can_be_off() -> None:
    docs = _render("--set", "router.grpc.port=7334")
    container = _pod(docs, "router")["containers"][0]
    assert container["args"][-2:] == ["--grpc-port", "7334"]
    assert {"name": "grpc", "containerPort": 7334} in container["ports"]
    (service,) = _kind(docs, "Service", "router")
    assert {"name": "grpc", "port": 7334, "targetPort": "grpc", "appProtocol": "grpc"} in (
        service["spec"]["ports"]
    )
    docs = _render("--set", "router.grpc.enabled=false")
    container = _pod(docs, "router")["containers"][0]
    assert container["args"][-2:] == ["--grpc-port", "0"]  # 0: the router serves no gRPC
    assert "grpc" not in {p["name"] for p in container["ports"]}
    (service,) = _kind(docs, "Service", "router")
    assert "grpc" not in {p["name"] for p in service["spec"]["ports"]}


def _router_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container = _pod(docs, "router")["containers"][0]
    return {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}


def test_the_router_reads_its_keys_from_secrets() -> None:
    docs = _render(
        "--set", "router.auth.apiKeySecret.key=rw",
        "--set", "router.auth.apiKeySecondarySecret.name=next-keys",
        "--set", "router.auth.readOnlyApiKeySecret.name=reader-keys",
    )  # fmt: skip
    env = _router_env(docs)
    assert env["LIBRARIAN_ROUTER_API_KEY"] == {"name": "librarian-router-keys", "key": "rw"}
    assert env["LIBRARIAN_ROUTER_API_KEY_SECONDARY"] == {"name": "next-keys", "key": "api-key"}
    assert env["LIBRARIAN_ROUTER_READ_ONLY_API_KEY"] == {
        "name": "reader-keys",
        "key": "read-only-api-key",
    }
    assert "LIBRARIAN_ROUTER_READ_ONLY_API_KEY_SECONDARY" not in env  # not given: not set
    # The operator reads the routers' load with the read-only key (the read-write one if none).
    operator_env = {
        e["name"]: e.get("valueFrom", {}).get("secretKeyRef")
        for e in _pod(docs, "operator")["containers"][0]["env"]
    }
    assert operator_env["LIBRARIAN_ROUTER_READ_ONLY_API_KEY"] == {
        "name": "reader-keys",
        "key": "read-only-api-key",
    }
    assert "LIBRARIAN_ROUTER_API_KEY" not in operator_env
    operator_env = {e["name"] for e in _pod(_render(), "operator")["containers"][0]["env"]}
    assert "LIBRARIAN_ROUTER_API_KEY" in operator_env
    args = _pod(docs, "router")["containers"][0]["args"]
    assert "--insecure" not in args
    assert "--passthrough" not in args  # nothing passes through by default


def test_the_chart_refuses_a_router_without_a_key_unless_told_insecure() -> None:
    result = run(tool("helm"), "template", "lib", str(CHART))
    assert result.returncode != 0
    assert "router.auth.apiKeySecret.name" in result.stderr
    assert "router.auth.insecure=true" in result.stderr
    result = run(
        tool("helm"), "template", "lib", str(CHART),
        "--set", "router.auth.readOnlyApiKeySecret.name=reader-keys",
        "--set", "router.auth.insecure=true",
    )  # fmt: skip
    assert result.returncode != 0
    assert "without a read-write key every caller could write" in result.stderr
    result = run(tool("helm"), "template", "lib", str(CHART), "--set", "router.auth.insecure=true")
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert "--insecure" in _pod(docs, "router")["containers"][0]["args"]
    assert not [name for name in _router_env(docs) if name.startswith("LIBRARIAN_ROUTER_API")]
    # Without a router there is nothing to authenticate.
    result = run(tool("helm"), "template", "lib", str(CHART), "--set", "router.enabled=false")
    assert result.returncode == 0, result.stderr


def test_the_router_network_policy_admits_its_grpc_and_metrics_ports() -> None:
    docs = _render("--set", "networkPolicy.enabled=true")
    (policy,) = [
        d for d in _kind(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-router")
    ]
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [6333, 6334, 9090]


def test_pass_through_collections_are_listed_one_by_one() -> None:
    docs = _render("--set", "router.passthrough={legacy,other}")
    args = _pod(docs, "router")["containers"][0]["args"]
    assert args[args.index("--passthrough") :][:4] == [
        "--passthrough",
        "legacy",
        "--passthrough",
        "other",
    ]


def test_router_defaults_and_switch() -> None:
    docs = _render()
    args = _pod(docs, "router")["containers"][0]["args"]
    assert args[args.index("--domainmap") + 1] == "ops/packages"  # a bare name: release namespace
    assert args[args.index("--port") + 1] == "6333"
    docs = _render("--set", "router.enabled=false")
    assert not _kind(docs, "Deployment", "router")
    assert not _kind(docs, "Service", "router")


def test_metrics_and_service_monitors() -> None:
    docs = _render()
    assert not _kind(docs, "ServiceMonitor")
    container = _pod(docs, "operator")["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LIBRARIAN_METRICS_PORT"] == "9090"
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]

    docs = _render(
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=kps",
    )
    monitors = _kind(docs, "ServiceMonitor")
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {
        "operator",
        "router",
    }
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kps"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        # The monitor selects exactly one Service, and that Service has the named port.
        selected = [
            s
            for s in _kind(docs, "Service")
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, monitor["metadata"]["name"]
        assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
        pod = _pod(docs, monitor["metadata"]["labels"]["app.kubernetes.io/component"])
        assert endpoint["port"] in {p["name"] for p in pod["containers"][0]["ports"]}


def _sidecar_snippets() -> list[str]:
    """The sidecar container blocks shown in NOTES.txt (rendered) and the chart's README."""
    result = run(
        tool("helm"), "install", "--dry-run=client", "lib", str(CHART), "-n", "ops", *ROUTER_KEYS
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    readme = (CHART / "README.md").read_text().split("## The router as a sidecar", 1)[1]
    readme = readme.split("```yaml", 1)[1].split("```", 1)[0]
    return [
        notes.split("- name: librarian-router", 1)[1],
        readme.split("- name: librarian-router", 1)[1],
    ]


def test_sidecar_snippet_is_a_router_container_on_localhost() -> None:
    for text in _sidecar_snippets():
        block = "- name: librarian-router" + text
        lines = [line for line in block.splitlines() if line.strip()]
        indent = len(lines[1]) - len(lines[1].lstrip())
        body = "\n".join(["- name: librarian-router"] + [line[indent - 2 :] for line in lines[1:]])
        (container,) = yaml.safe_load(body)
        args = container["args"]
        assert args[:3] == ["router", "--host", "127.0.0.1"]
        assert args[args.index("--port") + 1] == "6333"
        assert "/" in args[args.index("--domainmap") + 1]
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "http://localhost:6333" in (CHART / "README.md").read_text()


def test_one_router_serves_the_listed_domainmaps() -> None:
    docs = _render("--set", "router.domainMaps={packages,search/articles}")
    args = _pod(docs, "router")["containers"][0]["args"]
    served = [args[i + 1] for i, arg in enumerate(args) if arg == "--domainmap"]
    assert served == ["ops/packages", "search/articles"]  # a bare name: release namespace
    assert "--all-domainmaps" not in args
    # router.domainMap alone still works, and stays one DomainMap
    args = _pod(_render("--set", "router.domainMap=search/library"), "router")["containers"][0]
    assert [a for a in args["args"] if a == "--domainmap"] == ["--domainmap"]
    assert args["args"][args["args"].index("--domainmap") + 1] == "search/library"


def test_one_router_serves_every_domainmap_of_a_namespace() -> None:
    args = _pod(_render("--set", "router.allDomainMaps=true"), "router")["containers"][0]["args"]
    assert args[args.index("--all-domainmaps") + 1] == "ops"  # default: the release namespace
    assert "--domainmap" not in args
    docs = _render(
        "--set", "router.allDomainMaps=true", "--set", "router.allDomainMapsNamespace=search"
    )
    args = _pod(docs, "router")["containers"][0]["args"]
    assert args[args.index("--all-domainmaps") + 1] == "search"
    result = run(
        tool("helm"), "template", "lib", str(CHART), *ROUTER_KEYS,
        "--set", "router.allDomainMaps=true", "--set", "router.domainMaps={packages}",
    )  # fmt: skip
    assert result.returncode != 0
    assert "leave router.domainMaps empty" in result.stderr
