"""Loading a user's own vectors (and payloads) into a collection: what ``librarian load`` does.

Why this exists: the library starts from a collection, and a user with a
``.npy`` file of embeddings and a ``.jsonl`` of records should get one without
writing a client script. Row ``i`` of the vectors becomes point id ``i`` with
the ``i``-th JSON object as its payload, so loading twice upserts the same
points. Every check runs before anything is written (the collection is not
even created): a row-count mismatch, rows with NaN or infinity, an array that
is not 2-D, a line that is not a JSON object, a payload using a key the product
reserves, and a dimension or distance that differs from an existing
collection's are refused with a message saying what is wrong and how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from librarian.contracts.payload import RESERVED_KEYS
from librarian.core.collection_spec import CollectionSpec, Distance
from librarian.storage.port import PointRecord, QdrantPort

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "LoadPlan",
    "LoadRefused",
    "LoadReport",
    "check_payloads",
    "iter_payloads",
    "load_points",
    "plan_load",
    "read_vectors",
]

DEFAULT_BATCH_SIZE = 500
_SHOWN_ROWS = 5  # how many offending row numbers a message names
_FINITE_CHUNK = 65_536  # rows checked at a time (the array may be memory-mapped)

Progress = Callable[[int, int], None]
"""``(points written so far, points in total)``."""


class LoadRefused(ValueError):
    """The input cannot be loaded as asked; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class LoadPlan:
    """What will be written, once every check has passed."""

    collection: str
    vectors: npt.NDArray[Any]
    payload_path: Path | None
    distance: Distance
    create: bool  # the collection does not exist yet

    @property
    def rows(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class LoadReport:
    """What was written."""

    collection: str
    points: int
    dimensions: int
    distance: Distance
    created: bool
    points_in_collection: int


def read_vectors(path: Path) -> npt.NDArray[Any]:
    """The ``(rows, dimensions)`` array of a ``.npy`` file (memory-mapped), every row finite."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise LoadRefused(
            f"{path} is not a readable .npy array ({error}); save it with numpy.save"
        ) from None
    if array.ndim != 2:
        raise LoadRefused(
            f"{path} holds an array of shape {array.shape}; expected (points, dimensions): "
            "one row per point (reshape it, e.g. array.reshape(len(array), -1))"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise LoadRefused(f"{path} holds {array.dtype} values; expected numbers (e.g. float32)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise LoadRefused(f"{path} holds an empty array of shape {array.shape}: nothing to load")
    _check_finite(array, path)
    vectors: npt.NDArray[Any] = array
    return vectors


def _check_finite(array: npt.NDArray[Any], path: Path) -> None:
    bad: list[int] = []
    total_bad = 0
    for start in range(0, array.shape[0], _FINITE_CHUNK):
        chunk = np.asarray(array[start : start + _FINITE_CHUNK], dtype=np.float64)
        rows = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        total_bad += len(rows)
        bad.extend(int(r) + start for r in rows[: _SHOWN_ROWS - len(bad)])
    if total_bad:
        shown = ", ".join(str(r) for r in bad) + (", ..." if total_bad > len(bad) else "")
        raise LoadRefused(
            f"{path} has {total_bad:,} row(s) with NaN or infinite values (rows {shown}; "
            "counted from 0): fix or drop them, and the matching payload lines, before loading"
        )


def _payload_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number from 1, text)`` of every non-blank line; blank lines only at the end."""
    blank_at: int | None = None
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    blank_at = blank_at or number
                    continue
                if blank_at is not None:
                    raise LoadRefused(
                        f"{path} line {blank_at} is empty: every row needs a JSON object on its "
                        "own line (write {} for a point without payload)"
                    )
                yield number, line
    except UnicodeDecodeError as error:
        raise LoadRefused(f"{path} is not UTF-8 text: {error}") from None
    except OSError as error:
        raise LoadRefused(f"{path} cannot be read: {error}") from None


def _parse(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise LoadRefused(f"{path} line {number} is not valid JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise LoadRefused(
            f"{path} line {number} is a JSON {type(value).__name__}, not an object: each line "
            'must be one object, e.g. {"text": "..."}'
        )
    reserved = sorted(set(value) & set(RESERVED_KEYS))
    if reserved:
        raise LoadRefused(
            f"{path} line {number} uses {', '.join(reserved)}: the library writes these keys "
            "itself; rename them in your records"
        )
    return value


def check_payloads(path: Path, rows: int) -> None:
    """Every line is a JSON object and there is exactly one per vector row."""
    count = 0
    for number, line in _payload_lines(path):
        _parse(path, number, line)
        count += 1
    if count != rows:
        raise LoadRefused(
            f"{path} has {count:,} JSON lines but the vectors have {rows:,} rows: row i gets "
            "line i+1 as its payload, so they must match one for one"
        )


def iter_payloads(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of ``path`` in order (after :func:`check_payloads`)."""
    for number, line in _payload_lines(path):
        yield _parse(path, number, line)


def plan_load(
    port: QdrantPort,
    collection: str,
    vectors_path: Path,
    payload_path: Path | None = None,
    distance: Distance | None = None,
) -> LoadPlan:
    """Check everything against the files and the cluster; nothing is written."""
    vectors = read_vectors(vectors_path)
    if payload_path is not None:
        check_payloads(payload_path, int(vectors.shape[0]))
    if not port.collection_exists(collection):
        return LoadPlan(collection, vectors, payload_path, distance or "Cosine", create=True)
    info = port.collection_info(collection)
    if info.spec.named or info.distance is None:
        raise LoadRefused(
            f"collection {collection!r} on cluster {port.cluster!r} holds named vectors; a "
            f"vectors file loads into a collection with one unnamed dense vector: load into "
            "another collection (--collection)"
        )
    if info.vector_size != vectors.shape[1]:
        raise LoadRefused(
            f"collection {collection!r} on cluster {port.cluster!r} holds {info.vector_size}-d "
            f"vectors but {vectors_path} has {vectors.shape[1]} dimensions: load into another "
            "collection (--collection) or delete this one first"
        )
    if distance is not None and distance != info.distance:
        raise LoadRefused(
            f"collection {collection!r} on cluster {port.cluster!r} uses distance "
            f"{info.distance}, not {distance}: drop --distance (the collection's is used) or "
            "load into another collection"
        )
    return LoadPlan(collection, vectors, payload_path, info.distance, create=False)


def load_points(
    port: QdrantPort,
    plan: LoadPlan,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Progress | None = None,
) -> LoadReport:
    """Create the collection if needed and upsert row ``i`` as point ``i`` (idempotent)."""
    if batch_size < 1:
        raise LoadRefused("the batch size must be at least 1")
    if plan.create:
        port.create_collection(
            plan.collection, CollectionSpec(vector_size=plan.dimensions, distance=plan.distance)
        )
    payloads = iter_payloads(plan.payload_path) if plan.payload_path is not None else None
    for start in range(0, plan.rows, batch_size):
        block = np.asarray(plan.vectors[start : start + batch_size], dtype=np.float32)
        points = [
            PointRecord(
                id=start + offset,
                vector=row.tolist(),
                payload=next(payloads) if payloads is not None else {},
            )
            for offset, row in enumerate(block)
        ]
        port.upsert(plan.collection, points)
        if on_progress is not None:
            on_progress(start + len(points), plan.rows)
    return LoadReport(
        collection=plan.collection,
        points=plan.rows,
        dimensions=plan.dimensions,
        distance=plan.distance,
        created=plan.create,
        points_in_collection=port.count(plan.collection),
    )
