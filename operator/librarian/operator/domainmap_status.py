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

from librarian.operator.conditions import set_condition, timestamp
from librarian.services.analysis_job import domain_count_status, domain_summaries

__all__ = [
    "HISTORY_LIMIT",
    "INLINE_CLUSTERS_MESSAGE",
    "TERMINAL_REASONS",
    "analyzed_status",
    "cluster_source_conditions",
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
        "AnalysisFailed",
        "AnalysisJobMissing",
        "AnalysisNeedsSecret",
    }
)


def analyzed_status(
    current: Mapping[str, Any] | None,
    *,
    report: Mapping[str, Any],
    version: int,
    labeled: int | None,
    catalog: tuple[str, str],
    confidence_threshold: float,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """Status after a successful analysis (phase Ready), from the report the analysis
    published (:func:`librarian.services.analysis_job.analysis_report`)."""
    current = current or {}
    conditions = current.get("conditions") or []
    count = int(report["domainCount"])
    confidence = float(report["confidence"])
    sampled, source_points = int(report["sampled"]), int(report["sourcePoints"])
    patterns = report.get("patterns") or {}
    drifted = bool(patterns.get("drifted"))
    message = (
        f"{count} domains in {source_points:,} points (sampled {sampled:,}), "
        f"confidence {confidence:.2f}, version {version}"
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
        "True" if drifted else "False",
        "DomainsDrifted" if drifted else "Stable",
        str(patterns.get("summary") or "first analysis"),
        observed_generation=generation,
        now=now,
    )
    low = confidence < confidence_threshold
    conditions = set_condition(
        conditions,
        "LowConfidence",
        "True" if low else "False",
        "BelowThreshold" if low else "AboveThreshold",
        f"confidence {confidence:.2f} vs threshold {confidence_threshold:.2f}"
        + ("; consider a different strategy or bounds" if low else ""),
        observed_generation=generation,
        now=now,
    )
    entry = {
        "version": version,
        "time": timestamp(now),
        "domainCount": count,
        "confidence": confidence,
        "emerging": len(patterns.get("emerging") or []),
        "vanished": len(patterns.get("vanished") or []),
        "maxDrift": float(patterns.get("maxDrift") or 0.0),
    }
    history = [*(current.get("history") or []), entry][-HISTORY_LIMIT:]
    domain_count = report.get("domainCountChoice")
    return {
        "phase": "Ready",
        "conditions": conditions,
        "observedGeneration": generation,
        "domains": list(report["domains"]),
        "domainCount": count,
        "confidence": confidence,
        "strategy": report["strategy"],
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
            "emerging": list(patterns.get("emerging") or []),
            "vanished": list(patterns.get("vanished") or []),
            "maxDrift": float(patterns.get("maxDrift") or 0.0),
            "growth": dict(patterns.get("growth") or {}),
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


INLINE_CLUSTERS_MESSAGE = (
    "spec.clusters is deprecated and will be removed after one release: move the clusters to "
    "a QdrantFleet in this namespace (kind QdrantFleet, same entries under its spec.clusters) "
    "and replace spec.clusters with spec.fleetRef: {name: <the fleet>}"
)


def cluster_source_conditions(
    conditions: Sequence[Mapping[str, Any]] | None,
    *,
    fleet_ref: str | None,
    generation: int | None,
    now: datetime,
) -> list[Any]:
    """``conditions`` with the ``Deprecated`` warning set from where the clusters come from.

    Inline ``spec.clusters``: True, reason InlineClusters (a warning; Ready is unaffected);
    ``spec.fleetRef``: False, reason FleetRef."""
    if fleet_ref is None:
        return set_condition(
            conditions,
            "Deprecated",
            "True",
            "InlineClusters",
            INLINE_CLUSTERS_MESSAGE,
            observed_generation=generation,
            now=now,
        )
    return set_condition(
        conditions,
        "Deprecated",
        "False",
        "FleetRef",
        f"the clusters come from QdrantFleet {fleet_ref!r}",
        observed_generation=generation,
        now=now,
    )
