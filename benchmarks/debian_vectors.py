"""The vectors the benchmarks run on: the Debian set if present, else the bundled slice.

``--data DIR`` / ``LIBRARIAN_BENCH_DATA`` name a folder with ``vectors.npy``;
by default the sibling ``shared/datasets/debian-dev`` of the repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load_vectors(data_dir: Path | None) -> np.ndarray:
    for folder in [data_dir] if data_dir else [REPO.parent / "shared/datasets/debian-dev"]:
        if folder and (folder / "vectors.npy").exists():
            return np.load(folder / "vectors.npy").astype(np.float32)
    return np.load(REPO / "operator/librarian/demo/data/vectors.npy").astype(np.float32)
