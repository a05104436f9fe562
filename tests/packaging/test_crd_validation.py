"""Examples accepted and malformed objects refused by the CRDs: schema, defaults and CEL rules.

Every cross-field rule is checked twice: by the API server (CEL in the CRD) and
by the operator (``librarian.k8s.spec``) for what an older API server lets
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

from librarian.k8s.spec import SpecError, parse_domainmap_spec, parse_specialization_spec

from .crd_schema import GROUP, REPO, load_crds, rules, storage_schema, validate

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
    return copy.deepcopy(next(doc for _, doc in _examples() if doc["kind"] == kind))


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


def test_every_kind_has_an_enum_a_required_and_a_cel_case() -> None:
    for kind in OURS:
        ids = {case for k, case, _, _ in CASES if k == kind}
        assert {"wrong-enum", "missing-required"} <= ids, kind
        messages = {m.message for m, _ in rules(storage_schema(OURS[kind]))}
        assert messages, f"{kind} has no CEL rule"


def test_every_cel_rule_is_broken_by_a_case() -> None:
    expected = {text for _, _, _, text in CASES}
    for kind, crd in OURS.items():
        for rule, _ in rules(storage_schema(crd)):
            assert any(text in rule.message for text in expected), (kind, rule)


SHAPE_ONLY = {"wrong-enum", "missing-required", "bad-url", "bad-override"}


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [(k, m, e) for k, case, m, e in CASES if case not in SHAPE_ONLY],
    ids=[f"{k}-{case}" for k, case, _, _ in CASES if case not in SHAPE_ONLY],
)
def test_the_operator_refuses_what_the_api_server_refuses(
    kind: str, mutate: Mutation, expected: str
) -> None:
    doc = _example(kind)
    mutate(doc)
    with pytest.raises(SpecError):
        if kind == "DomainMap":
            parse_domainmap_spec(doc["spec"], name="x")
        else:
            parse_specialization_spec(doc["spec"])


def test_defaults_are_applied_before_the_rules() -> None:
    """``specialize`` defaults to manual, so a DomainMap without targets is accepted."""
    doc = _example("DomainMap")
    del doc["spec"]["specialize"], doc["spec"]["specialization"]
    assert validate(doc, OURS["DomainMap"]) == []


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
