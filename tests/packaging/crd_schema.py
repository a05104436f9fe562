"""Validate a custom resource the way the API server does: defaults, schema, CEL rules, list keys.

The API server applies a CRD's ``default`` values, validates the object against
``openAPIV3Schema``, enforces the keys of ``x-kubernetes-list-type: map`` and the
uniqueness of ``x-kubernetes-list-type: set``, and evaluates every
``x-kubernetes-validations`` rule with ``self`` bound to the value at that node.
This module does the same with ``jsonschema`` and ``celpy`` (a CEL
implementation, given the few Kubernetes CEL library functions our rules use),
so tests can prove which objects a cluster would refuse, and with which
message, without a cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes

REPO = Path(__file__).resolve().parents[2]
GROUP = "librarian.dev"


def load_crds() -> dict[tuple[str, str], dict[str, Any]]:
    """Every CRD in crds/, keyed by (group, kind)."""
    return {
        (d["spec"]["group"], d["spec"]["names"]["kind"]): d
        for path in sorted((REPO / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d and d.get("kind") == "CustomResourceDefinition"
    }


def storage_schema(crd: dict[str, Any]) -> dict[str, Any]:
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@dataclass(frozen=True)
class Rule:
    path: str
    rule: str
    message: str


def rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[Rule, dict[str, Any]]]:
    """Every CEL rule of ``schema`` with the schema node it sits on."""
    for item in schema.get("x-kubernetes-validations") or []:
        yield Rule(path or ".", item["rule"], item["message"]), schema
    for name, child in (schema.get("properties") or {}).items():
        yield from rules(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from rules(schema["additionalProperties"], f"{path}.*")


def _substring(text: celtypes.StringType, start: Any, end: Any = None) -> celtypes.StringType:
    """``string.substring(start[, end])`` of the CEL strings library Kubernetes enables."""
    first, last = int(start), len(text) if end is None else int(end)
    if not 0 <= first <= last <= len(text):
        raise ValueError(f"substring({first}, {last}) out of range for {str(text)!r}")
    return celtypes.StringType(text[first:last])


# Functions of Kubernetes' CEL libraries that celpy lacks, as the API server defines them.
KUBERNETES_FUNCTIONS: dict[str, Any] = {"substring": _substring}


@cache
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=KUBERNETES_FUNCTIONS)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill ``default`` values in place, as the API server does before validation."""
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                apply_defaults(child, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


def _cel_errors(schema: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    for item in schema.get("x-kubernetes-validations") or []:
        result = _program(item["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if not isinstance(result, celtypes.BoolType):
            yield f"{path or '.'}: rule {item['rule']!r} could not be evaluated: {result}"
        elif not result:
            yield f"{path or '.'}: {item['message']}"
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                yield from _cel_errors(child, value[name], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        yield from _list_errors(schema, value, path)
        for index, item in enumerate(value):
            yield from _cel_errors(schema["items"], item, f"{path}[{index}]")


def _list_errors(schema: dict[str, Any], value: list[Any], path: str) -> Iterator[str]:
    """Duplicate keys of a ``map`` list, duplicate items of a ``set`` list."""
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if schema.get("x-kubernetes-list-type") == "map":
        seen = [tuple(item.get(k) for k in keys) for item in value]
        for key in sorted({k for k in seen if seen.count(k) > 1}, key=str):
            yield f"{path}: Duplicate value: {dict(zip(keys, key, strict=True))}"
    elif schema.get("x-kubernetes-list-type") == "set":
        for item in sorted({i for i in value if value.count(i) > 1}, key=str):
            yield f"{path}: Duplicate value: {item!r}"


def validate(doc: dict[str, Any], crd: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse ``doc`` (empty when it is accepted)."""
    schema = storage_schema(crd)
    obj = apply_defaults(schema, copy.deepcopy(doc))
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}"
        for e in jsonschema.Draft4Validator(schema).iter_errors(obj)
    ]
    if errors:  # CEL rules assume a well-typed object (the API server skips them too)
        return errors
    return list(_cel_errors(schema, obj, ""))
