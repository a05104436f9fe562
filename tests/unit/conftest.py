"""Shared synthetic data for the unit tests of the pure core."""

from __future__ import annotations

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


@pytest.fixture
def blobs() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], list[str]]:
    return make_blobs()
