"""How a RebalancePolicy's status writes the core's values: load, proposal, history, ledger.

Why this exists: the core computes plain values (a :class:`LoadReport`, a
:class:`Proposal`, a :class:`LoadHistory`, a :class:`PredictionLedger`) and
knows nothing of custom resources. The policy's status shows them as
JSON-safe camelCase dicts, rounded for reading, and keeps the history and the
ledger there from one tick to the next; these functions are that status's
one writer, and its reader for what it keeps. A garbled status never raises:
whatever cannot be read is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from librarian.core.forecast import (
    MAX_ERRORS,
    MAX_PENDING,
    LoadHistory,
    PendingPrediction,
    PredictionLedger,
)
from librarian.core.load import LoadReport
from librarian.core.planner import Move, Proposal

__all__ = [
    "STATUS_DIGITS",
    "history_from_status",
    "history_status",
    "ledger_from_status",
    "ledger_status",
    "load_status",
    "load_summary",
    "move_status",
    "proposal_status",
]

STATUS_DIGITS = 4  # significant digits of the history's and ledger's values


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def load_status(report: LoadReport) -> dict[str, Any]:
    """The whole load picture: per cluster, per domain, violations and recommendations."""
    return {
        "maxMeanRatio": round(report.max_mean_ratio, 4),
        "imbalance": round(report.imbalance, 4),
        "clusters": [
            {
                "name": c.name,
                "qps": round(c.qps, 3),
                "load": round(c.load, 4),
                "p95Ms": _round(c.p95_ms, 2),
                "latencyLimitMs": _round(c.latency_limit_ms, 2),
                "points": c.points,
                "memoryBytes": c.memory_bytes,
                "diskBytes": c.disk_bytes,
                "memoryUsage": _round(c.memory_usage, 4),
                "diskUsage": _round(c.disk_usage, 4),
                "domains": list(c.domains),
            }
            for c in report.clusters
        ],
        "domains": [
            {
                "domain": d.domain,
                "cluster": d.cluster,
                "qps": round(d.qps, 3),
                "p95Ms": _round(d.p95_ms, 2),
                "points": d.points,
                "recall": _round(d.recall, 4),
            }
            for d in report.domains
        ],
        "violations": [
            {
                "kind": v.kind,
                "subject": v.subject,
                "value": round(v.value, 4),
                "threshold": round(v.threshold, 4),
                "message": v.message,
            }
            for v in report.violations
        ],
        "recommendations": list(report.recommendations),
    }


def load_summary(report: LoadReport) -> dict[str, Any]:
    """The short form of a load picture a proposal shows before and after its moves."""
    return {
        "maxMeanRatio": round(report.max_mean_ratio, 4),
        "imbalance": round(report.imbalance, 4),
        "violations": len(report.violations),
        "violationKinds": sorted({v.kind for v in report.violations}),
        "clusters": {
            c.name: {
                "load": round(c.load, 4),
                "qps": round(c.qps, 3),
                "p95Ms": None if c.p95_ms is None else round(c.p95_ms, 2),
                "points": c.points,
                "memoryUsage": None if c.memory_usage is None else round(c.memory_usage, 4),
                "diskUsage": None if c.disk_usage is None else round(c.disk_usage, 4),
            }
            for c in report.clusters
        },
    }


def move_status(move: Move) -> dict[str, Any]:
    """One move or piece of advice of a proposal."""
    return {
        "domain": move.domain,
        "source": move.source,
        "target": move.target,
        "points": move.points,
        "kind": move.kind,
        "reason": move.reason,
        "priority": move.priority,
        "wave": move.wave,
        "startAfterSeconds": round(move.start_after_s, 3),
        "durationSeconds": round(move.duration_s, 3),
        "executable": move.executable,
    }


def proposal_status(proposal: Proposal) -> dict[str, Any]:
    """A proposal: its id, moves, the load before and as expected after, what was held back."""
    return {
        "id": proposal.id,
        "strategy": proposal.strategy,
        "moves": [move_status(m) for m in proposal.moves],
        "before": load_summary(proposal.before),
        "after": load_summary(proposal.after),
        "pointsMoved": proposal.points_moved,
        "deferred": list(proposal.deferred),
        "startsAt": None
        if proposal.starts_at is None
        else proposal.starts_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# -- what the status keeps from one tick to the next -------------------------------------------


def _number(value: Any) -> float:
    """A finite float from JSON input, NaN for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


