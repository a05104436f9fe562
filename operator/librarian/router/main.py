"""Starting a router process: from a DomainMap in Kubernetes, or from a catalog collection.

Why this exists: the CLI and the demo both need "build the fleet, pick the
loader, serve on host:port until stopped"; this keeps that in one place.

Without Kubernetes (``--cluster/--source/--catalog``) the router reads only
the catalog: it knows each domain's centroid but not where a
ClusterSpecialization moved it, so every domain is served from the source
collection (its labelled slice). Its clusters, source and catalog are checked
when it starts: a missing embedded path or collection is an immediate error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from librarian.contracts.api import GROUP, VERSION
from librarian.core.hlc import MAX_NODE
from librarian.kube import client as kube_client
from librarian.kube.errors import LoginFailed
from librarian.kube.fleet_access import CredentialPolicy
from librarian.kube.login import login
from librarian.router.app import create_app, create_metrics_app
from librarian.router.auth import RouterKeys, check_bind
from librarian.router.grpc_api import start_grpc_server
from librarian.router.libraries import LibrarySet
from librarian.router.library import LibraryDefinition
from librarian.router.limits import server_options
from librarian.router.loader import catalog_loader, kubernetes_fleet, kubernetes_loader
from librarian.router.registration import Registration
from librarian.router.state import RouterConfig, RouterState
from librarian.settings import Settings
from librarian.storage.errors import CollectionNotFound
from librarian.storage.fleet import ClusterConfig, Fleet

__all__ = [
    "RouterSource",
    "access_options",
    "domainmap_router",
    "kubernetes_login",
    "namespace_domainmaps",
    "parse_cluster",
    "prepare_router",
    "serve",
    "serve_libraries",
]

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
    vector: str | None = None  # without a DomainMap: the dense vector to route on


def parse_cluster(text: str) -> ClusterConfig:
    """``name=http://host:6333`` or ``name=embedded:/path``; the API key from LIBRARIAN_API_KEY_<NAME>."""
    name, sep, where = text.partition("=")
    if not sep or not name or not where:
        raise ValueError(f"--cluster {text!r}: expected NAME=URL or NAME=embedded:PATH")
    api_key = os.environ.get(f"LIBRARIAN_API_KEY_{name.upper().replace('-', '_')}") or None
    if where.startswith("embedded:"):
        # A reader: a typo'd path must fail, never become a new, empty cluster.
        return ClusterConfig(
            name=name, embedded=where.removeprefix("embedded:"), existing_only=True
        )
    return ClusterConfig(name=name, url=where, api_key=api_key)


def kubernetes_login(server: str | None) -> None:
    """Credentials for the Kubernetes API: an explicit server, the service account, or kubeconfig."""
    try:
        kube_client.remember_credentials(login(server))
    except LoginFailed as error:
        raise RuntimeError(str(error)) from None


async def prepare_router(
    settings: Settings,
    source: RouterSource,
    *,
    seed: int = 0,
    load_window_s: float = 60.0,
    access: Mapping[str, Any] | None = None,
) -> RouterState:
    """The router's state for ``source`` (the fleet is resolved once; domains reload live).

    ``load_window_s``: the sliding window of the load it reports to rebalance policies;
    ``access``: who may call it and what passes through (:func:`access_options`).
    """
    access = access or {}
    if source.domainmap:
        namespace, _, name = source.domainmap.rpartition("/")
        return _following_domainmap(
            settings, namespace or "default", name, source, seed, load_window_s, access
        )
    else:
        if not (source.clusters and source.source and source.catalog):
            raise ValueError("give --domainmap, or --cluster, --source and --catalog")
        fleet = Fleet(source.clusters)
        try:
            await asyncio.to_thread(_check_catalog_source, fleet, source.source, source.catalog)
        except Exception:
            await asyncio.to_thread(fleet.close)
            raise
        default_cluster = source.source[0]
        loader = catalog_loader(
            fleet,
            name=source.library_name or source.source[1],
            source=source.source,
            catalog=source.catalog,
            owner=source.owner,
            vector=source.vector,
        )
    config = RouterConfig(
        fleet=fleet,
        default_cluster=default_cluster,
        loader=loader,
        settings=settings.domain_library_orchestrator,
        seed=seed,
        load_window_s=load_window_s,
        reserved=frozenset({source.catalog[1]}),
        **write_path_options(),
        **access,
    )
    return RouterState(config)


def domainmap_router(
    settings: Settings,
    domainmap: str,
    *,
    seed: int = 0,
    load_window_s: float = 60.0,
    access: Mapping[str, Any] | None = None,
) -> RouterState:
    """The router state following ``domainmap`` (NAMESPACE/NAME) in a router of several.

    Each library keeps its pending cleanups in a file of its own: the
    ``LIBRARIAN_ROUTER_OUTBOX`` path with ``-NAMESPACE-NAME`` before its suffix (an
    outbox holds cleanups for its library's clusters only).
    """
    namespace, _, name = domainmap.rpartition("/")
    return _following_domainmap(
        settings,
        namespace or "default",
        name,
        RouterSource(domainmap=domainmap),
        seed,
        load_window_s,
        access or {},
        outbox_of=f"{namespace or 'default'}-{name}",
    )


