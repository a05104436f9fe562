"""The chart's permissions: namespaced by default, cluster-wide on request, exactly the verbs used."""

from __future__ import annotations

from typing import Any

from .conftest import helm_template
from .rbac_calls import (
    OPERATOR,
    OPERATOR_CLUSTER_WIDE,
    OWNER_FINALIZERS,
    PEERING_CLUSTER,
    PEERING_NAMESPACED,
    ROUTER,
    SECRETS,
    granted,
    merge,
    triples,
    without,
)


def _of(docs: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = _of(docs, "Deployment", "operator")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _bound(docs: list[dict[str, Any]], role: dict[str, Any], binding_kind: str) -> dict[str, Any]:
    """The binding of ``role``; it names the role and a service account the chart runs pods as."""
    (binding,) = [
        d
        for d in docs
        if d["kind"] == binding_kind
        and d["roleRef"]["name"] == role["metadata"]["name"]
        and d["metadata"].get("namespace") == role["metadata"].get("namespace")
    ]
    assert binding["roleRef"]["kind"] == role["kind"]
    accounts = {
        d["spec"]["template"]["spec"]["serviceAccountName"]
        for d in docs
        if d["kind"] == "Deployment"
    }
    (subject,) = binding["subjects"]
    assert subject["kind"] == "ServiceAccount"
    assert subject["name"] in accounts
    return binding


def test_default_is_namespaced_with_exactly_the_verbs_the_operator_uses() -> None:
    docs = helm_template()
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = _of(docs, "Role", "operator")
    assert role["metadata"]["namespace"] == "ops"
    assert granted(role["rules"]) == triples(OPERATOR)
    _bound(docs, role, "RoleBinding")
    assert "--namespace=ops" in _operator(docs)["args"]


def test_watched_namespaces_each_get_a_role() -> None:
    docs = helm_template("--set", "operator.watchNamespaces={team-a,team-b}")
    roles = [
        r for r in _of(docs, "Role", "operator") if not r["metadata"]["name"].endswith("-service")
    ]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    # The release namespace is not watched: only the router's Service may be read there
    # (a policy's routerRef names it).
    (service,) = [r for r in _of(docs, "Role", "operator") if r not in roles]
    assert service["metadata"]["namespace"] == "ops"
    assert service["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["services"],
            "resourceNames": ["lib-qdrant-librarian-router"],
            "verbs": ["get"],
        }
    ]
    _bound(docs, service, "RoleBinding")
    for role in roles:
        assert granted(role["rules"]) == triples(OPERATOR)
        _bound(docs, role, "RoleBinding")
    args = _operator(docs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def test_cluster_wide_is_an_option() -> None:
    docs = helm_template("--set", "rbac.clusterWide=true")
    (role,) = _of(docs, "ClusterRole", "operator")
    assert granted(role["rules"]) == triples(
        without(merge(OPERATOR, OPERATOR_CLUSTER_WIDE), SECRETS)
    )
    _bound(docs, role, "ClusterRoleBinding")
    assert not [a for a in _operator(docs)["args"] if a.startswith("--namespace")]
    # Secrets: a Role in the release namespace only, not every Secret of the cluster.
    (secrets,) = _of(docs, "Role", "operator")
    assert secrets["metadata"]["namespace"] == "ops"
    assert granted(secrets["rules"]) == triples(SECRETS)
    _bound(docs, secrets, "RoleBinding")


def test_cluster_wide_reads_secrets_only_in_the_listed_namespaces() -> None:
    docs = helm_template(
        "--set", "rbac.clusterWide=true", "--set", "rbac.secretNamespaces={team-a,team-b}"
    )
    roles = _of(docs, "Role", "operator")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert granted(role["rules"]) == triples(SECRETS)
        _bound(docs, role, "RoleBinding")


def test_cluster_wide_and_watched_namespaces_exclude_each_other() -> None:
    from .conftest import CHART, ROUTER_KEYS, run, tool

    result = run(
        tool("helm"),
        "template",
        "lib",
        str(CHART),
        "--set",
        "rbac.clusterWide=true",
        "--set",
        "operator.watchNamespaces={a}",
        *ROUTER_KEYS,
    )
    assert result.returncode != 0
    assert "exclude each other" in result.stderr


def test_peering_adds_exactly_the_peering_verbs() -> None:
    (role,) = _of(helm_template("--set", "replicaCount=3"), "Role", "operator")
    assert granted(role["rules"]) == triples(merge(OPERATOR, PEERING_NAMESPACED))
    (role,) = _of(
        helm_template("--set", "replicaCount=3", "--set", "rbac.clusterWide=true"),
        "ClusterRole",
        "operator",
    )
    assert granted(role["rules"]) == triples(
        without(merge(OPERATOR, OPERATOR_CLUSTER_WIDE, PEERING_CLUSTER), SECRETS)
    )


def test_router_reads_only_in_the_domainmap_namespace() -> None:
    for value, namespace in (("packages", "ops"), ("search/library", "search")):
        docs = helm_template(
            "--set", f"router.domainMap={value}", "--set", "router.credentialSecrets={keys}"
        )
        (role,) = _of(docs, "Role", "router")
        assert role["metadata"]["namespace"] == namespace
        assert granted(role["rules"]) == triples(ROUTER)
        binding = _bound(docs, role, "RoleBinding")
        (router,) = _of(docs, "Deployment", "router")
        assert (
            binding["subjects"][0]["name"]
            == (router["spec"]["template"]["spec"]["serviceAccountName"])
        )
        assert (
            binding["subjects"][0]["name"]
            != (
                _of(docs, "Deployment", "operator")[0]["spec"]["template"]["spec"][
                    "serviceAccountName"
                ]
            )
        )  # the router does not run with the operator's permissions


def _secret_rules(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in role["rules"] if "secrets" in r["resources"]]


def test_router_reads_only_the_secrets_named_in_values() -> None:
    """Secret ``get`` by resourceNames only; without names, no Secret at all (not every one)."""
    (role,) = _of(helm_template(), "Role", "router")
    assert _secret_rules(role) == []
    assert granted(role["rules"]) == triples(without(ROUTER, SECRETS))
    docs = helm_template("--set", "router.credentialSecrets={qdrant-general,qdrant-fast}")
    (role,) = _of(docs, "Role", "router")
    assert _secret_rules(role) == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["qdrant-general", "qdrant-fast"],
            "verbs": ["get"],
        }
    ]