def _compact(value: float, digits: int = STATUS_DIGITS) -> float | int | None:
    """``value`` rounded to ``digits`` significant digits; None for NaN."""
    if not math.isfinite(value):
        return None
    rounded = float(f"{value:.{digits}g}")
    return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded


def _compact_time(value: float) -> float | int:
    rounded = round(value, 3)
    return int(rounded) if rounded.is_integer() else rounded


def history_status(history: LoadHistory) -> dict[str, Any]:
    """JSON-safe and compact: ``{"times": [...], "domains": {d: {metric: [...]}}}``.

    Values keep four significant digits; missing ones are ``null``.
    """
    return {
        "times": [_compact_time(t) for t in history.times_s],
        "domains": {
            domain: {metric: [_compact(v) for v in column] for metric, column in metrics.items()}
            for domain, metrics in sorted(history.series.items())
        },
    }


def history_from_status(data: Mapping[str, Any] | None) -> LoadHistory:
    """The history written by :func:`history_status`; whatever is garbled is left out.

    Times that are not numbers or do not increase are dropped with their
    column entries; columns shorter than the times are padded as missing,
    longer ones trimmed; columns with no value left are dropped.
    """
    if not isinstance(data, Mapping):
        return LoadHistory()
    raw_times = data.get("times")
    raw_domains = data.get("domains")
    if not isinstance(raw_times, list) or not isinstance(raw_domains, Mapping):
        return LoadHistory()
    kept: list[int] = []
    times: list[float] = []
    for index, raw in enumerate(raw_times):
        number = _number(raw)
        if not math.isnan(number) and (not times or number > times[-1]):
            kept.append(index)
            times.append(number)
    series: dict[str, dict[str, tuple[float, ...]]] = {}
    for domain, metrics in raw_domains.items():
        if not isinstance(domain, str) or not isinstance(metrics, Mapping):
            continue
        for metric, raw_column in metrics.items():
            if not isinstance(metric, str) or not isinstance(raw_column, list):
                continue
            column = tuple(
                _number(raw_column[i]) if i < len(raw_column) else math.nan for i in kept
            )
            if any(math.isfinite(v) for v in column):
                series.setdefault(domain, {})[metric] = column
    return LoadHistory(times_s=tuple(times), series=series)


def ledger_status(ledger: PredictionLedger) -> dict[str, Any]:
    """JSON-safe: pending predictions grouped by due time, the errors, and the MAPE they give."""
    grouped: dict[float, dict[str, dict[str, float | int | None]]] = {}
    for p in ledger.pending:
        grouped.setdefault(p.due_s, {}).setdefault(p.domain, {})[p.metric] = _compact(
            p.predicted, 6
        )
    mape = ledger.mape
    return {
        "pending": [
            {"dueS": _compact_time(due), "values": values} for due, values in grouped.items()
        ],
        "errors": [_compact(e) for e in ledger.errors],
        "mape": None if mape is None else _compact(mape),
    }


def ledger_from_status(data: Mapping[str, Any] | None) -> PredictionLedger:
    """The ledger written by :func:`ledger_status`; whatever is garbled is left out."""
    if not isinstance(data, Mapping):
        return PredictionLedger()
    pending: list[PendingPrediction] = []
    groups = data.get("pending")
    for group in groups if isinstance(groups, list) else []:
        if isinstance(group, Mapping):
            pending.extend(_pending_group(group))
    raw_errors = data.get("errors")
    errors = [
        e
        for e in (_number(v) for v in (raw_errors if isinstance(raw_errors, list) else []))
        if not math.isnan(e) and e >= 0
    ]
    return PredictionLedger(
        pending=tuple(pending[-MAX_PENDING:]), errors=tuple(errors[-MAX_ERRORS:])
    )


def _pending_group(group: Mapping[str, Any]) -> list[PendingPrediction]:
    """The predictions of one ``{"dueS": ..., "values": {domain: {metric: value}}}`` group."""
    due = _number(group.get("dueS"))
    values = group.get("values")
    if math.isnan(due) or not isinstance(values, Mapping):
        return []
    found = []
    for domain, metrics in values.items():
        if not isinstance(domain, str) or not isinstance(metrics, Mapping):
            continue
        for metric, value in metrics.items():
            number = _number(value)
            if isinstance(metric, str) and not math.isnan(number):
                found.append(PendingPrediction(domain, metric, due, number))
    return found
