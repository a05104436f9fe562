"""What `helm install` prints after installing are the values that work in that release.

The NOTES name the router's in-cluster REST and gRPC addresses, the
namespaces the operator watches, the ``routerRef`` a RebalancePolicy puts in
its spec and the commands that create an API-key Secret where the operator
reads it. Each is checked here against the objects the same release renders
(``helm install --dry-run=client`` prints the NOTES offline; ``helm template``
renders the objects): a renamed Service, a changed port or another watch mode
that the NOTES did not follow fails a test.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from librarian.contracts.metadata import CREDENTIALS_LABEL
from librarian.kube.policy_spec import parse_policy_spec
from librarian.operator.router_ref import service_port

from .conftest import CHART, ROUTER_KEYS, helm_template, run, tool
from .test_namespaces import _operator_grants, _watched

RELEASE, NAMESPACE = "lib", "ops"

CASES = {
    "defaults": (),
    "watched-namespaces": ("--set", "operator.watchNamespaces={team-a,team-b}"),
    "cluster-wide": ("--set", "rbac.clusterWide=true", "--set", "rbac.secretNamespaces={ops,s}"),
    "cluster-wide-library-elsewhere": (
        "--set",
        "rbac.clusterWide=true",
        "--set",
        "router.domainMap=search/library",
    ),
    "ports-and-no-grpc": (
        "--set",
        "router.port=8080",
        "--set",
        "router.grpc.enabled=false",
    ),
    "grpc-port": ("--set", "router.grpc.port=16334"),
}


def _notes(*values: str) -> str:
    result = run(
        tool("helm"),
        "install",
        "--dry-run=client",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        *ROUTER_KEYS,
        *values,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:\n", 1)[1]


def _router_service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (service,) = [
        d
        for d in docs
        if d["kind"] == "Service"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    ]
    return service


def _port(service: dict[str, Any], name: str) -> int | None:
    ports = [p["port"] for p in service["spec"]["ports"] if p.get("name") == name]
    return ports[0] if ports else None


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_the_notes_print_the_rendered_router_and_namespaces(values: tuple[str, ...]) -> None:
    notes = _notes(*values)
    docs = helm_template(*values, namespace=NAMESPACE, release=RELEASE)
    service = _router_service(docs)
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"

    rest = re.findall(r"^  REST: (\S+)$", notes, re.M)
    assert rest == [f"http://{host}:{_port(service, 'http')}"]
    grpc = re.findall(r"^  gRPC: (\S+)$", notes, re.M)
    grpc_port = _port(service, "grpc")
    assert grpc == ([f"{host}:{grpc_port}"] if grpc_port else [])

    # The routerRef, pasted into a policy, is accepted and resolves to that Service's REST port.
    (snippet,) = re.findall(r"^  loadSource:\n    routerRef: .*$", notes, re.M)
    load_source = yaml.safe_load(snippet)["loadSource"]
    ref = parse_policy_spec({"domainMap": "packages", "loadSource": load_source}).router_ref
    assert ref is not None
    assert (ref.name, ref.namespace) == (service["metadata"]["name"], NAMESPACE)
    assert service_port(service, ref.port) == _port(service, "http")
    # The operator may read that Service, whatever it watches.
    assert ("", "services", "get") in _operator_grants(docs, NAMESPACE)

    watched = _watched(docs)
    (said,) = re.findall(r"^The operator watches (.*?)(?: with .*)?\.$", notes, re.M)
    assert said == (", ".join(watched) if watched else "all namespaces")

    # Every namespace a command names is one the operator watches.
    used = set(re.findall(r"kubectl \S+ (?:\S+ )*?-n (\S+)", notes))
    assert used
    assert not watched or used <= set(watched)
    # The credential Secret: created and labelled in one namespace, with the label the
    # operator requires; there the operator may read it, or the NOTES say it may not.
    (created,) = re.findall(r"kubectl create secret generic (\S+) -n (\S+)", notes)
    (labelled,) = re.findall(r"kubectl label secret (\S+) -n (\S+) (\S+)=true", notes)
    assert labelled == (*created, CREDENTIALS_LABEL)
    secret_namespace = created[1]
    if ("", "secrets", "get") not in _operator_grants(docs, secret_namespace):
        assert "WARNING: the operator reads Secrets only in" in notes
        assert f"add {secret_namespace} to rbac.secretNamespaces" in notes


def test_the_warning_appears_only_when_the_secret_cannot_be_read() -> None:
    assert "WARNING" not in _notes(*CASES["cluster-wide"])
    assert "WARNING" in _notes(*CASES["cluster-wide-library-elsewhere"])


@pytest.mark.parametrize(
    "values",
    [
        (),
        ("--set", "router.domainMaps={packages,search/docs}"),
        ("--set", "router.allDomainMaps=true", "--set", "router.allDomainMapsNamespace=search"),
    ],
    ids=["one", "several", "all-of-a-namespace"],
)
def test_the_notes_name_the_libraries_the_router_serves_and_its_sidecar_serves_the_same(
    values: tuple[str, ...],
) -> None:
    notes = _notes(*values)
    docs = helm_template(*values, namespace=NAMESPACE, release=RELEASE)
    (router,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    ]
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    served = [args[i + 1] for i, a in enumerate(args) if a == "--domainmap"]
    every = [args[i + 1] for i, a in enumerate(args) if a == "--all-domainmaps"]
    (said,) = re.findall(
        r"^The query router serves (.*?)(?: \(each library|$| in the)", notes, re.M
    )
    if every:
        assert said == f"every DomainMap of {every[0]}"
    elif len(served) > 1:
        assert said == f"DomainMaps {', '.join(served)}"
    else:
        assert said == f"DomainMap {served[0]}"
    (sidecar,) = re.findall(r'args: (\["router", .*\])', notes)
    sidecar_args = yaml.safe_load(sidecar)
    for flag in ("--domainmap", "--all-domainmaps"):
        wanted = [args[i + 1] for i, a in enumerate(args) if a == flag]
        got = [sidecar_args[i + 1] for i, a in enumerate(sidecar_args) if a == flag]
        assert got == wanted, flag
