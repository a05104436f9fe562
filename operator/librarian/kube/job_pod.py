"""Where and how the operator's Job pods run: pull secrets, node placement, resources,
annotations, extra volumes and the internal CA bundle.

Why this exists: a cluster with a private registry, dedicated node pools, quotas
or https Qdrant behind an internal CA needs the Job pods (migration, analysis,
labeling) to carry settings the operator cannot guess. The chart renders its
``jobs`` values into one JSON environment variable of the operator,
``LIBRARIAN_JOB_POD_TEMPLATE``: an environment variable is part of the
Deployment's pod template, so changing a value rolls the operator (a mounted
ConfigMap would change under a running operator that never reads it again), and
it needs no extra object or RBAC. The operator parses it once at start and stops
with a message naming the bad key; a ClusterSpecialization may override part of
it for its own migration Job (``spec.job``), checked the same way and reported as
an ``InvalidSpec`` condition.

Every check here keeps the pods admissible under the "restricted" Pod Security
Standard (only the volume types it allows) and keeps the operator's own labels,
volumes and mounts out of reach.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from librarian.contracts.metadata import DOMAINMAP_LABEL, SPECIALIZATION_LABEL

__all__ = [
    "CA_BUNDLE_DIR",
    "CA_BUNDLE_FILE",
    "CA_BUNDLE_VOLUME",
    "JOB_POD_TEMPLATE_ENV",
    "OVERRIDABLE",
    "RESTRICTED_VOLUME_SOURCES",
    "CaBundleRef",
    "JobPodError",
    "JobPodSettings",
    "job_pod_from_env",
    "merge_job_pod",
    "parse_job_pod",
    "parse_quantity_value",
]

JOB_POD_TEMPLATE_ENV = "LIBRARIAN_JOB_POD_TEMPLATE"
"""The operator's environment variable holding the ``jobs`` values as JSON."""

CA_BUNDLE_VOLUME = "librarian-ca-bundle"
CA_BUNDLE_DIR = "/etc/librarian-ca"
CA_BUNDLE_FILE = f"{CA_BUNDLE_DIR}/ca.crt"
"""Where every pod (operator, router, Job) finds the CA bundle: the same path everywhere."""

_RESERVED_VOLUMES = {"tmp", CA_BUNDLE_VOLUME}
_RESERVED_PATHS = ("/tmp", CA_BUNDLE_DIR)
_RESERVED_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    DOMAINMAP_LABEL,
    SPECIALIZATION_LABEL,
    "job-name",
    "controller-uid",
}
_RESERVED_LABEL_PREFIXES = ("batch.kubernetes.io/",)

# The volume types the "restricted" Pod Security Standard admits.
RESTRICTED_VOLUME_SOURCES = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
)
_MOUNT_KEYS = {
    "name",
    "mountPath",
    "readOnly",
    "subPath",
    "subPathExpr",
    "mountPropagation",
    "recursiveReadOnly",
}
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_AFFINITY_KEYS = ("nodeAffinity", "podAffinity", "podAntiAffinity")

_ALL_KEYS = (
    "imagePullSecrets",
    "nodeSelector",
    "tolerations",
    "affinity",
    "resources",
    "podAnnotations",
    "podLabels",
    "extraVolumes",
    "extraVolumeMounts",
    "caBundle",
)
OVERRIDABLE = (
    "resources",
    "nodeSelector",
    "tolerations",
    "affinity",
    "podAnnotations",
    "imagePullSecrets",
)
"""What a ClusterSpecialization's ``spec.job`` may set for its migration Job."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_QUANTITY = re.compile(
    r"^(?P<number>[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


class JobPodError(ValueError):
    """Job pod settings are invalid; ``problems`` lists each with its path (e.g.
    ``jobs.tolerations[0].operator``)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class CaBundleRef:
    """PEM CA certificates in ``key`` of a ConfigMap or a Secret (exactly one is named)."""

    key: str = "ca.crt"
    config_map: str | None = None
    secret: str | None = None

    def volume(self) -> dict[str, Any]:
        """The pod volume presenting the bundle as ``ca.crt`` (the Job mounts it read-only)."""
        items = [{"key": self.key, "path": "ca.crt"}]
        if self.config_map:
            return {
                "name": CA_BUNDLE_VOLUME,
                "configMap": {"name": self.config_map, "items": items},
            }
        return {"name": CA_BUNDLE_VOLUME, "secret": {"secretName": self.secret, "items": items}}


