"""Domain discovery: find the semantic domains in a set of vectors.

Why this exists: it is the first thing users meet. Given (a sample of) the
vectors of one big mixed collection — and optionally each point's text — it
returns readable, placeable domains (stable id, name, centroid, radius, size,
cohesion, keywords), a label per vector, a confidence, and the finer routing
partitions nested inside the domains: as many in all as an IVF index would
have lists for the collection's size (:func:`partition_count`), fitted by a
sampled spherical k-means as IVF training does (faiss's k-means fits no
better and no faster on the same sample and iterations; scikit-learn's
k-means++ and 100 iterations are several times slower at thousands of cells).
Pure: numpy / scikit-learn only, no I/O, no clock; all randomness comes from
``seed``.

Vectors are compared by cosine similarity: every input row is normalised to
unit length (Qdrant's ``Cosine`` distance does the same).

Strategies (``STRATEGIES``):

* ``hybrid`` (default): k-means pre-clustering of a bounded sample with the
  number of domains chosen automatically (see below), density refinement of
  outliers (a point whose k nearest neighbours mostly sit in another domain
  moves there),
  then merging of domains whose centroids are more similar than
  ``merge_similarity`` and dissolving of domains smaller than
  ``min_domain_size``.
* ``kmeans``: spherical k-means with the same automatic choice of k.
* ``dbscan``: HDBSCAN over a PCA projection; noise points join their nearest domain.
* ``hierarchical``: Ward agglomeration of k-means micro-clusters; the tree's
  coarser level becomes each domain's ``parent``.
* ``semantic_flow``: the input is a stream in time order, cut into windows;
  centroids follow the stream (decayed running means), domains emerge when
  many points fit no centroid, and fade when nothing reaches them.

The number of domains (unless ``n_domains`` forces it) is the candidate k
whose k-means partition is most reproducible beyond what structureless data
would give: for each k, k-means is fitted on two disjoint halves of a bounded
sample and both fits label the whole sample; their agreement (normalised
mutual information, averaged over a few seeded splits) is the stability. The
same is measured on a Gaussian reference with the sample's mean and
covariance (projected to the sphere), which has no clusters but the same
elongation — where any k, above all k = 2, can look stable. The data's
agreement varies about twice as much from split to split as the reference's
(k-means on real clusters lands in different local optima on the two
halves; on a Gaussian it cuts much the same slabs), so the data gets twice
the reference's splits (``stability_resamples`` and half of it): with two
each, the noise between neighbouring counts was several times the near-tie
tolerance, and near-ties went to whichever count a lucky split favoured. The score is the
stability corrected for that chance level, like a kappa: ``1 - (1 -
stability) / (1 - reference stability)`` (1: perfectly reproducible, 0: no
better than structureless data). The size prior breaks near-ties: among
candidates within ``stability_tolerance`` of the best, the fewest domains win
(domains are placement units — each may become a collection of its own —
while the finer routing cells are the partitions); the bounds
``min_domains``, ``max_domains`` and ``n / min_domain_size`` set the range.
When no candidate reaches ``min_stability`` (on the kappa scale, 0.2 is only
"slight" agreement), the data shows no structure that structureless data
would not: it keeps the fewest domains the bounds allow rather than the
count that won by noise — unless the scores rise with k all the way to the
largest count the bounds allow (rank correlation of k and score at least
``finer_trend``, the best at the largest k and at least half of
``min_stability``): then the data has structure finer than the bounds let
discovery see (a mixture of 100 topics scored -0.04 at k = 2 rising steadily to
+0.13 at k = 32), and it takes the largest count, saying to raise
``max_domains``. Structureless data has no such trend: its scores scatter
around zero.
Silhouette, used before, collapses to 2 on word vectors, whose only robust
split is their elongation. :class:`DomainCountChoice` says what was chosen
and why.

Memory: rows that are already unit length (what a Cosine collection stores)
are used without a copy; work arrays are bounded blocks or bounded samples.

Domain ids are deterministic (a hash of the seed and the rounded centroid)
and, when ``previous`` domains are given, matched to them (Hungarian
assignment on centroid similarity, floor ``id_match_similarity``) so that
re-analysis keeps ids stable; a new domain never reuses an old id. Partition
ids follow the same rules within their domain (``previous_partitions``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score
from threadpoolctl import threadpool_limits

from librarian.core.keywords import class_keywords, domain_names

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

STRATEGIES = ("kmeans", "dbscan", "hierarchical", "semantic_flow", "hybrid")


class DiscoveryError(ValueError):
    """The input cannot be analysed; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class DiscoveryBounds:
    """Tunable thresholds of discovery; pass any of them to :func:`discover` as keywords."""

    min_domains: int = 2
    max_domains: int = 32
    n_domains: int | None = None  # force the number of domains (skips the automatic choice)
    min_domain_size: int = 20
    merge_similarity: float = 0.95  # centroids more similar than this are one domain
    sample_size: int = 20_000  # points used to fit; the rest are assigned to the nearest domain
    selection_sample: int = 4_000  # points used to choose the number of domains
    # Seeded half/half splits of the data per candidate number of domains; the structureless
    # reference, whose agreement varies about half as much between splits, gets half of them.
    stability_resamples: int = 4
    stability_tolerance: float = 0.01  # prefer fewer domains within this much of the best score
    # Below this chance-corrected stability no count is better supported than structureless
    # data (on a kappa scale, 0.2 is "slight" agreement): keep the fewest domains allowed.
    min_stability: float = 0.2
    # Scores that rise with k up to max_domains (rank correlation at least this) mean structure
    # finer than the bounds, not none: the largest count allowed is taken instead of the fewest.
    finer_trend: float = 0.7
    refine_neighbors: int = 20  # k of the k-nearest-neighbour density refinement (0: off)
    refine_rounds: int = 3
    refine_share: float = 0.3  # share of points (smallest centroid margin) treated as outliers
    refine_sample: int = 15_000  # points refined by density; the rest follow their nearest centroid
    # Routing partitions (see :func:`partition_count`): about 4·sqrt(points) in all, as IVF
    # indexes use, no more than ``max_partitions`` nor than one per ``min_partition_size``
    # points (an average: k-means cells vary in size); ``partitions`` forces the total.
    partitions: int | None = None
    max_partitions: int = 4096
    min_partition_size: int = 100  # the smallest partition worth its own shard, on average
    population: int | None = None  # points of the collection the input was sampled from
    confidence_margin: float = (
        0.02  # a point is confidently placed when this much closer to its domain
    )
    id_match_similarity: float = 0.8  # floor for keeping a previous domain's id
    expected_dim: int | None = None
    window: int = 0  # semantic_flow: points per window (0: a fifth of the input)
    novelty_similarity: float = 0.0  # semantic_flow: below this a point fits no centroid (0: auto)
    decay: float = 0.5  # semantic_flow: weight kept by a centroid per window
    keywords: int = 8

    def validate(self) -> None:
        whole = {
            "min_domains": self.min_domains,
            "n_domains": self.n_domains,
            "min_domain_size": self.min_domain_size,
            "stability_resamples": self.stability_resamples,
            "min_partition_size": self.min_partition_size,
            "max_partitions": self.max_partitions,
            "partitions": self.partitions,
            "population": self.population,
        }
        problems = [
            f"{name} must be >= 1 (got {value})"
            for name, value in whole.items()
            if value is not None and value < 1
        ]
        if self.max_domains < self.min_domains:
            problems.append(
                f"max_domains ({self.max_domains}) must be >= min_domains ({self.min_domains})"
            )
        if not 0.0 < self.merge_similarity <= 1.0:
            problems.append(f"merge_similarity must be in (0, 1] (got {self.merge_similarity})")
        if self.sample_size < 10 or self.selection_sample < 10:
            problems.append("sample_size and selection_sample must be >= 10")
        if not -1.0 <= self.min_stability <= 1.0:
            problems.append(f"min_stability must be in [-1, 1] (got {self.min_stability})")
        if not -1.0 <= self.finer_trend <= 1.0:
            problems.append(f"finer_trend must be in [-1, 1] (got {self.finer_trend})")
        if not 0.0 <= self.stability_tolerance <= 1.0:
            problems.append(
                f"stability_tolerance must be in [0, 1] (got {self.stability_tolerance})"
            )
        if not 0.0 < self.decay <= 1.0:
            problems.append(f"decay must be in (0, 1] (got {self.decay})")
        if problems:
            raise DiscoveryError("bad discovery thresholds: " + "; ".join(problems))


