"""Starting a router process: from a DomainMap in Kubernetes, or from a catalog collection.

Why this exists: the CLI and the demo both need "build the fleet, pick the
loader, serve on host:port until stopped"; this keeps that in one place.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from librarian.kube import client as kube_client
from librarian.kube.errors import LoginFailed
from librarian.kube.login import login
from librarian.router.library import LibraryDefinition
from librarian.router.loader import catalog_loader, kubernetes_fleet, kubernetes_loader
from librarian.router.server import RouterConfig, RouterState, create_app
from librarian.settings import Settings
from librarian.storage.fleet import ClusterConfig, Fleet

__all__ = ["RouterSource", "kubernetes_login", "parse_cluster", "prepare_router", "serve"]

log = logging.getLogger("librarian.router")


@dataclass(frozen=True)
class RouterSource:
    """Where the library comes from: a DomainMap (``namespace/name``) or a catalog."""

    domainmap: str | None = None
    clusters: tuple[ClusterConfig, ...] = ()
    source: tuple[str, str] | None = None  # cluster, collection
    catalog: tuple[str, str] | None = None
    owner: str | None = None
    library_name: str | None = None


def parse_cluster(text: str) -> ClusterConfig:
    """``name=http://host:6333`` or ``name=embedded:/path``; the API key from LIBRARIAN_API_KEY_<NAME>."""
    name, sep, where = text.partition("=")
    if not sep or not name or not where:
        raise ValueError(f"--cluster {text!r}: expected NAME=URL or NAME=embedded:PATH")
    api_key = os.environ.get(f"LIBRARIAN_API_KEY_{name.upper().replace('-', '_')}") or None
    if where.startswith("embedded:"):
        return ClusterConfig(name=name, embedded=where.removeprefix("embedded:"))
    return ClusterConfig(name=name, url=where, api_key=api_key)


def kubernetes_login(server: str | None) -> None:
    """Credentials for the Kubernetes API: an explicit server, the service account, or kubeconfig."""
    try:
        kube_client.remember_credentials(login(server))
    except LoginFailed as error:
        raise RuntimeError(str(error)) from None


async def prepare_router(settings: Settings, source: RouterSource, *, seed: int = 0) -> RouterState:
    """The router's state for ``source`` (the fleet is resolved once; domains reload live)."""
    if source.domainmap:
        namespace, _, name = source.domainmap.rpartition("/")
        return _following_domainmap(settings, namespace or "default", name, source, seed)
    else:
        if not (source.clusters and source.source and source.catalog):
            raise ValueError("give --domainmap, or --cluster, --source and --catalog")
        fleet = Fleet(source.clusters)
        default_cluster = source.source[0]
        loader = catalog_loader(
            fleet,
            name=source.library_name or source.source[1],
            source=source.source,
            catalog=source.catalog,
            owner=source.owner,
        )
    config = RouterConfig(
        fleet=fleet,
        default_cluster=default_cluster,
        loader=loader,
        settings=settings.domain_library_orchestrator,
        seed=seed,
    )
    return RouterState(config)


def _following_domainmap(
    settings: Settings, namespace: str, name: str, source: RouterSource, seed: int
) -> RouterState:
    """A router that resolves the DomainMap's fleet on its first successful load.

    Until the DomainMap exists (and is analysed) the router serves, answers
    ``/readyz`` with 503 and the reason, and keeps trying at every reload.
    """
    config = RouterConfig(
        fleet=Fleet([]),
        default_cluster="",
        loader=_unset_loader,
        settings=settings.domain_library_orchestrator,
        seed=seed,
    )
    follow: list[Any] = []

    async def load() -> LibraryDefinition | None:
        if not follow:
            fleet, _, default_cluster = await kubernetes_fleet(namespace, name)
            config.fleet, config.default_cluster = fleet, default_cluster
            follow.append(
                kubernetes_loader(fleet, namespace, name, library_name=source.library_name)
            )
        definition: LibraryDefinition | None = await follow[0]()
        return definition

    config.loader = load
    return RouterState(config)


async def _unset_loader() -> LibraryDefinition | None:
    return None


async def serve(
    state: RouterState, host: str, port: int, stop: asyncio.Event | None = None
) -> None:
    """Serve until ``stop`` is set (or forever)."""
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("router listening on http://%s:%d", host, port)
    try:
        await (stop.wait() if stop else asyncio.Event().wait())
    finally:
        await runner.cleanup()
        state.config.fleet.close()
        await kube_client.close_session()


def split_pair(text: str, option: str) -> tuple[str, str]:
    first, sep, second = text.partition("/")
    if not sep or not first or not second:
        raise ValueError(f"{option} {text!r}: expected CLUSTER/COLLECTION")
    return first, second


def clusters_of(texts: Sequence[str]) -> tuple[ClusterConfig, ...]:
    return tuple(parse_cluster(t) for t in texts)
