"""An emulated Kubernetes API, in-process over real HTTP, for the demo and the tests.

Why this exists: there is no API server on development and CI machines, yet
kopf must run unchanged against something that speaks the Kubernetes API.
``kmock``'s :class:`KubernetesEmulator` is a stateful API over HTTP; this
module declares every resource kopf and the operator need (namespaces,
events, CRDs, Secrets, Jobs and our own kinds, read from the CRD YAML — one
source), and adds what a real API server does that the emulator does not:
``uid``, ``creationTimestamp``, ``resourceVersion`` and ``metadata.generation``
(bumped when ``spec`` changes), so ``observedGeneration`` means something, and
names from ``generateName`` (kopf's Events use it).

kmock logs every request it serves and, to route each new one, scans that log
(once per reaction it tries), so a long run slows down quadratically: after a
few hundred requests each one took tens of milliseconds. The emulator keeps
only the latest requests in kmock's log; whoever needs every request (an audit
of what the operator sent) asks for a recording, which costs an append.

``librarian up`` needs two things more: to learn of every change (it persists
objects and prints phases) — listeners get each created, updated or deleted
object once the API has applied it — and to start from stored objects
(:meth:`EmulatedCluster.preload`, before anything watches). An object keeps a
bounded history and old Events are dropped, so a long-running process does not
grow without bound.
"""

from __future__ import annotations

import collections
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kmock
from kmock import KubernetesEmulator, ResourceInfo

from librarian.local.crds import crd_resource, load_crds

__all__ = [
    "BUILTIN_RESOURCES",
    "ChangeListener",
    "EmulatedCluster",
    "LibrarianKubernetesEmulator",
    "ObjectChange",
    "crd_resource",
    "emulated_kubernetes",
    "load_crds",
    "resource_name",
]

log = logging.getLogger(__name__)

ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
BUILTIN_RESOURCES: dict[str, dict[str, Any]] = {
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "v1/events": {"kind": "Event", "namespaced": True},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/services": {"kind": "Service", "namespaced": True},
    "batch/v1/jobs": {"kind": "Job", "namespaced": True, "subresources": {"status"}},
    "v1/pods": {"kind": "Pod", "namespaced": True, "subresources": {"status"}},
    "coordination.k8s.io/v1/leases": {"kind": "Lease", "namespaced": True},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition",
        "namespaced": False,
    },
}
CRD_RESOURCE = "apiextensions.k8s.io/v1/customresourcedefinitions"


HISTORY_KEPT = 4
"""Versions of an object the emulator keeps (kmock keeps every one otherwise)."""

EVENTS_KEPT = 1000
"""Events kept; older ones are dropped, as a real API server expires them."""

REQUESTS_KEPT = 64
"""Requests kept in kmock's own log (it scans the log to route every request)."""


def resource_name(resource: Any) -> str:
    """``group/version/plural`` (``version/plural`` for the core group) of a kmock resource."""
    if resource.group:
        return f"{resource.group}/{resource.version}/{resource.plural}"
    return f"{resource.version}/{resource.plural}"


@dataclass(frozen=True)
class ObjectChange:
    """An object the API has just created, updated or deleted (``body`` is ``None`` then)."""

    resource: str
    namespace: str | None
    name: str
    body: dict[str, Any] | None


ChangeListener = Callable[[ObjectChange], None]
"""Called in the API's event loop after each change; it must not block."""