@dataclass(frozen=True)
class Domain:
    """One semantic domain: the readable, placeable unit."""

    id: str
    name: str
    centroid: FloatArray
    radius: float  # 90th percentile of members' cosine distance to the centroid
    size: int
    cohesion: float  # mean cosine similarity of members to the centroid
    keywords: tuple[str, ...] = ()
    parent: str | None = None


@dataclass(frozen=True)
class Partition:
    """A finer cell nested inside a domain (e.g. a shard key), for routing."""

    id: str
    domain: int
    centroid: FloatArray
    size: int


@dataclass(frozen=True)
class DomainCountChoice:
    """How the number of domains was chosen, for the status: criterion, scores, result.

    ``criterion`` is ``stability`` (automatic), ``forced`` (``n_domains``),
    ``bounds`` (the bounds leave one possible count) or ``strategy`` (the
    strategy finds its own count: dbscan, semantic_flow's emerging domains).
    ``scores`` maps each candidate k to its chance-corrected stability; ``chosen`` is the
    k the clustering started from and ``final`` the count after merging
    near-duplicate and dissolving too small domains.
    """

    criterion: str
    chosen: int
    final: int = 0
    scores: tuple[tuple[int, float], ...] = ()
    reason: str = ""

    def summary(self) -> str:
        """One line: the criterion, the candidates' scores and the decision."""
        text = f"{self.criterion}: chose k={self.chosen}"
        if self.final and self.final != self.chosen:
            text += f", {self.final} after merging and pruning"
        if self.reason:
            text += f" ({self.reason})"
        if self.scores:
            text += "; scores " + " ".join(f"{k}:{score:+.3f}" for k, score in self.scores)
        return text


@dataclass(frozen=True)
class DiscoveryResult:
    """What :func:`discover` found."""

    domains: list[Domain]
    labels: IntArray
    confidence: float
    strategy: str
    partitions: list[Partition] = field(default_factory=list)
    partition_labels: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tree: dict[str, list[str]] = field(default_factory=dict)
    domain_count: DomainCountChoice | None = None


# --------------------------------------------------------------------------- input

# Rows per block when scanning the input: bounds the temporaries of a scan to a
# few MiB whatever the input's size.
_SCAN_ELEMENTS = 1 << 19
# A row whose norm is within this of 1 is used as is (float32 rounding of a
# normalised row is ~1e-7; Qdrant's Cosine collections store unit rows).
_UNIT_TOLERANCE = 1e-4


