"""The vectors a point carries, in every shape Qdrant has, and the checks Qdrant makes on them.

Why this exists: a point carries one unnamed dense vector, or named vectors
of three kinds (dense, sparse, multivector), and may lack some of its named
ones. Moving points between homes must copy all of them, verification must
compare all of them, and routing needs only one dense vector out of them.
This module holds the one value type for that (Qdrant's ``VectorStruct`` as
qdrant-client models it: a plain list, or a dict of name to list /
``models.SparseVector`` / list of lists), the narrow helpers (the routing
vector of a point, equality within float tolerance, JSON), and validation
against a :class:`CollectionSpec` with Qdrant's own error words: the embedded
engine aborts the process on some malformed vectors instead of refusing them,
and the router must answer a malformed write with Qdrant's 400.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from qdrant_client.http import models

from librarian.core.collection_spec import UNNAMED, CollectionSpec

__all__ = [
    "UNNAMED",
    "VectorError",
    "VectorValue",
    "Vectors",
    "as_named",
    "checked_vectors",
    "from_named",
    "routing_vector",
    "select_vectors",
    "vector_names",
    "vectors_equal",
    "vectors_json",
]

VectorValue = list[float] | models.SparseVector | list[list[float]]
"""One vector of a point: dense, sparse, or a multivector (several dense vectors)."""

Vectors = list[float] | dict[str, VectorValue]
"""All the vectors of a point: the unnamed dense vector, or named vectors by name."""


class VectorError(ValueError):
    """A vector the collection cannot hold; the message is Qdrant's (``Wrong input: ...``)."""


def as_named(vectors: Vectors | None) -> dict[str, VectorValue]:
    """The vectors by name, the unnamed dense vector as ``""``."""
    if vectors is None:
        return {}
    if isinstance(vectors, dict):
        return vectors
    return {UNNAMED: vectors}


def from_named(named: Mapping[str, VectorValue]) -> Vectors:
    """The inverse of :func:`as_named`: an unnamed vector alone becomes a plain list."""
    if set(named) == {UNNAMED}:
        value = named[UNNAMED]
        if isinstance(value, list) and not (value and isinstance(value[0], list)):
            return [float(x) for x in value]  # type: ignore[arg-type]
    return dict(named)


def vector_names(vectors: Vectors | None) -> set[str]:
    """The names of the vectors a point carries (``""`` for the unnamed one)."""
    return set(as_named(vectors))


def routing_vector(vectors: Vectors | None, name: str = UNNAMED) -> list[float] | None:
    """The plain dense vector ``name`` of a point (``""``: the unnamed one); ``None`` when the
    point lacks it (or it is not a plain dense vector)."""
    if vectors is None:
        return None
    if isinstance(vectors, list):
        return vectors if name == UNNAMED else None
    value = vectors.get(name)
    if isinstance(value, list) and not (value and isinstance(value[0], list)):
        return value  # type: ignore[return-value]
    return None


def _sparse_equal(a: models.SparseVector, b: models.SparseVector, atol: float) -> bool:
    left = dict(zip(a.indices, a.values, strict=True))
    right = dict(zip(b.indices, b.values, strict=True))
    return left.keys() == right.keys() and all(
        math.isclose(left[i], right[i], rel_tol=0.0, abs_tol=atol) for i in left
    )


def _value_equal(a: VectorValue, b: VectorValue, atol: float) -> bool:
    if isinstance(a, models.SparseVector) or isinstance(b, models.SparseVector):
        return (
            isinstance(a, models.SparseVector)
            and isinstance(b, models.SparseVector)
            and _sparse_equal(a, b, atol)
        )
    if a == b:
        return True
    left, right = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return left.shape == right.shape and bool(np.allclose(left, right, rtol=0.0, atol=atol))


def vectors_equal(a: Vectors | None, b: Vectors | None, *, atol: float = 1e-6) -> bool:
    """Whether two points carry the same vectors: the same names, each of the same kind, dense
    values (and multivectors) equal within ``atol``, sparse ones with the same indices and
    values within ``atol`` (in any order)."""
    left, right = as_named(a), as_named(b)
    return left.keys() == right.keys() and all(
        _value_equal(left[name], right[name], atol) for name in left
    )


def vectors_json(vectors: Vectors | None) -> Any:
    """The vectors as Qdrant's JSON renders them (sparse as ``{"indices", "values"}``)."""
    if vectors is None or isinstance(vectors, list):
        return vectors
    return {
        name: (
            {"indices": list(value.indices), "values": list(value.values)}
            if isinstance(value, models.SparseVector)
            else value
        )
        for name, value in vectors.items()
    }