class LibrarianKubernetesEmulator(KubernetesEmulator):
    """kmock's emulator plus the metadata a real API server maintains."""

    _counter = itertools.count(1)

    def listen(self, listener: ChangeListener) -> None:
        """Call ``listener`` with every change from now on."""
        listeners: list[ChangeListener] = self.__dict__.setdefault("_listeners", [])
        listeners.append(listener)

    def record_requests(self) -> list[kmock.Request]:
        """A list that receives every request from now on, in the order they arrive."""
        recordings: list[list[kmock.Request]] = self.__dict__.setdefault("_recordings", [])
        recorded: list[kmock.Request] = []
        recordings.append(recorded)
        return recorded

    def _forget_old_requests(self) -> None:
        """Keep kmock's log (and each reaction's) to the latest :data:`REQUESTS_KEPT`.

        The request being served is among the latest, so routing it still finds it.
        """
        logs = [self._requests, *(payload._requests for payload in self._payloads)]
        for log_ in logs:
            if len(log_) > 2 * REQUESTS_KEPT:
                del log_[:-REQUESTS_KEPT]

    def _changed_key(self, request: kmock.Request) -> tuple[Any, str | None, str] | None:
        if request.resource is None:
            return None
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            metadata = request.data.get("metadata") or {}
            namespace = request.namespace or metadata.get("namespace")
            return (request.resource, namespace, str(metadata.get("name") or ""))
        if request.action in (kmock.action.UPDATE, kmock.action.DELETE) and request.name:
            return (request.resource, request.namespace, request.name)
        return None

    def _notify(self, key: tuple[Any, str | None, str]) -> None:
        resource, namespace, name = key
        stored = self.objects[key] if key in self.objects else None  # noqa: SIM401 (no .get)
        if stored is not None and len(stored.history) > HISTORY_KEPT:
            del stored.history[: len(stored.history) - HISTORY_KEPT]
        body = None if stored is None or stored.deleted else dict(stored.raw)
        if resource.plural == "events":
            self._forget_old_events(key, created=body is not None)
        change = ObjectChange(resource_name(resource), namespace, name, body)
        for listener in self.__dict__.get("_listeners", ()):
            try:
                listener(change)
            except Exception:  # a listener's failure must not fail the API call
                log.exception("a change listener failed on %s %s", change.resource, name)

    def _forget_old_events(self, key: tuple[Any, str | None, str], *, created: bool) -> None:
        events: collections.deque[tuple[Any, str | None, str]] = self.__dict__.setdefault(
            "_events", collections.deque()
        )
        if created:
            events.append(key)
        while len(events) > EVENTS_KEPT:
            old = events.popleft()
            if old in self.objects:
                del self.objects[old]

    async def _handle(self, request: kmock.Request) -> Any:
        for recorded in self.__dict__.get("_recordings", ()):
            recorded.append(request)
        self._forget_old_requests()
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            metadata = (
                data.setdefault("metadata", {})
                if request.action == kmock.action.CREATE
                else data.get("metadata")
            )
            version = str(next(self._counter))
            if request.action == kmock.action.CREATE:
                assert metadata is not None
                if not metadata.get("name") and metadata.get("generateName"):
                    metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
                metadata.setdefault("uid", str(uuid.uuid4()))
                metadata.setdefault(
                    "creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                )
                metadata["generation"] = 1
                metadata["resourceVersion"] = version
                if request.namespace and "namespace" not in metadata:
                    metadata["namespace"] = request.namespace
            elif request.action == kmock.action.UPDATE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                meta = data.setdefault("metadata", {})
                meta["resourceVersion"] = version
                if "spec" in data and not request.subresource and key in self.objects:
                    current = self.objects[key].get("metadata", {}).get("generation") or 1
                    meta["generation"] = int(current) + 1
        changed = self._changed_key(request)
        response = await super()._handle(request)
        if changed is not None and changed[2] and getattr(response, "status", 500) < 400:
            self._notify(changed)
        return response


@dataclass
class EmulatedCluster:
    """A running emulated API: its URL, the emulator, and a few client calls."""

    url: str
    emulator: LibrarianKubernetesEmulator
    recorded: list[kmock.Request] | None = None

    def requests(self) -> list[kmock.Request]:
        """Every request served since the API started (when started with ``record_requests``)."""
        if self.recorded is None:
            raise RuntimeError("start the emulated API with record_requests=True to audit requests")
        return list(self.recorded)

    def _path(self, resource: str, namespace: str | None, name: str | None = None) -> str:
        group_version, plural = resource.rsplit("/", 1)
        base = (
            f"/api/{group_version}" if group_version.count("/") == 0 else f"/apis/{group_version}"
        )
        if namespace:
            base += f"/namespaces/{namespace}"
        return f"{base}/{plural}" + (f"/{name}" if name else "")

    async def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                method, self.url + path, json=body, headers={"Content-Type": content_type}
            ) as response,
        ):
            data: dict[str, Any] = await response.json(content_type=None)
            if response.status >= 400:
                raise RuntimeError(
                    f"{method} {path}: HTTP {response.status}: {data.get('message')}"
                )
            return data

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        resource = self.resource_of(body)
        namespace = body.get("metadata", {}).get("namespace")
        return await self._request("POST", self._path(resource, namespace), dict(body))

    async def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", self._path(resource, namespace, name))
        except RuntimeError as error:
            if "HTTP 404" in str(error):
                return None
            raise

    async def list_objects(self, resource: str, namespace: str | None) -> list[dict[str, Any]]:
        data = await self._request("GET", self._path(resource, namespace))
        return list(data.get("items") or [])

    async def patch(
        self, resource: str, namespace: str | None, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            self._path(resource, namespace, name),
            dict(body),
            content_type="application/merge-patch+json",
        )

    async def delete(self, resource: str, namespace: str | None, name: str) -> None:
        await self._request("DELETE", self._path(resource, namespace, name))

    def resource_of(self, body: Mapping[str, Any]) -> str:
        api_version, kind = str(body["apiVersion"]), str(body["kind"])
        for resource in self.emulator.resources:
            info = self.emulator.resources[resource]
            declared = (
                f"{resource.group}/{resource.version}" if resource.group else resource.version
            )
            if info.kind == kind and declared == api_version:
                return f"{declared}/{resource.plural}"
        raise KeyError(f"{api_version} {kind} is not declared in the emulated API")

    def preload(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Store objects as they are (metadata and status kept) before anything watches.

        For objects read back from storage: no listener is called, and the
        resource versions handed out next are higher than any stored one.
        """
        highest = 0
        for body in objects:
            metadata = body.get("metadata") or {}
            key = (self.resource_of(body), metadata.get("namespace"), str(metadata["name"]))
            self.emulator.objects[key] = dict(body)
            version = str(metadata.get("resourceVersion") or "0")
            highest = max(highest, int(version) if version.isdigit() else 0)
        following = next(self.emulator._counter)
        self.emulator._counter = itertools.count(max(following, highest + 1))

    def events(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every Event object posted so far (for assertions and the demo)."""
        found = []
        for (resource, event_namespace, _), obj in self.emulator.objects.items():
            wanted = namespace is None or namespace == event_namespace
            if resource.plural == "events" and wanted and not obj.deleted:
                found.append(dict(obj.raw))
        return found


@asynccontextmanager
async def emulated_kubernetes(
    crds: Iterable[Mapping[str, Any]] = (),
    *,
    namespaces: Iterable[str] = ("default",),
    record_requests: bool = False,
) -> AsyncIterator[EmulatedCluster]:
    """Start the emulated API on 127.0.0.1 with our CRDs declared and stored.

    ``record_requests`` keeps every request for :meth:`EmulatedCluster.requests`
    (for audits in tests; a long-running API should not keep them all).
    """
    emulator = LibrarianKubernetesEmulator()
    recorded = emulator.record_requests() if record_requests else None
    for resource, info in BUILTIN_RESOURCES.items():
        emulator.resources[resource] = ResourceInfo(verbs=ALL_VERBS, **info)
    crd_list = [dict(c) for c in crds]
    for crd in crd_list:
        names = crd["spec"]["names"]
        version = next(v for v in crd["spec"]["versions"] if v.get("storage", True))
        emulator.resources[crd_resource(crd)] = ResourceInfo(
            kind=names["kind"],
            singular=names.get("singular"),
            namespaced=crd["spec"].get("scope", "Namespaced") == "Namespaced",
            verbs=ALL_VERBS,
            shortnames=set(names.get("shortNames") or ()),
            subresources=set((version.get("subresources") or {}).keys()),
        )
    async with emulator, kmock.Server(emulator) as server:
        cluster = EmulatedCluster(
            url=str(server.url).rstrip("/"), emulator=emulator, recorded=recorded
        )
        for namespace in namespaces:  # kmock cannot parse POST /api/v1/namespaces: store directly
            emulator.objects[kmock.resource("", "v1", "namespaces"), None, namespace] = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace},
            }
        for crd in crd_list:
            await cluster.create(crd)
        yield cluster
