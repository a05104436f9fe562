"""Qdrant's collection endpoints over the library: existence, listing, info, create/update/delete,
payload indexes and aliases.

Why this exists: applications inspect, create-if-missing and index a collection
before they query it, and move aliases to switch collections. On the library
these answer from its homes (the collections its domains live in) and its
source collection: the info is computed from them, not invented; a payload
index is created on every home and on the source collection, whose indexes
every home created later copies (:func:`librarian.services.domain_homes.copy_payload_indexes`);
what cannot keep Qdrant's meaning on a library (re-creating, patching or
deleting it) is refused with a 400 that says what to do instead. Another name
is served only when it is allowlisted: forwarded to a remote default cluster
by :mod:`~librarian.router.passthrough`, or through the storage port on an
embedded one. Aliases are stored by :mod:`~librarian.router.aliases`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web
from qdrant_client.http import models

from librarian.contracts.payload import RESERVED_KEYS
from librarian.contracts.reserved import is_reserved_collection
from librarian.router.auth import require_manage
from librarian.router.library import CollectionHome, Library, View, home_route
from librarian.router.qdrant_api import ApiError, ok, parse_body, request_timeout
from librarian.router.query import Querying
from librarian.router.state import RouterState
from librarian.storage.errors import CollectionExists, CollectionNotFound
from librarian.storage.port import CollectionSpec, QdrantPort, VectorNameConfig
from librarian.storage.remote import spec_from_create

__all__ = ["CollectionEndpoints", "forget_aliases_of", "library_info", "reserved_field"]

T = TypeVar("T")

_STATUS_ORDER = ("green", "grey", "yellow", "red")
_COMPLETED = {"operation_id": 0, "status": "completed"}


def reserved_field(field_name: str) -> bool:
    """Whether ``field_name`` (a payload path) is, or is inside, a key the library reserves."""
    head = field_name.split(".", 1)[0].split("[", 1)[0]
    return head in RESERVED_KEYS


def _library_homes(library: Library) -> list[CollectionHome]:
    """Every collection holding the library's points, and its source collection."""
    homes = list(View.of(library).homes())
    source = library.definition.source_home
    return homes if source in homes else [*homes, source]


def _worst_status(statuses: Sequence[models.CollectionStatus]) -> models.CollectionStatus:
    return max(statuses, key=lambda s: _STATUS_ORDER.index(s.value))


def _optimizer_status(infos: Sequence[models.CollectionInfo]) -> Any:
    for info in infos:
        if isinstance(info.optimizer_status, models.OptimizersStatusOneOf1):
            return info.optimizer_status  # an optimizer error on a home is shown as it is
    return models.OptimizersStatusOneOf.OK


def _schema_union(infos: Sequence[models.CollectionInfo]) -> dict[str, models.PayloadIndexInfo]:
    """Every home's indexed keys (reserved ones left out), each key's points summed."""
    union: dict[str, models.PayloadIndexInfo] = {}
    for info in infos:
        for key, index in info.payload_schema.items():
            if reserved_field(key):
                continue
            known = union.get(key)
            if known is None:
                union[key] = index.model_copy()
            else:
                known.points = (known.points or 0) + (index.points or 0)
    return union


async def library_info(
    state: RouterState, library: Library, timeout: float
) -> models.CollectionInfo:
    """Qdrant's collection info of the library, computed from its homes and source collection.

    ``points_count`` is counted as the router counts (each live point once: no
    tombstones, no stale copy); indexed vectors, segments and the payload
    schema's points are summed over the homes; the configuration is the source
    collection's (per-domain tuning is shown in the DomainMap and
    ClusterSpecialization status).
    """
    view = View.of(library)
    homes = list(view.homes())
    source = library.definition.source_home

    async def describe(home: CollectionHome) -> models.CollectionInfo:
        return await state.upstream.call(
            home_route(home), lambda port: port.describe_collection(home.collection), timeout
        )

    described = await asyncio.gather(*(describe(h) for h in homes))
    source_info = described[homes.index(source)] if source in homes else await describe(source)
    points = await Querying(state).count(view, models.CountRequest(exact=True), timeout)
    return models.CollectionInfo(
        status=_worst_status([i.status for i in described]),
        optimizer_status=_optimizer_status(described),
        points_count=points,
        indexed_vectors_count=sum(i.indexed_vectors_count or 0 for i in described),
        segments_count=sum(i.segments_count for i in described),
        config=source_info.config,
        payload_schema=_schema_union(described),
    )


