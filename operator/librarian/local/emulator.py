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
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import yaml
from kmock import KubernetesEmulator, ResourceInfo

ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
BUILTIN_RESOURCES: dict[str, dict[str, Any]] = {
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "v1/events": {"kind": "Event", "namespaced": True},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "batch/v1/jobs": {"kind": "Job", "namespaced": True, "subresources": {"status"}},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition",
        "namespaced": False,
    },
}
CRD_RESOURCE = "apiextensions.k8s.io/v1/customresourcedefinitions"


def load_crds(directory: str | Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in ``directory``'s YAML files."""
    documents: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                documents.append(document)
    return documents


def crd_resource(crd: Mapping[str, Any]) -> str:
    """``group/version/plural`` of a CRD's storage version."""
    spec = crd["spec"]
    version = next(v["name"] for v in spec["versions"] if v.get("storage", True))
    return f"{spec['group']}/{version}/{spec['names']['plural']}"


class LibrarianKubernetesEmulator(KubernetesEmulator):
    """kmock's emulator plus the metadata a real API server maintains."""

    _counter = itertools.count(1)

    async def _handle(self, request: kmock.Request) -> Any:
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
        return await super()._handle(request)


@dataclass
class EmulatedCluster:
    """A running emulated API: its URL, the emulator, and a few client calls."""

    url: str
    emulator: LibrarianKubernetesEmulator

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
) -> AsyncIterator[EmulatedCluster]:
    """Start the emulated API on 127.0.0.1 with our CRDs declared and stored."""
    emulator = LibrarianKubernetesEmulator()
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
        cluster = EmulatedCluster(url=str(server.url).rstrip("/"), emulator=emulator)
        for namespace in namespaces:  # kmock cannot parse POST /api/v1/namespaces: store directly
            emulator.objects[kmock.resource("", "v1", "namespaces"), None, namespace] = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace},
            }
        for crd in crd_list:
            await cluster.create(crd)
        yield cluster
