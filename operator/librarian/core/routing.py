"""Which units (domains or their finer partitions) a query should be sent to.

Why this exists: the router's whole value is asking few domains while still
finding the true nearest neighbours. Centroids alone do poorly on real
embeddings (a query's neighbours straddle several cells), so the default
``hybrid`` strategy learns from the data's own neighbour structure: a small
sample of the library's points is kept, and for each sample point the router
knows in which units its nearest neighbours live (its *neighbour profile*). A
query's profile is the similarity-weighted blend of the profiles of its
nearest sample points: an estimate of the share of its top-k in each unit.
Units are probed best first until the estimated share reaches a coverage
threshold, which is calibrated at build time on held-aside points so that the
measured recall reaches ``target_recall``: the adaptive rule that decides per
query how many units to ask. The calibration judges each held-aside point on
its exact nearest neighbours among all the points given (its top-k when they
are the whole library; when they are a sample, its nearest few, each weighted
by the chance it is one of the library's top-k), and takes the smallest
coverage whose measured recall meets the target (a bisection over the
cumulative scores where decisions change, not a grid: on fine units the
coverages that matter differ in the fourth decimal).

Strategies:

- ``auto`` (default, chosen at build time): ``hybrid`` when its neighbour
  profiles pay on this library, else ``domain_affinity``. Both are calibrated
  to the target recall on the same held-aside queries; ``hybrid`` is kept only
  when it touches at least ``hybrid_margin`` (10%) fewer points. Its decision
  costs several times the centroids' (a product with the sample on top of the
  one with the centroids), and on fine units (hundreds to thousands) the
  profiles often add nothing, while on text with coarse units they save a
  third of the points or more; below 10% the saving is within what 500
  calibration queries can tell apart. Both are judged on one truth computation.
  Centroids are calibrated first: when even an oracle that knows every
  query's neighbours could not touch ``hybrid_margin`` fewer points (the
  bound of :func:`_least_touched`, e.g. one unit per query already reaches the
  target), hybrid is not built and the sample's neighbours are never searched.
  The choice and the figures compared are kept in
  :attr:`LibraryRouter.strategy_choice` and shown in :meth:`describe`.
- ``hybrid``: neighbour profiles plus a small centroid prior.
- ``domain_affinity``: centroid similarity only (calibrated the same way).
- ``accuracy_first``: every unit, best first.
- ``load_balancing``: like ``hybrid``, but a unit under more than its share of
  load is skipped when the recall it adds is below ``slack``.
- ``latency_optimized``: like ``hybrid``, but a unit whose EWMA latency is over
  ``latency_budget_s`` is skipped when the recall it adds is below ``slack``;
  :meth:`LibraryRouter.hedge_after` says when to send a hedged request.

Cost: a decision is one product of the query with the unit centroids and,
when neighbour profiles are kept, one with the sample (float32, batched when
several queries are decided at once); the profiles are stored sparse (the
units of each sample point's few neighbours), the best units are ranked by a
partial sort and the coverage rule is a cumulative sum. At build time the
sample grows from none to the whole sample (1/8, 1/4, 1/2, all)
only while each step lowers the calibrated share of points touched by more
than ``profile_tolerance``: with hundreds of fine units the profiles add little,
the decision becomes one centroid product and the build skips most of the
neighbour search. The neighbours of the sample points are found exactly, in
blocks of bounded memory, against at most ``reference_limit`` points; those of
the held-aside points against every point given (up to ``truth_limit``, a
uniform subset past it), in blocks of bounded memory. A block's top few are
found from its chunks' maxima, not by sorting every score (:func:`_top_columns`):
the products are then most of the work (a router over 1M x 384 points builds
in about 5 CPU-seconds without the sample's neighbours, most of them the 500
held-aside points against every point; the 16,000 sample points against 200,000
reference points add about 30).

Pure: numpy only, seeded randomness, no clock (latencies and loads are passed in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from librarian.core.unit_index import ProjectedUnitIndex

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

AUTO = "auto"  # build-time only: hybrid or domain_affinity, whichever pays on this library
STRATEGIES = (
    "hybrid",
    "domain_affinity",
    "accuracy_first",
    "load_balancing",
    "latency_optimized",
)

__all__ = [
    "AUTO",
    "STRATEGIES",
    "LatencyTracker",
    "LibraryRouter",
    "RouteDecision",
    "RoutingError",
    "RoutingOptions",
    "build_router",
]


class RoutingError(ValueError):
    """Inputs the router cannot be built from, or a query it cannot route."""


@dataclass(frozen=True)
class RoutingOptions:
    """Every knob of :func:`build_router`; each has a default that works on real embeddings."""

    # ``auto``: hybrid when, calibrated to the same recall on the same queries, it touches at
    # least ``hybrid_margin`` (relative) fewer points than centroids alone; else domain_affinity
    strategy: str = AUTO
    hybrid_margin: float = 0.10
    target_recall: float = 0.96  # recall@k the calibrated coverage threshold aims for
    k: int = 10  # the neighbours a query is assumed to ask for
    sample_fraction: float = 0.2  # share of points kept in the router's sample index
    min_sample: int = 2_000
    max_sample: int = 16_000  # the decision's cost and the build's grow with it
    sample_neighbours: int = 20  # sample points blended into a query's profile
    temperature: float = 0.07  # softness of the similarity weights of those points
    centroid_prior: float = 0.02  # weight of the centroid softmax in the blend
    calibration_queries: int = 500  # held-aside points used to calibrate the threshold
    reference_limit: int = 200_000  # points a neighbour profile is computed against
    # Points the calibration queries' true neighbours are searched among: a uniform subset
    # past this, its nearest points weighted by the chance they are the library's top k,
    # which errs on the safe side (more points touched; see _calibration_truth)
    truth_limit: int = 1_000_000
    # A query's sample neighbours are searched among the sample points of its best units (by
    # centroid) until they hold this many; 0: the whole sample.
    sample_candidates: int = 2_048
    # ... unless the whole sample's product is this cheap (sample points x dimensions)
    whole_sample_work: int = 1 << 21
    # The sample grows (none, 1/8, 1/4, 1/2, all) while each step lowers the calibrated share
    # of points touched by more than this (relative); None: the whole sample, always.
    profile_tolerance: float | None = None
    block_bytes: int = 128 << 20  # memory of one block of scores while building
    # From this many unit-centroid products per query (units x dimensions), a two-level index
    # over the centroids is tried: kept when the units it chooses equal the full scan's on at
    # least ``unit_index_agreement`` of the calibration queries.
    unit_index_work: int = 1 << 19
    unit_index_agreement: float = 0.999
    min_units: int = 1
    max_units: int | None = None
    slack: float = 0.02  # recall a load/latency strategy may give up per skipped unit
    latency_budget_s: float = 0.05
    ewma_alpha: float = 0.2
    seed: int = 0

    def problems(self) -> list[str]:
        found = []
        if self.strategy not in (AUTO, *STRATEGIES):
            found.append(
                f"strategy {self.strategy!r} is unknown; accepted: {AUTO}, {', '.join(STRATEGIES)}"
            )
        if not 0.0 < self.target_recall <= 1.0:
            found.append("target_recall must be in (0, 1]")
        if not 0.0 < self.sample_fraction <= 1.0:
            found.append("sample_fraction must be in (0, 1]")
        if self.k < 1 or self.sample_neighbours < 1 or self.min_units < 1:
            found.append("k, sample_neighbours and min_units must be >= 1")
        if self.temperature <= 0:
            found.append("temperature must be > 0")
        if self.max_units is not None and self.max_units < self.min_units:
            found.append("max_units must be >= min_units")
        if not 0.0 <= self.slack < 1.0:
            found.append("slack must be in [0, 1)")
        if self.sample_candidates < 0:
            found.append("sample_candidates must be >= 0 (0: the whole sample)")
        if self.profile_tolerance is not None and self.profile_tolerance < 0:
            found.append("profile_tolerance must be >= 0 (or None to keep the whole sample)")
        if self.block_bytes < 1 << 20:
            found.append("block_bytes must be at least 1 MiB")
        return found + self._share_problems()

    def _share_problems(self) -> list[str]:
        found = []
        if not 0.0 <= self.hybrid_margin < 1.0:
            found.append("hybrid_margin must be in [0, 1)")
        if not 0.0 < self.unit_index_agreement <= 1.0:
            found.append("unit_index_agreement must be in (0, 1]")
        return found


@dataclass(frozen=True)
class RouteDecision:
    """The units to probe for one query, best first, and why."""

    units: list[int]
    estimated_recall: float  # the estimated share of the top-k held by ``units``
    scores: FloatArray  # estimated share of the top-k in every unit
    skipped: list[int] = field(default_factory=list)  # left out for load or latency


class LatencyTracker:
    """EWMA of each unit's latency and of its deviation (as TCP's RTT estimator does)."""

    def __init__(self, units: int, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self.mean = np.zeros(units, dtype=np.float64)
        self.deviation = np.zeros(units, dtype=np.float64)
        self.seen = np.zeros(units, dtype=bool)

    def observe(self, unit: int, seconds: float) -> None:
        if not self.seen[unit]:
            self.mean[unit], self.deviation[unit], self.seen[unit] = seconds, seconds / 2, True
            return
        error = seconds - self.mean[unit]
        self.mean[unit] += self.alpha * error
        self.deviation[unit] += self.alpha * (abs(error) - self.deviation[unit])

    def hedge_after(self, unit: int, floor_s: float = 0.002) -> float | None:
        """When to send a second request to ``unit``: mean + 4 deviations (None before data)."""
        if not self.seen[unit]:
            return None
        return max(floor_s, float(self.mean[unit] + 4 * self.deviation[unit]))


def _unit_rows(rows: npt.ArrayLike) -> FloatArray:
    array = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return np.asarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


def _centroid_of(unit: Any) -> npt.NDArray[Any] | None:
    if isinstance(unit, np.ndarray):
        return unit
    centroid = getattr(unit, "centroid", None)
    if centroid is None and isinstance(unit, dict):
        centroid = unit.get("centroid")
    return None if centroid is None else np.asarray(centroid, dtype=np.float32)


_CHUNK = 128  # columns per chunk of the top-k search (:func:`_top_columns`)


def _padded(width: int) -> int:
    """``width`` rounded up to whole chunks of :data:`_CHUNK` columns."""
    return -(-width // _CHUNK) * _CHUNK


def _top_columns(block: FloatArray, k: int) -> IntArray:
    """The columns of each row's ``k`` largest values (in no order), ``block``'s width a whole
    number of chunks (padding columns hold -inf).

    A partial sort of every score costs more than the product that made them; instead each
    chunk of :data:`_CHUNK` columns is reduced to its maximum, and only the ``k`` chunks with
    the largest maxima are sorted: a row's ``k`` largest values lie in them (each of those
    chunks' maxima is a value at least as large as any value outside them).
    """
    rows, width = block.shape
    chunks = width // _CHUNK
    if k * _CHUNK * 4 > width:
        return np.argpartition(block, width - k, axis=1)[:, width - k :]
    maxima = block.reshape(rows, chunks, _CHUNK).max(axis=2)
    best = np.argpartition(maxima, chunks - k, axis=1)[:, chunks - k :]
    columns = (best[:, :, None] * _CHUNK + np.arange(_CHUNK)).reshape(rows, k * _CHUNK)
    values = np.take_along_axis(block, columns, axis=1)
    pick = np.argpartition(values, values.shape[1] - k, axis=1)[:, values.shape[1] - k :]
    top: IntArray = np.take_along_axis(columns, pick, axis=1)
    return top


def _top_neighbours(
    queries: FloatArray,
    reference: FloatArray,
    k: int,
    exclude: IntArray | None,
    block_bytes: int = 128 << 20,
) -> IntArray:
    """Indices into ``reference`` of each query's ``k`` most similar rows (exact).

    Queries are scored in blocks whose scores and indices fit in ``block_bytes`` (one
    buffer, reused); ``exclude[i]`` (>= 0) is a reference row query ``i`` may not pick.
    """
    k = _neighbour_count(k, len(reference), exclude is not None)
    out = np.empty((len(queries), k), dtype=np.int64)
    width = len(reference)
    padded = _padded(width)
    # float32 scores, plus the int64 indices of the chunks sorted (or of the whole row)
    per_row = padded * 4 + min(padded, 4 * k * _CHUNK) * 8
    rows_per_block = max(1, min(len(queries), block_bytes // per_row))
    scores = np.empty((rows_per_block, padded), dtype=np.float32)
    scores[:, width:] = -np.inf
    for start in range(0, len(queries), rows_per_block):
        stop = min(start + rows_per_block, len(queries))
        block = scores[: stop - start]
        np.matmul(queries[start:stop], reference.T, out=block[:, :width])
        if exclude is not None:
            own = exclude[start:stop]
            valid = own >= 0
            block[np.flatnonzero(valid), own[valid]] = -np.inf
        if k == 1:
            out[start:stop, 0] = np.argmax(block, axis=1)
        else:
            out[start:stop] = _top_columns(block, k)
    return out


def _neighbour_count(k: int, reference_rows: int, excluding: bool) -> int:
    """How many neighbours a query can have among ``reference_rows`` (one less when its own
    row may be among them), at least one: a library of one point is its own neighbour."""
    return max(1, min(k, reference_rows - (1 if excluding else 0)))


def _profiles(neighbour_labels: IntArray, units: int) -> FloatArray:
    """Share of each row's neighbours in each unit (dense; the router keeps them sparse)."""
    rows, k = neighbour_labels.shape
    profile = np.zeros((rows, units), dtype=np.float32)
    np.add.at(profile, (np.repeat(np.arange(rows), k), neighbour_labels.ravel()), 1.0 / k)
    return profile