def _rows_per_block(width: int, budget: int = _SCAN_ELEMENTS) -> int:
    return max(1, budget // max(width, 1))


def _bounds(thresholds: Mapping[str, Any]) -> DiscoveryBounds:
    accepted = {f.name for f in fields(DiscoveryBounds)}
    unknown = sorted(set(thresholds) - accepted)
    if unknown:
        raise DiscoveryError(
            f"unknown threshold(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}"
        )
    bounds = DiscoveryBounds(**thresholds)
    bounds.validate()
    return bounds


def prepare_vectors(vectors: Any, *, expected_dim: int | None = None) -> FloatArray:
    """Check the input and return it as unit-length float32 rows.

    A C-contiguous float32 input whose rows are already unit length is
    returned as is (never modified); otherwise one normalised copy is made.
    Checks run in bounded blocks, so they add no input-sized temporaries.
    """
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise DiscoveryError(f"vectors must be a numeric array: {error}") from None
    if array.size == 0:
        raise DiscoveryError(
            "no vectors to analyse: the source is empty; load points into it first"
        )
    if array.ndim != 2:
        raise DiscoveryError(
            f"vectors must be a 2-D array (points, dimensions); got shape {array.shape}"
        )
    if expected_dim is not None and array.shape[1] != expected_dim:
        raise DiscoveryError(
            f"wrong vector size: got {array.shape[1]} dimensions, the domains have "
            f"{expected_dim}; analyse vectors of the same embedding model"
        )
    array = np.ascontiguousarray(array)
    n = len(array)
    step = _rows_per_block(array.shape[1])
    finite = np.empty(n, dtype=bool)
    norms = np.empty(n, dtype=np.float32)
    for start in range(0, n, step):
        block = array[start : start + step]
        finite[start : start + step] = np.isfinite(block).all(axis=1)
        norms[start : start + step] = np.sqrt(np.einsum("ij,ij->i", block, block))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DiscoveryError(
            f"{len(bad)} vector(s) contain NaN or infinite values (first rows: "
            f"{bad[:5].tolist()}); drop or re-embed them"
        )
    zero = norms < 1e-12
    if zero.any():
        bad = np.flatnonzero(zero)
        raise DiscoveryError(
            f"{len(bad)} zero vector(s) have no direction (first rows: {bad[:5].tolist()}); "
            "drop or re-embed them"
        )
    if bool(np.all(np.abs(norms - 1.0) <= _UNIT_TOLERANCE)):
        return array
    unit = np.empty_like(array)
    for start in range(0, n, step):
        np.divide(
            array[start : start + step],
            norms[start : start + step, None],
            out=unit[start : start + step],
        )
    return unit


def _check_texts(texts: Sequence[str] | None, n: int) -> list[str] | None:
    if texts is None:
        return None
    listed = [str(t) if t is not None else "" for t in texts]
    if len(listed) != n:
        raise DiscoveryError(f"got {len(listed)} texts for {n} vectors; give one text per vector")
    return listed


# --------------------------------------------------------------------------- geometry


def _unit(rows: npt.NDArray[Any]) -> FloatArray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


def _nearest(vectors: FloatArray, centroids: FloatArray) -> IntArray:
    """The nearest centroid of every row, scanned in blocks of a few MiB of similarities."""
    out = np.empty(len(vectors), dtype=np.int64)
    chunk = _rows_per_block(len(centroids))
    for start in range(0, len(vectors), chunk):
        out[start : start + chunk] = np.argmax(vectors[start : start + chunk] @ centroids.T, axis=1)
    return out


def _centroids(vectors: FloatArray, labels: IntArray, k: int) -> FloatArray:
    membership = sparse.csr_matrix(
        (np.ones(len(labels), dtype=np.float32), (labels, np.arange(len(labels)))),
        shape=(k, len(labels)),
    )
    return _unit(np.asarray(membership @ vectors))


def _compact(labels: IntArray) -> tuple[IntArray, int]:
    """Renumber labels 0..k-1 in order of first appearance of each used label."""
    used, inverse = np.unique(labels, return_inverse=True)
    return inverse.astype(np.int64), len(used)


def _kmeans(vectors: FloatArray, k: int, seed: int, *, n_init: int = 1) -> IntArray:
    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed, max_iter=100)
    return np.asarray(model.fit_predict(vectors), dtype=np.int64)


def _knn(vectors: FloatArray, rows: IntArray, k: int) -> IntArray:
    """The ``k`` nearest neighbours (cosine, excluding itself) of ``vectors[rows]``.

    Queries go in blocks of a bounded number of similarities (a few MiB), so
    the temporaries do not grow with the number of rows.
    """
    k = min(k, len(vectors) - 1)
    out = np.empty((len(rows), k), dtype=np.int64)
    chunk = _rows_per_block(len(vectors))
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk]
        sims = vectors[block] @ vectors.T
        sims[np.arange(len(block)), block] = -np.inf
        out[start : start + chunk] = np.argpartition(sims, len(vectors) - k, axis=1)[:, -k:]
    return out


# --------------------------------------------------------------------------- choosing k


# Dimensions kept (principal axes of the selection sample) when comparing domain counts: the
# clusters a count is judged on live there, and k-means on them is several times cheaper.
_SELECTION_DIMS = 64


def _reference_like(sample: FloatArray, seed: int) -> tuple[FloatArray, FloatArray]:
    """Structureless data shaped like ``sample`` — a Gaussian with its mean and covariance,
    projected to the unit sphere (the null against which stability is judged) — and the
    sample's principal axes, strongest first."""
    mean = sample.mean(axis=0, dtype=np.float64)
    centred = sample.astype(np.float64) - mean
    # The principal axes from the d x d scatter matrix: the same axes and variances as an SVD
    # of the centred sample, at a small fraction of its cost (an SVD of 4,000 x 384 rows takes
    # seconds, the scatter matrix and its eigendecomposition a tenth of one).
    variance, vectors = np.linalg.eigh(centred.T @ centred)
    kept = min(len(sample), sample.shape[1])
    order = np.argsort(variance)[::-1][:kept]
    spread = np.sqrt(np.clip(variance[order], 0.0, None))
    axes = vectors[:, order].T
    scale = spread / np.sqrt(max(len(sample) - 1, 1))
    noise = np.random.default_rng(seed).standard_normal((len(sample), kept))
    reference = _unit((mean + (noise * scale) @ axes).astype(np.float32))
    return reference, axes.astype(np.float32)


def _stability(sample: FloatArray, k: int, splits: Sequence[IntArray], seed: int) -> float:
    """Mean agreement (normalised mutual information) on ``sample`` of k-means fitted on
    each split's halves."""
    agreement = []
    for index, order in enumerate(splits):
        half = len(order) // 2
        first = _kmeans_centroids(sample[order[:half]], k, seed + 2 * index)
        second = _kmeans_centroids(sample[order[half:]], k, seed + 2 * index + 1)
        agreement.append(
            normalized_mutual_info_score(_nearest(sample, first), _nearest(sample, second))
        )
    return float(np.mean(agreement))