def _spec_of(body: models.CreateCollection) -> CollectionSpec:
    """The collection spec of a create request, for an embedded cluster (every vector kind)."""
    return spec_from_create(body)


class CollectionEndpoints:
    """aiohttp handlers of the collection, payload index and alias endpoints."""

    def __init__(self, state: RouterState) -> None:
        self.state = state

    def _timeout(self, request: web.Request) -> float:
        return request_timeout(request, self.state.config.settings.timeout)

    async def _on_default(
        self, request: web.Request, operation: Callable[[QdrantPort], T], collection: str
    ) -> T:
        """A port call on the default cluster, about ``collection``."""
        route = home_route(CollectionHome(self.state.config.default_cluster, collection))
        return await self.state.upstream.call(route, operation, self._timeout(request))

    async def _target(self, request: web.Request) -> tuple[str, Library | None]:
        """The collection the path names (alias resolved) and the library when it is that."""
        target = await self.state.target(request.match_info["name"])
        library = self.state.library
        if library is not None and target == library.name:
            return target, library
        return target, None

    # ------------------------------------------------------------ reading

    async def collections(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        names: list[str] = []
        if self.state.library is not None:
            names.append(self.state.library.name)
        port = self.state.config.fleet.get(self.state.config.default_cluster)
        lister = getattr(port, "list_collections", None)
        if lister is not None:
            found = self.state.visible_collections(await asyncio.to_thread(lister))
        else:
            wanted = sorted(self.state.config.passthrough)
            held = await asyncio.gather(
                *(asyncio.to_thread(port.collection_exists, n) for n in wanted)
            )
            found = self.state.visible_collections(
                [n for n, h in zip(wanted, held, strict=True) if h]
            )
        names += [n for n in found if n not in names]
        return ok({"collections": [{"name": n} for n in names]}, started)

    async def exists(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            target, library = await self._target(request)
        except ApiError as error:
            if error.status != 404:
                raise
            return ok({"exists": False}, started)
        if library is not None:
            return ok({"exists": True}, started)
        held = await self._on_default(request, lambda port: port.collection_exists(target), target)
        return ok({"exists": bool(held)}, started)

    async def info(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        target, library = await self._target(request)
        if library is not None:
            described = await library_info(self.state, library, self._timeout(request))
        else:
            try:
                described = await self._on_default(
                    request, lambda port: port.describe_collection(target), target
                )
            except CollectionNotFound:
                raise ApiError(404, f"Not found: Collection `{target}` doesn't exist!") from None
        return ok(described.model_dump(mode="json", exclude_none=True), started)

    # ------------------------------------------------------------ create, update, delete

    def _library_or_allowed(self, request: web.Request, what: str) -> Library | None:
        """The library when the path names it; else the allowlisted name's right to ``what``."""
        name = request.match_info["name"]
        library = self.state.require_library()
        if name == library.name:
            return library
        if not self.state.passes_through(name):
            raise ApiError(
                403,
                f"Forbidden: {what} collection `{name}` through the router needs it in the "
                "router's pass-through allowlist (--passthrough)",
            )
        return None

    async def create(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        require_manage(request, "creating a collection")
        name = request.match_info["name"]
        library = self.state.require_library()
        if name == library.name or await self._aliased_to_library(name):
            raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
        self._library_or_allowed(request, "creating")
        spec = _spec_of(await parse_body(request, models.CreateCollection))
        try:
            await self._on_default(request, lambda port: port.create_collection(name, spec), name)
        except CollectionExists:
            raise ApiError(409, f"Wrong input: Collection `{name}` already exists!") from None
        return ok(True, started)

    async def _aliased_to_library(self, name: str) -> bool:
        library = self.state.library
        aliased = await self.state.aliases.resolve(self.state.on_alias_cluster, name)
        return library is not None and aliased == library.name

    async def update(self, request: web.Request) -> web.Response:
        require_manage(request, "updating a collection")
        target, library = await self._target(request)
        if library is not None:
            raise ApiError(
                400,
                f"Bad request: the collections of library `{library.name}` are tuned per domain "
                "by its ClusterSpecializations; change a domain's tuning in its "
                "ClusterSpecialization (or the DomainMap's defaults), not the library",
            )
        raise ApiError(
            400,
            f"Bad request: collection `{target}` is on an embedded default cluster, whose "
            "configuration the router does not patch; change it where the cluster is managed",
        )

    async def delete(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        require_manage(request, "deleting a collection")
        target, library = await self._target(request)
        if library is not None:
            raise ApiError(
                400,
                f"Bad request: library `{library.name}` is defined by its DomainMap; delete the "
                "DomainMap (and its ClusterSpecializations) to remove it",
            )
        await self._on_default(request, lambda port: port.delete_collection(target), target)
        await forget_aliases_of(self.state, target)
        return ok(True, started)

    # ------------------------------------------------------------ payload indexes

    async def create_index(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await parse_body(request, models.CreateFieldIndex)
        if body.field_schema is None:
            raise ApiError(400, "Bad request: field_schema is required")
        schema = body.field_schema
        field_name = body.field_name
        if reserved_field(field_name):
            raise ApiError(
                400,
                f"Bad request: `{field_name}` is a payload key the library reserves "
                f"({', '.join(RESERVED_KEYS)}) and indexes itself; index another key",
            )
        target, library = await self._target(request)
        if library is None:
            await self._on_default(
                request, lambda port: port.create_payload_index(target, field_name, schema), target
            )
        else:
            await self._on_every_home(
                request,
                library,
                lambda home: (
                    lambda port: port.create_payload_index(home.collection, field_name, schema)
                ),
            )
        return ok(_COMPLETED, started)

    async def delete_index(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        field_name = request.match_info["field_name"]
        if reserved_field(field_name):
            raise ApiError(
                400,
                f"Bad request: `{field_name}` is a payload key the library reserves; its index "
                "is the library's own",
            )
        target, library = await self._target(request)
        if library is None:
            await self._on_default(
                request, lambda port: port.delete_payload_index(target, field_name), target
            )
        else:
            await self._on_every_home(
                request,
                library,
                lambda home: lambda port: port.delete_payload_index(home.collection, field_name),
            )
        return ok(_COMPLETED, started)

    async def create_vector_name(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        config = await parse_body(request, VectorNameConfig)
        name = request.match_info["vector_name"]
        target = await self._plain_target(request, "adding a vector")
        await self._on_default(
            request, lambda port: port.create_vector_name(target, name, config), target
        )
        return ok(_COMPLETED, started)

    async def delete_vector_name(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name = request.match_info["vector_name"]
        target = await self._plain_target(request, "removing a vector")
        await self._on_default(request, lambda port: port.delete_vector_name(target, name), target)
        return ok(_COMPLETED, started)

    async def _plain_target(self, request: web.Request, change: str) -> str:
        """The collection a change of its vectors addresses; the library's are its DomainMap's
        (its source collection's vectors, copied to every home): refused."""
        target, library = await self._target(request)
        if library is not None:
            raise ApiError(
                400,
                f"Bad request: {change} to library `{target}` is not served: its vectors are "
                "those of its source collection, copied to every home; a library's vectors are "
                "not changed through the router",
            )
        return target

    async def _on_every_home(
        self,
        request: web.Request,
        library: Library,
        operation: Callable[[CollectionHome], Callable[[QdrantPort], None]],
    ) -> None:
        """``operation`` on every home and the source collection; a 502 naming those that
        failed (the operation is idempotent: the client repeats the request)."""
        homes = _library_homes(library)
        timeout = self._timeout(request)
        results = await asyncio.gather(
            *(self.state.upstream.call(home_route(h), operation(h), timeout) for h in homes),
            return_exceptions=True,
        )
        failed = [
            f"{h.cluster}/{h.collection} ({type(r).__name__}: {r})"
            for h, r in zip(homes, results, strict=True)
            if isinstance(r, BaseException)
        ]
        if failed:
            raise ApiError(
                502,
                "Service unavailable: the payload index change did not reach "
                + "; ".join(failed)
                + " (the others have it); repeat the request",
            )

    # ------------------------------------------------------------ aliases

    async def aliases(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        pairs = await self.state.aliases.listing(self.state.on_alias_cluster)
        return ok({"aliases": [_alias_json(a, c) for a, c in pairs]}, started)

    async def collection_aliases(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        target, _ = await self._target(request)
        pairs = await self.state.aliases.listing(self.state.on_alias_cluster)
        return ok({"aliases": [_alias_json(a, c) for a, c in pairs if c == target]}, started)

    async def change_aliases(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        require_manage(request, "changing aliases")
        body = await parse_body(request, models.ChangeAliasesOperation)
        library = self.state.require_library()
        current = dict(await self.state.aliases.listing(self.state.on_alias_cluster))
        aliases = dict(current)
        for action in body.actions:
            if isinstance(action, models.CreateAliasOperation):
                alias = action.create_alias.alias_name
                await self._check_alias_name(request, alias, library)
                aliases[alias] = await self._check_alias_target(
                    request, action.create_alias.collection_name, library
                )
            elif isinstance(action, models.DeleteAliasOperation):
                aliases.pop(action.delete_alias.alias_name, None)
            else:
                old = action.rename_alias.old_alias_name
                new = action.rename_alias.new_alias_name
                if old not in aliases:
                    raise ApiError(404, f"Not found: Alias `{old}` doesn't exist!")
                await self._check_alias_name(request, new, library)
                aliases[new] = aliases.pop(old)
        put = [(a, c) for a, c in sorted(aliases.items()) if current.get(a) != c]
        remove = sorted(set(current) - set(aliases))
        await self.state.aliases.change(self.state.on_alias_cluster, put, remove)
        return ok(True, started)

    async def _check_alias_name(self, request: web.Request, alias: str, library: Library) -> None:
        if not alias:
            raise ApiError(400, "Bad request: an alias needs a name")
        if alias == library.name:
            raise ApiError(409, f"Wrong input: Collection `{alias}` already exists!")
        if is_reserved_collection(alias) or alias in self.state.config.reserved:
            raise ApiError(400, f"Bad request: `{alias}` is a name the library reserves")
        if await self._on_default(request, lambda port: port.collection_exists(alias), alias):
            raise ApiError(409, f"Wrong input: Collection `{alias}` already exists!")

    async def _check_alias_target(
        self, request: web.Request, collection: str, library: Library
    ) -> str:
        if collection == library.name:
            return collection
        missing = ApiError(404, f"Not found: Collection `{collection}` doesn't exist!")
        if not self.state.passes_through(collection):
            raise missing  # an alias names a collection, never another alias
        held = await self._on_default(
            request, lambda port: port.collection_exists(collection), collection
        )
        if not held:
            raise missing
        return collection


async def forget_aliases_of(state: RouterState, collection: str) -> None:
    """Remove the aliases of a deleted collection, as Qdrant does when it deletes one."""
    pairs = await state.aliases.listing(state.on_alias_cluster)
    stale = [alias for alias, named in pairs if named == collection]
    if stale:
        await state.aliases.change(state.on_alias_cluster, [], stale)


def _alias_json(alias: str, collection: str) -> dict[str, str]:
    return {"alias_name": alias, "collection_name": collection}
