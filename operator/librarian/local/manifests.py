"""The YAML files given to ``librarian up``, and what applying them over the stored state means.

Why this exists: ``up -f FILE`` takes the same manifests as ``kubectl apply -f``
(DomainMap, ClusterSpecialization, RebalancePolicy and Secret documents, several
per file). A document that cannot be one of them is refused before anything
starts, with the file and the document's number. Applied over what a previous
run stored, a manifest whose spec is unchanged leaves the stored object (and
its status) as it is; a changed spec replaces the stored one and bumps its
generation, as the API server does, so the operator handles the change.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from librarian.contracts.api import GROUP, VERSION

__all__ = ["KINDS", "ApplyPlan", "Manifest", "ManifestError", "plan_apply", "read_manifests"]

KINDS = {
    (f"{GROUP}/{VERSION}", "DomainMap"),
    (f"{GROUP}/{VERSION}", "ClusterSpecialization"),
    (f"{GROUP}/{VERSION}", "RebalancePolicy"),
    (f"{GROUP}/{VERSION}", "QdrantFleet"),
    ("v1", "Secret"),
}
"""The ``(apiVersion, kind)`` pairs ``up`` accepts."""

DEFAULT_NAMESPACE = "default"
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ManifestError(ValueError):
    """A file or one of its documents cannot be applied; the message names which and why."""


@dataclass(frozen=True)
class Manifest:
    """One document, namespace filled in, and where it came from (``FILE, document N``)."""

    body: dict[str, Any]
    origin: str

    @property
    def key(self) -> tuple[str, str, str]:
        metadata = self.body["metadata"]
        return (str(self.body["kind"]), str(metadata["namespace"]), str(metadata["name"]))


def _check(document: Any, origin: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ManifestError(f"{origin}: expected a Kubernetes object (a mapping), got {document!r}")
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if (api_version, kind) not in KINDS:
        accepted = ", ".join(f"{k} ({v})" for v, k in sorted(KINDS, key=lambda p: p[1]))
        raise ManifestError(
            f"{origin}: {api_version} {kind} is not accepted here; accepted: {accepted}"
        )
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise ManifestError(f"{origin}: {kind} has no metadata.name")
    body = copy.deepcopy(document)
    metadata = body["metadata"]
    metadata.setdefault("namespace", DEFAULT_NAMESPACE)
    for what in ("name", "namespace"):
        value = metadata[what]
        if not isinstance(value, str) or len(value) > 253 or not _DNS_1123.match(value):
            raise ManifestError(
                f"{origin}: metadata.{what} {value!r} is not a valid name (lower-case letters, "
                "digits, '-' and '.', starting and ending with a letter or digit)"
            )
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp"):
        metadata.pop(key, None)  # the API sets these
    if kind == "Secret":
        _check_secret(body, origin)
    else:
        if not isinstance(body.get("spec"), dict):
            raise ManifestError(f"{origin}: {kind} {metadata['name']} has no spec mapping")
        body.pop("status", None)  # the operator writes the status
    return body


def _check_secret(body: Mapping[str, Any], origin: str) -> None:
    name = body["metadata"]["name"]
    data, string_data = body.get("data") or {}, body.get("stringData") or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        raise ManifestError(f"{origin}: Secret {name}: data and stringData must be mappings")
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise ManifestError(
                f"{origin}: Secret {name}: data.{key} is not base64 (put plain text under "
                "stringData instead)"
            ) from None
    for key, value in string_data.items():
        if not isinstance(value, str):
            raise ManifestError(f"{origin}: Secret {name}: stringData.{key} must be a string")


def read_manifests(paths: Sequence[Path]) -> list[Manifest]:
    """Every document of ``paths`` in order; empty documents are skipped, duplicates refused."""
    manifests: list[Manifest] = []
    seen: dict[tuple[str, str, str], str] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ManifestError(f"{path}: cannot be read: {error}") from None
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as error:
            raise ManifestError(f"{path}: not valid YAML: {error}") from None
        for index, document in enumerate(documents, start=1):
            if document is None:
                continue
            origin = f"{path}, document {index}"
            manifest = Manifest(_check(document, origin), origin)
            if manifest.key in seen:
                kind, namespace, name = manifest.key
                raise ManifestError(
                    f"{manifest.origin}: {kind} {namespace}/{name} is also defined in "
                    f"{seen[manifest.key]}"
                )
            seen[manifest.key] = manifest.origin
            manifests.append(manifest)
    if not manifests:
        raise ManifestError(
            f"no resource in {', '.join(map(str, paths)) or 'the files'}: give at least a DomainMap"
        )
    return manifests


@dataclass
class ApplyPlan:
    """What the emulated API starts with: stored objects (some changed) and objects to create."""

    preload: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)  # among preload: write them back
    create: list[dict[str, Any]] = field(default_factory=list)


def _key(body: Mapping[str, Any]) -> tuple[str, str, str]:
    metadata = body.get("metadata") or {}
    return (str(body.get("kind")), str(metadata.get("namespace")), str(metadata.get("name")))


def plan_apply(stored: Iterable[Mapping[str, Any]], manifests: Iterable[Manifest]) -> ApplyPlan:
    """Apply the manifests over the stored objects as ``kubectl apply`` would."""
    wanted = {m.key: m.body for m in manifests}
    plan = ApplyPlan()
    for old in stored:
        body = copy.deepcopy(dict(old))
        new = wanted.pop(_key(body), None)
        if new is not None and _apply(body, new):
            plan.changed.append(body)
        plan.preload.append(body)
    plan.create = list(wanted.values())
    return plan


def _apply(body: dict[str, Any], new: Mapping[str, Any]) -> bool:
    """Bring a stored object to its manifest in place; True if anything changed.

    A new spec bumps the generation (the operator handles it); labels and
    annotations given in the manifest are merged into the stored ones (the
    operator's own annotations stay).
    """
    changed = False
    metadata = body.setdefault("metadata", {})
    if body.get("spec") != new.get("spec"):
        body["spec"] = copy.deepcopy(new.get("spec"))
        metadata["generation"] = int(metadata.get("generation") or 1) + 1
        changed = True
    for what in ("labels", "annotations"):
        given = new["metadata"].get(what) or {}
        current = metadata.get(what) or {}
        if any(current.get(key) != value for key, value in given.items()):
            metadata[what] = {**current, **given}
            changed = True
    return changed
