"""Examples accepted and malformed objects refused by the CRDs: schema, defaults and CEL rules.

Every cross-field rule is checked twice: by the API server (CEL in the CRD) and
by the operator (``librarian.kube.spec``) for what an older API server lets
through. Each rule here is broken by at least one case, and the operator's
parser must refuse the same case.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from librarian.core.planner import parse_window
from librarian.kube.fleets import fleet_clusters
from librarian.kube.policy_spec import parse_policy_spec
from librarian.kube.spec import (
    SpecError,
    fleet_ref_of,
    parse_domainmap_spec,
    parse_fleet_spec,
    parse_specialization_spec,
)

from .crd_schema import GROUP, REPO, apply_defaults, load_crds, rules, storage_schema, validate

CRDS = load_crds()
OURS = {kind: crd for (group, kind), crd in CRDS.items() if group == GROUP}


def _examples() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted((REPO / "manifests/examples").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["apiVersion"].startswith(f"{GROUP}/")
    ]


def _example(kind: str) -> dict[str, Any]:
    """The example of ``kind``; a DomainMap written inline (the clusters of the fleet it names
    in spec.clusters), the form whose cluster rules the cases below break one by one."""
    doc = copy.deepcopy(next(doc for _, doc in _examples() if doc["kind"] == kind))
    if kind == "DomainMap" and "fleetRef" in doc["spec"]:
        fleet = _example("QdrantFleet")
        assert fleet["metadata"]["name"] == doc["spec"].pop("fleetRef")["name"]
        doc["spec"]["clusters"] = fleet["spec"]["clusters"]
    return doc


@pytest.mark.parametrize(("path", "doc"), _examples(), ids=lambda v: getattr(v, "name", ""))
def test_every_example_is_accepted(path: Path, doc: dict[str, Any]) -> None:
    crd = CRDS[(doc["apiVersion"].split("/")[0], doc["kind"])]
    assert validate(doc, crd) == []


def test_every_kind_has_an_example() -> None:
    assert {doc["kind"] for _, doc in _examples()} == set(OURS)


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


# (kind, case id, mutation of the example, expected text of one error: a CEL rule's message)
CASES: list[tuple[str, str, Mutation, str]] = [
    ("DomainMap", "wrong-enum", _set("spec.strategy", "spectral"), "is not one of"),
    (
        "DomainMap",
        "missing-required",
        _drop("spec.source.collection"),
        "'collection' is a required",
    ),
    ("DomainMap", "bad-url", _set("spec.clusters.0.url", "ftp://x"), "does not match"),
    ("DomainMap", "no-labeling-workers", _set("spec.labeling.workers", 0), "less than the minimum"),
    (
        "DomainMap",
        "too-many-workers",
        _set("spec.labeling.workers", 65),
        "greater than the maximum",
    ),
    (
        "DomainMap",
        "source-not-in-fleet",
        _set("spec.source.cluster", "elsewhere"),
        "spec.source.cluster must name one of spec.clusters",
    ),
    (
        "DomainMap",
        "url-and-embedded",
        _set("spec.clusters.0.url", "http://qdrant:6333"),
        "needs exactly one of url (remote Qdrant) or embedded",
    ),
    (
        "DomainMap",
        "neither-url-nor-embedded",
        _set("spec.clusters.1", {"name": "fast"}),
        "needs exactly one of url (remote Qdrant) or embedded",
    ),
    (
        "DomainMap",
        "secret-and-env",
        _set(
            "spec.clusters.0",
            {
                "name": "general",
                "url": "https://q:6333",
                "apiKeySecretRef": {"name": "s"},
                "apiKeyEnv": "KEY",
            },
        ),
        "apiKeySecretRef or apiKeyEnv, not both",
    ),
    (
        "DomainMap",
        "clusters-and-fleetref",
        _set("spec.fleetRef", {"name": "qdrant"}),
        "give exactly one of spec.fleetRef",
    ),
    (
        "DomainMap",
        "neither-clusters-nor-fleetref",
        _drop("spec.clusters"),
        "give exactly one of spec.fleetRef",
    ),
    (
        "QdrantFleet",
        "fleet-url-and-embedded",
        _set("spec.clusters.0.url", "http://qdrant:6333"),
        "needs exactly one of url (remote Qdrant) or embedded",
    ),
    (
        "QdrantFleet",
        "fleet-secret-and-env",
        _set(
            "spec.clusters.0",
            {
                "name": "general",
                "url": "https://q:6333",
                "apiKeySecretRef": {"name": "s"},
                "apiKeyEnv": "KEY",
            },
        ),
        "apiKeySecretRef or apiKeyEnv, not both",
    ),
    (
        "QdrantFleet",
        "ca-bundle-configmap-and-secret",
        _set("spec.clusters.0.caBundle", {"configMap": "ca", "secret": "ca"}),
        "a caBundle names a configMap or a secret, not both",
    ),
    (
        "QdrantFleet",
        "wrong-type",
        _set("spec.clusters.0.timeoutSeconds", "soon"),
        "is not of type",
    ),
    ("QdrantFleet", "missing-required", _drop("spec.clusters"), "'clusters' is a required"),
    (
        "QdrantFleet",
        "capacity-not-a-quantity",
        _set("spec.clusters.0.capacity", {"memory": "lots"}),
        "does not match",
    ),
    (
        "DomainMap",
        "catalog-not-in-fleet",
        _set("spec.catalog.cluster", "elsewhere"),
        "spec.catalog.cluster must name one of spec.clusters",
    ),
    (
        "DomainMap",
        "target-not-in-fleet",
        _set("spec.specialization.targets", [{"cluster": "mars"}]),
        "specialization.targets[].cluster must name one of spec.clusters",
    ),
    (
        "DomainMap",
        "auto-without-targets",
        _drop("spec.specialization"),
        "spec.specialize: auto needs spec.specialization.targets",
    ),
    (
        "DomainMap",
        "custom-target",
        _set("spec.specialization.targets.0.strategy", "custom"),
        "is not one of",
    ),
    (
        "DomainMap",
        "bounds-inverted",
        _set("spec.bounds", {"minDomains": 9, "maxDomains": 3}),
        "minDomains must not be larger than spec.bounds.maxDomains",
    ),
    (
        "DomainMap",
        "zero-partitions",
        _set("spec.bounds", {"partitions": 0, "minPartitionSize": 100}),
        "less than the minimum",
    ),
    (
        "DomainMap",
        "duplicate-cluster",
        _set("spec.clusters.2", {"name": "fast", "embedded": ".demo/bulk"}),
        "Duplicate value",
    ),
    ("ClusterSpecialization", "wrong-enum", _set("spec.strategy", "fastest"), "is not one of"),
    ("ClusterSpecialization", "missing-required", _drop("spec.target"), "'target' is a required"),
    (
        "ClusterSpecialization",
        "bad-override",
        _set("spec.overrides.quantization", "fp8"),
        "is not one of",
    ),
    (
        "ClusterSpecialization",
        "custom-without-overrides",
        lambda doc: (_set("spec.strategy", "custom")(doc), _drop("spec.overrides")(doc)),
        "spec.strategy custom needs spec.overrides",
    ),
    (
        "ClusterSpecialization",
        "cleanup-without-verify",
        lambda doc: (
            _set("spec.migration.cleanupSource", True)(doc),
            _set("spec.migration.verify", False)(doc),
        ),
        "cleanupSource needs verify",
    ),
    (
        "ClusterSpecialization",
        "source-without-collection",
        _set("spec.source", {"cluster": "general"}),
        "'collection' is a required",
    ),
    ("RebalancePolicy", "wrong-enum", _set("spec.mode", "manual"), "is not one of"),
    ("RebalancePolicy", "missing-required", _drop("spec.domainMap"), "'domainMap' is a required"),
    (
        "RebalancePolicy",
        "bad-duration",
        _set("spec.analysisInterval", "15 minutes"),
        "does not match",
    ),
    (
        "RebalancePolicy",
        "negative-imbalance",
        _set("spec.thresholds.loadImbalance", -0.1),
        "less than the minimum",
    ),
    (
        "RebalancePolicy",
        "capacity-usage-zero",
        _set("spec.thresholds.capacityUsage", 0),
        "less than or equal to the minimum",
    ),
    (
        "RebalancePolicy",
        "too-many-migrations",
        _set("spec.constraints.maxConcurrentMigrations", 17),
        "greater than the maximum",
    ),
    (
        "RebalancePolicy",
        "window-without-times",
        _set("spec.constraints.maintenanceWindows", ["Saturday night"]),
        "does not match",
    ),
    (
        "RebalancePolicy",
        "bad-quantity",
        _set("spec.capacity.0.memory", "8 GB"),
        "does not match",
    ),
    (
        "RebalancePolicy",
        "router-url-without-scheme",
        _set("spec.loadSource.routerUrls", ["librarian-router:6333"]),
        "does not match",
    ),
    (
        "RebalancePolicy",
        "duplicate-capacity",
        _set("spec.capacity.2", {"cluster": "fast", "memory": "1Gi"}),
        "Duplicate value",
    ),
    (
        "RebalancePolicy",
        "duplicate-pinned-domain",
        _set("spec.constraints.pinnedDomains", ["d3", "d3"]),
        "Duplicate value",
    ),
    (
        "RebalancePolicy",
        "auto-without-load-source",
        lambda doc: (_set("spec.mode", "auto")(doc), _drop("spec.loadSource")(doc)),
        "spec.mode auto needs spec.loadSource.routerRef or routerUrls, or spec.strategy capacity_based",
    ),
    (
        "RebalancePolicy",
        "load-source-without-router",
        _set("spec.loadSource", {}),
        "spec.loadSource needs routerRef (the router's Service) or routerUrls",
    ),
    (
        "RebalancePolicy",
        "pinned-and-excluded",
        lambda doc: (
            _set("spec.constraints.pinnedDomains", ["fast"])(doc),
            _set("spec.constraints.excludedClusters", ["fast"])(doc),
        ),
        "listed in both spec.constraints.pinnedDomains and excludedClusters",
    ),
    (
        "RebalancePolicy",
        "window-start-is-end",
        _set("spec.constraints.maintenanceWindows", ["Sat,Sun 02:00-02:00"]),
        "a maintenance window's start and end differ",
    ),
]
# spec.job: the migration Job's pod settings; the operator refuses each of these too.
CASES += [
    (
        "ClusterSpecialization",
        "job-node-selector-not-a-string",
        _set("spec.job", {"nodeSelector": {"gpu": True}}),
        "is not of type 'string'",
    ),
    (
        "ClusterSpecialization",
        "job-bad-quantity",
        _set("spec.job", {"resources": {"limits": {"memory": "lots"}}}),
        "does not match",
    ),
    (
        "ClusterSpecialization",
        "job-bad-toleration-operator",
        _set("spec.job", {"tolerations": [{"key": "a", "operator": "Sometimes"}]}),
        "is not one of",
    ),
    (
        "ClusterSpecialization",
        "job-pull-secret-without-name",
        _set("spec.job", {"imagePullSecrets": [{}]}),
        "'name' is a required",
    ),
]


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [(kind, mutate, expected) for kind, _, mutate, expected in CASES],
    ids=[f"{kind}-{case}" for kind, case, _, _ in CASES],
)
def test_malformed_objects_are_refused_with_the_rule_message(
    kind: str, mutate: Mutation, expected: str
) -> None:
    doc = _example(kind)
    mutate(doc)
    errors = validate(doc, OURS[kind])
    assert any(expected in error for error in errors), errors


def _has_enum(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "enum" in schema or any(_has_enum(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_enum(v) for v in schema)
    return False


def test_every_kind_has_an_enum_a_required_and_a_cel_case() -> None:
    for kind in OURS:
        ids = {case for k, case, _, _ in CASES if k == kind}
        spec = storage_schema(OURS[kind])["properties"]["spec"]
        assert "missing-required" in ids, kind
        assert "wrong-enum" in ids or not _has_enum(spec), kind
        messages = {m.message for m, _ in rules(storage_schema(OURS[kind]))}
        assert messages, f"{kind} has no CEL rule"


def test_every_cel_rule_is_broken_by_a_case() -> None:
    expected = {text for _, _, _, text in CASES}
    for kind, crd in OURS.items():
        for rule, _ in rules(storage_schema(crd)):
            assert any(text in rule.message for text in expected), (kind, rule)


# Refused by the API server only: shapes, and limits the operator has no reason to
# repeat (it caps concurrent migrations itself and reads pinned domains as a set).
SHAPE_ONLY = {
    "wrong-enum",
    "wrong-type",
    "missing-required",
    "bad-url",
    "bad-override",
    "too-many-migrations",
    "duplicate-pinned-domain",
}


def _parse(kind: str, spec: dict[str, Any]) -> object:
    """The operator's own check of a spec (raises SpecError); a DomainMap's fleetRef is
    resolved with the example QdrantFleet of that name."""
    if kind == "DomainMap":
        fleet_name = fleet_ref_of(spec)
        fleets = [doc for _, doc in _examples() if doc["kind"] == "QdrantFleet"]
        fleet = next((f for f in fleets if f["metadata"]["name"] == fleet_name), None)
        return parse_domainmap_spec(
            spec, name="x", fleet=fleet_clusters(fleet, fleet_name) if fleet else None
        )
    if kind == "QdrantFleet":
        return parse_fleet_spec(spec, name="x")
    if kind == "ClusterSpecialization":
        return parse_specialization_spec(spec)
    return parse_policy_spec(spec)


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [pytest.param(k, m, e, id=f"{k}-{case}") for k, case, m, e in CASES if case not in SHAPE_ONLY],
)
def test_the_operator_refuses_what_the_api_server_refuses(
    kind: str, mutate: Mutation, expected: str
) -> None:
    doc = _example(kind)
    mutate(doc)
    with pytest.raises(SpecError):
        _parse(kind, doc["spec"])


@pytest.mark.parametrize(("path", "doc"), _examples(), ids=lambda v: getattr(v, "name", ""))
def test_the_operator_accepts_every_example(path: Path, doc: dict[str, Any]) -> None:
    assert _parse(doc["kind"], doc["spec"]) is not None


def test_defaults_are_applied_before_the_rules() -> None:
    """``specialize`` defaults to manual, so a DomainMap without targets is accepted."""
    doc = _example("DomainMap")
    del doc["spec"]["specialize"], doc["spec"]["specialization"]
    assert validate(doc, OURS["DomainMap"]) == []


def test_a_minimal_policy_observes_with_the_hybrid_strategy() -> None:
    """Only the DomainMap is required; mode and strategy default to observe and hybrid."""
    doc = {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "RebalancePolicy",
        "metadata": {"name": "p"},
        "spec": {"domainMap": "packages"},
    }
    crd = OURS["RebalancePolicy"]
    assert validate(doc, crd) == []
    spec = apply_defaults(storage_schema(crd), doc)["spec"]
    assert (spec["mode"], spec["strategy"]) == ("observe", "hybrid")


@pytest.mark.parametrize(
    ("spec", "accepted"),
    [
        ({"mode": "auto", "strategy": "capacity_based"}, True),
        ({"mode": "auto"}, False),
        ({"mode": "auto", "loadSource": {"routerUrls": ["http://r:6333"]}}, True),
        ({"mode": "auto", "loadSource": {"routerRef": {"name": "qdrant-librarian-router"}}}, True),
        ({"loadSource": {}}, False),  # names no router
        ({"loadSource": {"routerRef": {"name": "Router.x"}}}, False),  # not a Service name
        ({"loadSource": {"routerRef": {"name": "6333-router"}}}, False),  # starts with a letter
        ({"loadSource": {"routerRef": {"name": "r", "port": 70000}}}, False),
        ({"mode": "approve"}, True),
    ],
)
def test_auto_mode_without_router_figures_is_for_capacity_only(
    spec: dict[str, Any], accepted: bool
) -> None:
    doc = {"kind": "RebalancePolicy", "spec": {"domainMap": "packages", **spec}}
    assert (validate(doc, OURS["RebalancePolicy"]) == []) is accepted


@pytest.mark.parametrize(
    ("window", "accepted"),
    [
        ("01:00-05:00", True),
        ("Sat,Sun 01:00-05:00", True),
        ("Fri 22:00-02:00", True),  # crosses midnight
        ("Mon,Tue,Wed,Thu,Fri,Sat,Sun 00:00-23:59", True),
        ("Mon-Fri 22:00-02:00", True),
        ("Fri-Mon,Wed 01:00-05:00", True),  # a range may wrap over the weekend
        ("00:00-24:00", True),  # the whole day
        ("24:00-05:00", False),
        ("Sat 01:00-24:30", False),
        ("Mon- 01:00-05:00", False),
        ("Mon 05:00-05:00", False),
        ("23:59-23:59", False),
        ("Sat,Sun01:00-05:00", False),
        ("sat 01:00-05:00", False),
        ("Sat, Sun 01:00-05:00", False),
        ("1:00-5:00", False),
    ],
)
def test_maintenance_window_syntax(window: str, accepted: bool) -> None:
    """The API server's pattern is the canonical form; the operator reads every window it accepts."""
    doc = {
        "kind": "RebalancePolicy",
        "spec": {"domainMap": "packages", "constraints": {"maintenanceWindows": [window]}},
    }
    assert (validate(doc, OURS["RebalancePolicy"]) == []) is accepted
    if accepted:
        parse_window(window)


