"""Every schema node of every CRD has a description, so `kubectl explain` answers for each.

`kubectl explain domainmap.spec.clusters.url` prints a field's description and
nothing else a user can act on; an empty one leaves them to read the code. The
walk covers every file in ``crds/`` (a CRD added later is covered without
touching this test), every served version, properties, array ``items`` and
``additionalProperties`` schemas, and objects that keep unknown fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO

CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))


def _crds(path: Path) -> list[dict[str, Any]]:
    return [
        doc
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]


def undescribed(schema: dict[str, Any], path: str) -> Iterator[str]:
    """JSON paths under ``schema`` (itself included) whose ``description`` is missing or blank."""
    if not str(schema.get("description") or "").strip():
        yield path
    for name, child in (schema.get("properties") or {}).items():
        yield from undescribed(child, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict):
        yield from undescribed(items, f"{path}[]")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from undescribed(extra, f"{path}.*")


def test_the_walk_finds_items_maps_and_open_objects() -> None:
    schema = {
        "type": "object",
        "description": "root",
        "properties": {
            "list": {
                "type": "array",
                "description": "a list",
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
            "labels": {
                "type": "object",
                "description": "a map",
                "additionalProperties": {"type": "string", "description": " "},
            },
            "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    assert list(undescribed(schema, "spec")) == [
        "spec.list[]",
        "spec.list[].name",
        "spec.labels.*",
        "spec.open",
    ]


def test_every_crd_file_holds_a_crd() -> None:
    assert CRD_FILES
    for path in CRD_FILES:
        if path.name != "kustomization.yaml":
            assert _crds(path), f"{path.name} holds no CustomResourceDefinition"


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: p.name)
def test_every_schema_property_has_a_description(path: Path) -> None:
    missing = [
        f"{crd['spec']['names']['kind']} {version['name']}: {where}"
        for crd in _crds(path)
        for version in crd["spec"]["versions"]
        for where in undescribed(
            (version.get("schema") or {}).get("openAPIV3Schema") or {}, "openAPIV3Schema"
        )
    ]
    assert not missing, "schema nodes without a description:\n" + "\n".join(missing)