def select_vectors(vectors: Vectors | None, selector: Any) -> Vectors | None:
    """Qdrant's ``with_vector`` selector: all (``True``), none (``False``/``None``), or the
    named ones (a list of names)."""
    if selector is None or selector is False or vectors is None:
        return None
    if selector is True:
        return vectors
    names = set(selector)
    return {name: value for name, value in as_named(vectors).items() if name in names}


def _floats(value: Any, name: str, where: str) -> list[float]:
    try:
        floats = [float(x) for x in value]
    except (TypeError, ValueError):
        raise VectorError(f"Wrong input: Dense vector must be one-dimensional{where}") from None
    if not all(math.isfinite(x) for x in floats):
        raise VectorError("Wrong input: vector contains NaN or infinite values")
    return floats


def _is_sparse(value: Any) -> bool:
    return isinstance(value, models.SparseVector) or (
        isinstance(value, Mapping) and set(value) == {"indices", "values"}
    )


def _checked_sparse(value: Any, name: str) -> models.SparseVector:
    where = f" for vector {name!r}"
    if not _is_sparse(value):
        raise VectorError(
            f"Wrong input: Conversion between sparse and regular vectors failed{where}"
        )
    if isinstance(value, Mapping):
        value = models.SparseVector(indices=value["indices"], values=value["values"])
    indices, values = list(value.indices), list(value.values)
    if len(indices) != len(values):
        raise VectorError(
            f"Wrong input: Sparse vector indices and values must have the same length{where}"
        )
    if len(set(indices)) != len(indices):
        raise VectorError(f"Wrong input: Sparse vector indices must be unique{where}")
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in indices):
        raise VectorError(
            f"Wrong input: Sparse vector indices must be non-negative integers{where}"
        )
    floats = _floats(values, name, where)
    order = sorted(range(len(indices)), key=indices.__getitem__)
    return models.SparseVector(
        indices=[indices[i] for i in order], values=[floats[i] for i in order]
    )


def _checked_value(value: Any, name: str, spec: CollectionSpec) -> VectorValue:
    where = "" if name == UNNAMED else f" for vector {name!r}"
    if name in spec.sparse_vectors:
        return _checked_sparse(value, name)
    dense = spec.dense_vectors()[name]
    if _is_sparse(value):
        raise VectorError(
            f"Wrong input: Conversion between sparse and regular vectors failed{where}"
        )
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise VectorError(f"Wrong input: Dense vector must be one-dimensional{where}")
    nested = bool(value) and not isinstance(value[0], int | float)
    if dense.multivector is None:
        if nested:
            raise VectorError(f"Wrong input: Dense vector must be one-dimensional{where}")
        floats = _floats(value, name, where)
        if len(floats) != dense.size:
            raise VectorError(
                f"Wrong input: Vector dimension error: expected dim: {dense.size}, "
                f"got {len(floats)}{where}"
            )
        return floats
    if not value or not nested:
        raise VectorError(f"Wrong input: Multivector must be a non-empty list of vectors{where}")
    rows = [_floats(row, name, where) for row in value]
    for row in rows:
        if len(row) != dense.size:
            raise VectorError(
                f"Wrong input: Vector dimension error: expected dim: {dense.size}, "
                f"got {len(row)}{where}"
            )
    return rows


def checked_vectors(vectors: Any, spec: CollectionSpec) -> Vectors:
    """``vectors`` (qdrant-client models or their JSON) checked against the collection's
    vectors as Qdrant checks them, normalised (floats, sparse indices in order); a
    :class:`VectorError` in Qdrant's words otherwise. A point may lack named vectors."""
    dense_names = spec.dense_vectors()
    if isinstance(vectors, Mapping) and not _is_sparse(vectors):
        named: dict[str, VectorValue] = {}
        for name, value in vectors.items():
            if name not in dense_names and name not in spec.sparse_vectors:
                raise VectorError(f"Wrong input: Not existing vector name error: {name}")
            named[name] = _checked_value(value, name, spec)
        return from_named(named) if not spec.named else named
    if not dense_names and not spec.sparse_vectors:  # payloads only: "" is no vector's name
        raise VectorError("Wrong input: Not existing vector name error: ")
    if UNNAMED not in dense_names:
        named_ones = sorted(dense_names) or sorted(spec.sparse_vectors)
        raise VectorError(
            "Wrong input: Unnamed vectors are not allowed when a collection has named vectors "
            f"or multivectors: {named_ones}"
        )
    value = _checked_value(vectors, UNNAMED, spec)
    return value  # type: ignore[return-value]
