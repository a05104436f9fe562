"""Where domains live: placing them for automatic specialization, and which one serves.

Why this exists: with ``specialize: auto`` a DomainMap creates one
ClusterSpecialization per domain; each domain needs a target. Largest domains
first, each goes to the target holding the fewest points so far (greedy
balance), so no cluster takes the bulk; ties keep the listed order. Once a
rebalancing move has copied a domain elsewhere, two Ready specializations name
it: the router and the operator must agree on which one serves, so the rule
lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SUPERSEDED_ANNOTATION = "librarian.dev/superseded-by"


def place_domains(sizes: dict[str, int], targets: Sequence[str]) -> dict[str, str]:
    """Domain id -> target name, balancing points across ``targets``."""
    if not targets:
        raise ValueError("no target clusters to place domains on")
    load = dict.fromkeys(targets, 0)
    placement: dict[str, str] = {}
    for domain_id, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        target = min(targets, key=lambda name: load[name])
        placement[domain_id] = target
        load[target] += size
    return placement


def kubernetes_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1123 label from ``parts`` (lowercase alphanumerics and '-', at most ``limit``)."""
    raw = "-".join(parts).lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in raw)
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    return cleaned.strip("-")[:limit].rstrip("-") or "x"


def _preference(item: Mapping[str, Any]) -> tuple[bool, str, str]:
    """Sort key: not superseded first, then the newest (RFC 3339 sorts as text), then name."""
    metadata = item.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return (
        not annotations.get(SUPERSEDED_ANNOTATION),
        str(metadata.get("creationTimestamp") or ""),
        str(metadata.get("name") or ""),
    )


def serving_specializations(
    items: Sequence[Mapping[str, Any]], domainmap: str
) -> dict[str, Mapping[str, Any]]:
    """Domain id -> the Ready ClusterSpecialization of ``domainmap`` that serves it.

    The domain is the one the specialization resolved (``status.domainId``) and
    it needs a collection (``status.targetCollection``, else
    ``spec.target.collection``). When several are Ready for one domain, the one
    not superseded wins; among equals, the newest by creation time, then name.
    """
    chosen: dict[str, tuple[tuple[bool, str, str], Mapping[str, Any]]] = {}
    for item in items:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        if spec.get("domainMap") != domainmap or status.get("phase") != "Ready":
            continue
        domain_id = status.get("domainId")
        target = spec.get("target") or {}
        if not (domain_id and target.get("cluster") and home_collection(item)):
            continue
        rank = _preference(item)
        current = chosen.get(str(domain_id))
        if current is None or rank > current[0]:
            chosen[str(domain_id)] = (rank, item)
    return {domain_id: item for domain_id, (_, item) in chosen.items()}


def home_collection(item: Mapping[str, Any]) -> str | None:
    """The collection a ClusterSpecialization serves its domain from."""
    status, target = item.get("status") or {}, (item.get("spec") or {}).get("target") or {}
    collection = status.get("targetCollection") or target.get("collection")
    return str(collection) if collection else None
