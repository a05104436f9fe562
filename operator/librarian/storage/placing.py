"""A port that writes points into specialized homes marked with the partition each is in.

Why this exists: a specialized home marks every point with the partition of its
domain nearest the point's routing vector, in the reserved payload field
:data:`~librarian.contracts.payload.PARTITION_KEY` (or, in a home created before
that layout, by the shard key it goes under). The router's write paths
(upserts, conditional copies, tombstones, vector updates, payload overwrites,
the clean-up of old homes) are many and were written against plain ports; this
wrapper places their points once, by a placement function per collection (the
partition nearest each point's routing vector, decided above this layer), so
no write path can forget it. Calls on other collections, and writes that name a
shard key themselves, pass through unchanged.

A vector update can move a point to another partition: the wrapper reads the
point, applies the new vectors and writes it whole, vectors and partition in
one upsert (on a home sharded by key, under its new key: the port's upsert then
removes the copy under the old key), judging the update's condition where the
point is. An overwrite of a home placed by field keeps each point's partition
field: it overwrites the points of each partition with the partition added.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from qdrant_client.http import models

from librarian.contracts.payload import PARTITION_KEY
from librarian.storage.port import PointRecord, QdrantPort, ShardKeys
from librarian.storage.vectors import Vectors, as_named, from_named

__all__ = ["Placer", "PlacingPort"]

Placer = Callable[[Sequence[PointRecord]], Mapping[str | None, Sequence[PointRecord]]]
"""Groups points by the shard key their upsert names (``None``: no key; on a home placed by
field, the points come back marked with their partition)."""

_OVERWRITE_PASSES = 8  # partitions a point may move to while its payload is overwritten
_LISTED = 1000  # ids per page when listing the partitions an overwrite touches


class PlacingPort:
    """``port`` with the writes into ``placers``' collections placed by partition (see the
    module's docstring); ``by_field`` are those whose partition is the payload field."""

    def __init__(
        self,
        port: QdrantPort,
        placers: Mapping[str, Placer],
        by_field: Collection[str] = (),
    ) -> None:
        self._port = port
        self._placers = placers
        self._by_field = frozenset(by_field)

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
        if collection in self._by_field:
            # one upsert rewrites vectors and partition; only a point still there and still
            # matching the condition (a concurrent write or delete wins over this rewrite)
            for key, group in placer(updated).items():
                self._port.upsert(
                    collection,
                    group,
                    shard_key=key,
                    update_filter=update_filter,
                    update_mode=models.UpdateMode.UPDATE_ONLY,
                )
            return
        for key, group in placer(updated).items():
            self._port.upsert(collection, group, shard_key=key)

    def overwrite_payload(
        self,
        collection: str,
        payload: Mapping[str, Any],
        *,
        points_filter: models.Filter,
        shard_keys: ShardKeys = None,
    ) -> None:
        if collection not in self._by_field:
            self._port.overwrite_payload(
                collection, payload, points_filter=points_filter, shard_keys=shard_keys
            )
            return
        done: list[str] = []
        done_unmarked = False
        for _ in range(_OVERWRITE_PASSES):
            rest = _outside(points_filter, done, done_unmarked)
            values, unmarked = self._partitions_of(collection, rest)
            if not values and not unmarked:
                return
            for value in values:
                self._port.overwrite_payload(
                    collection,
                    {**payload, PARTITION_KEY: value},
                    points_filter=models.Filter(
                        must=[
                            rest,
                            models.FieldCondition(
                                key=PARTITION_KEY, match=models.MatchValue(value=value)
                            ),
                        ]
                    ),
                )
            if unmarked:
                self._port.overwrite_payload(
                    collection,
                    {k: v for k, v in payload.items() if k != PARTITION_KEY},
                    points_filter=models.Filter(must=[rest, _unmarked()]),
                )
            done += values
            done_unmarked = done_unmarked or unmarked
        raise RuntimeError(
            f"the points of {collection} kept moving between partitions while their payload "
            "was overwritten"
        )

    def _partitions_of(self, collection: str, flt: models.Filter) -> tuple[list[str], bool]:
        """The partitions the points matching ``flt`` are in, and whether some carry none."""
        values: dict[str, None] = {}
        unmarked = False
        offset: Any = None
        while True:
            page = self._port.scroll_keys(
                collection, keys=[PARTITION_KEY], limit=_LISTED, offset=offset, scroll_filter=flt
            )
            for held in page.payloads:
                value = held.get(PARTITION_KEY)
                if isinstance(value, str):
                    values[value] = None
                else:
                    unmarked = True
            offset = page.next_offset
            if offset is None:
                return list(values), unmarked

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


def _unmarked() -> models.IsEmptyCondition:
    return models.IsEmptyCondition(is_empty=models.PayloadField(key=PARTITION_KEY))


def _outside(flt: models.Filter, done: Sequence[str], done_unmarked: bool) -> models.Filter:
    """``flt`` without the points of the partitions ``done`` (and the unmarked points)."""
    excluded: list[models.Condition] = []
    if done:
        excluded.append(
            models.FieldCondition(key=PARTITION_KEY, match=models.MatchAny(any=list(done)))
        )
    if done_unmarked:
        excluded.append(_unmarked())
    return models.Filter(must=[flt], must_not=excluded) if excluded else flt