@dataclass(frozen=True)
class JobPodSettings:
    """The pod settings of the operator's Jobs; ``None`` is "not set" (an override keeps
    the operator-wide value, the operator keeps its built-in default)."""

    image_pull_secrets: tuple[str, ...] | None = None
    node_selector: Mapping[str, str] | None = None
    tolerations: tuple[Mapping[str, Any], ...] | None = None
    affinity: Mapping[str, Any] | None = None
    resources: Mapping[str, Mapping[str, str]] | None = None
    pod_annotations: Mapping[str, str] | None = None
    pod_labels: Mapping[str, str] | None = None
    extra_volumes: tuple[Mapping[str, Any], ...] = ()
    extra_volume_mounts: tuple[Mapping[str, Any], ...] = ()
    ca_bundle: CaBundleRef | None = None


def _problem_path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _string_map(
    value: Any, where: str, problems: list[str], *, labels: bool = False
) -> dict[str, str]:
    if not isinstance(value, Mapping):
        problems.append(f"{where} must be a map of names to strings, got {type(value).__name__}")
        return {}
    result: dict[str, str] = {}
    for key, item in value.items():
        if not _qualified_name(str(key)):
            problems.append(
                f"{where}: {key!r} is not a valid key (an optional DNS prefix and '/', then up "
                "to 63 letters, digits, '-', '_' or '.')"
            )
            continue
        if not isinstance(item, str):
            problems.append(
                f'{where}.{key} must be a string, got {item!r} (quote it in YAML, e.g. "true")'
            )
            continue
        if labels and not _LABEL_VALUE.match(item):
            problems.append(
                f"{where}.{key}: {item!r} is not a valid label value (at most 63 letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit)"
            )
            continue
        result[str(key)] = item
    return result


def _qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and not _DNS_SUBDOMAIN.match(prefix):
        return False
    return bool(_NAME_PART.match(name))


