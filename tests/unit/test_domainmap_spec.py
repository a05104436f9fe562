"""DomainMap spec parsing: defaults, and every problem named with its path and fix."""

from __future__ import annotations

from typing import Any

import pytest

from librarian.core.discovery import DiscoveryBounds
from librarian.kube.spec import SpecError, parse_domainmap_spec


def _spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"cluster": "general", "collection": "packages"},
        "clusters": [{"name": "general", "embedded": ".demo/general"}],
    }
    spec.update(changes)
    return spec


def test_defaults() -> None:
    parsed = parse_domainmap_spec(_spec(), name="demo")
    assert parsed.strategy == "hybrid"
    assert parsed.interval_s == 300
    assert parsed.catalog_cluster == "general"
    assert parsed.catalog_collection == "librarian-catalog-demo"
    assert parsed.text_field == "text"
    assert parsed.labeling_enabled
    assert parsed.cluster("general").embedded == ".demo/general"


def test_bounds_and_secret_ref() -> None:
    parsed = parse_domainmap_spec(
        _spec(
            bounds={"maxDomains": 12, "minDomainSize": 30},
            clusters=[
                {"name": "general", "url": "https://q:6333", "apiKeySecretRef": {"name": "qdrant"}}
            ],
            interval="1h30m",
        ),
        name="x",
    )
    assert parsed.thresholds == {"max_domains": 12, "min_domain_size": 30}
    ref = parsed.cluster("general").secret
    assert ref is not None
    assert (ref.name, ref.key) == ("qdrant", "api-key")
    assert parsed.interval_s == 5400


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"strategy": "spectral"}, "spec.strategy 'spectral' is unknown; accepted: kmeans"),
        ({"source": {"cluster": "other", "collection": "c"}}, "'other' is not in spec.clusters"),
        ({"clusters": [{"name": "general"}]}, "needs exactly one of url"),
        ({"clusters": [{"name": "general", "url": "q:6333"}]}, "must start with http"),
        ({"interval": "5 minutes"}, "spec.interval"),
        ({"bounds": {"minDomains": 9, "maxDomains": 3}}, "larger than spec.bounds.maxDomains"),
        ({"bounds": {"colour": 1}}, "spec.bounds.colour is unknown"),
        ({"bounds": {"partitions": 0}}, "spec.bounds.partitions must be a whole number >= 1"),
        ({"bounds": {"maxPartitions": 2.5}}, "spec.bounds.maxPartitions must be a whole number"),
        (
            {"clusters": [{"name": "general", "url": "http://q", "apiKey": "x"}]},
            "API keys never go in a spec",
        ),
        ({"source": {}}, "spec.source.cluster is required"),
        ({"sampleSize": "many"}, "spec.sampleSize must be a number"),
    ],
)
def test_each_problem_is_named(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_domainmap_spec(_spec(**changes), name="x")
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        parse_domainmap_spec(_spec(strategy="x", interval="soon"), name="x")
    assert len(caught.value.problems) == 2


def test_every_part_of_the_spec_is_checked_in_order() -> None:
    spec = {
        "source": {"cluster": "general"},
        "clusters": [
            {"name": "general", "url": "q:6333", "apiKeySecretRef": {"key": "k"}},
            {"name": "general", "embedded": "x", "retries": "three"},
        ],
        "strategy": "x",
        "bounds": {"minDomains": 9, "maxDomains": 3},
        "sampleSize": 5,
        "catalog": {"cluster": "elsewhere"},
        "specialize": "auto",
    }
    with pytest.raises(SpecError) as caught:
        parse_domainmap_spec(spec, name="x")
    assert [p.split(" ")[0] for p in caught.value.problems] == [
        "spec.source.collection",
        "spec.clusters[0].url",
        "spec.clusters[0].apiKeySecretRef.name",
        "spec.clusters[1].name",
        "spec.clusters[1].retries",
        "spec.strategy",
        "spec.bounds.minDomains",
        "spec.sampleSize",
        "spec.catalog.cluster",
        "spec.specialize",
    ]


def test_operator_configuration_supplies_defaults() -> None:
    from librarian.operator.context import OperatorContext
    from librarian.settings import load_settings

    settings = load_settings(
        environ={},
        overrides=[
            "domain_discovery.strategy=kmeans",
            "domain_discovery.analysis_interval=1h",
            "domain_discovery.batch_size=250",
            "domain_discovery.confidence_threshold=0.5",
        ],
    )
    context = OperatorContext.from_settings(settings)
    parsed = parse_domainmap_spec(_spec(), name="x", defaults=context.spec_defaults)
    assert (parsed.strategy, parsed.interval_s) == ("kmeans", 3600)
    assert (parsed.labeling_batch_size, parsed.confidence_threshold) == (250, 0.5)
    explicit = parse_domainmap_spec(
        _spec(strategy="dbscan", interval="30s"), name="x", defaults=context.spec_defaults
    )
    assert (explicit.strategy, explicit.interval_s) == ("dbscan", 30)


def test_analysis_due_rules() -> None:
    from datetime import UTC, datetime, timedelta

    from librarian.operator.domainmap import analysis_due

    now = datetime(2026, 1, 1, tzinfo=UTC)
    ready = {
        "phase": "Ready",
        "observedGeneration": 2,
        "lastAnalysisTime": (now - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert not analysis_due(_spec(interval="5m"), ready, 2, now)
    assert analysis_due(_spec(interval="2m"), ready, 2, now)
    assert analysis_due(_spec(interval="5m"), ready, 3, now)  # new generation
    assert analysis_due(_spec(interval="5m"), {**ready, "phase": "Pending"}, 2, now)
    assert not analysis_due(_spec(strategy="x"), {**ready, "lastAnalysisTime": None}, 2, now)


def test_partition_bounds_reach_discovery() -> None:
    parsed = parse_domainmap_spec(
        _spec(bounds={"partitions": 600, "maxPartitions": 800, "minPartitionSize": 250}),
        name="x",
    )
    assert parsed.thresholds == {
        "partitions": 600,
        "max_partitions": 800,
        "min_partition_size": 250,
    }
    DiscoveryBounds(**parsed.thresholds).validate()  # every key is a discovery threshold