SECRET_RENDERINGS = (
    [],
    ["--set", "rbac.clusterWide=true", "--set", "replicaCount=2"],
    ["--set", "operator.watchNamespaces={a,b}", "--set", "router.credentialSecrets={k}"],
    ["--set", "rbac.clusterWide=true", "--set", "router.credentialSecrets={k}"],
)


def test_secrets_are_never_readable_cluster_wide() -> None:
    """No ClusterRole names Secrets; the operator's Secret rules live in namespaced Roles,
    the router's carry resourceNames."""
    for args in SECRET_RENDERINGS:
        for doc in helm_template(*args):
            if doc["kind"] == "ClusterRole":
                assert not [r for r in doc["rules"] if "secrets" in r["resources"]], args
            if doc["kind"] != "Role":
                continue
            component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            for rule in _secret_rules(doc):
                assert rule["verbs"] == ["get"], (args, rule)
                if component == "router":
                    assert rule.get("resourceNames"), (args, rule)


def test_no_rbac_when_not_asked() -> None:
    docs = helm_template("--set", "rbac.create=false")
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole")]


# The deletions: a rebalancing move removes the ClusterSpecialization it created once
# that copy is rolled back or replaced, and a newer analysis of a DomainMap removes the
# labeling Job of the older one. Nothing else is ever deleted by the operator.
DELETABLE = {("librarian.dev", "clusterspecializations"), ("batch", "jobs")}


def test_least_privilege_everywhere() -> None:
    """No rendering grants wildcards, update (but on owners' finalizers), Secret listing, or
    delete beyond DELETABLE."""
    for args in ([], ["--set", "rbac.clusterWide=true", "--set", "replicaCount=2"]):
        for doc in helm_template(*args):
            if doc["kind"] not in ("Role", "ClusterRole"):
                continue
            component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            for group, resource, verb in granted(doc["rules"]):
                assert "*" not in (group, resource, verb)
                assert verb not in ("deletecollection", "escalate", "bind")
                if verb == "update":
                    assert (group, resource) in OWNER_FINALIZERS, (group, resource)
                assert not (resource == "secrets" and verb in ("list", "watch"))
                if verb == "delete":
                    assert component == "operator"
                    assert (group, resource) in DELETABLE


def test_the_operator_may_delete_only_what_a_move_creates() -> None:
    deletions = {(g, r) for (g, r), verbs in OPERATOR.items() if "delete" in verbs}
    assert deletions == DELETABLE
    for table in (OPERATOR_CLUSTER_WIDE, PEERING_NAMESPACED, PEERING_CLUSTER, ROUTER):
        assert not any("delete" in verbs for verbs in table.values())


def test_rebalancing_permissions() -> None:
    """A RebalancePolicy is followed and annotated, its status written; moves manage specializations."""
    (role,) = _of(helm_template(), "Role", "operator")
    rules = granted(role["rules"])
    for verb in ("get", "list", "watch", "patch"):
        assert ("librarian.dev", "rebalancepolicies", verb) in rules
    assert ("librarian.dev", "rebalancepolicies/status", "patch") in rules
    for verb in ("get", "create", "patch", "delete"):
        assert ("librarian.dev", "clusterspecializations", verb) in rules
    (router,) = _of(helm_template(), "Role", "router")
    assert not {r for _, r, _ in granted(router["rules"])} & {
        "rebalancepolicies",
        "rebalancepolicies/status",
    }


