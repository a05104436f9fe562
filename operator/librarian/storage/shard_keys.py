"""Checking the shard keys a request names against a collection's custom sharding.

Why this exists: both adapters keep Qdrant's rules for custom-sharded collections
(a write names its key; a selector names only keys the collection has; a collection
without custom sharding takes no key) where the engine behind them cannot check them
itself (the embedded engine has no shard keys; qdrant-client's local mode ignores
them), and must refuse in the same words.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from librarian.storage.errors import InvalidRequest

__all__ = ["checked_selector", "checked_write_key"]


def checked_selector(
    cluster: str,
    collection: str,
    known: Collection[str] | None,
    asked: Sequence[str] | None,
) -> list[str] | None:
    """The keys a read or delete selects (``None``: every shard), each once, in order;
    ``known`` are the collection's keys (``None``: no custom sharding)."""
    if asked is None:
        return None
    if known is None:
        raise InvalidRequest(
            cluster,
            "Wrong input: shard_key: the collection has no custom sharding; query it without "
            "a shard key",
            collection=collection,
        )
    unknown = [key for key in asked if key not in known]
    if unknown:
        raise InvalidRequest(cluster, f"Shard key {unknown[0]} not found", collection=collection)
    return list(dict.fromkeys(asked))


def checked_write_key(
    cluster: str, collection: str, known: Collection[str] | None, key: str | None
) -> str | None:
    """The key a write goes under: required on a custom-sharded collection (as Qdrant
    requires it) and one of its keys, refused on any other."""
    if known is None:
        if key is not None:
            raise InvalidRequest(
                cluster,
                "Wrong input: the collection has no custom sharding; write without a shard key",
                collection=collection,
            )
        return None
    if key is None:
        raise InvalidRequest(
            cluster,
            "Wrong input: Shard key not specified (the collection has custom sharding: "
            "every write names the shard key its points go under)",
            collection=collection,
        )
    if key not in known:
        raise InvalidRequest(cluster, f"Shard key {key} not found", collection=collection)
    return key
