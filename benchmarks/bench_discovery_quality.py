"""Discovery quality on labelled data: NMI of hybrid (automatic k) vs k-means told the true k.

Three labelled sets, in one run:

* the shared Debian package set (12 archive sections): every strategy with
  the automatic domain count, and scikit-learn KMeans told the true k = 12;
* a held-out Debian-style set built from this machine's own package lists
  (18 other sections, other packages; see ``debian_heldout.py``), skipped
  with a message when the lists or the embedding model are absent;
* scikit-learn's handwritten digits (10 classes, 1,797 x 64, bundled offline).

For each: hybrid's NMI and chosen k against KMeans(true k), and why that k
(the criterion's scores). Then the domain count hybrid chooses on GloVe 6B
50-d word vectors (``--glove-sizes``, default 100k; pass 100000,400000 for
both), where a silhouette choice collapsed to 2. Exits non-zero if hybrid
scores below 0.60 on the shared set, below KMeans(true k) on any set, or
picks 2 domains on GloVe.

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
from sklearn.datasets import load_digits
from sklearn.metrics import normalized_mutual_info_score

from debian_heldout import HeldoutUnavailable, load_heldout
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


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def compare(
    name: str,
    vectors: np.ndarray,
    labels: list[str] | np.ndarray,
    texts: list[str] | None,
    seed: int,
    strategies: tuple[str, ...] = ("hybrid",),
) -> tuple[float, float]:
    """Print KMeans(true k) and each strategy's NMI on one set; return (hybrid, baseline)."""
    true_k = len(set(np.asarray(labels).tolist()))
    print(f"{name}: {len(vectors):,} vectors x {vectors.shape[1]}, {true_k} labels")
    start = time.perf_counter()
    baseline = KMeans(n_clusters=true_k, n_init=1, random_state=seed).fit_predict(unit(vectors))
    base_nmi = normalized_mutual_info_score(labels, baseline)
    print(
        f"  {f'baseline KMeans(k={true_k}, true k)':34s} NMI {base_nmi:.3f}  k={true_k:<3d}"
        f"{time.perf_counter() - start:5.1f}s"
    )
    scores: dict[str, float] = {}
    for strategy in strategies:
        start = time.perf_counter()
        result = discover(vectors, strategy=strategy, texts=texts, seed=seed)
        scores[strategy] = normalized_mutual_info_score(labels, result.labels)
        print(
            f"  {strategy + ' (automatic k)':34s} NMI {scores[strategy]:.3f}  "
            f"k={len(result.domains):<3d}{time.perf_counter() - start:5.1f}s  "
            f"confidence {result.confidence:.2f}"
        )
        if strategy == "hybrid" and result.domain_count is not None:
            print(f"    why: {result.domain_count.summary()}")
    hybrid = scores["hybrid"]
    verdict = "meets" if hybrid >= base_nmi else "MISSES"
    print(
        f"  hybrid NMI {hybrid:.3f} {verdict} the goal >= KMeans(true k) {base_nmi:.3f} "
        f"({hybrid / base_nmi:.2f}x)"
    )
    return hybrid, base_nmi


def glove_counts(sizes: list[int], seed: int) -> bool:
    """Print the domain count hybrid picks on GloVe samples; False if any is 2."""
    from bench_discovery_speed import glove

    data = glove()
    rng = np.random.default_rng(seed)
    fine = True
    for size in sizes:
        vectors = data[rng.choice(len(data), min(size, len(data)), replace=False)]
        start = time.perf_counter()
        result = discover(vectors, strategy="hybrid", seed=seed)
        k = len(result.domains)
        fine &= k != 2
        why = result.domain_count.summary() if result.domain_count else ""
        print(
            f"GloVe 6B 50-d, {len(vectors):,} words: hybrid k={k} "
            f"({time.perf_counter() - start:.1f}s)\n    why: {why}"
        )
    return fine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--glove-sizes", default="100000", help="comma-separated; empty: skip")
    args = parser.parse_args()
    vectors, texts, sections, source = load(Path(args.data) if args.data else None)
    bundled = "bundled slice" in source
    ok = True
    hybrid, base = compare(
        f"Debian set ({source})", vectors, sections, texts, args.seed, STRATEGIES
    )
    goal = GOAL if not bundled else 0.5
    verdict = "meets" if hybrid >= goal else "MISSES"
    print(f"  hybrid NMI {hybrid:.3f} {verdict} the shared set's goal >= {goal:.2f}")
    ok &= hybrid >= goal and hybrid >= base
    try:
        held_vectors, held_texts, held_sections = load_heldout(
            REPO.parent / "shared/datasets/debian-dev/records.jsonl", seed=args.seed
        )
    except HeldoutUnavailable as reason:
        print(f"held-out Debian set skipped: {reason}")
    else:
        hybrid, base = compare(
            "held-out Debian set (this machine's package lists)",
            held_vectors,
            held_sections,
            held_texts,
            args.seed,
        )
        ok &= hybrid >= base
    digits = load_digits()
    hybrid, base = compare(
        "handwritten digits (scikit-learn)",
        digits.data.astype(np.float32),
        digits.target,
        None,
        args.seed,
    )
    ok &= hybrid >= base
    sizes = [int(s) for s in args.glove_sizes.split(",") if s.strip()]
    if sizes:
        ok &= glove_counts(sizes, args.seed)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