async def namespace_domainmaps(namespace: str) -> list[str]:
    """The DomainMaps of ``namespace`` (NAMESPACE/NAME), oldest first, then by name.

    The order decides which library answers collection names none of them has
    (the first loaded one: see :mod:`librarian.router.libraries`).
    """
    listing = await kube_client.get_json(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/domainmaps"
    )
    items = [
        i
        for i in listing.get("items") or []
        if not (i.get("metadata") or {}).get("deletionTimestamp")
    ]
    items.sort(
        key=lambda i: (
            str((i.get("metadata") or {}).get("creationTimestamp") or ""),
            str((i.get("metadata") or {}).get("name")),
        )
    )
    return [f"{namespace}/{(i.get('metadata') or {}).get('name')}" for i in items]


def write_path_options() -> dict[str, Any]:
    """The write path's settings from the environment.

    ``LIBRARIAN_ROUTER_OUTBOX``: the file that keeps pending cleanups across restarts
    (on a volume); ``LIBRARIAN_ROUTER_NODE_ID`` (0-127): ties between routers' versions.
    """
    options: dict[str, Any] = {}
    if os.environ.get("LIBRARIAN_ROUTER_OUTBOX"):
        options["outbox_path"] = os.environ["LIBRARIAN_ROUTER_OUTBOX"]
    node = os.environ.get("LIBRARIAN_ROUTER_NODE_ID")
    if node:
        if not node.isdigit() or int(node) > MAX_NODE:
            raise ValueError(
                f"LIBRARIAN_ROUTER_NODE_ID={node!r}: expected a number from 0 to {MAX_NODE}"
            )
        options["node_id"] = int(node)
    return options


def access_options(
    environ: Mapping[str, str], *, insecure: bool = False, passthrough: Sequence[str] = ()
) -> dict[str, Any]:
    """Who may call the router (its keys from the environment) and what passes through.

    The keys: ``LIBRARIAN_ROUTER_API_KEY`` and ``LIBRARIAN_ROUTER_READ_ONLY_API_KEY``,
    each with a ``_SECONDARY`` for rotation. ``passthrough``: the default cluster's
    collections served as they are (none unless named).
    """
    return {
        "keys": RouterKeys.from_env(environ),
        "insecure": insecure,
        "passthrough": frozenset(passthrough),
    }