def _kmeans_centroids(vectors: FloatArray, k: int, seed: int) -> FloatArray:
    model = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=30)
    labels, count = _compact(np.asarray(model.fit_predict(vectors), dtype=np.int64))
    return _centroids(vectors, labels, count)


def _choose_k(vectors: FloatArray, bounds: DiscoveryBounds, seed: int) -> DomainCountChoice:
    """The number of domains: forced, fixed by the bounds, or the most stable beyond chance."""
    n = len(vectors)
    if bounds.n_domains is not None:
        return DomainCountChoice("forced", bounds.n_domains, reason="n_domains is set")
    high = min(bounds.max_domains, max(1, n // max(bounds.min_domain_size, 1)))
    low = min(bounds.min_domains, high)
    if high <= max(low, 1) or high < 2:
        only = max(low, 1)
        return DomainCountChoice(
            "bounds",
            only,
            reason=f"min_domains, max_domains and min_domain_size allow only {only} for {n} points",
        )
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(n, min(n, bounds.selection_sample), replace=False))]
    fewest = low  # what the bounds allow when the data shows no structure
    low = max(low, 2)
    half = len(sample) // 2
    # Every count up to 10 (where one domain more or less matters most), then a geometric grid.
    dense = set(range(low, min(high, 10) + 1))
    coarse = {round(x) for x in np.geomspace(min(high, 10), high, num=5)}
    candidates = sorted((dense | coarse) - {0, 1})
    candidates = [k for k in candidates if k < half] or [low]
    reference, axes = _reference_like(sample, seed + 1)
    if sample.shape[1] > _SELECTION_DIMS:  # both on the same principal axes
        basis = np.ascontiguousarray(axes[:_SELECTION_DIMS].T)
        sample, reference = sample @ basis, reference @ basis
    # Small samples give noisy agreements but cost little: give them more splits (at most 4x).
    resamples = bounds.stability_resamples * int(
        np.clip(bounds.selection_sample // max(len(sample), 1), 1, 4)
    )
    splits = [rng.permutation(len(sample)) for _ in range(resamples)]
    reference_splits = splits[: max(1, resamples // 2)]
    scores: dict[int, float] = {}
    # Each fit is small (half the selection sample, on at most _SELECTION_DIMS axes): one
    # thread does it as fast as several, while many threads wait on each other at every
    # Lloyd iteration, which on a busy machine costs several times the work itself.
    with threadpool_limits(limits=1):
        for k in candidates:
            if k >= half:
                continue
            instability = 1.0 - _stability(sample, k, splits, seed)
            chance = 1.0 - _stability(reference, k, reference_splits, seed)
            scores[k] = 1.0 - instability / max(chance, 1e-3)
    if not scores:
        return DomainCountChoice("bounds", low, reason=f"too few points ({n}) to compare counts")
    best = max(scores.values())
    chosen = min(k for k, score in scores.items() if score >= best - bounds.stability_tolerance)
    best_k = max(scores, key=lambda k: scores[k])
    largest = max(scores)
    if best < bounds.min_stability and _finer_than_the_bounds(scores, best_k, bounds):
        chosen = largest
        reason = (
            f"stability rises with k up to the most domains the bounds allow (k={largest}: "
            f"{best:+.3f}, from {scores[min(scores)]:+.3f} at k={min(scores)}; below "
            f"min_stability={bounds.min_stability:g} but rising): the data's structure is finer "
            f"than max_domains={bounds.max_domains}; raise it to let discovery look further"
        )
    elif best < bounds.min_stability:
        chosen = fewest
        reason = (
            f"no count is more reproducible than structureless data: the best chance-corrected "
            f"stability {best:+.3f} (k={best_k}) is below min_stability={bounds.min_stability:g}, "
            f"so the fewest domains the bounds allow ({fewest})"
        )
    elif chosen == best_k:
        reason = f"best chance-corrected stability {best:+.3f} at k={best_k} among {low}..{high}"
    else:
        reason = (
            f"fewest domains within {bounds.stability_tolerance:g} of the best chance-corrected "
            f"stability {best:+.3f} (k={best_k}), among {low}..{high}"
        )
    return DomainCountChoice(
        "stability",
        chosen,
        scores=tuple((k, round(score, 4)) for k, score in sorted(scores.items())),
        reason=reason,
    )


def _finer_than_the_bounds(scores: dict[int, float], best_k: int, bounds: DiscoveryBounds) -> bool:
    """Whether the scores rise with k to the largest candidate: the best there, clearly above
    chance (half of ``min_stability``), and ranked with k (Spearman's rho >= ``finer_trend``)."""
    if len(scores) < 4 or best_k != max(scores):
        return False
    ks = sorted(scores)
    values = np.array([scores[k] for k in ks])
    if values[-1] < bounds.min_stability / 2:
        return False
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)
    positions = np.arange(len(ks), dtype=np.float64)
    rho = float(np.corrcoef(positions, ranks)[0, 1])
    return rho >= bounds.finer_trend


# --------------------------------------------------------------------------- refinement


def _refine_by_density(
    vectors: FloatArray, labels: IntArray, k: int, bounds: DiscoveryBounds
) -> IntArray:
    """Move outliers whose nearest neighbours mostly belong to another domain.

    Outliers are the points with the smallest margin between their own and the
    next-nearest centroid (``refine_share`` of them); the others stay put.
    """
    if bounds.refine_neighbors <= 0 or len(vectors) <= bounds.refine_neighbors + 1 or k < 2:
        return labels
    sims = vectors @ _centroids(vectors, labels, k).T
    own = sims[np.arange(len(vectors)), labels]
    sims[np.arange(len(vectors)), labels] = -np.inf
    margin = own - sims.max(axis=1)
    outliers = np.flatnonzero(margin <= np.quantile(margin, bounds.refine_share))
    neighbours = _knn(vectors, outliers, bounds.refine_neighbors)
    rows = np.repeat(np.arange(len(outliers)), neighbours.shape[1])
    labels = labels.copy()
    for _ in range(bounds.refine_rounds):
        votes = np.zeros((len(outliers), k), dtype=np.float32)
        np.add.at(votes, (rows, labels[neighbours].ravel()), 1.0)
        votes[np.arange(len(outliers)), labels[outliers]] += 0.5  # ties keep the domain
        moved = np.argmax(votes, axis=1).astype(np.int64)
        if np.array_equal(moved, labels[outliers]):
            break
        labels[outliers] = moved
    return labels


def _merge_and_prune(
    vectors: FloatArray, labels: IntArray, bounds: DiscoveryBounds
) -> tuple[IntArray, FloatArray]:
    """Merge near-duplicate domains and dissolve those below ``min_domain_size``."""
    labels, k = _compact(labels)
    while True:
        centroids = _centroids(vectors, labels, k)
        sizes = np.bincount(labels, minlength=k)
        changed = False
        if k > 1:
            similarity = centroids @ centroids.T
            np.fill_diagonal(similarity, -1.0)
            i, j = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
            if similarity[i, j] > bounds.merge_similarity and k > bounds.min_domains:
                labels = np.where(labels == j, i, labels)
                changed = True
        if not changed and k > max(bounds.min_domains, 1):
            small = np.flatnonzero(sizes < bounds.min_domain_size)
            if len(small):
                victim = int(small[np.argmin(sizes[small])])
                keep = np.array([c for c in range(k) if c != victim])
                members = labels == victim
                labels[members] = keep[_nearest(vectors[members], centroids[keep])]
                changed = True
        if not changed:
            return labels, centroids
        labels, k = _compact(labels)


# --------------------------------------------------------------------------- strategies


def _fit_kmeans(
    vectors: FloatArray, bounds: DiscoveryBounds, seed: int
) -> tuple[IntArray, DomainCountChoice]:
    choice = _choose_k(vectors, bounds, seed)
    return _kmeans(vectors, choice.chosen, seed), choice


def _fit_hybrid(
    vectors: FloatArray, bounds: DiscoveryBounds, seed: int
) -> tuple[IntArray, DomainCountChoice]:
    labels, choice = _fit_kmeans(vectors, bounds, seed)
    labels, k = _compact(labels)
    if len(vectors) <= bounds.refine_sample:
        return _refine_by_density(vectors, labels, k, bounds), choice
    rows = np.sort(
        np.random.default_rng(seed).choice(len(vectors), bounds.refine_sample, replace=False)
    )
    subset = vectors[rows]
    refined = _refine_by_density(subset, labels[rows], k, bounds)
    refined, k = _compact(refined)
    return _nearest(vectors, _centroids(subset, refined, k)), choice


def _fit_dbscan(vectors: FloatArray, bounds: DiscoveryBounds, seed: int) -> IntArray:
    dims = min(32, vectors.shape[1], len(vectors))
    projected = PCA(n_components=dims, random_state=seed).fit_transform(vectors)
    model = HDBSCAN(
        min_cluster_size=max(bounds.min_domain_size, 5),
        min_samples=max(5, bounds.min_domain_size // 4),
        cluster_selection_method="eom",
        copy=True,
    )
    labels = np.asarray(model.fit_predict(projected), dtype=np.int64)
    clustered = labels >= 0
    if not clustered.any():
        return np.zeros(len(vectors), dtype=np.int64)
    found, k = _compact(labels[clustered])
    centroids = _centroids(vectors[clustered], found, k)
    out = np.empty(len(vectors), dtype=np.int64)
    out[clustered] = found
    out[~clustered] = _nearest(vectors[~clustered], centroids)  # noise joins its nearest domain
    if k > bounds.max_domains:  # too fine: agglomerate the density clusters
        groups = AgglomerativeClustering(n_clusters=bounds.max_domains, linkage="ward")
        mapping = np.asarray(groups.fit_predict(centroids), dtype=np.int64)
        out = mapping[out]
    return out


def _fit_hierarchical(
    vectors: FloatArray, bounds: DiscoveryBounds, seed: int
) -> tuple[IntArray, IntArray, DomainCountChoice]:
    """Domains by Ward agglomeration of micro-clusters; returns (labels, parent group per
    domain, how the count was chosen)."""
    choice = _choose_k(vectors, bounds, seed)
    k = choice.chosen
    micro_k = min(len(vectors), max(3 * k, 8))
    micro = _kmeans(vectors, micro_k, seed)
    micro, micro_k = _compact(micro)
    centres = _centroids(vectors, micro, micro_k)
    k = min(k, micro_k)
    tree = AgglomerativeClustering(n_clusters=k, linkage="ward").fit(centres)
    labels = np.asarray(tree.labels_, dtype=np.int64)[micro]
    labels, k = _compact(labels)
    groups = max(1, round(np.sqrt(k)))
    if groups >= k:
        return labels, np.zeros(k, dtype=np.int64), choice
    domain_centres = _centroids(vectors, labels, k)
    parents = AgglomerativeClustering(n_clusters=groups, linkage="ward").fit_predict(domain_centres)
    return labels, np.asarray(parents, dtype=np.int64), choice


def _fit_semantic_flow(
    vectors: FloatArray, bounds: DiscoveryBounds, seed: int
) -> tuple[IntArray, DomainCountChoice]:
    n = len(vectors)
    window = bounds.window or max(bounds.min_domain_size * 2, n // 5)
    first = vectors[:window]
    choice = _choose_k(first, bounds, seed)
    labels = _kmeans(first, min(choice.chosen, len(first)), seed, n_init=3)
    labels, k = _compact(labels)
    centroids = _centroids(first, labels, k).astype(np.float64)
    weights = np.bincount(labels, minlength=k).astype(np.float64)
    similarities = np.max(first @ centroids.T.astype(np.float32), axis=1)
    novelty = bounds.novelty_similarity or float(np.quantile(similarities, 0.05))
    for start in range(window, n, window):
        chunk = vectors[start : start + window]
        sims = chunk @ centroids.T.astype(np.float32)
        nearest = np.argmax(sims, axis=1)
        fits = sims[np.arange(len(chunk)), nearest] >= novelty
        weights *= bounds.decay
        for c in range(len(centroids)):
            members = chunk[fits & (nearest == c)]
            if len(members):
                total = weights[c] + len(members)
                centroids[c] = (centroids[c] * weights[c] + members.sum(axis=0)) / total
                centroids[c] /= max(np.linalg.norm(centroids[c]), 1e-12)
                weights[c] = total
        novel = chunk[~fits]
        if len(novel) >= bounds.min_domain_size and len(centroids) < bounds.max_domains:
            room = bounds.max_domains - len(centroids)
            emerging = max(1, min(room, len(novel) // (bounds.min_domain_size * 4) or 1))
            new_labels = _kmeans(novel, min(emerging, len(novel)), seed + start)
            new_labels, new_k = _compact(new_labels)
            centroids = np.vstack([centroids, _centroids(novel, new_labels, new_k)])
            weights = np.concatenate([weights, np.bincount(new_labels, minlength=new_k)])
        alive = weights >= 1.0  # a domain nothing has reached for several windows fades
        if alive.sum() >= 1 and not alive.all():
            centroids, weights = centroids[alive], weights[alive]
    emerged = len(centroids) - choice.chosen
    if emerged > 0:
        choice = replace(
            choice,
            reason=(choice.reason + "; " if choice.reason else "")
            + f"in the first window, then {emerged} emerged from the stream",
        )
    return _nearest(vectors, _unit(centroids)), choice


# --------------------------------------------------------------------------- ids


def _content_id(centroid: FloatArray, seed: int, salt: int = 0) -> str:
    digest = hashlib.sha1(np.round(centroid, 3).astype(np.float16).tobytes())
    digest.update(f"{seed}:{salt}".encode())
    return "d-" + digest.hexdigest()[:10]


def _assign_ids(
    centroids: FloatArray, previous: Sequence[Domain] | None, seed: int, floor: float
) -> list[str]:
    ids: list[str | None] = [None] * len(centroids)
    taken: set[str] = set()
    if previous:
        old = _unit(np.stack([np.asarray(d.centroid, dtype=np.float32) for d in previous]))
        similarity = centroids @ old.T
        rows, cols = linear_sum_assignment(-similarity)
        for r, c in zip(rows, cols, strict=True):
            if similarity[r, c] >= floor:
                ids[r] = previous[c].id
        taken = {d.id for d in previous}
    taken |= {i for i in ids if i is not None}
    result: list[str] = []
    for index, current in enumerate(ids):
        if current is None:
            salt = 0
            current = _content_id(centroids[index], seed, salt)
            while current in taken:
                salt += 1
                current = _content_id(centroids[index], seed, salt)
            taken.add(current)
        result.append(current)
    return result


# --------------------------------------------------------------------------- assembly


PARTITIONS_PER_SQRT = 4.0  # IVF practice: about 4·sqrt(n) lists for n points
FIT_POINTS_PER_PARTITION = 256  # k-means fits on at most this many members per partition
MIN_ROWS_PER_PARTITION = 10  # an automatic partition has at least this many analysed rows


def partition_count(rows: int, bounds: DiscoveryBounds, *, domains: int = 1) -> int:
    """How many routing partitions ``rows`` analysed vectors get in all.

    The count follows the size of the data, as an IVF index's number of lists
    does: about ``4·sqrt(points)``, where ``points`` is ``bounds.population``
    (the collection the rows were sampled from) or else ``rows``. Fewer
    partitions make each probe touch more points than it needs to; more make
    each one too small to be worth a shard of its own, so the count never
    exceeds ``points / min_partition_size`` nor ``max_partitions``, and a sample
    keeps at least ``MIN_ROWS_PER_PARTITION`` rows per partition to fit it.
    ``bounds.partitions`` forces the count. Every domain has at least one.
    """
    if bounds.partitions is not None:
        wanted = bounds.partitions
    else:
        points = bounds.population or rows
        wanted = min(
            round(PARTITIONS_PER_SQRT * np.sqrt(points)),
            bounds.max_partitions,
            points // bounds.min_partition_size,
            rows // MIN_ROWS_PER_PARTITION,
        )
    return int(min(rows, max(domains, wanted)))


def _apportion(total: int, sizes: IntArray) -> IntArray:
    """``total`` partitions split across domains in proportion to their ``sizes``.

    Largest remainders, at least one (even past ``total``) and at most ``size`` per
    domain; ties go to the lower index so the split is deterministic.
    """
    share = total * sizes / max(int(sizes.sum()), 1)
    counts = np.minimum(np.maximum(np.floor(share), 1), sizes).astype(np.int64)
    while counts.sum() < total:
        room = np.flatnonzero(counts < sizes)
        if not len(room):
            break
        remainder = share[room] - counts[room]
        picked = room[np.argsort(-remainder, kind="stable")[: total - int(counts.sum())]]
        counts[picked] += 1
    while counts.sum() > total:  # the floor of one per domain overshot: take from the largest
        spare = np.flatnonzero(counts > 1)
        if not len(spare):
            break
        counts[spare[int(np.argmax((counts - share)[spare]))]] -= 1
    return counts


def _cell_centroids(vectors: FloatArray, k: int, seed: int, iterations: int = 20) -> FloatArray:
    """Spherical k-means centroids of ``k`` cells over ``vectors``.

    Lloyd iterations from ``k`` distinct random members, fitted on at most
    ``FIT_POINTS_PER_PARTITION`` members per cell (as IVF training samples); a
    cell left empty restarts at the member worst served by its centroid.
    Seeded: the same input gives the same cells.
    """
    rng = np.random.default_rng(seed)
    if len(vectors) > FIT_POINTS_PER_PARTITION * k:
        rows = rng.choice(len(vectors), FIT_POINTS_PER_PARTITION * k, replace=False)
        vectors = vectors[np.sort(rows)]
    centroids = vectors[np.sort(rng.choice(len(vectors), k, replace=False))].copy()
    labels: IntArray | None = None
    for _ in range(iterations):
        assigned, similarity = _nearest_with_similarity(vectors, centroids)
        if labels is not None and np.array_equal(assigned, labels):
            break
        labels = assigned
        centroids = _centroids(vectors, labels, k)
        empty = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
        if len(empty):
            worst = np.argsort(similarity, kind="stable")[: len(empty)]
            centroids[empty] = vectors[worst]
    return centroids


def _nearest_with_similarity(
    vectors: FloatArray, centroids: FloatArray
) -> tuple[IntArray, FloatArray]:
    """The nearest centroid of every row and its cosine similarity (blocks of a few MiB)."""
    nearest = np.empty(len(vectors), dtype=np.int64)
    similarity = np.empty(len(vectors), dtype=np.float32)
    chunk = _rows_per_block(len(centroids))
    for start in range(0, len(vectors), chunk):
        sims = vectors[start : start + chunk] @ centroids.T
        best = np.argmax(sims, axis=1)
        nearest[start : start + chunk] = best
        similarity[start : start + chunk] = sims[np.arange(len(sims)), best]
    return nearest, similarity


def _partition_ids(
    centroids: FloatArray,
    domain_id: str,
    previous: Sequence[Partition],
    taken: set[str],
    seed: int,
    floor: float,
) -> list[str]:
    """Ids of one domain's partitions: a ``previous`` partition's id where its centroid
    matches (Hungarian assignment, similarity >= ``floor``), else a content hash of the
    seed and the rounded centroid that no id in ``taken`` has."""
    ids: list[str | None] = [None] * len(centroids)
    if previous:
        old = _unit(np.stack([np.asarray(p.centroid, dtype=np.float32) for p in previous]))
        similarity = centroids @ old.T
        rows, cols = linear_sum_assignment(-similarity)
        for r, c in zip(rows, cols, strict=True):
            if similarity[r, c] >= floor:
                ids[r] = previous[c].id
    taken |= {i for i in ids if i is not None}
    result: list[str] = []
    for index, current in enumerate(ids):
        salt = 0
        while current is None or (ids[index] is None and current in taken):
            current = f"{domain_id}-p{_content_id(centroids[index], seed, salt)[2:]}"
            salt += 1
        taken.add(current)
        result.append(current)
    return result


def _partitions(
    vectors: FloatArray,
    labels: IntArray,
    ids: Sequence[str],
    bounds: DiscoveryBounds,
    seed: int,
    previous: Sequence[Partition] = (),
    previous_domains: Sequence[Domain] = (),
) -> tuple[list[Partition], IntArray]:
    """Routing cells nested in the domains: ``partition_count`` of them split across the
    domains by size, each domain's fitted by spherical k-means on a bounded sample of
    its members, then every member assigned to its nearest cell."""
    sizes = np.bincount(labels, minlength=len(ids)).astype(np.int64)
    counts = _apportion(partition_count(len(vectors), bounds, domains=len(ids)), sizes)
    old_domain = {index: domain.id for index, domain in enumerate(previous_domains)}
    previous_of: dict[str, list[Partition]] = {}
    for partition in previous:
        previous_of.setdefault(old_domain.get(partition.domain, ""), []).append(partition)
    taken = {p.id for p in previous}
    partitions: list[Partition] = []
    partition_labels = np.zeros(len(vectors), dtype=np.int64)
    # One BLAS thread: each Lloyd step is a modest product (a block of members by the
    # domain's cells) then a single-threaded argmax, and on a shared machine more BLAS
    # threads mostly wait on each other (100k GloVe rows, 400 cells: half the CPU time
    # and a third of the wall time on one thread, the same centroids).
    with threadpool_limits(limits=1):
        for d, domain_id in enumerate(ids):
            members = np.flatnonzero(labels == d)
            member_vectors = vectors[members]  # gathered once: a domain may be most rows
            wanted = int(counts[d])
            if wanted <= 1:
                local = np.zeros(len(members), dtype=np.int64)
            else:
                local = _nearest(member_vectors, _cell_centroids(member_vectors, wanted, seed))
            local, count = _compact(local)
            centres = _centroids(member_vectors, local, count)
            del member_vectors
            cell_sizes = np.bincount(local, minlength=count)
            names = _partition_ids(
                centres,
                domain_id,
                previous_of.get(domain_id, []),
                taken,
                seed,
                bounds.id_match_similarity,
            )
            for p in range(count):
                partition_labels[members[local == p]] = len(partitions)
                partitions.append(
                    Partition(id=names[p], domain=d, centroid=centres[p], size=int(cell_sizes[p]))
                )
    return partitions, partition_labels


def _own_similarity(vectors: FloatArray, labels: IntArray, centroids: FloatArray) -> FloatArray:
    """Each row's cosine similarity to its own centroid, in bounded blocks (no n x d gather)."""
    out = np.empty(len(vectors), dtype=np.float32)
    step = _rows_per_block(vectors.shape[1])
    for start in range(0, len(vectors), step):
        block = vectors[start : start + step]
        out[start : start + step] = np.einsum(
            "ij,ij->i", block, centroids[labels[start : start + step]]
        )
    return out


def _confidence(
    vectors: FloatArray, labels: IntArray, centroids: FloatArray, margin: float, seed: int = 0
) -> float:
    """Share of points at least ``margin`` closer to their own domain than to any other."""
    if len(centroids) < 2:
        return 1.0
    rows = np.arange(len(vectors))
    if len(vectors) > 50_000:  # an estimate on a bounded sample
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), 50_000, replace=False))
    confident = 0
    step = _rows_per_block(len(centroids) + vectors.shape[1])
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        sims = vectors[block] @ centroids.T
        own = sims[np.arange(len(block)), labels[block]]
        sims[np.arange(len(block)), labels[block]] = -np.inf
        confident += int(np.count_nonzero(own - sims.max(axis=1) >= margin))
    return confident / len(rows)


def _fit(
    strategy: str, sample: FloatArray, bounds: DiscoveryBounds, seed: int
) -> tuple[IntArray, IntArray | None, DomainCountChoice]:
    """The labels of ``sample`` by ``strategy``, each domain's parent group (hierarchical
    only, else None) and how the number of domains was chosen."""
    if strategy == "kmeans":
        labels, choice = _fit_kmeans(sample, bounds, seed)
        return labels, None, choice
    if strategy == "hybrid":
        labels, choice = _fit_hybrid(sample, bounds, seed)
        return labels, None, choice
    if strategy == "dbscan":
        labels = _fit_dbscan(sample, bounds, seed)
        found = len(np.unique(labels))
        return (
            labels,
            None,
            DomainCountChoice(
                "strategy",
                found,
                reason="density clusters of HDBSCAN (noise joins its nearest domain), "
                f"at most max_domains={bounds.max_domains}",
            ),
        )
    if strategy == "hierarchical":
        return _fit_hierarchical(sample, bounds, seed)
    labels, choice = _fit_semantic_flow(sample, bounds, seed)
    return labels, None, choice


def _domains(
    data: FloatArray,
    labels: IntArray,
    centroids: FloatArray,
    ids: Sequence[str],
    keywords: Sequence[Sequence[str]],
    group_of: IntArray | None,
) -> tuple[list[Domain], dict[str, list[str]]]:
    """One :class:`Domain` per label, and the tree of parent groups (empty without groups)."""
    names = domain_names(keywords)
    member_sims = _own_similarity(data, labels, centroids)
    sizes = np.bincount(labels, minlength=len(centroids))
    tree: dict[str, list[str]] = {}
    domains = []
    for d in range(len(centroids)):
        sims = member_sims[labels == d]
        parent = None
        if group_of is not None:
            parent = f"group-{int(group_of[d])}"
            tree.setdefault(parent, []).append(ids[d])
        domains.append(
            Domain(
                id=ids[d],
                name=names[d],
                centroid=centroids[d],
                radius=float(np.quantile(1.0 - sims, 0.9)) if len(sims) else 0.0,
                size=int(sizes[d]),
                cohesion=float(sims.mean()) if len(sims) else 0.0,
                keywords=tuple(keywords[d]),
                parent=parent,
            )
        )
    return domains, tree


def discover(
    vectors: Any,
    *,
    strategy: str = "hybrid",
    texts: Sequence[str] | None = None,
    seed: int = 0,
    previous: Sequence[Domain] | None = None,
    previous_partitions: Sequence[Partition] | None = None,
    **thresholds: Any,
) -> DiscoveryResult:
    """Find the domains in ``vectors`` (rows = points) and label every vector.

    ``texts`` (one per vector) give keywords and names; ``previous`` domains
    keep their ids where a new domain matches them, and ``previous_partitions``
    (whose ``domain`` indexes ``previous``) theirs where a partition of the same
    domain matches them; ``thresholds`` are the fields of :class:`DiscoveryBounds`.
    """
    if strategy not in STRATEGIES:
        raise DiscoveryError(f"unknown strategy {strategy!r}; accepted: {', '.join(STRATEGIES)}")
    bounds = _bounds(thresholds)
    expected = bounds.expected_dim
    if expected is None and previous:
        expected = int(np.asarray(previous[0].centroid).shape[-1])
    data = prepare_vectors(vectors, expected_dim=expected)
    listed_texts = _check_texts(texts, len(data))
    n = len(data)
    needed = max(bounds.min_domains, bounds.n_domains or 0)
    if n < needed:
        raise DiscoveryError(
            f"only {n} vector(s) for at least {needed} domain(s); add points or lower "
            "min_domains / n_domains"
        )

    rng = np.random.default_rng(seed)
    streaming = strategy == "semantic_flow"
    sampled = n > bounds.sample_size and not streaming
    # Every row fits when the input is small: then the sample is the input itself (no copy).
    sample = data[np.sort(rng.choice(n, bounds.sample_size, replace=False))] if sampled else data

    sample_labels, parents, choice = _fit(strategy, sample, bounds, seed)
    if parents is None:
        sample_labels, centroids = _merge_and_prune(sample, sample_labels, bounds)
        group_of = None
    else:  # keep the tree intact: no merging across it
        sample_labels, k = _compact(sample_labels)
        centroids = _centroids(sample, sample_labels, k)
        group_of = parents
    k = len(centroids)

    labels = _nearest(data, centroids) if sampled else sample_labels
    del sample
    labels, k = _compact(labels)
    centroids = _centroids(data, labels, k)

    ids = _assign_ids(centroids, previous, seed, bounds.id_match_similarity)
    keywords = (
        class_keywords(listed_texts, labels, k, top=bounds.keywords)
        if listed_texts is not None
        else [() for _ in range(k)]
    )
    domains, tree = _domains(data, labels, centroids, ids, keywords, group_of)
    partitions, partition_labels = _partitions(
        data, labels, ids, bounds, seed, previous_partitions or (), previous or ()
    )
    return DiscoveryResult(
        domains=domains,
        labels=labels,
        confidence=_confidence(data, labels, centroids, bounds.confidence_margin),
        strategy=strategy,
        partitions=partitions,
        partition_labels=partition_labels,
        tree=tree,
        domain_count=replace(choice, final=k),
    )


def assign(vectors: Any, domains: Sequence[Domain]) -> IntArray:
    """Index of the nearest domain (cosine) for every vector."""
    if not domains:
        raise DiscoveryError("no domains to assign to; run discovery first")
    centroids = _unit(np.stack([np.asarray(d.centroid, dtype=np.float32) for d in domains]))
    data = prepare_vectors(vectors, expected_dim=centroids.shape[1])
    return _nearest(data, centroids)


def assign_partitions(vectors: Any, partitions: Sequence[Partition]) -> IntArray:
    """Index of the nearest partition (cosine) for every vector."""
    if not partitions:
        raise DiscoveryError("no partitions to assign to; run discovery first")
    centroids = _unit(np.stack([np.asarray(p.centroid, dtype=np.float32) for p in partitions]))
    return _nearest(prepare_vectors(vectors, expected_dim=centroids.shape[1]), centroids)