def test_plain_manifests_grant_exactly_the_verbs_used() -> None:
    from .conftest import REPO, kustomize

    docs = kustomize(REPO / "manifests/base")
    (operator,) = _of(docs, "ClusterRole", "operator")
    assert granted(operator["rules"]) == triples(
        without(merge(OPERATOR, OPERATOR_CLUSTER_WIDE), SECRETS)
    )
    _bound(docs, operator, "ClusterRoleBinding")
    (router,) = _of(docs, "ClusterRole", "router")
    assert granted(router["rules"]) == triples(without(ROUTER, SECRETS))
    _bound(docs, router, "ClusterRoleBinding")
    # Secrets: namespaced Roles where the README applies the examples; the router's by name.
    (operator_secrets,) = _of(docs, "Role", "operator")
    assert operator_secrets["metadata"]["namespace"] == "qdrant-librarian"
    assert granted(operator_secrets["rules"]) == triples(SECRETS)
    _bound(docs, operator_secrets, "RoleBinding")
    (router_secrets,) = _of(docs, "Role", "router")
    assert router_secrets["metadata"]["namespace"] == "qdrant-librarian"
    assert _secret_rules(router_secrets) == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["qdrant-general"],
            "verbs": ["get"],
        }
    ]
    _bound(docs, router_secrets, "RoleBinding")
    assert not [
        d for d in docs if d["kind"] == "ClusterRole" and _secret_rules(d)
    ]  # no Secret of any namespace is readable through a ClusterRole


def test_the_operator_may_set_block_owner_deletion_where_it_is_enforced() -> None:
    """OwnerReferencesPermissionEnforcement (OpenShift) admits a Job whose owner reference
    sets blockOwnerDeletion only from whoever may update the owner's finalizers: every
    rendering (namespaced, per watched namespace, cluster-wide) and the plain manifests grant
    exactly that update, for both kinds that own Jobs."""
    from .conftest import REPO, kustomize, sample_labeling_job, sample_migration_job

    needed = triples(OWNER_FINALIZERS)
    renderings = (
        [],
        ["--set", "operator.watchNamespaces={a,b}"],
        ["--set", "rbac.clusterWide=true"],
    )
    for args in renderings:
        roles = [
            d
            for d in helm_template(*args)
            if d["kind"] in ("Role", "ClusterRole")
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
            and granted(d["rules"]) & triples(OPERATOR)
            and not granted(d["rules"]) <= triples(SECRETS)
            # the release namespace's Role for the router Service alone (not watched there)
            and not granted(d["rules"]) <= {("", "services", "get")}
        ]
        assert roles, args
        for role in roles:
            assert needed <= granted(role["rules"]), (args, role["metadata"])
    (cluster_role,) = _of(kustomize(REPO / "manifests/base"), "ClusterRole", "operator")
    assert needed <= granted(cluster_role["rules"])
    # ...and those are the owners of the Jobs the operator creates, with blockOwnerDeletion.
    owners = {
        (ref["kind"], ref["blockOwnerDeletion"])
        for job in (sample_migration_job(), sample_labeling_job())
        for ref in job["metadata"]["ownerReferences"]
    }
    assert owners == {("ClusterSpecialization", True), ("DomainMap", True)}
    assert {("librarian.dev", f"{kind.lower()}s/finalizers") for kind, _ in owners} == set(
        OWNER_FINALIZERS
    )


def test_a_router_of_several_libraries_reads_in_each_of_their_namespaces() -> None:
    """One Role (and RoleBinding to the router's account) per namespace of its DomainMaps;
    a bare Secret name is readable in each, NAMESPACE/NAME only in that namespace."""
    docs = helm_template(
        "--set", "router.domainMaps={packages,search/articles,search/papers}",
        "--set", "router.credentialSecrets={shared,search/articles-key,elsewhere/unused}",
    )  # fmt: skip
    roles = {r["metadata"]["namespace"]: r for r in _of(docs, "Role", "router")}
    assert sorted(roles) == ["ops", "search"]
    (router,) = _of(docs, "Deployment", "router")
    account = router["spec"]["template"]["spec"]["serviceAccountName"]
    for role in roles.values():
        assert granted(role["rules"]) == triples(ROUTER)
        assert _bound(docs, role, "RoleBinding")["subjects"][0]["name"] == account
    assert _secret_rules(roles["ops"])[0]["resourceNames"] == ["shared"]
    assert _secret_rules(roles["search"])[0]["resourceNames"] == ["shared", "articles-key"]


def test_a_router_of_every_library_lists_domainmaps_in_its_namespace_only() -> None:
    docs = helm_template(
        "--set", "router.allDomainMaps=true", "--set", "router.allDomainMapsNamespace=search"
    )  # fmt: skip
    (role,) = _of(docs, "Role", "router")
    assert role["metadata"]["namespace"] == "search"
    assert granted(role["rules"]) == triples(without(ROUTER, SECRETS))
    assert {"list", "watch"} <= set(
        next(r for r in role["rules"] if "domainmaps" in r["resources"])["verbs"]
    )
    assert not [
        d
        for d in docs
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding") and "router" in d["metadata"]["name"]
    ]
