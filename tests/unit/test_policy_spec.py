"""RebalancePolicy specs: defaults, every field parsed, every problem named with its path."""

from __future__ import annotations

import pytest

from librarian.core.load import Thresholds
from librarian.kube.policy_spec import PolicyDefaults, parse_policy_spec
from librarian.kube.spec import SpecError, parse_specialization_spec


def test_defaults_come_from_the_operator_configuration() -> None:
    defaults = PolicyDefaults(
        interval_s=600, thresholds=Thresholds(load_imbalance=0.2), prediction=False
    )
    parsed = parse_policy_spec({"domainMap": "packages"}, defaults=defaults)
    assert (parsed.mode, parsed.strategy, parsed.interval_s) == ("observe", "hybrid", 600)
    assert parsed.thresholds.load_imbalance == 0.2
    assert not parsed.prediction
    assert parsed.constraints.max_concurrent_migrations == 1
    assert parsed.constraints.max_points_per_run is None
    assert parsed.grace_s == 60
    assert parsed.execution_strategy == "balanced"


def test_every_field_is_read() -> None:
    parsed = parse_policy_spec(
        {
            "domainMap": "packages",
            "mode": "auto",
            "strategy": "capacity_based",
            "analysisInterval": "5m",
            "thresholds": {
                "loadImbalance": 0.25,
                "latencyDegradation": "150ms",
                "accuracyDrop": 0.05,
                "capacityUsage": 0.8,
            },
            "constraints": {
                "maxConcurrentMigrations": 2,
                "maxPointsPerRun": 50000,
                "maxMovesPerRun": 4,
                "maintenanceWindows": ["Sat,Sun 01:00-05:00", "23:00-01:00"],
                "pinnedDomains": ["d0"],
                "excludedClusters": ["general"],
            },
            "capacity": [
                {
                    "cluster": "fast",
                    "memory": "8Gi",
                    "disk": "100Gi",
                    "maxQueriesPerSecond": 500,
                    "baselineLatency": "20ms",
                }
            ],
            "loadSource": {"routerUrls": ["http://router:6333"]},
            "prediction": {"enabled": True, "horizon": "2h"},
            "execution": {"strategy": "latency", "gracePeriod": "2m"},
        }
    )
    assert (parsed.mode, parsed.strategy, parsed.interval_s) == ("auto", "capacity_based", 300)
    assert parsed.thresholds == Thresholds(0.25, 150.0, 0.05, 0.8)
    constraints = parsed.constraints
    assert (constraints.max_concurrent_migrations, constraints.max_points_per_run) == (2, 50000)
    assert constraints.max_moves_per_run == 4
    assert len(constraints.maintenance_windows) == 2
    assert constraints.pinned_domains == {"d0"}
    assert constraints.excluded_clusters == {"general"}
    fast = parsed.capacities[0]
    assert (fast.name, fast.memory_bytes, fast.disk_bytes) == ("fast", 8 * 2**30, 100 * 2**30)
    assert (fast.max_qps, fast.baseline_p95_ms) == (500.0, 20.0)
    assert parsed.router_urls == ("http://router:6333",)
    assert (parsed.prediction, parsed.horizon_s) == (True, 7200)
    assert (parsed.execution_strategy, parsed.grace_s) == ("latency", 120)


def test_every_problem_is_named_with_its_path() -> None:
    with pytest.raises(SpecError) as caught:
        parse_policy_spec(
            {
                "mode": "yolo",
                "strategy": "fastest",
                "analysisInterval": "soon",
                "thresholds": {"loadImbalance": -1, "capacityUsage": 2},
                "constraints": {
                    "maxConcurrentMigrations": 0,
                    "maintenanceWindows": ["Caturday 01:00-02:00"],
                    "pinnedDomains": ["general"],
                    "excludedClusters": ["general"],
                },
                "capacity": [{"cluster": "fast", "memory": "lots"}, {"cluster": "fast"}],
                "loadSource": {"routerUrls": ["router:6333"]},
                "execution": {"strategy": "custom"},
            }
        )
    text = "\n".join(caught.value.problems)
    for expected in (
        "spec.domainMap is required",
        "spec.mode 'yolo' is unknown; accepted: observe, approve, auto",
        "spec.strategy 'fastest' is unknown; accepted: load_based",
        "spec.analysisInterval",
        "spec.thresholds.loadImbalance must be between 0 and 10",
        "spec.thresholds.capacityUsage must be between 0.01 and 1",
        "spec.constraints.maxConcurrentMigrations must be a whole number >= 1",
        "spec.constraints.maintenanceWindows[0]",
        "listed as a pinned domain and an excluded cluster",
        "spec.capacity[0].memory 'lots' is not a quantity",
        "spec.capacity[1].cluster 'fast' appears twice",
        "spec.loadSource.routerUrls[0] must start with http://",
        "spec.execution.strategy 'custom' is unknown",
    ):
        assert expected in text, expected
    assert len(caught.value.problems) == 13