def _pull_secrets(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        problems.append(f"{where} must be a list of {{name: <Secret>}}, got {value!r}")
        return ()
    names: list[str] = []
    for index, item in enumerate(value):
        name = item.get("name") if isinstance(item, Mapping) else item
        if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
            problems.append(
                f"{where}[{index}] must be {{name: <Secret of type dockerconfigjson>}}, "
                f"got {item!r}"
            )
            continue
        names.append(name)
    return tuple(dict.fromkeys(names))


def _tolerations(value: Any, where: str, problems: list[str]) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        problems.append(f"{where} must be a list of tolerations, got {value!r}")
        return ()
    result: list[Mapping[str, Any]] = []
    for index, item in enumerate(value):
        found = _toleration_problems(item, f"{where}[{index}]")
        problems.extend(found)
        if not found:
            result.append(dict(item))
    return tuple(result)


def _toleration_problems(item: Any, at: str) -> list[str]:
    if not isinstance(item, Mapping):
        return [f"{at} must be a toleration (key, operator, value, effect)"]
    unknown = sorted(set(item) - _TOLERATION_KEYS)
    if unknown:
        return [f"{at}.{unknown[0]} is unknown; accepted: {', '.join(sorted(_TOLERATION_KEYS))}"]
    problems: list[str] = []
    operator = item.get("operator", "Equal")
    effect = item.get("effect", "")
    if operator not in ("Equal", "Exists"):
        problems.append(f"{at}.operator must be Equal or Exists, got {operator!r}")
    if operator == "Exists" and item.get("value"):
        problems.append(f"{at}.value must be empty with operator Exists")
    if operator == "Equal" and not item.get("key"):
        problems.append(f"{at}.key is required with operator Equal")
    problems += [
        f"{at}.{text} must be a string, got {item[text]!r}"
        for text in ("key", "value")
        if text in item and not isinstance(item[text], str)
    ]
    if effect not in ("", *_EFFECTS):
        problems.append(f"{at}.effect must be one of {', '.join(_EFFECTS)}, got {effect!r}")
    seconds = item.get("tolerationSeconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
        problems.append(f"{at}.tolerationSeconds must be an integer, got {seconds!r}")
    elif seconds is not None and effect != "NoExecute":
        problems.append(f"{at}.tolerationSeconds applies to effect NoExecute only")
    return problems


def _affinity(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        problems.append(f"{where} must be a map ({', '.join(_AFFINITY_KEYS)})")
        return {}
    result: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _AFFINITY_KEYS:
            problems.append(f"{where}.{key} is unknown; accepted: {', '.join(_AFFINITY_KEYS)}")
        elif not isinstance(item, Mapping):
            problems.append(f"{where}.{key} must be a map, got {item!r}")
        else:
            result[str(key)] = dict(item)
    return result


def parse_quantity_value(text: Any) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2``, ``512Mi``, ``1e3``) as a number; raises
    ``ValueError`` for anything else."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"{text!r} is not a quantity")
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise ValueError(f"{text!r} is not a quantity (e.g. 500m, 2, 512Mi, 2Gi)")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a quantity") from None
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def _resources(value: Any, where: str, problems: list[str]) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping):
        problems.append(f"{where} must be a map with requests and/or limits")
        return {}
    result: dict[str, dict[str, str]] = {}
    for section, amounts in value.items():
        if section not in ("requests", "limits"):
            problems.append(f"{where}.{section} is unknown; accepted: limits, requests")
            continue
        if not isinstance(amounts, Mapping):
            problems.append(f"{where}.{section} must be a map, e.g. {{cpu: 500m, memory: 1Gi}}")
            continue
        parsed: dict[str, str] = {}
        for resource, amount in amounts.items():
            try:
                parse_quantity_value(amount)
            except ValueError as error:
                problems.append(f"{where}.{section}.{resource}: {error}")
                continue
            parsed[str(resource)] = str(amount)
        result[str(section)] = parsed
    return result


def _check_requests_within_limits(
    resources: Mapping[str, Mapping[str, str]], where: str, problems: list[str]
) -> None:
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    for resource in sorted(set(requests) & set(limits)):
        if parse_quantity_value(requests[resource]) > parse_quantity_value(limits[resource]):
            problems.append(
                f"{where}.requests.{resource} ({requests[resource]}) is more than "
                f"{where}.limits.{resource} ({limits[resource]}): Kubernetes would refuse the Job"
            )


def _volumes(value: Any, where: str, problems: list[str]) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        problems.append(f"{where} must be a list of volumes")
        return ()
    result: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at} must be a volume ({{name, <source>}})")
            continue
        name = item.get("name")
        sources = [key for key in item if key != "name"]
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            problems.append(f"{at}.name must be a DNS label (e.g. certs), got {name!r}")
        elif name in _RESERVED_VOLUMES:
            problems.append(f"{at}.name {name!r} is the operator's own volume; choose another")
        elif name in seen:
            problems.append(f"{at}.name {name!r} appears twice")
        elif len(sources) != 1:
            problems.append(
                f"{at} ({name}) must have exactly one volume source, got "
                f"{', '.join(sources) or 'none'}"
            )
        elif sources[0] not in RESTRICTED_VOLUME_SOURCES:
            problems.append(
                f"{at} ({name}): {sources[0]} volumes are not allowed under the restricted Pod "
                f"Security Standard; use one of {', '.join(RESTRICTED_VOLUME_SOURCES)}"
            )
        elif not isinstance(item[sources[0]], Mapping):
            problems.append(f"{at}.{sources[0]} must be a map")
        else:
            seen.add(name)
            result.append(dict(item))
    return tuple(result)


