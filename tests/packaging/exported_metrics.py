"""The Prometheus series the code exports, collected in-process, and the metric names a query reads.

Why this exists: a dashboard panel or an alert on a metric nobody exports
shows "No data" or never fires, silently. The names are taken from the code's
own registries (every module of the package imported, so each module-level
metric registers; and a router's registry), never from a hand-kept list; the
queries are parsed with a PromQL parser.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable

import promql_parser
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

__all__ = ["exported_series", "metric_names"]

# The series each metric type is exposed as (OpenMetrics / Prometheus text format).
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def _series(families: Iterable[Metric]) -> set[str]:
    return {f"{family.name}{suffix}" for family in families for suffix in _SUFFIXES[family.type]}


def _registries() -> list[CollectorRegistry]:
    import librarian

    for module in pkgutil.walk_packages(librarian.__path__, "librarian."):
        importlib.import_module(module.name)
    from librarian.router.metrics import RouterMetrics

    return [REGISTRY, RouterMetrics().registry]


def exported_series() -> set[str]:
    """Every series name the operator's and a router's /metrics can show."""
    return {name for registry in _registries() for name in _series(registry.collect())}


# Grafana's variables, replaced by what a query would hold once Grafana filled them.
_RANGE_VARIABLE = re.compile(r"\$__(rate_)?interval|\$__range")
_VARIABLE = re.compile(r"\$\{?\w+\}?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables allowed)."""
    concrete = _VARIABLE.sub("x", _RANGE_VARIABLE.sub("5m", expr))
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            names.update(
                m.value
                for m in node.matchers.matchers
                if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
            )

    promql_parser.walk(promql_parser.parse(concrete), visit)
    return names
