"""Turning a RebalancePolicy's ``spec.loadSource.routerRef`` into the URL of the router.

Why this exists: a policy that names its router by URL has to know the name
each install gives the router's Service and the cluster's DNS suffix, and a
wrong guess only shows as an unreachable load source. A ``routerRef`` names
the Service instead (name, namespace, port); at each analysis the operator
reads that Service through the Kubernetes API, checks that it exists and has
the port, and reads the load from ``http://NAME.NAMESPACE.svc:PORT``. When it
cannot, the policy says which Service is missing and how to fix it (reason
``RouterNotFound``) instead of timing out on a name that never resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from librarian.kube import client as api
from librarian.kube.policy_spec import DEFAULT_ROUTER_PORT, RouterRef

__all__ = [
    "ROUTER_PORT_NAME",
    "RouterNotFound",
    "ServiceUrl",
    "cluster_service_url",
    "resolve_router_ref",
    "router_urls",
    "service_port",
]

ROUTER_PORT_NAME = "http"
"""The name of the router Service's REST port in the chart and the plain manifests."""

ServiceUrl = Callable[[str, str, int], str]
"""How the operator reaches port PORT of Service NAME in NAMESPACE: (name, namespace, port)."""


class RouterNotFound(Exception):
    """The Service a routerRef names does not exist, cannot be read, or lacks the port."""


def cluster_service_url(name: str, namespace: str, port: int) -> str:
    """The Service's URL by its cluster DNS name (``NAME.NAMESPACE.svc``)."""
    return f"http://{name}.{namespace}.svc:{port}"


def service_port(service: Mapping[str, Any], wanted: int | None) -> int | None:
    """The port of ``service`` to use: ``wanted`` if the Service has it, else its port named
    http, else 6333 if the Service has it; None when none of these is there."""
    ports = [p for p in ((service.get("spec") or {}).get("ports") or []) if isinstance(p, Mapping)]
    numbers = [p.get("port") for p in ports]
    if wanted is not None:
        return wanted if wanted in numbers else None
    named = [p.get("port") for p in ports if p.get("name") == ROUTER_PORT_NAME]
    if named and isinstance(named[0], int):
        return named[0]
    return DEFAULT_ROUTER_PORT if DEFAULT_ROUTER_PORT in numbers else None


def _ports_text(service: Mapping[str, Any]) -> str:
    ports = (service.get("spec") or {}).get("ports") or []
    shown = [f"{p.get('name') or '(unnamed)'} {p.get('port')}" for p in ports]
    return ", ".join(shown) or "none"


async def resolve_router_ref(
    ref: RouterRef, namespace: str, *, service_url: ServiceUrl = cluster_service_url
) -> str:
    """The URL of the router ``ref`` names, for a policy in ``namespace``.

    Raises :class:`RouterNotFound` with a message saying which Service and how to fix it.
    """
    where = ref.namespace or namespace
    try:
        service = await api.get_json(f"/api/v1/namespaces/{where}/services/{ref.name}")
    except api.NotFound:
        raise RouterNotFound(
            f"Service {where}/{ref.name} named by spec.loadSource.routerRef does not exist; "
            "set routerRef.name (and namespace) to the router's Service: "
            "`kubectl get services -A -l app.kubernetes.io/component=router` lists them "
            "(qdrant-librarian-router with the plain manifests, "
            "<release>-qdrant-librarian-router with the Helm chart)"
        ) from None
    except api.Forbidden:
        raise RouterNotFound(
            f"the operator may not read Service {where}/{ref.name} named by "
            "spec.loadSource.routerRef: it reads Services only in the namespaces it watches; "
            "put the router there, or add its namespace to the chart's operator.watchNamespaces"
        ) from None
    port = service_port(service, ref.port)
    if port is None:
        wanted = (
            f"port {ref.port}"
            if ref.port is not None
            else f"a port named {ROUTER_PORT_NAME} or port {DEFAULT_ROUTER_PORT}"
        )
        raise RouterNotFound(
            f"Service {where}/{ref.name} named by spec.loadSource.routerRef has no {wanted} "
            f"(its ports: {_ports_text(service)}); set routerRef.port to the router's REST port"
        )
    return service_url(ref.name, where, port)


async def router_urls(
    urls: Sequence[str],
    ref: RouterRef | None,
    namespace: str,
    *,
    service_url: ServiceUrl = cluster_service_url,
) -> tuple[str, ...]:
    """Every router a policy reads: its routerUrls and the router its routerRef names."""
    if ref is None:
        return tuple(urls)
    resolved = await resolve_router_ref(ref, namespace, service_url=service_url)
    return tuple(dict.fromkeys([*urls, resolved]))
