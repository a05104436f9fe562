"""A port that writes points into custom-sharded collections under the key each belongs to.

Why this exists: a specialized home keeps one shard key per partition of its
domain, and every write into it must name the key of the point's partition. The
router's write paths (upserts, conditional copies, tombstones, vector updates,
the clean-up of old homes) are many and were written against plain ports; this
wrapper places their points once, by a placement function per collection (the
partition nearest each point's routing vector, decided above this layer), so
no write path can forget it. Calls on other collections, and writes that name a
shard key themselves, pass through unchanged.

A vector update can move a point to another partition: the wrapper reads the
point, applies the new vectors and writes it whole under its new key (the
port's upsert then removes the copy under the old key), judging the update's
condition where the point is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qdrant_client.http import models

from librarian.storage.port import PointRecord, QdrantPort
from librarian.storage.vectors import Vectors, as_named, from_named

__all__ = ["Placer", "PlacingPort"]

Placer = Callable[[Sequence[PointRecord]], Mapping[str, Sequence[PointRecord]]]
"""Groups points by the shard key each goes under."""


class PlacingPort:
    """``port`` with the upserts and vector updates of ``placers``' collections placed by key
    (see the module's docstring)."""

    def __init__(self, port: QdrantPort, placers: Mapping[str, Placer]) -> None:
        self._port = port
        self._placers = placers

    @property
    def calls_overlap(self) -> bool:
        return bool(getattr(self._port, "calls_overlap", True))

    @property
    def cluster(self) -> str:
        return self._port.cluster

    def upsert(
        self,
        collection: str,
        points: Sequence[PointRecord],
        *,
        shard_key: str | None = None,
        **options: Any,
    ) -> None:
        placer = self._placers.get(collection)
        if placer is None or shard_key is not None:
            self._port.upsert(collection, points, shard_key=shard_key, **options)
            return
        for key, group in placer(points).items():
            self._port.upsert(collection, group, shard_key=key, **options)

    def update_vectors(
        self,
        collection: str,
        points: Sequence[PointRecord],
        *,
        update_filter: models.Filter | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        placer = self._placers.get(collection)
        if placer is None or not points:
            self._port.update_vectors(
                collection, points, update_filter=update_filter, shard_keys=shard_keys
            )
            return
        ids = [p.id for p in points]
        stored = {
            r.id: r
            for r in self._port.retrieve(collection, ids, with_vectors=True, shard_keys=shard_keys)
        }
        missing = [i for i in ids if i not in stored]
        if missing:  # the port refuses them as Qdrant does (no point with this id)
            self._port.update_vectors(
                collection,
                [p for p in points if p.id in missing],
                update_filter=update_filter,
                shard_keys=shard_keys,
            )
            return
        if update_filter is not None:
            matching = models.Filter(must=[models.HasIdCondition(has_id=ids), update_filter])
            page, _ = self._port.scroll(
                collection,
                limit=len(ids),
                scroll_filter=matching,
                with_vectors=False,
                with_payload=False,
                shard_keys=shard_keys,
            )
            chosen = {r.id for r in page}
            points = [p for p in points if p.id in chosen]
        updated = [
            PointRecord(p.id, _merged(stored[p.id].vector, p.vector), stored[p.id].payload)
            for p in points
        ]
        for key, group in placer(updated).items():
            self._port.upsert(collection, group, shard_key=key)

    # Everything else is the wrapped port's.

    def ping(self) -> None:
        self._port.ping()

    def collection_exists(self, collection: str) -> bool:
        return self._port.collection_exists(collection)

    def create_collection(self, *args: Any, **kwargs: Any) -> None:
        self._port.create_collection(*args, **kwargs)

    def update_collection(self, *args: Any, **kwargs: Any) -> None:
        self._port.update_collection(*args, **kwargs)

    def delete_collection(self, collection: str) -> None:
        self._port.delete_collection(collection)

    def collection_info(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.collection_info(*args, **kwargs)

    def create_keyword_index(self, *args: Any, **kwargs: Any) -> None:
        self._port.create_keyword_index(*args, **kwargs)

    def describe_collection(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.describe_collection(*args, **kwargs)

    def create_payload_index(self, *args: Any, **kwargs: Any) -> None:
        self._port.create_payload_index(*args, **kwargs)

    def delete_payload_index(self, *args: Any, **kwargs: Any) -> None:
        self._port.delete_payload_index(*args, **kwargs)

    def create_vector_name(self, *args: Any, **kwargs: Any) -> None:
        self._port.create_vector_name(*args, **kwargs)

    def delete_vector_name(self, *args: Any, **kwargs: Any) -> None:
        self._port.delete_vector_name(*args, **kwargs)

    def delete_vectors(self, *args: Any, **kwargs: Any) -> None:
        self._port.delete_vectors(*args, **kwargs)

    def scroll(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.scroll(*args, **kwargs)

    def scroll_keys(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.scroll_keys(*args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.query(*args, **kwargs)

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.sample(*args, **kwargs)

    def count(self, *args: Any, **kwargs: Any) -> int:
        return self._port.count(*args, **kwargs)

    def retrieve(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.retrieve(*args, **kwargs)

    def set_payload(self, *args: Any, **kwargs: Any) -> None:
        self._port.set_payload(*args, **kwargs)

    def overwrite_payload(self, *args: Any, **kwargs: Any) -> None:
        self._port.overwrite_payload(*args, **kwargs)

    def delete_payload_keys(self, *args: Any, **kwargs: Any) -> None:
        self._port.delete_payload_keys(*args, **kwargs)

    def delete_points(self, *args: Any, **kwargs: Any) -> None:
        self._port.delete_points(*args, **kwargs)

    def query_points(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.query_points(*args, **kwargs)

    def facet(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.facet(*args, **kwargs)

    def scroll_points(self, *args: Any, **kwargs: Any) -> Any:
        return self._port.scroll_points(*args, **kwargs)

    def close(self) -> None:
        self._port.close()


def _merged(stored: Vectors | None, given: Vectors | None) -> Vectors | None:
    """The vectors a point holds after an update of ``given`` ones (Qdrant's update-vectors:
    the named vectors given replace the stored ones, the others stay)."""
    if given is None:
        return stored
    if isinstance(given, list) or stored is None or isinstance(stored, list):
        return given
    return from_named({**as_named(stored), **as_named(given)})