def _mounts(
    value: Any, volumes: set[str], where: str, volumes_key: str, problems: list[str]
) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        problems.append(f"{where} must be a list of volume mounts")
        return ()
    result: list[Mapping[str, Any]] = []
    paths: set[str] = set()
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at} must be a volume mount ({{name, mountPath}})")
            continue
        unknown = sorted(set(item) - _MOUNT_KEYS)
        name, path = item.get("name"), item.get("mountPath")
        if unknown:
            problems.append(
                f"{at}.{unknown[0]} is unknown; accepted: {', '.join(sorted(_MOUNT_KEYS))}"
            )
        elif name not in volumes:
            problems.append(
                f"{at}.name {name!r} is not a volume of {volumes_key} "
                f"(known: {', '.join(sorted(volumes)) or 'none'})"
            )
        elif not isinstance(path, str) or not path.startswith("/"):
            problems.append(f"{at}.mountPath must be an absolute path, got {path!r}")
        elif any(path.rstrip("/") == p or path.startswith(p + "/") for p in _RESERVED_PATHS):
            problems.append(
                f"{at}.mountPath {path!r} is under {', '.join(_RESERVED_PATHS)}, which the "
                "operator mounts itself; choose another path"
            )
        elif path in paths:
            problems.append(f"{at}.mountPath {path!r} is mounted twice")
        else:
            paths.add(path)
            result.append(dict(item))
    return tuple(result)


def _ca_bundle(value: Any, where: str, problems: list[str]) -> CaBundleRef | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.append(f"{where} must be a map: {{configMap: <name>}} or {{secret: <name>}}, key")
        return None
    unknown = sorted(set(value) - {"configMap", "secret", "key"})
    if unknown:
        problems.append(f"{where}.{unknown[0]} is unknown; accepted: configMap, key, secret")
        return None
    config_map, secret = value.get("configMap") or None, value.get("secret") or None
    key = value.get("key") or "ca.crt"
    if config_map is None and secret is None:
        return None  # the chart's default: no bundle
    if config_map is not None and secret is not None:
        problems.append(f"{where}: set configMap or secret, not both")
        return None
    name = config_map or secret
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
        problems.append(f"{where}: {name!r} is not a valid ConfigMap or Secret name")
        return None
    if not isinstance(key, str) or not re.match(r"^[-._A-Za-z0-9]+$", key):
        problems.append(f"{where}.key {key!r} is not a valid key of a ConfigMap or Secret")
        return None
    return CaBundleRef(key=key, config_map=config_map, secret=secret)


def _checked_resources(value: Any, where: str, problems: list[str]) -> dict[str, dict[str, str]]:
    resources = _resources(value, where, problems)
    _check_requests_within_limits(resources, where, problems)
    return resources


def _node_selector(value: Any, where: str, problems: list[str]) -> dict[str, str]:
    return _string_map(value, where, problems, labels=True)


def _pod_labels(value: Any, where: str, problems: list[str]) -> dict[str, str]:
    labels = _string_map(value, where, problems, labels=True)
    problems += [
        f"{where}.{key} is set by the operator or the Job controller; choose another label"
        for key in labels
        if key in _RESERVED_LABELS or key.startswith(_RESERVED_LABEL_PREFIXES)
    ]
    return labels


_Parser = Callable[[Any, str, list[str]], Any]
_PARSERS: dict[str, tuple[str, _Parser]] = {
    "imagePullSecrets": ("image_pull_secrets", _pull_secrets),
    "nodeSelector": ("node_selector", _node_selector),
    "tolerations": ("tolerations", _tolerations),
    "affinity": ("affinity", _affinity),
    "resources": ("resources", _checked_resources),
    "podAnnotations": ("pod_annotations", _string_map),
    "podLabels": ("pod_labels", _pod_labels),
    "extraVolumes": ("extra_volumes", _volumes),
    "caBundle": ("ca_bundle", _ca_bundle),
}


