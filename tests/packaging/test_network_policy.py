"""The router's NetworkPolicy: on by default, ingress only from the peers in values, egress
only to DNS, the Kubernetes API and the Qdrant clusters; the plain manifests likewise."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import CHART, REPO, ROUTER_KEYS, helm_template, kustomize, run, tool


def _router_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (policy,) = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["metadata"]["labels"].get("app.kubernetes.io/component", "") != "operator"
        and d["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "router"
    ]
    return policy


def _egress_ports(policy: dict[str, Any]) -> list[set[tuple[int, str]]]:
    return [
        {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
        for rule in policy["spec"]["egress"]
    ]


def _selects_router_pods(policy: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    (router,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    ]
    labels = router["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["metadata"]["namespace"] == router["metadata"]["namespace"]


def test_on_by_default_with_ingress_from_the_release_namespace_only() -> None:
    docs = helm_template()
    policy = _router_policy(docs)
    _selects_router_pods(policy, docs)
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["spec"]["ingress"]
    # The REST and gRPC APIs and the metrics.
    assert ingress["ports"] == [{"port": 6333}, {"port": 6334}, {"port": 9090}]
    assert ingress["from"] == [{"podSelector": {}}]  # pods of the release namespace
    dns, api_server, qdrant = _egress_ports(policy)
    assert dns == {(53, "UDP"), (53, "TCP")}
    assert api_server == {(443, "TCP"), (6443, "TCP")}
    assert qdrant == {(6333, "TCP"), (6334, "TCP"), (443, "TCP")}


def test_ingress_and_egress_peers_come_from_values() -> None:
    docs = helm_template(
        "--set-json",
        'networkPolicy.routerIngressFrom=[{"namespaceSelector":{"matchLabels":'
        '{"kubernetes.io/metadata.name":"search"}}},{"podSelector":{"matchLabels":'
        '{"app":"indexer"}}}]',
        "--set-json",
        'networkPolicy.qdrant={"ports":[6333],"to":[{"namespaceSelector":{"matchLabels":'
        '{"kubernetes.io/metadata.name":"qdrant"}}}]}',
        "--set-json",
        'networkPolicy.apiServer={"ports":[6443],"to":[{"ipBlock":{"cidr":"10.0.0.1/32"}}]}',
    )
    policy = _router_policy(docs)
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "search"}}},
        {"podSelector": {"matchLabels": {"app": "indexer"}}},
    ]
    _, api_server, qdrant = policy["spec"]["egress"]
    assert api_server == {
        "ports": [{"port": 6443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
    }
    assert qdrant == {
        "ports": [{"port": 6333, "protocol": "TCP"}],
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "qdrant"}}}],
    }


def test_an_empty_ingress_list_is_refused_not_opened_to_everyone() -> None:
    result = run(
        tool("helm"),
        "template",
        "lib",
        str(CHART),
        "--set-json",
        "networkPolicy.routerIngressFrom=[]",
        *ROUTER_KEYS,
    )
    assert result.returncode != 0
    assert "routerIngressFrom is empty" in result.stderr


def test_can_be_turned_off() -> None:
    docs = helm_template("--set", "networkPolicy.enabled=false")
    assert not [d for d in docs if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("source", ["chart", "manifests"])
def test_operator_accepts_only_probe_and_metrics(source: str) -> None:
    docs = helm_template() if source == "chart" else kustomize(REPO / "manifests/base")
    (policy,) = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "operator"
    ]
    (ingress,) = policy["spec"]["ingress"]
    assert {p["port"] for p in ingress["ports"]} == {8080, 9090}


def test_plain_manifests_have_the_same_router_policy() -> None:
    docs = kustomize(REPO / "manifests/base")
    policy = _router_policy(docs)
    _selects_router_pods(policy, docs)
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["from"] == [{"podSelector": {}}]
    assert [p["port"] for p in ingress["ports"]] == [6333, 6334]
    dns, api_server, qdrant = _egress_ports(policy)
    assert dns == {(53, "UDP"), (53, "TCP")}
    assert api_server == {(443, "TCP"), (6443, "TCP")}
    assert {6333, 6334} <= {port for port, _ in qdrant}


def test_the_grpc_port_is_admitted_where_it_is_served() -> None:
    policy = _router_policy(helm_template("--set", "router.grpc.port=7334"))
    (ingress,) = policy["spec"]["ingress"]
    assert {"port": 7334} in ingress["ports"]
    policy = _router_policy(helm_template("--set", "router.grpc.enabled=false"))
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": 6333}, {"port": 9090}]