def replica_name() -> str:
    """This router replica's name: the pod's (``POD_NAME``), else host and process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _check_catalog_source(fleet: Fleet, source: tuple[str, str], catalog: tuple[str, str]) -> None:
    """Fail now, naming what is missing, rather than serve a library that can never load."""
    for (cluster, collection), what, hint in (
        (source, "--source", "the collection the DomainMap analysed"),
        (
            catalog,
            "--catalog",
            "a DomainMap writes it when it is analysed (its status.catalog names it)",
        ),
    ):
        if not fleet.get(cluster).collection_exists(collection):
            raise CollectionNotFound(
                cluster, f"{what} collection does not exist: {hint}", collection=collection
            )


def _following_domainmap(
    settings: Settings,
    namespace: str,
    name: str,
    source: RouterSource,
    seed: int,
    load_window_s: float,
    access: Mapping[str, Any],
    *,
    outbox_of: str | None = None,
) -> RouterState:
    """A router that resolves the DomainMap's fleet on its first successful load.

    Until the DomainMap exists (and is analysed) the router serves, answers
    ``/readyz`` with 503 and the reason, and keeps trying at every reload.
    ``outbox_of``: the outbox file is this library's own (see :func:`domainmap_router`).
    """
    options = write_path_options()
    if outbox_of and "outbox_path" in options:
        path = Path(options["outbox_path"])
        options["outbox_path"] = str(path.with_name(f"{path.stem}-{outbox_of}{path.suffix}"))
    config = RouterConfig(
        fleet=Fleet([]),
        default_cluster="",
        loader=_unset_loader,
        settings=settings.domain_library_orchestrator,
        seed=seed,
        load_window_s=load_window_s,
        **options,
        **access,
    )
    follow: list[Any] = []
    credentials = settings.credentials
    policy = CredentialPolicy.of(credentials.allowed_api_key_env, credentials.insecure_hosts)

    async def load() -> LibraryDefinition | None:
        if not follow:
            fleet, _, default_cluster = await kubernetes_fleet(namespace, name, policy=policy)
            config.fleet, config.default_cluster = fleet, default_cluster
            follow.append(
                kubernetes_loader(fleet, namespace, name, library_name=source.library_name)
            )
        definition: LibraryDefinition | None = await follow[0]()
        return definition

    config.loader = load
    state = RouterState(config)
    state.registration = Registration(namespace, name, replica_name(), monotonic=time.monotonic)
    return state


async def _unset_loader() -> LibraryDefinition | None:
    return None


async def serve(
    state: RouterState,
    host: str,
    port: int,
    stop: asyncio.Event | None = None,
    *,
    metrics_port: int | None = None,
    grpc_port: int = 0,
) -> None:
    """Serve until ``stop`` is set (or forever); Prometheus' ``/metrics`` on ``metrics_port``;
    Qdrant's gRPC API on ``grpc_port`` (0: not served), answered by the REST application.

    Without keys the router refuses a non-loopback ``host`` unless it was told ``insecure``.
    """
    check_bind(host, state.config.keys, insecure=state.config.insecure)
    limits = state.config.settings.limits
    options = server_options(limits)
    runners = [web.AppRunner(create_app(state), access_log=None, **options)]
    if metrics_port is not None:
        runners.append(web.AppRunner(create_metrics_app(state), access_log=None, **options))
    grpc_server = None
    try:
        for runner in runners:
            await runner.setup()
        rest = runners[0].server
        if grpc_port and rest is not None:  # listening before the REST port answers probes
            grpc_server, _ = await start_grpc_server(
                rest.request_handler, host, grpc_port, max_message_bytes=limits.max_body_bytes
            )
            log.info("router gRPC API on %s:%d", host, grpc_port)
        for runner, listen in zip(runners, (port, metrics_port), strict=False):
            await web.TCPSite(runner, host, listen).start()
        log.info("router listening on http://%s:%d", host, port)
        if metrics_port is not None:
            log.info("router metrics on http://%s:%d/metrics", host, metrics_port)
        await (stop.wait() if stop else asyncio.Event().wait())
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=1.0)
        for runner in runners:
            await runner.cleanup()
        state.config.fleet.close()
        await kube_client.close_session()


async def serve_libraries(
    libraries: LibrarySet,
    host: str,
    port: int,
    stop: asyncio.Event | None = None,
    *,
    settings: Settings,
    domainmaps: Sequence[str] = (),
    follow_namespace: str | None = None,
    make_state: Callable[[str], RouterState],
    metrics_port: int | None = None,
    grpc_port: int = 0,
    started: Callable[[int, int], None] | None = None,
) -> None:
    """Serve the libraries of ``domainmaps`` (or of every DomainMap of ``follow_namespace``,
    re-listed at the reload interval) at one REST and one gRPC port until ``stop`` is set.

    ``make_state`` builds a DomainMap's router state; ``started(rest_port, grpc_port)`` is
    called once both listen (ports chosen by the system when 0 was asked).
    """
    check_bind(host, libraries.keys, insecure=libraries.insecure)
    limits = settings.domain_library_orchestrator.limits
    options = server_options(limits)
    front = web.AppRunner(libraries.app(), access_log=None, **options)
    runners = [front]
    if metrics_port is not None:
        runners.append(web.AppRunner(libraries.metrics_app(), access_log=None, **options))
    grpc_server = None
    following: asyncio.Task[None] | None = None
    try:
        for domainmap in domainmaps:
            await libraries.add(domainmap, make_state(domainmap))
        if follow_namespace is not None:
            libraries.waiting_reason = f"DomainMaps of namespace {follow_namespace} not listed yet"
            following = asyncio.ensure_future(
                libraries.follow(
                    functools.partial(namespace_domainmaps, follow_namespace),
                    make_state,
                    settings.domain_library_orchestrator.reload_interval,
                )
            )
        for runner in runners:
            await runner.setup()
        bound_grpc = 0
        if grpc_port and front.server is not None:
            grpc_server, bound_grpc = await start_grpc_server(
                front.server.request_handler,
                host,
                grpc_port,
                max_message_bytes=limits.max_body_bytes,
            )
            log.info("router gRPC API on %s:%d", host, bound_grpc)
        for runner, listen in zip(runners, (port, metrics_port), strict=False):
            await web.TCPSite(runner, host, listen).start()
        bound_rest = front.addresses[0][1] if front.addresses else port
        log.info("router listening on http://%s:%d", host, bound_rest)
        if started is not None:
            started(bound_rest, bound_grpc)
        await (stop.wait() if stop else asyncio.Event().wait())
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        if grpc_server is not None:
            await grpc_server.stop(grace=1.0)
        for runner in runners:
            await runner.cleanup()
        await libraries.close()
        await kube_client.close_session()


def split_pair(text: str, option: str) -> tuple[str, str]:
    first, sep, second = text.partition("/")
    if not sep or not first or not second:
        raise ValueError(f"{option} {text!r}: expected CLUSTER/COLLECTION")
    return first, second


def clusters_of(texts: Sequence[str]) -> tuple[ClusterConfig, ...]:
    return tuple(parse_cluster(t) for t in texts)
