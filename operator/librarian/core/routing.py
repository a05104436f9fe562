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
query how many units to ask.

Strategies:

- ``hybrid`` (default): neighbour profiles plus a small centroid prior.
- ``domain_affinity``: centroid similarity only (calibrated the same way).
- ``accuracy_first``: every unit, best first.
- ``load_balancing``: like ``hybrid``, but a unit under more than its share of
  load is skipped when the recall it adds is below ``slack``.
- ``latency_optimized``: like ``hybrid``, but a unit whose EWMA latency is over
  ``latency_budget_s`` is skipped when the recall it adds is below ``slack``;
  :meth:`LibraryRouter.hedge_after` says when to send a hedged request.

Pure: numpy only, seeded randomness, no clock (latencies and loads are passed in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

STRATEGIES = (
    "hybrid",
    "domain_affinity",
    "accuracy_first",
    "load_balancing",
    "latency_optimized",
)

__all__ = [
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

    strategy: str = "hybrid"
    target_recall: float = 0.96  # recall@k the calibrated coverage threshold aims for
    k: int = 10  # the neighbours a query is assumed to ask for
    sample_fraction: float = 0.2  # share of points kept in the router's sample index
    min_sample: int = 2_000
    max_sample: int = 50_000
    sample_neighbours: int = 20  # sample points blended into a query's profile
    temperature: float = 0.07  # softness of the similarity weights of those points
    centroid_prior: float = 0.02  # weight of the centroid softmax in the blend
    calibration_queries: int = 500  # held-aside points used to calibrate the threshold
    reference_limit: int = 200_000  # points a neighbour profile is computed against
    min_units: int = 1
    max_units: int | None = None
    slack: float = 0.02  # recall a load/latency strategy may give up per skipped unit
    latency_budget_s: float = 0.05
    ewma_alpha: float = 0.2
    seed: int = 0

    def problems(self) -> list[str]:
        found = []
        if self.strategy not in STRATEGIES:
            found.append(
                f"strategy {self.strategy!r} is unknown; accepted: {', '.join(STRATEGIES)}"
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


def _top_neighbours(
    queries: FloatArray, reference: FloatArray, k: int, exclude: IntArray | None, chunk: int = 1024
) -> IntArray:
    """Indices into ``reference`` of each query's ``k`` most similar rows."""
    k = min(k, len(reference) - (0 if exclude is None else 1))
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ reference.T
        if exclude is not None:
            rows = np.arange(sims.shape[0])
            valid = exclude[start : start + chunk] >= 0
            sims[rows[valid], exclude[start : start + chunk][valid]] = -np.inf
        out[start : start + chunk] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return out


def _profiles(neighbour_labels: IntArray, units: int) -> FloatArray:
    """Share of each row's neighbours in each unit."""
    rows, k = neighbour_labels.shape
    profile = np.zeros((rows, units), dtype=np.float32)
    np.add.at(profile, (np.repeat(np.arange(rows), k), neighbour_labels.ravel()), 1.0 / k)
    return profile


class LibraryRouter:
    """Routes queries to units; build it with :func:`build_router`."""

    def __init__(
        self,
        *,
        options: RoutingOptions,
        centroids: FloatArray,
        sizes: npt.NDArray[np.int64],
        sample_vectors: FloatArray,
        sample_profiles: FloatArray,
    ) -> None:
        self.options = options
        self.centroids = centroids
        self.sizes = sizes
        self.sample_vectors = sample_vectors
        self.sample_profiles = sample_profiles
        self.coverage = 1.0  # calibrated by build_router
        self.calibration: dict[str, float] = {}
        self.latency = LatencyTracker(len(centroids), options.ewma_alpha)
        self.load = np.zeros(len(centroids), dtype=np.float64)

    @property
    def unit_count(self) -> int:
        return len(self.centroids)

    # ------------------------------------------------------------------ scores

    def scores(self, query: npt.ArrayLike, *, strategy: str | None = None) -> FloatArray:
        """Estimated share of the query's top-k in each unit (sums to 1)."""
        rows = self.scores_many(np.atleast_2d(np.asarray(query, dtype=np.float32)), strategy)
        return np.asarray(rows[0], dtype=np.float32)

    def scores_many(self, queries: npt.ArrayLike, strategy: str | None = None) -> FloatArray:
        q = _unit_rows(queries)
        if q.ndim != 2 or q.shape[1] != self.centroids.shape[1]:
            raise RoutingError(
                f"query vectors must have {self.centroids.shape[1]} dimensions, got "
                f"{q.shape[-1] if q.ndim else 0}"
            )
        options = self.options
        prior = self._softmax((q @ self.centroids.T) / options.temperature)
        if (strategy or options.strategy) == "domain_affinity" or not len(self.sample_vectors):
            return prior
        sims = q @ self.sample_vectors.T
        m = min(options.sample_neighbours, sims.shape[1])
        top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = np.exp((top_sims - top_sims.max(axis=1, keepdims=True)) / options.temperature)
        blended = np.einsum("qm,qmu->qu", weights, self.sample_profiles[top])
        blended /= np.maximum(blended.sum(axis=1, keepdims=True), 1e-12)
        mixed = (1 - options.centroid_prior) * blended + options.centroid_prior * prior
        return np.asarray(mixed, dtype=np.float32)

    @staticmethod
    def _softmax(logits: npt.NDArray[Any]) -> FloatArray:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float32)

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        query: npt.ArrayLike,
        *,
        strategy: str | None = None,
        coverage: float | None = None,
    ) -> RouteDecision:
        """The units to probe for ``query``, best first, with the estimated recall."""
        strategy = strategy or self.options.strategy
        if strategy not in STRATEGIES:
            raise RoutingError(
                f"strategy {strategy!r} is unknown; accepted: {', '.join(STRATEGIES)}"
            )
        scores = self.scores(query, strategy=strategy)
        return self._decide(scores, strategy, self.coverage if coverage is None else coverage)

    def _decide(self, scores: FloatArray, strategy: str, coverage: float) -> RouteDecision:
        options = self.options
        order = np.argsort(-scores, kind="stable")
        if strategy == "accuracy_first":
            return RouteDecision([int(u) for u in order], 1.0, scores)
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
        strategy = strategy or self.options.strategy
        return [
            self._decide(row, strategy, self.coverage).units
            for row in self.scores_many(queries, strategy)
        ]

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
            "units": self.unit_count,
            "sample_points": len(self.sample_vectors),
            "coverage": round(self.coverage, 4),
            "target_recall": self.options.target_recall,
            **{f"calibration_{key}": round(value, 4) for key, value in self.calibration.items()},
        }


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
    """
    unit_sizes = options.pop("unit_sizes", None)
    settings = _options(options)
    data = _unit_rows(vectors)
    assigned = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or len(data) == 0:
        raise RoutingError("vectors must be a non-empty 2-D array (one row per point)")
    if assigned.shape != (len(data),):
        raise RoutingError(
            f"labels must have one entry per vector ({len(data)}), got {assigned.shape}"
        )
    if not len(units):
        raise RoutingError("no units to route to; run discovery first")
    if assigned.min() < 0 or assigned.max() >= len(units):
        raise RoutingError(f"labels must be indices into units (0..{len(units) - 1})")
    centroids = np.zeros((len(units), data.shape[1]), dtype=np.float32)
    for index, unit in enumerate(units):
        centroid = _centroid_of(unit)
        if centroid is None or centroid.shape != (data.shape[1],):
            members = data[assigned == index]
            if centroid is not None:
                raise RoutingError(
                    f"unit {index} has a {centroid.shape[0]}-d centroid; vectors are {data.shape[1]}-d"
                )
            centroid = members.mean(axis=0) if len(members) else np.zeros(data.shape[1])
        centroids[index] = centroid
    centroids = _unit_rows(centroids)
    sizes = (
        np.asarray(unit_sizes, dtype=np.int64)
        if unit_sizes is not None
        else np.bincount(assigned, minlength=len(units)).astype(np.int64)
    )

    rng = np.random.default_rng(settings.seed)
    n = len(data)
    order = rng.permutation(n)
    sample_size = int(
        min(n, settings.max_sample, max(settings.min_sample, settings.sample_fraction * n))
    )
    sample = np.sort(order[:sample_size])
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
    k = max(1, round(settings.k * len(reference) / population))
    position = np.full(n, -1, dtype=np.int64)
    position[reference] = np.arange(len(reference))

    def neighbour_labels(rows: IntArray) -> IntArray:
        nearest = _top_neighbours(data[rows], data[reference], k, exclude=position[rows])
        return assigned[reference[nearest]]

    router = LibraryRouter(
        options=settings,
        centroids=centroids,
        sizes=sizes,
        sample_vectors=data[sample],
        sample_profiles=_profiles(neighbour_labels(sample), len(units)),
    )
    _calibrate(router, data[held_aside], neighbour_labels(held_aside))
    return router


def _calibrate(router: LibraryRouter, queries: FloatArray, truth_units: IntArray) -> None:
    """Pick the smallest coverage whose measured recall on ``queries`` meets the target."""
    options = router.options
    if options.strategy == "accuracy_first" or not len(queries):
        router.coverage = 1.0
        return
    scores = router.scores_many(queries, options.strategy)
    total = float(router.sizes.sum()) or 1.0
    best: tuple[float, float, float] | None = None
    for coverage in (*np.round(np.arange(0.5, 0.99, 0.01), 2), 0.99, 0.995, 0.999, 1.0):
        recalls, touched = [], []
        for row, truth in zip(scores, truth_units, strict=True):
            chosen = router._decide(row, options.strategy, float(coverage)).units
            recalls.append(float(np.isin(truth, chosen).mean()))
            touched.append(float(router.sizes[chosen].sum()) / total)
        best = (float(coverage), float(np.mean(recalls)), float(np.mean(touched)))
        if best[1] >= options.target_recall:
            break
    assert best is not None
    router.coverage = best[0]
    router.calibration = {"recall": best[1], "touched": best[2], "queries": float(len(queries))}
