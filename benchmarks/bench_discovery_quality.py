"""Discovery quality on real data: NMI of every strategy against ground-truth sections.

Prints, for the Debian package set (12 archive sections; the product never
reads them), the normalized mutual information of each strategy with the
automatic domain count, and of scikit-learn KMeans told the true k = 12 as
the baseline, all in one run. Exits non-zero if hybrid scores below 0.60.

Data: ``--data DIR`` (or ``LIBRARIAN_BENCH_DATA``) holding ``vectors.npy`` and
``records.jsonl`` with ``section`` and ``text``; by default the sibling
``shared/datasets/debian-dev`` of the repository, else the bundled 3,000-record
slice (whose goal is lower: it is a fifth of the data).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from librarian.core.discovery import STRATEGIES, discover

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.60


def load(data_dir: Path | None) -> tuple[np.ndarray, list[str], list[str], str]:
    candidates = [data_dir] if data_dir else [REPO.parent / "shared/datasets/debian-dev"]
    for folder in candidates:
        if folder and (folder / "vectors.npy").exists():
            records = [json.loads(x) for x in (folder / "records.jsonl").read_text().splitlines()]
            vectors = np.load(folder / "vectors.npy").astype(np.float32)
            return (
                vectors,
                [r["text"] for r in records],
                [r["section"] for r in records],
                str(folder),
            )
    bundled = REPO / "operator/librarian/demo/data"
    records = [json.loads(x) for x in (bundled / "records.jsonl").read_text().splitlines()]
    sections = [
        json.loads(x)["section"] for x in (bundled / "sections.jsonl").read_text().splitlines()
    ]
    vectors = np.load(bundled / "vectors.npy").astype(np.float32)
    return vectors, [r["text"] for r in records], sections, f"{bundled} (bundled slice)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vectors, texts, sections, source = load(Path(args.data) if args.data else None)
    bundled = "bundled slice" in source
    print(f"discovery quality on {len(vectors):,} vectors x {vectors.shape[1]} from {source}")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    start = time.perf_counter()
    baseline = KMeans(n_clusters=12, n_init=1, random_state=args.seed).fit_predict(unit)
    base_nmi = normalized_mutual_info_score(sections, baseline)
    print(
        f"  {'baseline KMeans(k=12, true k)':34s} NMI {base_nmi:.3f}  k=12  "
        f"{time.perf_counter() - start:5.1f}s"
    )
    scores = {}
    for strategy in STRATEGIES:
        start = time.perf_counter()
        result = discover(vectors, strategy=strategy, texts=texts, seed=args.seed)
        scores[strategy] = normalized_mutual_info_score(sections, result.labels)
        print(
            f"  {strategy + ' (automatic k)':34s} NMI {scores[strategy]:.3f}  "
            f"k={len(result.domains):<3d}{time.perf_counter() - start:5.1f}s  "
            f"confidence {result.confidence:.2f}"
        )
    goal = GOAL if not bundled else 0.5
    verdict = "meets" if scores["hybrid"] >= goal else "MISSES"
    print(
        f"hybrid NMI {scores['hybrid']:.3f} {verdict} the goal >= {goal:.2f} "
        f"({scores['hybrid'] / base_nmi:.2f}x the true-k KMeans baseline)"
    )
    return 0 if scores["hybrid"] >= goal else 1


if __name__ == "__main__":
    sys.exit(main())