def parse_job_pod(
    raw: Mapping[str, Any] | None, *, where: str = "jobs", allowed: Sequence[str] = _ALL_KEYS
) -> JobPodSettings:
    """Check ``raw`` (the chart's ``jobs`` values, or a ClusterSpecialization's ``spec.job``)
    and raise :class:`JobPodError` listing every problem with its path under ``where``."""
    if raw is None:
        return JobPodSettings()
    if not isinstance(raw, Mapping):
        raise JobPodError([f"{where} must be a map, got {type(raw).__name__}"])
    problems: list[str] = []
    given = {str(key) for key, value in raw.items() if value is not None}
    problems += [
        f"{_problem_path(where, key)} is unknown; accepted: {', '.join(allowed)}"
        for key in sorted(given - set(allowed))
    ]
    values: dict[str, Any] = {
        name: parse(raw[key], _problem_path(where, key), problems)
        for key, (name, parse) in _PARSERS.items()
        if key in given and key in allowed
    }
    if "extraVolumeMounts" in given and "extraVolumeMounts" in allowed:
        values["extra_volume_mounts"] = _mounts(
            raw["extraVolumeMounts"],
            {str(v["name"]) for v in values.get("extra_volumes", ())},
            _problem_path(where, "extraVolumeMounts"),
            _problem_path(where, "extraVolumes"),
            problems,
        )
    if problems:
        raise JobPodError(problems)
    return JobPodSettings(**values)


def merge_job_pod(
    base: JobPodSettings, override: JobPodSettings, *, where: str = "spec.job"
) -> JobPodSettings:
    """``override`` over ``base``: maps (nodeSelector, podAnnotations, resources' requests and
    limits) merge key by key, the override winning; lists (tolerations, imagePullSecrets) and
    affinity replace. Raises :class:`JobPodError` when the merged requests exceed the limits."""
    merged = replace(
        base,
        image_pull_secrets=(
            override.image_pull_secrets
            if override.image_pull_secrets is not None
            else base.image_pull_secrets
        ),
        node_selector=_merged_map(base.node_selector, override.node_selector),
        tolerations=override.tolerations if override.tolerations is not None else base.tolerations,
        affinity=override.affinity if override.affinity is not None else base.affinity,
        pod_annotations=_merged_map(base.pod_annotations, override.pod_annotations),
        resources=_merged_resources(base.resources, override.resources),
    )
    if merged.resources is not None:
        problems: list[str] = []
        _check_requests_within_limits(merged.resources, f"{where}.resources", problems)
        if problems:
            raise JobPodError(
                [f"{p} (after merging over the operator's jobs.resources)" for p in problems]
            )
    return merged


def _merged_map(
    base: Mapping[str, str] | None, override: Mapping[str, str] | None
) -> Mapping[str, str] | None:
    if override is None:
        return base
    return {**(base or {}), **override}


def _merged_resources(
    base: Mapping[str, Mapping[str, str]] | None,
    override: Mapping[str, Mapping[str, str]] | None,
) -> Mapping[str, Mapping[str, str]] | None:
    if override is None:
        return base
    sections = {*(base or {}), *override}
    return {
        section: {**((base or {}).get(section) or {}), **(override.get(section) or {})}
        for section in sorted(sections)
    }


def job_pod_from_env(environ: Mapping[str, str] | None = None) -> JobPodSettings:
    """The operator-wide Job pod settings from ``LIBRARIAN_JOB_POD_TEMPLATE`` (none: defaults);
    raises :class:`JobPodError` naming the bad key, or the JSON error."""
    text = (os.environ if environ is None else environ).get(JOB_POD_TEMPLATE_ENV, "").strip()
    if not text:
        return JobPodSettings()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise JobPodError([f"{JOB_POD_TEMPLATE_ENV} is not JSON: {error}"]) from None
    return parse_job_pod(raw)
