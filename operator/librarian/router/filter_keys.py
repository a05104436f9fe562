"""Which payload keys a client's filter names, and refusing those the library keeps for itself.

Why this exists: the library writes keys of its own on every point it holds
(the domain label, versions, tombstones, the partition) and hides them from
clients: payloads come back without them, and a client may not write them. A
filter naming one of them would still reach the homes and match the library's
bookkeeping, an answer one collection holding the client's points would never
give (there the key does not exist). So every filter a client sends to a
library collection (a search's, a scroll's, a count's, a facet's, a
prefetch's, a delete's or a payload update's selector, an upsert's
``update_filter``) is checked when its body is parsed, and one naming a
reserved key is refused with a 400 that names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from qdrant_client.http import models

from librarian.contracts.payload import RESERVED_KEYS

__all__ = ["ReservedKeyInFilter", "filter_keys", "filters_in", "reserved_filter_keys"]


class ReservedKeyInFilter(ValueError):
    """A client's filter names keys the library reserves; the message says which."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(
            f"Wrong input: the filter names {', '.join(keys)}, reserved by the library "
            f"(reserved: {', '.join(RESERVED_KEYS)}); filter on the client's own keys"
        )
        self.keys = keys


def filter_keys(flt: Any) -> Iterator[str]:
    """Every payload key a filter's conditions name (nested filters included)."""
    if flt is None:
        return
    if isinstance(flt, list):
        for item in flt:
            yield from filter_keys(item)
        return
    if isinstance(flt, models.Filter):
        for part in (flt.must, flt.should, flt.must_not):
            yield from filter_keys(part)
        if flt.min_should is not None:
            yield from filter_keys(flt.min_should.conditions)
        return
    if isinstance(flt, models.FieldCondition):
        yield flt.key
    elif isinstance(flt, models.IsEmptyCondition):
        yield flt.is_empty.key
    elif isinstance(flt, models.IsNullCondition):
        yield flt.is_null.key
    elif isinstance(flt, models.NestedCondition):
        yield flt.nested.key
        yield from filter_keys(flt.nested.filter)


def filters_in(value: Any) -> Iterator[models.Filter]:
    """Every filter inside a parsed request body (a model, a union member, lists of them),
    outermost first; a filter's own conditions are not searched again.

    This runs on every request, so it steps over what cannot hold a filter: a filter is
    always a model's field or an item of a list of models, never inside a plain map (a
    payload, named vectors) nor in a list of numbers (a vector), whose items are not
    visited one by one."""
    if isinstance(value, models.Filter):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            field = getattr(value, name)
            if isinstance(field, BaseModel | list | tuple):
                yield from filters_in(field)
    elif isinstance(value, list | tuple) and value and isinstance(value[0], BaseModel | list):
        for item in value:
            yield from filters_in(item)


def _reserved(key: str) -> bool:
    return key.split(".", 1)[0].split("[", 1)[0] in RESERVED_KEYS


def reserved_filter_keys(value: Any) -> list[str]:
    """The reserved keys the filters in ``value`` name, sorted; empty when none."""
    return sorted({k for flt in filters_in(value) for k in filter_keys(flt) if _reserved(k)})
