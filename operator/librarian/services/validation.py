"""Validating a specialization: does the tuned collection answer as well, and how fast?

Why this exists: a specialization is only done when measured. On sampled
queries (members of the domain), this compares the specialized collection's
top-k with exact search over the domain in the source (recall@k) and times
queries before (filtered search in the source) and after (the target with
the tuned ``hnsw_ef``) — the ValidateSpecialization figures in the status.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from librarian.contracts.payload import LABEL_KEY
from librarian.services.labeling import domain_filter
from librarian.storage.port import QdrantPort


@dataclass(frozen=True)
class SpecializationValidation:
    queries: int
    recall_at_k: float
    k: int
    source_p50_ms: float
    target_p50_ms: float

    @property
    def speedup(self) -> float:
        return self.source_p50_ms / self.target_p50_ms if self.target_p50_ms > 0 else 0.0


def validate_specialization(
    source: QdrantPort,
    source_collection: str,
    target: QdrantPort,
    target_collection: str,
    domain_id: str,
    *,
    queries: int = 50,
    k: int = 10,
    hnsw_ef: int | None = None,
    label_key: str = LABEL_KEY,
    vector: str = "",
) -> SpecializationValidation:
    """Recall@k of the target against exact search in the source, and p50 latencies, on the
    dense ``vector`` (``""``: the unnamed one) the library routes on."""
    selector = domain_filter(domain_id, label_key)
    sampled = target.sample(target_collection, queries, with_payload=False)
    sample = [p for p in sampled if p.dense(vector)]
    if not sample:
        return SpecializationValidation(0, 0.0, k, 0.0, 0.0)
    recalls: list[float] = []
    before: list[float] = []
    after: list[float] = []
    for point in sample:
        query = point.dense(vector) or []
        start = time.perf_counter()
        source.query(
            source_collection,
            query,
            limit=k,
            query_filter=selector,
            with_payload=False,
            using=vector,
        )
        before.append((time.perf_counter() - start) * 1000)
        exact = source.query(
            source_collection,
            query,
            limit=k,
            query_filter=selector,
            with_payload=False,
            exact=True,
            using=vector,
        )
        start = time.perf_counter()
        got = target.query(
            target_collection, query, limit=k, with_payload=False, hnsw_ef=hnsw_ef, using=vector
        )
        after.append((time.perf_counter() - start) * 1000)
        truth = {h.id for h in exact}
        recalls.append(len(truth & {h.id for h in got}) / max(len(truth), 1))
    return SpecializationValidation(
        queries=len(sample),
        recall_at_k=round(statistics.fmean(recalls), 4),
        k=k,
        source_p50_ms=round(statistics.median(before), 3),
        target_p50_ms=round(statistics.median(after), 3),
    )
