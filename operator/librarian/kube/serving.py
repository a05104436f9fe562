"""Which ClusterSpecialization serves a domain: one rule for the router and the operator.

Why this exists: once a rebalancing move has copied a domain elsewhere, two
Ready specializations name it. The router (which reads from it) and the
operator (which measures and moves it) must agree on which one serves, so the
rule lives here once, over the objects as the API returns them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from librarian.contracts.metadata import SUPERSEDED_ANNOTATION

__all__ = ["home_collection", "serving_specializations"]


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
