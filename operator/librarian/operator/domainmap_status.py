"""The DomainMap status, computed from an analysis or a failure (pure).

Why this exists: the status is the user's window on discovery — phase,
conditions, domain summaries, confidence, version and a bounded history. It is
derived here from plain values so handlers only patch what this returns, and
tests can check every rule without Kubernetes. Centroids never go into the
status (etcd is not for vectors); they live in the catalog collection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from librarian.core.discovery import DiscoveryResult
from librarian.core.patterns import PatternReport
from librarian.operator.conditions import set_condition, timestamp

__all__ = [
    "HISTORY_LIMIT",
    "TERMINAL_REASONS",
    "analyzed_status",
    "domain_count_status",
    "domain_summaries",
    "failed_status",
    "history_summary",
    "progress_status",
]

HISTORY_LIMIT = 10
TERMINAL_REASONS = frozenset(
    {
        "InvalidSpec",
        "SourceNotFound",
        "SecretNotFound",
        "SecretNotAllowed",
        "ApiKeyEnvNotAllowed",
        "InsecureTransport",
        "AuthenticationFailed",
        "InvalidSource",
        "LabelingFailed",
        "LabelingJobMissing",
        "LabelingNeedsSecret",
    }
)


def domain_summaries(result: DiscoveryResult) -> list[dict[str, Any]]:
    partitions: dict[int, int] = {}
    for partition in result.partitions:
        partitions[partition.domain] = partitions.get(partition.domain, 0) + 1
    return [
        {
            "id": d.id,
            "name": d.name,
            "size": d.size,
            "radius": round(d.radius, 4),
            "cohesion": round(d.cohesion, 4),
            "keywords": list(d.keywords[:8]),
            "partitions": partitions.get(index, 0),
            **({"parent": d.parent} if d.parent else {}),
        }
        for index, d in enumerate(result.domains)
    ]


def domain_count_status(result: DiscoveryResult) -> dict[str, Any] | None:
    """How the number of domains was chosen: criterion, chosen and final count, each
    candidate's score and a one-line explanation (None when discovery did not say)."""
    choice = result.domain_count
    if choice is None:
        return None
    return {
        "criterion": choice.criterion,
        "chosen": choice.chosen,
        "final": choice.final or len(result.domains),
        "candidates": [{"k": k, "score": round(score, 4)} for k, score in choice.scores],
        "reason": choice.reason,
        "summary": choice.summary(),
    }


def analyzed_status(
    current: Mapping[str, Any] | None,
    *,
    result: DiscoveryResult,
    patterns: PatternReport,
    version: int,
    sampled: int,
    source_points: int,
    labeled: int | None,
    catalog: tuple[str, str],
    confidence_threshold: float,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """Status after a successful analysis (phase Ready)."""
    current = current or {}
    conditions = current.get("conditions") or []
    count = len(result.domains)
    message = (
        f"{count} domains in {source_points:,} points (sampled {sampled:,}), "
        f"confidence {result.confidence:.2f}, version {version}"
    )
    conditions = set_condition(
        conditions, "Ready", "True", "Analyzed", message, observed_generation=generation, now=now
    )
    conditions = set_condition(
        conditions,
        "Analyzed",
        "True",
        "DomainsDiscovered",
        message,
        observed_generation=generation,
        now=now,
    )
    conditions = set_condition(
        conditions,
        "Drifted",
        "True" if patterns.drifted else "False",
        "DomainsDrifted" if patterns.drifted else "Stable",
        patterns.summary(),
        observed_generation=generation,
        now=now,
    )
    low = result.confidence < confidence_threshold
    conditions = set_condition(
        conditions,
        "LowConfidence",
        "True" if low else "False",
        "BelowThreshold" if low else "AboveThreshold",
        f"confidence {result.confidence:.2f} vs threshold {confidence_threshold:.2f}"
        + ("; consider a different strategy or bounds" if low else ""),
        observed_generation=generation,
        now=now,
    )
    entry = {
        "version": version,
        "time": timestamp(now),
        "domainCount": count,
        "confidence": round(result.confidence, 4),
        "emerging": len(patterns.emerging),
        "vanished": len(patterns.vanished),
        "maxDrift": round(patterns.max_drift, 4),
    }
    history = [*(current.get("history") or []), entry][-HISTORY_LIMIT:]
    domain_count = domain_count_status(result)
    return {
        "phase": "Ready",
        "conditions": conditions,
        "observedGeneration": generation,
        "domains": domain_summaries(result),
        "domainCount": count,
        "confidence": round(result.confidence, 4),
        "strategy": result.strategy,
        **({"domainCountChoice": domain_count} if domain_count is not None else {}),
        "version": version,
        "lastAnalysisTime": timestamp(now),
        "sampled": sampled,
        "sourcePoints": source_points,
        "labeling": {
            "labeled": labeled if labeled is not None else 0,
            "total": source_points,
            "enabled": labeled is not None,
        },
        "catalog": {"cluster": catalog[0], "collection": catalog[1]},
        "history": history,
        "patterns": {
            "emerging": patterns.emerging,
            "vanished": patterns.vanished,
            "maxDrift": round(patterns.max_drift, 4),
            "growth": {c.id: round(c.growth, 4) for c in patterns.changes},
        },
    }


def progress_status(
    current: Mapping[str, Any] | None,
    phase: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """Status while work is under way (Analyzing, Labeling)."""
    conditions = (current or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        conditions = set_condition(
            conditions, "Ready", "Unknown", phase, message, observed_generation=generation, now=now
        )
    return {"phase": phase, "conditions": conditions, "message": message}


def failed_status(
    current: Mapping[str, Any] | None,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """Status after a failure: Ready=False with the reason; terminal reasons mean Failed."""
    conditions = set_condition(
        (current or {}).get("conditions") or [],
        "Ready",
        "False",
        reason,
        message,
        observed_generation=generation,
        now=now,
    )
    phase = "Failed" if reason in TERMINAL_REASONS else "Pending"
    return {
        "phase": phase,
        "conditions": conditions,
        "observedGeneration": generation,
        "message": message,
    }


def history_summary(history: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"v{h['version']}:{h['domainCount']}" for h in history)