def _softmax(logits: npt.NDArray[Any], in_place: bool = False) -> FloatArray:
    """Row-wise softmax (overwriting ``logits`` when ``in_place``)."""
    shifted = logits if in_place else logits.copy()
    shifted -= logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return np.asarray(shifted, dtype=np.float32)


def _chosen_count(cumulative: npt.NDArray[np.float64], coverage: float, least: int) -> int:
    """How many units the coverage rule takes from ``cumulative`` (masses in best-first
    order): the first count of at least ``least`` whose mass reaches ``coverage``, else all."""
    if least > len(cumulative):
        return len(cumulative)
    reached = np.flatnonzero(cumulative[least - 1 :] >= coverage)
    return least + int(reached[0]) if len(reached) else len(cumulative)


class LibraryRouter:
    """Routes queries to units; build it with :func:`build_router`.

    ``sample_units[i]`` are the units of sample point ``i``'s nearest
    neighbours (its neighbour profile: each holds an equal share).
    """

    def __init__(
        self,
        *,
        options: RoutingOptions,
        centroids: FloatArray,
        sizes: npt.NDArray[np.int64],
        sample_vectors: FloatArray,
        sample_units: IntArray,
    ) -> None:
        if options.strategy == AUTO:  # built without a choice: hybrid when there is a sample
            options = replace(
                options, strategy="hybrid" if len(sample_vectors) else "domain_affinity"
            )
        self.options = options
        # how the strategy was chosen: by the configuration, or at build time (with the
        # share of points each candidate touched at the target recall)
        self.strategy_choice: dict[str, Any] = {"chosen_by": "configuration"}
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.sizes = sizes
        units = len(self.centroids)
        # an index over the centroids (many units of many dimensions only); used once the
        # builder has checked it (``unit_index_rerank`` units scored exactly; 0: the full scan)
        self.unit_index: ProjectedUnitIndex | None = None
        dims = self.centroids.shape[1]
        if units >= 256 and units * dims >= options.unit_index_work and dims >= 96:
            self.unit_index = ProjectedUnitIndex(self.centroids, options.temperature, dims // 6)
        self.unit_index_rerank = 0
        sample_vectors = np.asarray(sample_vectors, dtype=np.float32)
        sample_units = np.asarray(sample_units, dtype=np.int64)
        if sample_units.shape[:1] != sample_vectors.shape[:1]:
            raise RoutingError("sample_units needs one row of neighbour units per sample point")
        # the unit whose centroid is nearest to each sample point (its cell)
        cell = np.empty(len(sample_vectors), dtype=np.int64)
        for start in range(0, len(sample_vectors), 2048):
            block = sample_vectors[start : start + 2048] @ self.centroids.T
            cell[start : start + 2048] = np.argmax(block, axis=1)
        # The sample is stored cell by cell: the sample points of a run of cells are one slice.
        stored = np.argsort(cell, kind="stable")
        self.sample_vectors = np.ascontiguousarray(sample_vectors[stored])
        self.sample_units = np.ascontiguousarray(sample_units[stored])
        self._sample_cell = cell[stored]
        self._cell_sizes = np.bincount(cell, minlength=units)
        self._cell_start = np.zeros(units, dtype=np.int64)  # first stored row of each cell
        self._cell_start[1:] = np.cumsum(self._cell_sizes)[:-1]
        self.coverage = 1.0  # calibrated by build_router
        self.calibration: dict[str, float] = {}
        self.latency = LatencyTracker(len(centroids), options.ewma_alpha)
        self.load = np.zeros(len(centroids), dtype=np.float64)

    @property
    def unit_count(self) -> int:
        return len(self.centroids)

    @property
    def sample_profiles(self) -> FloatArray:
        """The neighbour profiles as a dense (sample points x units) array."""
        return _profiles(self.sample_units, self.unit_count)

    # ------------------------------------------------------------------ scores

    def scores(self, query: npt.ArrayLike, *, strategy: str | None = None) -> FloatArray:
        """Estimated share of the query's top-k in each unit (sums to 1)."""
        rows = self.scores_many(np.atleast_2d(np.asarray(query, dtype=np.float32)), strategy)
        return np.asarray(rows[0], dtype=np.float32)

    def scores_many(self, queries: npt.ArrayLike, strategy: str | None = None) -> FloatArray:
        """:meth:`scores` of every row of ``queries`` (one product per matrix for the batch)."""
        q = _unit_rows(queries)
        if q.ndim != 2 or q.shape[1] != self.centroids.shape[1]:
            raise RoutingError(
                f"query vectors must have {self.centroids.shape[1]} dimensions, got "
                f"{q.shape[-1] if q.ndim else 0}"
            )
        return self._scores(q, strategy)

    def _scores(
        self,
        q: FloatArray,
        strategy: str | None,
        replaced: tuple[IntArray, FloatArray] | None = None,
    ) -> FloatArray:
        """:meth:`scores_many` of unit rows ``q``; with ``replaced`` = (units, centroids), the
        unit ``units[i]`` has centroid ``centroids[i]`` for query ``i`` (the builder judges
        library points against their own unit's centroid without them)."""
        options = self.options
        logits = self._unit_logits(q, replaced)
        if (strategy or options.strategy) == "domain_affinity" or not len(self.sample_vectors):
            return _softmax(logits, in_place=True)
        prior = _softmax(logits)
        top, top_sims = self._nearest_sample(q, logits)
        top_sims -= top_sims.max(axis=1, keepdims=True)
        top_sims /= np.float32(options.temperature)
        weights = np.exp(top_sims)  # a padded place (-inf) weighs nothing
        neighbour_units = self.sample_units[top]  # queries x m x profile size
        units = self.unit_count
        cells = neighbour_units + (np.arange(len(q)) * units)[:, None, None]
        shares = np.broadcast_to(weights[:, :, None], neighbour_units.shape)
        summed = np.bincount(cells.ravel(), weights=shares.ravel(), minlength=len(q) * units)
        blended = summed.reshape(len(q), units).astype(np.float64)
        blended /= np.maximum(blended.sum(axis=1, keepdims=True), 1e-12)
        mixed = (1 - options.centroid_prior) * blended + options.centroid_prior * prior
        return np.asarray(mixed, dtype=np.float32)

    def _unit_logits(
        self, q: FloatArray, replaced: tuple[IntArray, FloatArray] | None = None
    ) -> FloatArray:
        """Each query's similarity to every unit centroid over the temperature (through the
        unit index when the builder kept it; ``replaced`` as in :meth:`_scores`)."""
        if self.unit_index is not None and self.unit_index_rerank:
            return self.unit_index.logits(q, self.unit_index_rerank, replaced)
        logits = q @ self.centroids.T
        if replaced is not None:
            units, centroids = replaced
            logits[np.arange(len(q)), units] = np.einsum("ij,ij->i", q, centroids)
        logits /= np.float32(self.options.temperature)
        return logits

    def _nearest_sample(self, q: FloatArray, logits: FloatArray) -> tuple[IntArray, FloatArray]:
        """Each query's ``sample_neighbours`` most similar sample points and their
        similarities (padded with -inf when fewer points were searched).

        With ``sample_candidates`` below the sample's size (and the whole sample's
        product dearer than ``whole_sample_work``), only the sample points of the
        query's best units (by centroid, best first, until they hold at least that
        many; a sample point belongs to its nearest centroid's unit) are searched.
        """
        wanted = self.options.sample_neighbours
        sample = len(self.sample_vectors)
        budget = self.options.sample_candidates
        if not budget or budget >= sample or sample * q.shape[1] <= self.options.whole_sample_work:
            sims = q @ self.sample_vectors.T
            m = min(wanted, sample)
            if m == sample:
                return np.broadcast_to(np.arange(sample), sims.shape), sims
            top = np.argpartition(sims, sample - m, axis=1)[:, sample - m :]
            return top, np.take_along_axis(sims, top, axis=1)
        units = self.unit_count
        # enough of the best units to hold the budget when cells are of even size, twice over
        guess = min(units, 2 * budget * units // sample + 1)
        best = np.argpartition(logits, units - guess, axis=1)[:, units - guess :]
        top = np.zeros((len(q), wanted), dtype=np.int64)
        top_sims = np.full((len(q), wanted), -np.inf, dtype=np.float32)
        for row in range(len(q)):
            cells = best[row][np.argsort(-logits[row, best[row]], kind="stable")]
            held = np.cumsum(self._cell_sizes[cells])
            if held[-1] < budget and guess < units:  # uneven cells: rank every unit
                cells = np.argsort(-logits[row], kind="stable")
                held = np.cumsum(self._cell_sizes[cells])
            taken = cells[: int(np.searchsorted(held, budget)) + 1]
            candidates, sims = self._search_cells(taken, q[row])
            m = min(wanted, len(candidates))
            pick = np.argpartition(sims, len(sims) - m)[len(sims) - m :]
            top[row, :m] = candidates[pick]
            top_sims[row, :m] = sims[pick]
        return top, top_sims

    def _search_cells(self, cells: IntArray, query: FloatArray) -> tuple[IntArray, FloatArray]:
        """The stored rows of the sample points of ``cells`` and their similarity to
        ``query``: one product per run of cells that are neighbours in storage."""
        starts = self._cell_start[cells]
        stops = starts + self._cell_sizes[cells]
        order = np.argsort(starts)
        starts, stops = starts[order], stops[order]
        breaks = np.flatnonzero(starts[1:] != stops[:-1]) + 1
        run_starts = starts[np.concatenate([[0], breaks])]
        run_stops = stops[np.concatenate([breaks - 1, [len(stops) - 1]])]
        rows = np.concatenate(
            [np.arange(a, b) for a, b in zip(run_starts.tolist(), run_stops.tolist(), strict=True)]
        )
        sims = np.concatenate(
            [
                self.sample_vectors[a:b] @ query
                for a, b in zip(run_starts.tolist(), run_stops.tolist(), strict=True)
            ]
        )
        return rows.astype(np.int64), np.asarray(sims, dtype=np.float32)

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        query: npt.ArrayLike,
        *,
        strategy: str | None = None,
        coverage: float | None = None,
    ) -> RouteDecision:
        """The units to probe for ``query``, best first, with the estimated recall."""
        strategy = self._strategy(strategy)
        scores = self.scores(query, strategy=strategy)
        return self._decide(scores, strategy, self.coverage if coverage is None else coverage)

    def decide_many(
        self, queries: npt.ArrayLike, *, strategy: str | None = None
    ) -> list[RouteDecision]:
        """:meth:`decide` for every row of ``queries``, scored as one batch."""
        strategy = self._strategy(strategy)
        scores = self.scores_many(queries, strategy)
        if strategy == "accuracy_first" or self._avoids_any(strategy):
            return [self._decide(row, strategy, self.coverage) for row in scores]
        return self._decide_batch(scores, strategy, self.coverage)

    def _decide_batch(
        self, scores: FloatArray, strategy: str, coverage: float
    ) -> list[RouteDecision]:
        """:meth:`_decide` for every row of ``scores`` (the plain coverage rule), the best
        units of all rows ranked at once; a row whose rule is not settled among them (the
        coverage not reached, or a tie with the first unit left out) is decided alone."""
        options = self.options
        rows, total = scores.shape
        limit = min(options.max_units or total, total)
        least = min(options.min_units, limit)
        candidates = min(total, max(4 * least, 32))
        if candidates >= total or not rows:
            return [self._decide(row, strategy, coverage) for row in scores]
        best = np.argpartition(scores, total - candidates, axis=1)[:, total - candidates :]
        values = np.take_along_axis(scores, best, axis=1)
        order = np.lexsort((best, -values), axis=1)  # best first; ties in index order
        best = np.take_along_axis(best, order, axis=1)
        values = np.take_along_axis(values, order, axis=1)
        cumulative = np.cumsum(values, axis=1, dtype=np.float64)
        reached = cumulative[:, least - 1 :] >= coverage
        found = reached.any(axis=1)
        count = np.minimum(np.where(found, least + reached.argmax(axis=1), candidates), limit)
        last = np.arange(rows), count - 1
        # settled: the rule stopped among the candidates, on a unit better than every unit
        # left out (so the candidates' order is a prefix of the whole stable order)
        settled = (found | (count >= limit)) & (values[last] > values[:, -1])
        masses = np.minimum(cumulative[last], 1.0).tolist()
        decisions = []
        for row in range(rows):
            if settled[row]:
                units = best[row, : count[row]].tolist()
                decisions.append(RouteDecision(units, masses[row], scores[row]))
            else:
                decisions.append(self._decide(scores[row], strategy, coverage))
        return decisions

    def _strategy(self, strategy: str | None) -> str:
        if strategy == AUTO:  # asked for the build's choice
            strategy = None
        strategy = strategy or self.options.strategy
        if strategy not in STRATEGIES:
            raise RoutingError(
                f"strategy {strategy!r} is unknown; accepted: {', '.join(STRATEGIES)}"
            )
        return strategy

    def _decide(self, scores: FloatArray, strategy: str, coverage: float) -> RouteDecision:
        if strategy == "accuracy_first":
            order = np.argsort(-scores, kind="stable")
            return RouteDecision([int(u) for u in order], 1.0, scores)
        if self._avoids_any(strategy):
            return self._decide_avoiding(scores, strategy, coverage)
        options = self.options
        total = len(scores)
        limit = min(options.max_units or total, total)
        least = min(options.min_units, limit)
        candidates = min(total, max(4 * least, 32))
        while True:
            order = _best_first(scores, candidates)
            cumulative = np.cumsum(scores[order], dtype=np.float64)
            count = min(_chosen_count(cumulative, coverage, least), limit)
            if count < len(order) or len(order) >= limit:
                break
            candidates *= 8  # the coverage was not reached among the candidates: widen
        mass = float(cumulative[count - 1]) if count else 0.0
        return RouteDecision([int(u) for u in order[:count]], min(1.0, mass), scores)

    def _avoids_any(self, strategy: str) -> bool:
        """Would ``strategy`` skip some unit now (for load or latency)?"""
        if strategy == "load_balancing":
            total = self.load.sum()
            return bool(total > 0 and (self.load > 1.5 * total / len(self.load)).any())
        if strategy == "latency_optimized":
            slow = self.latency.seen & (self.latency.mean > self.options.latency_budget_s)
            return bool(slow.any())
        return False

    def _decide_avoiding(self, scores: FloatArray, strategy: str, coverage: float) -> RouteDecision:
        options = self.options
        order = np.argsort(-scores, kind="stable")
        chosen: list[int] = []
        skipped: list[int] = []
        mass = 0.0
        give_up = 0.0
        limit = options.max_units or len(order)
        for unit in order:
            if len(chosen) >= limit or (mass >= coverage and len(chosen) >= options.min_units):
                break
            share = float(scores[unit])
            if chosen and self._avoid(int(unit), strategy) and give_up + share <= options.slack:
                skipped.append(int(unit))
                give_up += share
                continue
            chosen.append(int(unit))
            mass += share
        return RouteDecision(chosen, min(1.0, mass), scores, skipped)

    def _avoid(self, unit: int, strategy: str) -> bool:
        if strategy == "load_balancing":
            total = self.load.sum()
            return bool(total > 0 and self.load[unit] > 1.5 * total / len(self.load))
        if strategy == "latency_optimized":
            seen = self.latency.seen[unit]
            return bool(seen and self.latency.mean[unit] > self.options.latency_budget_s)
        return False

    def route(self, query_vector: npt.ArrayLike) -> list[int]:
        """Indices of the units to probe for ``query_vector``, best first."""
        return self.decide(query_vector).units

    def route_many(self, queries: npt.ArrayLike, strategy: str | None = None) -> list[list[int]]:
        return [decision.units for decision in self.decide_many(queries, strategy=strategy)]

    # ------------------------------------------------------------------ feedback

    def record_latency(self, unit: int, seconds: float) -> None:
        self.latency.observe(unit, seconds)

    def hedge_after(self, unit: int) -> float | None:
        """Seconds after which a hedged second request to ``unit`` is worth sending."""
        return self.latency.hedge_after(unit)

    def record_load(self, loads: Sequence[float]) -> None:
        """Current load (e.g. queries/s) of every unit, for ``load_balancing``."""
        if len(loads) != self.unit_count:
            raise RoutingError(f"expected {self.unit_count} loads, got {len(loads)}")
        self.load = np.asarray(loads, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.options.strategy,
            **{f"strategy_{key}": value for key, value in self.strategy_choice.items()},
            "units": self.unit_count,
            "sample_points": len(self.sample_vectors),
            "sample_candidates": self.options.sample_candidates,
            "unit_index": (
                f"{self.unit_index_rerank} best of {self.unit_index.dims} dims re-scored"
                if self.unit_index is not None and self.unit_index_rerank
                else "full scan"
            ),
            "coverage": round(self.coverage, 6),
            "target_recall": self.options.target_recall,
            **{f"calibration_{key}": round(value, 4) for key, value in self.calibration.items()},
        }


def _best_first(scores: FloatArray, count: int) -> IntArray:
    """The first units of the stable best-first order of ``scores``: at least ``count``
    of them (every unit tied with the last one is included), in that order."""
    total = len(scores)
    if count >= total:
        return np.argsort(-scores, kind="stable")
    threshold = np.partition(scores, total - count)[total - count]
    candidates = np.flatnonzero(scores >= threshold)  # ascending: ties keep index order
    return candidates[np.argsort(-scores[candidates], kind="stable")]


def _options(overrides: dict[str, Any]) -> RoutingOptions:
    accepted = {f.name for f in fields(RoutingOptions)}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise RoutingError(
            f"unknown routing option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}"
        )
    options = replace(RoutingOptions(), **overrides)
    problems = options.problems()
    if problems:
        raise RoutingError("; ".join(problems))
    return options


def _member_means(
    source: npt.NDArray[Any], assigned: IntArray, units: int, block_rows: int
) -> FloatArray:
    """The mean of each unit's (unit-normalised) members, summed block by block."""
    sums = np.zeros((units, source.shape[1]), dtype=np.float64)
    for start in range(0, len(source), block_rows):
        rows = _unit_rows(source[start : start + block_rows])
        labels = assigned[start : start + block_rows]
        order = np.argsort(labels, kind="stable")
        present, first = np.unique(labels[order], return_index=True)
        sums[present] += np.add.reduceat(rows[order], first, axis=0)
    counts = np.bincount(assigned, minlength=units)[:, None]
    return np.asarray(sums / np.maximum(counts, 1), dtype=np.float32)


def _centroids(
    units: Sequence[Any], source: npt.NDArray[Any], assigned: IntArray, block_bytes: int
) -> FloatArray:
    """Every unit's unit-length centroid (its own, or the mean of its members)."""
    dim = source.shape[1]
    centroids = np.zeros((len(units), dim), dtype=np.float32)
    missing = []
    for index, unit in enumerate(units):
        centroid = _centroid_of(unit)
        if centroid is None:
            missing.append(index)
            continue
        if centroid.shape != (dim,):
            raise RoutingError(
                f"unit {index} has a {centroid.shape[0]}-d centroid; vectors are {dim}-d"
            )
        centroids[index] = centroid
    if missing:
        block_rows = max(1, block_bytes // (dim * 4))
        centroids[missing] = _member_means(source, assigned, len(units), block_rows)[missing]
    return _unit_rows(centroids)


def build_router(
    vectors: npt.ArrayLike,
    labels: npt.ArrayLike,
    units: Sequence[Any],
    **options: Any,
) -> LibraryRouter:
    """A router over ``units`` learned from ``vectors`` and their unit ``labels``.

    ``units`` are the discovered domains or partitions (anything with a
    ``centroid``, or the centroid arrays themselves; a unit without one gets the
    mean of its members). ``labels[i]`` is the index into ``units`` of
    ``vectors[i]``. ``vectors`` may be the whole library or a sample of it; pass
    ``unit_sizes`` (points per unit in the whole library) in the latter case.
    Options: the fields of :class:`RoutingOptions`.

    Memory: besides ``vectors`` (not copied when float32), the sample, the
    reference points (at most ``reference_limit`` rows) and one block of scores
    (``block_bytes``).
    """
    unit_sizes = options.pop("unit_sizes", None)
    settings, choose = _hybrid_if_auto(_options(options))
    source, assigned = _checked_inputs(vectors, labels, len(units))
    n = len(source)
    centroids = _centroids(units, source, assigned, settings.block_bytes)
    sizes = (
        np.asarray(unit_sizes, dtype=np.int64)
        if unit_sizes is not None
        else np.bincount(assigned, minlength=len(units)).astype(np.int64)
    )

    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(n)
    sample_size = int(
        min(n, settings.max_sample, max(settings.min_sample, settings.sample_fraction * n))
    )
    sample = order[:sample_size]  # random order: each prefix is a uniform sub-sample
    held_aside = order[sample_size : sample_size + settings.calibration_queries]
    if len(held_aside) < min(50, settings.calibration_queries):
        # Small libraries: calibrate on sample points (their own row excluded below).
        held_aside = order[: settings.calibration_queries]

    reference = np.arange(n)
    if n > settings.reference_limit:
        reference = np.sort(rng.choice(n, settings.reference_limit, replace=False))
    # The top-k of the whole library corresponds to the top-k' of a uniform reference subset
    # (``vectors`` may itself be a sample of a library of ``sum(unit_sizes)`` points).
    population = max(int(sizes.sum()), n)
    k = _neighbour_count(round(settings.k * len(reference) / population), len(reference), True)

    calibration_vectors = _unit_rows(source[held_aside])
    scanned = None
    if n > settings.truth_limit:  # a uniform subset, its nearest points weighted
        scanned = np.sort(rng.choice(n, settings.truth_limit, replace=False))
    truth, truth_weights = _calibration_truth(
        calibration_vectors,
        held_aside,
        source,
        assigned,
        population,
        settings.k,
        settings.block_bytes,
        scanned,
    )
    sample_vectors = _unit_rows(source[sample])
    member_lengths = _member_lengths(centroids, sample_vectors, assigned[sample])
    own_units = assigned[held_aside]
    centroid: LibraryRouter | None = None
    if choose:
        centroid = LibraryRouter(
            options=replace(settings, strategy="domain_affinity"),
            centroids=centroids,
            sizes=sizes,
            sample_vectors=sample_vectors[:0],
            sample_units=np.empty((0, k), dtype=np.int64),
        )
        _calibrate(centroid, calibration_vectors, truth, truth_weights)
        least = _least_touched(truth, truth_weights, sizes, settings.target_recall)
        if _hybrid_cannot_pay(centroid, least):  # the sample's neighbours are not searched
            centroid.strategy_choice = {
                "chosen_by": "build",
                "touched_hybrid_at_least": round(least, 4),
                "touched_centroid": round(centroid.calibration["touched"], 4),
                "hybrid_margin": settings.hybrid_margin,
            }
            _fit_unit_index(centroid, calibration_vectors, own_units, member_lengths)
            return centroid
    position = np.full(n, -1, dtype=np.int64)
    position[reference] = np.arange(len(reference))
    reference_rows = _unit_rows(source[reference])

    def neighbour_units(ids: IntArray, rows: FloatArray) -> IntArray:
        nearest = _top_neighbours(
            rows, reference_rows, k, position[ids], block_bytes=settings.block_bytes
        )
        return assigned[reference[nearest]]

    grow = settings.profile_tolerance is not None and settings.strategy not in (
        "domain_affinity",
        "accuracy_first",
    )
    steps = _sample_steps(len(sample), settings.sample_neighbours) if grow else [len(sample)]
    units_found = np.empty((len(sample), k), dtype=np.int64)
    best: LibraryRouter | None = None
    for done, size in zip([0, *steps], steps, strict=False):
        units_found[done:size] = neighbour_units(sample[done:size], sample_vectors[done:size])
        router = LibraryRouter(
            options=settings,
            centroids=centroids,
            sizes=sizes,
            sample_vectors=sample_vectors[:size],
            sample_units=units_found[:size],
        )
        _calibrate(router, calibration_vectors, truth, truth_weights)
        if best is not None and not _pays(router, best, settings.profile_tolerance or 0.0):
            break
        best = router
    assert best is not None
    best.calibration["sample_points_tried"] = float(size)
    if centroid is not None:
        best = _choose_strategy(best, centroid)
    _fit_unit_index(best, calibration_vectors, own_units, member_lengths)
    return best


def _checked_inputs(
    vectors: npt.ArrayLike, labels: npt.ArrayLike, units: int
) -> tuple[npt.NDArray[Any], IntArray]:
    """``vectors`` as a floating array (not copied when it is one) and ``labels`` as indices
    into the ``units``, or a :class:`RoutingError` naming what is wrong."""
    source = np.asarray(vectors)
    if not np.issubdtype(source.dtype, np.floating):
        source = source.astype(np.float32)
    assigned = np.asarray(labels, dtype=np.int64)
    if source.ndim != 2 or len(source) == 0:
        raise RoutingError("vectors must be a non-empty 2-D array (one row per point)")
    if assigned.shape != (len(source),):
        raise RoutingError(
            f"labels must have one entry per vector ({len(source)}), got {assigned.shape}"
        )
    if not units:
        raise RoutingError("no units to route to; run discovery first")
    if assigned.min() < 0 or assigned.max() >= units:
        raise RoutingError(f"labels must be indices into units (0..{units - 1})")
    return source, assigned


def _least_touched(
    truth_units: IntArray,
    truth_weights: npt.NDArray[np.float64] | None,
    sizes: npt.NDArray[np.int64],
    target: float,
) -> float:
    """A lower bound on the share of points any routing touches on these calibration queries
    while its recall (as :func:`_calibrate` measures it) reaches ``target``.

    An oracle that knows each query's true neighbours would probe, per query, only units
    holding some of them. Each (query, unit) pair adds the weight of the query's neighbours
    in the unit to the mean recall, at the cost of the unit's size in the mean touched share.
    Probing fractions of pairs, the cheapest way to reach the target takes pairs in order of
    recall per point touched (a fractional knapsack); no whole choice of units per query,
    and so no strategy, touches less.
    """
    queries, count = truth_units.shape
    if not queries:
        return 0.0
    weights = np.ones(count) if truth_weights is None else np.asarray(truth_weights, np.float64)
    weights = weights / weights.sum()
    units = len(sizes)
    pairs = (np.arange(queries)[:, None] * units + truth_units).ravel()
    held, first = np.unique(pairs, return_inverse=True)
    gain = np.bincount(first, weights=np.broadcast_to(weights, truth_units.shape).ravel())
    gain = gain / queries
    cost = sizes[held % units] / (float(sizes.sum()) or 1.0) / queries
    ratio = np.argsort(-gain / np.maximum(cost, 1e-300), kind="stable")
    reached = np.cumsum(gain[ratio])
    enough = int(np.searchsorted(reached, target - 1e-12))
    if enough >= len(ratio):
        return float(cost.sum())
    before = float(reached[enough - 1]) if enough else 0.0
    spent = float(cost[ratio[:enough]].sum())
    partial = (target - before) / gain[ratio[enough]]
    return spent + float(partial * cost[ratio[enough]])


def _hybrid_cannot_pay(centroid: LibraryRouter, least_touched: float) -> bool:
    """Does even the oracle bound say ``hybrid`` would not be kept over ``centroid``?

    ``hybrid`` is kept when, at the target recall, it touches at most
    ``1 - hybrid_margin`` of the centroids' share; it cannot touch less than
    :func:`_least_touched`. Only when the centroids reached the target and every unit may
    be probed (``max_units`` unset: ``hybrid`` then always reaches the target too).
    """
    options = centroid.options
    if options.max_units is not None:
        return False
    if centroid.calibration.get("recall", 0.0) < options.target_recall:
        return False
    return least_touched > centroid.calibration["touched"] * (1 - options.hybrid_margin)


def _rerank_steps(units: int) -> list[int]:
    """Units re-scored exactly in turn by the unit index: 8, 16, 32, ... up to a quarter of
    them (past that the full scan costs about as much)."""
    steps, rerank = [], 8
    while rerank <= units // 4:
        steps.append(rerank)
        rerank *= 2
    return steps


def _member_lengths(
    centroids: FloatArray, rows: FloatArray, units: IntArray
) -> npt.NDArray[np.float64]:
    """Each unit's mean projection of its (unit-length) members on its centroid, estimated on
    ``rows`` (a uniform sample, of units ``units``); the mean over all of them for a unit with
    no member there. The sum of a unit's members is about its size times this, along its
    centroid."""
    along = np.einsum("ij,ij->i", rows, centroids[units]).astype(np.float64)
    overall = float(along.mean()) if len(along) else 1.0
    counts = np.bincount(units, minlength=len(centroids))
    sums = np.bincount(units, weights=along, minlength=len(centroids))
    lengths = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
    return np.asarray(np.maximum(lengths, 1e-6), dtype=np.float64)


def _left_out_centroids(
    router: LibraryRouter,
    queries: FloatArray,
    own_units: IntArray,
    member_lengths: npt.NDArray[np.float64],
) -> FloatArray:
    """The centroid of each query's own unit without the query: the unit's members sum to
    about size x member length along its centroid; the query's row taken out, renormalised
    (a centroid is the direction of its members' unit rows' mean)."""
    total = router.sizes[own_units] * member_lengths[own_units]
    return _unit_rows(total[:, None] * router.centroids[own_units] - queries)


def _fit_unit_index(
    router: LibraryRouter,
    calibration: FloatArray,
    own_units: IntArray,
    member_lengths: npt.NDArray[np.float64],
) -> None:
    """Keep the router's unit index with the fewest re-scored units whose chosen units equal the
    full scan's on ``unit_index_agreement`` of held-out queries (at the calibrated coverage), or
    none. The index's corrections are fitted on half of ``calibration`` and the agreement is
    judged on the other half, so it is not judged on the queries it was fitted to.

    The calibration queries are library points (of units ``own_units``), which pull their own
    unit's centroid towards themselves: a query from outside the library does not. So each is
    judged, by both the index and the full scan, against its own unit's centroid without it
    (:func:`_left_out_centroids`), as a query from outside the library would be. The share
    that agreed is kept in the calibration figures."""
    index = router.unit_index
    strategy = router.options.strategy
    if index is None or len(calibration) < 2 or strategy == "accuracy_first":
        return
    index.fit_correction(calibration[0::2])
    queries = calibration[1::2]
    own = own_units[1::2]
    replaced = (own, _left_out_centroids(router, queries, own, member_lengths))

    def chosen() -> list[list[int]]:
        scores = router._scores(queries, strategy, replaced)
        return [router._decide(row, strategy, router.coverage).units for row in scores]

    router.unit_index_rerank = 0
    exact = chosen()
    for rerank in _rerank_steps(router.unit_count):
        router.unit_index_rerank = rerank
        agreed = float(np.mean([a == b for a, b in zip(chosen(), exact, strict=True)]))
        if agreed >= router.options.unit_index_agreement:
            router.calibration["unit_index_agreement"] = agreed
            return
    router.unit_index_rerank = 0


def _hybrid_if_auto(settings: RoutingOptions) -> tuple[RoutingOptions, bool]:
    """The options to build with (``auto`` builds ``hybrid`` first) and whether to choose."""
    if settings.strategy == AUTO:
        return replace(settings, strategy="hybrid"), True
    return settings, False


def _choose_strategy(hybrid: LibraryRouter, centroid: LibraryRouter) -> LibraryRouter:
    """``hybrid`` or the same units routed by centroids alone (``centroid``, no sample
    kept), whichever :attr:`RoutingOptions.hybrid_margin` says pays; both calibrated on the
    same queries against the same weighted truth."""
    options = hybrid.options
    hybrid_touched = hybrid.calibration["touched"]
    centroid_touched = centroid.calibration["touched"]
    target = options.target_recall
    if not len(hybrid.sample_vectors):
        keep_hybrid = False
    elif centroid.calibration["recall"] < target <= hybrid.calibration["recall"]:
        keep_hybrid = True  # centroids alone never reached the target recall
    else:
        keep_hybrid = hybrid_touched <= centroid_touched * (1 - options.hybrid_margin)
    chosen = hybrid if keep_hybrid else centroid
    chosen.strategy_choice = {
        "chosen_by": "build",
        "touched_hybrid": round(hybrid_touched, 4),
        "touched_centroid": round(centroid_touched, 4),
        "hybrid_margin": options.hybrid_margin,
    }
    return chosen


def _sample_steps(sample: int, neighbours: int) -> list[int]:
    """Sample sizes tried in turn: none, then 1/8, 1/4, 1/2 and all of the sample."""
    steps = [0] + [size for size in (sample // 8, sample // 4, sample // 2) if size >= neighbours]
    return [*dict.fromkeys([*steps, sample])]


def _pays(larger: LibraryRouter, smaller: LibraryRouter, tolerance: float) -> bool:
    """Does the larger sample touch fewer points than the smaller one by more than
    ``tolerance`` (relative), both calibrated to the same recall?"""
    return larger.calibration["touched"] < smaller.calibration["touched"] * (1 - tolerance)


def _truth_weights(k: int, found_share: float, available: int) -> npt.NDArray[np.float64]:
    """How much the ``j``-th nearest of the points at hand (``j`` = 1, 2, ...) counts as one of
    the library's true top ``k``, when they are a uniform ``found_share`` of the library.

    The ``j``-th nearest point at hand is in the library's top ``k`` exactly when at least
    ``j`` of those ``k`` were drawn: probability ``P(Binomial(k, found_share) >= j)``. With
    the whole library at hand these are ``k`` ones (the exact top-``k``); with a fraction of
    it, a few nearest points weighted down. Weights under 1e-3 are dropped; at least one and
    at most ``available`` are kept.
    """
    share = min(1.0, max(0.0, found_share))
    if share >= 1.0:
        weights = np.ones(k, dtype=np.float64)
    else:
        exactly = [math.comb(k, i) * share**i * (1 - share) ** (k - i) for i in range(k + 1)]
        at_least = np.cumsum(exactly[::-1])[::-1]  # at_least[j] = P(Binomial >= j)
        weights = np.asarray(at_least[1:], dtype=np.float64)
        weights = weights[weights >= 1e-3] if weights[0] >= 1e-3 else weights[:1]
    return weights[: max(1, min(len(weights), available))]


def _calibration_truth(
    query_rows: FloatArray,
    own_rows: IntArray,
    source: npt.NDArray[Any],
    assigned: IntArray,
    population: int,
    k: int,
    block_bytes: int,
    scanned: IntArray | None = None,
) -> tuple[IntArray, npt.NDArray[np.float64]]:
    """The units of each calibration query's nearest points among all of ``source`` (its
    own row ``own_rows[i]`` excluded), best first, and how much each rank counts towards
    recall@``k`` of a library of ``population`` points (:func:`_truth_weights`).

    ``scanned`` (sorted row indices) restricts the scan to a uniform subset of ``source``:
    its nearest points are then weighted by the chance that they are among the library's
    top ``k``, as for a library known by a sample. A query's own row is in the subset with
    probability ``len(scanned) / n``, so on average the subset holds that share of the
    query's other points too: the share of the library at hand is
    ``len(scanned) / n * (n - 1) / (population - 1)``. The weights are each rank's chance
    of being a true neighbour, but a nearest subset point that is not one lies in the
    query's best units less often than a true neighbour does: the recall is underestimated,
    and the calibrated coverage errs on the safe side (measured on 40,000 points, 400
    units: on half the library, held-out recall 0.956 instead of 0.950 and about a tenth
    more points touched; on a quarter, 0.963 and a quarter more).

    Exact over the rows scanned: they are read once in blocks (normalised block by block),
    each block's scores for every query fitting in ``block_bytes`` (one buffer, reused),
    keeping a running top list.
    """
    n = len(source)
    rows = np.arange(n) if scanned is None else np.asarray(scanned, dtype=np.int64)
    m = len(rows)
    if n == 1:  # a library of one point is its own neighbour
        own_rows = np.full(len(own_rows), -1, dtype=np.int64)
        weights = _truth_weights(k, 1 / max(population, 1), 1)
    else:
        share = m / n * (n - 1) / max(population - 1, 1)
        weights = _truth_weights(k, share, m - (1 if m == n else 0))
    wanted = min(len(weights), m)
    queries = len(query_rows)
    best_scores = np.full((queries, wanted), -np.inf, dtype=np.float32)
    best_rows = np.zeros((queries, wanted), dtype=np.int64)
    # where each query's own row is among the scanned rows (-1: not scanned)
    own_position = np.full(len(own_rows), -1, dtype=np.int64)
    found = np.searchsorted(rows, own_rows)
    hit = (found < m) & (rows[np.minimum(found, m - 1)] == own_rows) & (own_rows >= 0)
    own_position[hit] = found[hit]
    # a block's float32 rows and scores, plus the int64 indices a partial sort makes
    per_row = source.shape[1] * 8 + queries * 12
    block_rows = _padded(max(wanted, min(m, block_bytes // max(per_row, 1))))
    buffer = np.empty((queries, block_rows), dtype=np.float32)
    everyone = np.arange(queries)
    for start in range(0, m, block_rows):
        stop = min(start + block_rows, m)
        width = stop - start
        block = source[start:stop] if scanned is None else source[rows[start:stop]]
        block = np.asarray(block, dtype=np.float32)
        inverse = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", block, block)), 1e-12)
        scores = buffer[:, : _padded(width)]
        np.matmul(query_rows, block.T, out=scores[:, :width])
        scores[:, :width] *= inverse.astype(np.float32)
        scores[:, width:] = -np.inf
        inside = (own_position >= start) & (own_position < stop)
        scores[everyone[inside], own_position[inside] - start] = -np.inf
        take = min(wanted, width)
        top = _top_columns(scores, take)
        joined_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], 1)
        joined_rows = np.concatenate([best_rows, top + start], axis=1)
        keep = np.argpartition(joined_scores, joined_scores.shape[1] - wanted, axis=1)
        keep = keep[:, joined_scores.shape[1] - wanted :]
        best_scores = np.take_along_axis(joined_scores, keep, axis=1)
        best_rows = np.take_along_axis(joined_rows, keep, axis=1)
    ranked = np.argsort(-best_scores, axis=1, kind="stable")
    nearest = rows[np.take_along_axis(best_rows, ranked, axis=1)]
    return assigned[nearest], weights[:wanted]


def _calibrate(
    router: LibraryRouter,
    queries: FloatArray,
    truth_units: IntArray,
    truth_weights: npt.NDArray[np.float64] | None = None,
) -> None:
    """Set the smallest coverage whose measured recall on ``queries`` meets the target.

    ``truth_units[i, j]`` is the unit of query ``i``'s ``j``-th true neighbour, counted
    with ``truth_weights[j]`` (all equal by default). Every coverage is judged on the same
    best-first orders: the units a coverage takes are the shortest prefix of the query's
    order whose cumulative score reaches it. The measured recall only changes where the
    coverage crosses one of those cumulative scores, and never falls as the coverage
    grows, so a bisection over them finds the smallest one that meets the target exactly
    (no grid). The model records the expected recall, share of points touched and units
    per query at that coverage.
    """
    options = router.options
    if options.strategy == "accuracy_first" or not len(queries):
        router.coverage = 1.0
        return
    weights = (
        np.ones(truth_units.shape[1], dtype=np.float64)
        if truth_weights is None
        else np.asarray(truth_weights, dtype=np.float64)
    )
    weights = weights / weights.sum()
    scores = router.scores_many(queries, options.strategy)
    rows, units = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(scores, order, axis=1), axis=1, dtype=np.float64)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(units), order.shape), axis=1)
    truth_rank = np.take_along_axis(rank, truth_units, axis=1)
    total = float(router.sizes.sum()) or 1.0
    touched_so_far = np.cumsum(router.sizes[order], axis=1) / total
    limit = min(options.max_units or units, units)
    least = min(options.min_units, limit)
    deciding = cumulative[:, least - 1 : limit]  # masses where the rule can stop

    def taken(coverage: float) -> IntArray:
        """Units each query takes (``_decide``'s rule: cumulative scores never fall)."""
        short = (deciding < coverage).sum(axis=1)
        count: IntArray = np.where(short < deciding.shape[1], least + short, limit).astype(np.int64)
        return count

    def recall_at(count: IntArray) -> float:
        return float(((truth_rank < count[:, None]) @ weights).mean())

    candidates = np.unique(deciding)
    # past the largest mass no query stops early: each takes ``limit`` units
    candidates = np.append(candidates, np.nextafter(max(1.0, candidates[-1]), np.inf))
    low, high = 0, len(candidates) - 1
    if recall_at(taken(float(candidates[high]))) >= options.target_recall:
        while low < high:
            middle = (low + high) // 2
            if recall_at(taken(float(candidates[middle]))) >= options.target_recall:
                high = middle
            else:
                low = middle + 1
    coverage = float(candidates[high])
    count = taken(coverage)
    router.coverage = coverage
    router.calibration = {
        "recall": recall_at(count),
        "touched": float(touched_so_far[np.arange(rows), count - 1].mean()),
        "units_per_query": float(count.mean()),
        "queries": float(rows),
        "truth_neighbours": float(len(weights)),
    }
