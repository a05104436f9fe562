"""Shared synthetic data for the unit tests of the pure core."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

TOPICS = [
    "kernel driver module firmware",
    "guitar audio synth music",
    "font glyph typeface unicode",
    "chess puzzle board game",
    "mail smtp imap mailbox",
]


def make_blobs(
    centres: int = 4, per: int = 80, dim: int = 32, spread: float = 0.08, seed: int = 1
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], list[str]]:
    """Well-separated clusters on the unit sphere, with a text per point."""
    rng = np.random.default_rng(seed)
    axes = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:centres]
    vectors = np.concatenate([a + spread * rng.standard_normal((per, dim)) for a in axes])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    truth = np.repeat(np.arange(centres), per)
    texts = [f"{TOPICS[t % len(TOPICS)]} package {i}" for i, t in enumerate(truth)]
    return vectors.astype(np.float32), truth, texts


def unit_rows(rows: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def make_mixture(
    n: int, dim: int, centres: int, noise: float, seed: int, *, queries: int
) -> dict[str, Any]:
    """Points around seeded random centres, the first ``queries`` held out as queries;
    the units are the mixture's components."""
    rng = np.random.default_rng(seed)
    means = unit_rows(rng.standard_normal((centres, dim)))
    component = rng.integers(0, centres, n)
    points = unit_rows(means[component] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim))
    return {"data": points[queries:], "queries": points[:queries], "labels": component[queries:]}


@pytest.fixture
def blobs() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], list[str]]:
    return make_blobs()
