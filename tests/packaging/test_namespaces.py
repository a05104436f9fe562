"""Namespaces and names line up: what the README applies lands where each install looks.

A DomainMap created in a namespace the operator does not watch is never
picked up, and a Secret the operator may not read there fails it; a policy
that names a router Service no install creates never reads any load. These
tests render the real chart and kustomize base, read the README's install
commands and the examples, and check that they agree: the namespaces the
operator is told to watch have the permissions it needs there, the examples
carry no namespace of their own and go where the README applies them, and
the router the example policy names is the Service each install creates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO, helm_template, kustomize
from .rbac_calls import granted

README = (REPO / "README.md").read_text()
EXAMPLES = sorted((REPO / "manifests/examples").glob("*.yaml"))
INSTALLS = ("Install with kubectl apply", "Install with Helm", "Your first library")

# What the operator must be allowed in every namespace it watches (besides kopf's own).
NEEDED_IN_WATCHED = {
    *(
        ("librarian.dev", kind, verb)
        for kind in ("domainmaps", "clusterspecializations", "rebalancepolicies")
        for verb in ("get", "list", "watch", "patch")
    ),
    *(
        ("librarian.dev", f"{kind}/status", "patch")
        for kind in ("domainmaps", "clusterspecializations", "rebalancepolicies")
    ),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "get"),
    ("", "secrets", "get"),
    ("", "services", "get"),
    ("", "events", "create"),
}


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _commands(section: str) -> Iterator[str]:
    """The console commands of a README section, continuation lines joined."""
    for block in re.findall(r"```console\n(.*?)```", section, re.DOTALL):
        joined = block.replace("\\\n", " ")
        yield from (line[2:] for line in joined.splitlines() if line.startswith("$ "))


def readme_namespace() -> str:
    """The one namespace the install guides use (``NS=...``), the same in each."""
    found = {
        match for title in INSTALLS for match in re.findall(r"^\$ NS=(\S+)$", _section(title), re.M)
    }
    assert len(found) == 1, f"the install guides set NS to {found or 'nothing'}"
    return found.pop()


def readme_release() -> str:
    (release,) = re.findall(r"helm install (\S+) charts/qdrant-librarian", _section(INSTALLS[1]))
    return release


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _example(kind: str) -> dict[str, Any]:
    """The example of ``kind`` in its own file (``domainmap.yaml`` for DomainMap)."""
    (doc,) = _docs(REPO / "manifests/examples" / f"{kind.lower()}.yaml")
    assert doc["kind"] == kind
    return doc


def _container(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _watched(docs: list[dict[str, Any]]) -> list[str]:
    """The namespaces the operator is told to watch (none: every namespace)."""
    args = _container(docs, "operator")["args"]
    return [a.split("=", 1)[1] for a in args if a.startswith("--namespace=")]


def _operator_account(docs: list[dict[str, Any]]) -> tuple[str, str]:
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    return (
        deployment["metadata"]["namespace"],
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
    )


def _operator_grants(docs: list[dict[str, Any]], namespace: str) -> set[tuple[str, str, str]]:
    """What the operator's service account may do in ``namespace``: Roles bound there, and
    ClusterRoles bound cluster-wide."""
    account_namespace, account = _operator_account(docs)
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    allowed: set[tuple[str, str, str]] = set()
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] != namespace:
            continue
        subjects = {
            (s.get("namespace"), s["name"])
            for s in binding["subjects"]
            if s["kind"] == "ServiceAccount"
        }
        if (account_namespace, account) not in subjects:
            continue
        ref = binding["roleRef"]
        role_namespace = None if ref["kind"] == "ClusterRole" else namespace
        role = roles.get((ref["kind"], role_namespace, ref["name"]))
        assert role is not None, f"{binding['kind']} {binding['metadata']['name']}: no {ref}"
        allowed |= granted(role["rules"])
    return allowed


def test_the_examples_name_no_namespace() -> None:
    """`kubectl apply -n NS -f` puts them anywhere; a namespace in the file would win over it
    (or make kubectl refuse) and send them where no operator looks."""
    for path in EXAMPLES:
        for doc in _docs(path):
            assert "namespace" not in doc["metadata"], f"{path.name}: {doc['metadata']}"


def test_the_readme_creates_everything_in_one_namespace() -> None:
    namespace = readme_namespace()
    assert namespace == "qdrant-librarian"  # where the manifests and Argo CD install
    for title in INSTALLS:
        for command in _commands(_section(title)):
            words = command.split()
            if words[:1] != ["kubectl"] or "-k" in words or words[1:3] == ["create", "namespace"]:
                continue
            if words[1:3] in (["create", "secret"], ["label", "secret"]) or words[1] in (
                "apply",
                "get",
            ):
                assert '-n "$NS"' in command, f"{title}: `{command}` names no namespace"
    helm = " ".join(c for c in _commands(_section(INSTALLS[1])) if c.startswith("helm install"))
    assert '--namespace "$NS"' in helm


def test_the_plain_manifests_serve_and_grant_the_readme_namespace() -> None:
    namespace = readme_namespace()
    docs = kustomize(REPO / "manifests/base")
    assert _watched(docs) == []  # every namespace, with a ClusterRole
    assert _operator_grants(docs, namespace) >= NEEDED_IN_WATCHED
    # Secrets only where the README puts them: not in another namespace.
    assert ("", "secrets", "get") not in _operator_grants(docs, "elsewhere")
    args = _container(docs, "router")["args"]
    assert args[args.index("--domainmap") + 1] == f"{namespace}/packages"
    assert _example("DomainMap")["metadata"]["name"] == "packages"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((), None),  # None: the release namespace
        (("--set", "operator.watchNamespaces={team-a,team-b}"), ["team-a", "team-b"]),
        (("--set", "operator.watchNamespaces={team-a,qdrant-librarian}"), None),
    ],
    ids=["release-namespace", "two-others", "one-other-and-the-release-namespace"],
)
def test_the_chart_grants_what_the_operator_needs_where_it_watches(
    values: tuple[str, ...], expected: list[str] | None
) -> None:
    namespace = readme_namespace()
    docs = helm_template(*values, namespace=namespace, release=readme_release())
    watched = _watched(docs)
    if expected is None:
        assert namespace in watched
    else:
        assert watched == expected
    for each in watched:
        missing = NEEDED_IN_WATCHED - _operator_grants(docs, each)
        assert not missing, f"the operator watches {each} but may not {sorted(missing)} there"
    assert ("", "secrets", "get") not in _operator_grants(docs, "not-watched")
    assert not _operator_grants(docs, "not-watched") & NEEDED_IN_WATCHED
    # A policy's routerRef names this release's router: readable even when the release
    # namespace is not watched.
    assert ("", "services", "get") in _operator_grants(docs, namespace)


def test_the_cluster_wide_chart_grants_our_kinds_everywhere() -> None:
    namespace = readme_namespace()
    docs = helm_template(
        "--set", "rbac.clusterWide=true", namespace=namespace, release=readme_release()
    )
    assert _watched(docs) == []
    assert NEEDED_IN_WATCHED - {("", "secrets", "get")} <= _operator_grants(docs, "any")
    assert _operator_grants(docs, namespace) >= NEEDED_IN_WATCHED  # Secrets: here only
    assert ("", "secrets", "get") not in _operator_grants(docs, "any")


def _router_service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (service,) = [
        d
        for d in docs
        if d["kind"] == "Service"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    ]
    return service


def test_the_example_policy_names_the_router_each_install_creates() -> None:
    from librarian.kube.policy_spec import parse_policy_spec
    from librarian.operator.router_ref import service_port

    namespace = readme_namespace()
    policy = _example("RebalancePolicy")
    ref = parse_policy_spec(policy["spec"]).router_ref
    assert ref is not None
    assert ref.namespace is None  # the policy's namespace: where the README applies it
    argocd = yaml.safe_load((REPO / "manifests/argocd/application.yaml").read_text())["spec"]
    installs = {
        "kubectl apply -k manifests/base": kustomize(REPO / "manifests/base"),
        "helm install (README)": helm_template(namespace=namespace, release=readme_release()),
        "Argo CD": helm_template(
            namespace=argocd["destination"]["namespace"],
            release=argocd["source"]["helm"]["releaseName"],
        ),
    }
    for install, docs in installs.items():
        service = _router_service(docs)
        assert (service["metadata"]["name"], service["metadata"]["namespace"]) == (
            ref.name,
            namespace,
        ), install
        assert service_port(service, ref.port) == 6333, install


def test_argo_cd_installs_where_the_readme_applies() -> None:
    namespace = readme_namespace()
    app = yaml.safe_load((REPO / "manifests/argocd/application.yaml").read_text())["spec"]
    assert app["destination"]["namespace"] == namespace
    values = app["source"]["helm"].get("valuesObject") or {}
    assert "watchNamespaces" not in (values.get("operator") or {})  # the release namespace
    docs = helm_template(namespace=namespace, release=app["source"]["helm"]["releaseName"])
    assert _watched(docs) == [namespace]
    assert _operator_grants(docs, namespace) >= NEEDED_IN_WATCHED
