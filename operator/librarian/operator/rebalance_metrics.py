"""Prometheus metrics of rebalancing, served with the operator's own (``LIBRARIAN_METRICS_PORT``).

Why this exists: the figures a policy writes to its status — balance, moves,
points moved, prediction accuracy — belong on dashboards and alerts too.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "LOAD_RATIO",
    "MOVES",
    "MOVES_IN_FLIGHT",
    "POINTS_MOVED",
    "PREDICTION_MAPE",
    "TICKS",
    "VIOLATIONS",
]

_LABELS = ["namespace", "policy"]

LOAD_RATIO = Gauge(
    "librarian_rebalance_max_mean_load_ratio",
    "Hottest cluster's load over the fleet's mean load at the last analysis",
    _LABELS,
)
VIOLATIONS = Gauge(
    "librarian_rebalance_threshold_violations",
    "Thresholds violated at the last analysis",
    _LABELS,
)
MOVES = Counter(
    "librarian_rebalance_moves",
    "Moves finished, by outcome (done, rolled_back, cancelled)",
    [*_LABELS, "outcome"],
)
MOVES_IN_FLIGHT = Gauge(
    "librarian_rebalance_moves_in_flight", "Moves copying, switching or cleaning", _LABELS
)
POINTS_MOVED = Counter(
    "librarian_rebalance_points_moved", "Points of domains moved to another cluster", _LABELS
)
PREDICTION_MAPE = Gauge(
    "librarian_rebalance_prediction_mape",
    "Mean absolute percentage error of the load forecasts scored so far",
    _LABELS,
)
TICKS = Counter(
    "librarian_rebalance_ticks",
    "Ticks of a policy the operator finished, idle ones (no API call) included",
    _LABELS,
)
