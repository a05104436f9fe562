"""Prometheus metrics of domain discovery, served with the operator's own (``LIBRARIAN_METRICS_PORT``).

Why this exists: a DomainMap's ``Drifted`` condition says its data moved away
from the domains of the previous analysis; the same figures on a dashboard and
in an alert tell an operator of the fleet when a library needs attention
without reading every DomainMap's status.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import Gauge

__all__ = ["DOMAINS", "DRIFTED", "MAX_DRIFT", "forget", "record_analysis"]

_LABELS = ["namespace", "domainmap"]

MAX_DRIFT = Gauge(
    "librarian_discovery_max_drift",
    "Largest centroid drift (1 - cosine) between the last two analyses of a DomainMap",
    _LABELS,
)
DRIFTED = Gauge(
    "librarian_discovery_drifted",
    "1 when the last analysis found drift over the threshold, or domains emerging or vanishing",
    _LABELS,
)
DOMAINS = Gauge(
    "librarian_discovery_domains", "Domains the last analysis of a DomainMap found", _LABELS
)


def record_analysis(namespace: str, name: str, report: Mapping[str, Any]) -> None:
    """Export what a published analysis report says about drift and domains."""
    patterns = report.get("patterns") or {}
    MAX_DRIFT.labels(namespace, name).set(float(patterns.get("maxDrift") or 0.0))
    DRIFTED.labels(namespace, name).set(1.0 if patterns.get("drifted") else 0.0)
    DOMAINS.labels(namespace, name).set(float(report.get("domainCount") or 0))


def forget(namespace: str, name: str) -> None:
    """Drop a deleted DomainMap's series, so no alert fires on a library that is gone."""
    for gauge in (MAX_DRIFT, DRIFTED, DOMAINS):
        # Never analysed by this process: older prometheus_client releases raise KeyError.
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