def test_a_specialization_may_copy_from_another_home() -> None:
    spec = {"domainMap": "packages", "domain": "d1", "target": {"cluster": "bulk"}}
    assert parse_specialization_spec(spec).source_cluster is None
    moved = parse_specialization_spec({**spec, "source": {"cluster": "fast", "collection": "p-d1"}})
    assert (moved.source_cluster, moved.source_collection) == ("fast", "p-d1")
    with pytest.raises(SpecError, match="spec.source needs both cluster and collection"):
        parse_specialization_spec({**spec, "source": {"cluster": "fast"}})


def test_the_operator_configuration_gives_the_policy_defaults() -> None:
    from librarian.operator.context import OperatorContext
    from librarian.settings import load_settings

    settings = load_settings(
        environ={},
        overrides=[
            "adaptive_rebalancing.enabled=false",
            "adaptive_rebalancing.auto_trigger=false",
            "adaptive_rebalancing.analysis_interval=5m",
            "adaptive_rebalancing.thresholds.load_imbalance=0.2",
            "adaptive_rebalancing.thresholds.latency_degradation=250ms",
            "adaptive_rebalancing.prediction.enable_ml_predictions=false",
        ],
    )
    defaults = OperatorContext.from_settings(settings).rebalance_defaults
    assert (defaults.enabled, defaults.auto_trigger, defaults.prediction) == (False, False, False)
    parsed = parse_policy_spec({"domainMap": "packages"}, defaults=defaults)
    assert parsed.interval_s == 300
    assert parsed.thresholds.load_imbalance == 0.2
    assert parsed.thresholds.latency_degradation_ms == 250


def test_a_router_may_be_named_by_its_service() -> None:
    from librarian.kube.policy_spec import RouterRef

    spec = {"domainMap": "packages", "mode": "auto"}
    parsed = parse_policy_spec({**spec, "loadSource": {"routerRef": {"name": "lib-router"}}})
    assert (parsed.router_ref, parsed.router_urls) == (RouterRef("lib-router"), ())
    both = parse_policy_spec(
        {
            **spec,
            "loadSource": {
                "routerUrls": ["http://r:6333"],
                "routerRef": {"name": "lib-router", "namespace": "search", "port": 8080},
            },
        }
    )
    assert both.router_ref == RouterRef("lib-router", "search", 8080)
    assert both.router_urls == ("http://r:6333",)
    assert parse_policy_spec({"domainMap": "packages"}).router_ref is None


@pytest.mark.parametrize(
    ("load_source", "expected"),
    [
        ({}, "spec.loadSource needs routerRef (the router's Service) or routerUrls"),
        ({"routerRef": {"name": "Lib_Router"}}, "spec.loadSource.routerRef.name must be a Service"),
        ({"routerRef": {}}, "spec.loadSource.routerRef.name must be a Service name"),
        ({"routerRef": {"name": "6333-router"}}, "routerRef.name must be a Service name"),
        ({"routerRef": {"name": "r", "port": 0}}, "routerRef.port must be a port number"),
        ({"routerRef": {"name": "r", "port": "http"}}, "routerRef.port must be a port number"),
        ({"routerRef": {"name": "r", "namespace": "A"}}, "routerRef.namespace must be a namespace"),
        ({"routerRef": "lib-router"}, "spec.loadSource.routerRef must be an object"),
    ],
)
def test_a_bad_router_ref_is_named(load_source: dict[str, object], expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_policy_spec({"domainMap": "packages", "loadSource": load_source})
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_auto_mode_accepts_a_router_ref_as_its_load_source() -> None:
    with pytest.raises(SpecError, match="spec.mode auto needs spec.loadSource.routerRef or"):
        parse_policy_spec({"domainMap": "packages", "mode": "auto"})