@pytest.mark.parametrize("kind", sorted(OURS))
def test_lists_are_bounded_for_the_cel_cost_budget(kind: str) -> None:
    """The API server refuses rules whose worst-case cost is unbounded: every list has maxItems."""

    def arrays(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
        found = [(path, schema)] if schema.get("type") == "array" else []
        for name, child in (schema.get("properties") or {}).items():
            found += arrays(child, f"{path}.{name}")
        if isinstance(schema.get("items"), dict):
            found += arrays(schema["items"], f"{path}[]")
        return found

    for path, schema in arrays(storage_schema(OURS[kind])["properties"]["spec"], "spec"):
        assert "maxItems" in schema, path


def test_substring_behaves_as_on_the_api_server() -> None:
    """The rules may use ``substring`` (Kubernetes' CEL strings library); ours matches it."""
    import celpy

    from .crd_schema import _program

    assert _program('"Sat 01:00-05:00".substring(4, 9)').evaluate({}) == "01:00"
    assert _program('"Sat 01:00-05:00".substring(10)').evaluate({}) == "05:00"
    with pytest.raises(celpy.CELEvalError):
        _program('"05:00".substring(3, 9)').evaluate({})


def test_a_job_override_within_the_schema_is_accepted() -> None:
    doc = _example("ClusterSpecialization")
    doc["spec"]["job"] = {
        "resources": {"requests": {"cpu": "500m", "memory": 1073741824}, "limits": {"cpu": 2}},
        "nodeSelector": {"pool": "highmem"},
        "tolerations": [{"key": "highmem", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
        "podAnnotations": {"team": "search"},
        "imagePullSecrets": [{"name": "registry"}],
    }
    assert validate(doc, OURS["ClusterSpecialization"]) == []
    parsed = parse_specialization_spec(doc["spec"])
    assert parsed.job.node_selector == {"pool": "highmem"}
