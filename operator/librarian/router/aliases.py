"""Qdrant's collection aliases, kept where every router replica sees them.

Why this exists: applications switch collections by moving an alias, and an
alias may name the library (then every library endpoint answers under it) or
an allowlisted collection. Aliases must be shared by every replica and
survive restarts, on embedded clusters too, so they are stored in the
library's own storage: one small collection of the library's default cluster
(``librarian-aliases``, a product collection the router never serves), one
point per alias whose id is derived from the alias name. The default cluster
is chosen because it is the one cluster every router of the library reaches
(it holds the source collection and, by default, the catalog), remote or
embedded; a Kubernetes object would leave routers outside Kubernetes without
aliases.

Nothing is cached: a name that is not the library's own is looked up in the
store on each request (one point read by id), so a deleted or moved alias is
never served by any replica once the change has been answered.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from qdrant_client.http import models

from librarian.storage.errors import CollectionExists, CollectionNotFound
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

__all__ = ["ALIASES_COLLECTION", "AliasStore", "alias_point_id"]

ALIASES_COLLECTION = "librarian-aliases"
_NAMESPACE = uuid.UUID("0b6f3d8e-6a52-4f0e-9d1c-2f7d8c1e5a90")
_ALIAS_KEY = "alias"
_COLLECTION_KEY = "collection"
_PAGE = 256

T = TypeVar("T")
Run = Callable[[Callable[[QdrantPort], T]], Awaitable[T]]


def alias_point_id(alias: str) -> str:
    """The id of the point that stores ``alias`` (the same on every replica)."""
    return str(uuid.uuid5(_NAMESPACE, alias))


@dataclass(frozen=True)
class AliasStore:
    """The aliases of one cluster, stored in ``collection`` there.

    ``run(operation)`` makes a port call on the cluster that holds the store
    (on the router's worker threads, within the request's timeout).
    """

    cluster: str
    collection: str = ALIASES_COLLECTION

    async def resolve(self, run: Run[str | None], alias: str) -> str | None:
        """The collection ``alias`` names, or ``None`` when there is no such alias."""

        def lookup(port: QdrantPort) -> str | None:
            try:
                found = port.retrieve(self.collection, [alias_point_id(alias)], with_vectors=False)
            except CollectionNotFound:
                return None
            for record in found:
                if record.payload.get(_ALIAS_KEY) == alias:
                    return str(record.payload[_COLLECTION_KEY])
            return None

        return await run(lookup)

    async def listing(self, run: Run[list[tuple[str, str]]]) -> list[tuple[str, str]]:
        """Every (alias, collection), by alias name."""

        def scan(port: QdrantPort) -> list[tuple[str, str]]:
            pairs: list[tuple[str, str]] = []
            offset = None
            while True:
                try:
                    page, offset = port.scroll(
                        self.collection, limit=_PAGE, offset=offset, with_vectors=False
                    )
                except CollectionNotFound:
                    return []
                pairs += [
                    (str(r.payload[_ALIAS_KEY]), str(r.payload[_COLLECTION_KEY]))
                    for r in page
                    if _ALIAS_KEY in r.payload and _COLLECTION_KEY in r.payload
                ]
                if offset is None:
                    return sorted(pairs)

        return await run(scan)

    async def change(
        self, run: Run[None], put: Sequence[tuple[str, str]], remove: Sequence[str]
    ) -> None:
        """Store the aliases of ``put`` (alias, collection), after removing those of ``remove``."""

        def apply(port: QdrantPort) -> None:
            if remove:
                with contextlib.suppress(CollectionNotFound):
                    port.delete_points(
                        self.collection, ids=[alias_point_id(alias) for alias in remove]
                    )
            if put:
                self._ensure(port)
                port.upsert(
                    self.collection,
                    [
                        PointRecord(
                            alias_point_id(alias),
                            [1.0],
                            {_ALIAS_KEY: alias, _COLLECTION_KEY: collection},
                        )
                        for alias, collection in put
                    ],
                )

        await run(apply)

    def _ensure(self, port: QdrantPort) -> None:
        if port.collection_exists(self.collection):
            return
        try:
            port.create_collection(self.collection, CollectionSpec(vector_size=1))
        except CollectionExists:
            return  # another replica created it meanwhile
        port.create_payload_index(
            self.collection, _COLLECTION_KEY, models.PayloadSchemaType.KEYWORD
        )
