"""The bundled demo data: real Debian package descriptions and their embeddings.

Why this exists: ``make demo`` must run on real text and real vectors on a
machine with nothing downloaded. The data ships inside the package (see
``data/README.md`` for provenance); this module is the one place that reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class DemoData:
    """Records and vectors, row *i* of ``vectors`` belonging to ``records[i]``."""

    records: list[dict[str, object]]
    vectors: npt.NDArray[np.float32]

    @property
    def texts(self) -> list[str]:
        return [str(r["text"]) for r in self.records]


def load_demo_data(limit: int | None = None) -> DemoData:
    """Load the bundled slice (3,000 records, 384-d unit vectors)."""
    folder = resources.files("librarian.demo") / "data"
    with (folder / "vectors.npy").open("rb") as handle:
        vectors = np.load(handle).astype(np.float32)
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    if len(records) != len(vectors):
        raise RuntimeError(
            "bundled demo data is inconsistent: records and vectors differ in length"
        )
    if limit is not None:
        records, vectors = records[:limit], vectors[:limit]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return DemoData(records=records, vectors=vectors / np.maximum(norms, 1e-12))


def load_demo_sections() -> list[str]:
    """Ground-truth Debian sections, for judging discovery in the demo only."""
    folder = resources.files("librarian.demo") / "data"
    return [
        json.loads(line)["section"] for line in (folder / "sections.jsonl").read_text().splitlines()
    ]
