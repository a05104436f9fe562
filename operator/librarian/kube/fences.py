"""Move fences: each router replica says, in a Lease, which move phases it enforces.

Why this exists: a domain move may only go on (start copying, switch reads,
stop writing the old home) once *every* router that serves the library writes
the way the new phase needs. Each router replica keeps a
``coordination.k8s.io/v1`` Lease of its own, labelled with the DomainMap it
serves, renewed every few seconds, whose annotation lists the phase of every
move it enforces. The operator reads the Leases: a move waits while any live
replica has not acknowledged its phase. A replica whose Lease has lapsed is
not waited for, because it refuses writes itself once it could not renew in
time (see :class:`librarian.router.registration.Registration`), so nothing it
does can miss a phase.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from librarian.contracts.metadata import (
    FENCES_ANNOTATION,
    LIBRARY_LOADED_ANNOTATION,
    ROUTER_FOR_LABEL,
)
from librarian.kube import client as api
from librarian.kube.naming import kubernetes_name

__all__ = [
    "LEASE_DURATION_S",
    "RouterLease",
    "lease_body",
    "lease_name",
    "read_leases",
    "renew_lease",
    "waiting_routers",
]

LEASE_DURATION_S = 15
"""How long a router's Lease counts as live after its last renewal."""

_MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def lease_name(domainmap: str, replica: str) -> str:
    """The Lease of one router replica serving ``domainmap`` (unique per replica)."""
    digest = hashlib.sha256(f"{domainmap}/{replica}".encode()).hexdigest()[:10]
    return f"{kubernetes_name('librarian-router', domainmap, replica, limit=52)}-{digest}"


def lease_body(
    namespace: str,
    domainmap: str,
    replica: str,
    fences: Mapping[str, str],
    *,
    loaded: bool,
    now: datetime,
    duration_s: int = LEASE_DURATION_S,
) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(domainmap, replica),
            "namespace": namespace,
            "labels": {ROUTER_FOR_LABEL: domainmap},
            "annotations": {
                FENCES_ANNOTATION: json.dumps(dict(sorted(fences.items()))),
                LIBRARY_LOADED_ANNOTATION: "true" if loaded else "false",
            },
        },
        "spec": {
            "holderIdentity": replica,
            "leaseDurationSeconds": duration_s,
            "renewTime": now.astimezone(UTC).strftime(_MICROTIME),
        },
    }


async def renew_lease(
    namespace: str,
    domainmap: str,
    replica: str,
    fences: Mapping[str, str],
    *,
    loaded: bool,
    now: datetime,
    duration_s: int = LEASE_DURATION_S,
) -> None:
    """Create or renew this replica's Lease with the phases it enforces now."""
    body = lease_body(
        namespace, domainmap, replica, fences, loaded=loaded, now=now, duration_s=duration_s
    )
    if await api.create_object(_path(namespace), body):
        return
    await api.patch_object(
        _path(namespace, body["metadata"]["name"]),
        {"metadata": {"annotations": body["metadata"]["annotations"]}, "spec": body["spec"]},
    )


@dataclass(frozen=True)
class RouterLease:
    """One router replica as its Lease describes it."""

    replica: str
    renewed: datetime | None
    duration_s: float
    loaded: bool
    fences: Mapping[str, str]

    def live(self, now: datetime) -> bool:
        return self.renewed is not None and now < self.renewed + timedelta(seconds=self.duration_s)


def _parse(item: Mapping[str, Any]) -> RouterLease:
    metadata, spec = item.get("metadata") or {}, item.get("spec") or {}
    annotations = metadata.get("annotations") or {}
    try:
        fences = json.loads(annotations.get(FENCES_ANNOTATION) or "{}")
    except ValueError:
        fences = {}
    renewed: datetime | None
    try:
        renewed = datetime.strptime(str(spec.get("renewTime")), _MICROTIME).replace(tzinfo=UTC)
    except ValueError:
        renewed = None
    return RouterLease(
        replica=str(spec.get("holderIdentity") or metadata.get("name") or "?"),
        renewed=renewed,
        duration_s=float(spec.get("leaseDurationSeconds") or LEASE_DURATION_S),
        loaded=annotations.get(LIBRARY_LOADED_ANNOTATION) == "true",
        fences=fences if isinstance(fences, dict) else {},
    )


async def read_leases(namespace: str, domainmap: str) -> list[RouterLease]:
    """The Leases of the router replicas serving ``domainmap``."""
    listing = await api.get_json(
        f"{_path(namespace)}?labelSelector={ROUTER_FOR_LABEL}%3D{domainmap}"
    )
    return [
        _parse(item)
        for item in listing.get("items") or []
        if ((item.get("metadata") or {}).get("labels") or {}).get(ROUTER_FOR_LABEL) == domainmap
    ]


def waiting_routers(
    leases: Sequence[RouterLease], move: str, phase: str, now: datetime
) -> list[str]:
    """The live router replicas (with a library loaded) that do not enforce ``phase`` yet."""
    return sorted(
        lease.replica
        for lease in leases
        if lease.live(now) and lease.loaded and lease.fences.get(move) != phase
    )
