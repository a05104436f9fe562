"""The schema of a ``PrometheusRule`` (monitoring.coreos.com/v1), as the Prometheus Operator's CRD
and Prometheus' rule loader constrain it.

Why this exists: no Kubernetes schema bundle carries the Prometheus Operator's
kinds, so a typo in the chart's PrometheusRule (``expresion``, ``for: 10 min``)
would pass ``helm template`` and be refused only by the cluster, or loaded and
silently never fire. This schema refuses unknown fields at every level and
checks durations, label names and the alert/record choice the way the CRD
and Prometheus do; every ``expr`` is parsed with a PromQL parser, as
Prometheus does when it loads the rules.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import promql_parser

__all__ = ["SCHEMA", "prometheus_rule_errors"]

# The CRD's pattern for a Prometheus duration (y, w, d, h, m, s, ms, in that order).
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
LABELS = {
    "type": "object",
    "propertyNames": {"pattern": LABEL_NAME},
    "additionalProperties": {"type": "string"},
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "properties": {
        "alert": {"type": "string", "minLength": 1},
        "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": LABELS,
        "annotations": STRING_MAP,
    },
    # Only one of record and alert; annotations and for only on alerts.
    "oneOf": [
        {"required": ["alert"], "not": {"required": ["record"]}},
        {
            "required": ["record"],
            "not": {
                "anyOf": [
                    {"required": ["alert"]},
                    {"required": ["for"]},
                    {"required": ["annotations"]},
                ]
            },
        },
    ],
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                    "maxLength": 253,
                },
                "namespace": {"type": "string"},
                "labels": STRING_MAP,
                "annotations": STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "query_offset": DURATION,
                            "limit": {"type": "integer"},
                            "partial_response_strategy": {
                                "type": "string",
                                "pattern": "^(?i:abort|warn)?$",
                            },
                            "labels": LABELS,
                            "rules": {"type": "array", "items": RULE},
                        },
                    },
                }
            },
        },
    },
}


def prometheus_rule_errors(doc: dict[str, Any]) -> list[str]:
    """Why the Prometheus Operator, or Prometheus loading the rules, would refuse ``doc``."""
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = [
        f"at {'.'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]
    groups = (doc.get("spec") or {}).get("groups") or []
    names = [g.get("name") for g in groups]
    errors += [f"group {n!r} appears twice" for n in set(names) if names.count(n) > 1]
    for group in groups:
        for rule in group.get("rules") or []:
            try:
                promql_parser.parse(str(rule.get("expr")))
            except ValueError as error:
                errors.append(f"{rule.get('alert') or rule.get('record')}: {error}")
    return errors
