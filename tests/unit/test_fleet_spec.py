"""QdrantFleet parsing and DomainMap fleetRef resolution: one cluster list whichever form."""

from __future__ import annotations

from typing import Any

import pytest

from librarian.core.load import ClusterCapacity
from librarian.kube.fleets import fleet_clusters
from librarian.kube.job_pod import CaBundleRef
from librarian.kube.policy_spec import effective_capacities, parse_policy_spec
from librarian.kube.spec import (
    FleetClusters,
    SpecError,
    domainmap_interval,
    parse_domainmap_spec,
    parse_fleet_spec,
)
from librarian.operator.domainmap import fleet_change_pending
from librarian.operator.domainmap_status import cluster_source_conditions

CLUSTERS: list[dict[str, Any]] = [
    {"name": "general", "url": "https://q:6333", "apiKeySecretRef": {"name": "qdrant"}},
    {"name": "fast", "embedded": ".demo/fast", "timeoutSeconds": 3, "retries": 1},
]


def _fleet(clusters: list[dict[str, Any]] | None = None, generation: int = 4) -> dict[str, Any]:
    return {
        "metadata": {"name": "qdrant", "generation": generation},
        "spec": {"clusters": CLUSTERS if clusters is None else clusters},
    }


def _domainmap(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"cluster": "general", "collection": "packages"},
        "fleetRef": {"name": "qdrant"},
        "catalog": {"cluster": "fast"},
        "specialize": "auto",
        "specialization": {"targets": [{"cluster": "fast", "strategy": "latency"}]},
    }
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


def test_fleetref_gives_the_same_clusters_as_inline() -> None:
    by_ref = parse_domainmap_spec(
        _domainmap(), name="books", fleet=fleet_clusters(_fleet(), "qdrant")
    )
    inline = parse_domainmap_spec(_domainmap(fleetRef=None, clusters=CLUSTERS), name="books")
    assert by_ref.clusters == inline.clusters
    assert (by_ref.fleet_ref, by_ref.fleet_generation) == ("qdrant", 4)
    assert (inline.fleet_ref, inline.fleet_generation) == (None, None)
    secret = by_ref.cluster("general").secret
    assert secret is not None
    assert secret.name == "qdrant"
    assert by_ref.cluster("fast").timeout_s == 3


def test_a_fleet_cluster_carries_its_ca_bundle() -> None:
    clusters = [
        {**CLUSTERS[0], "caBundle": {"configMap": "internal-ca"}},
        {**CLUSTERS[1], "caBundle": {"secret": "ca", "key": "bundle.pem"}},
    ]
    parsed = parse_fleet_spec({"clusters": clusters}, name="qdrant")
    assert parsed[0].ca_bundle == CaBundleRef(key="ca.crt", config_map="internal-ca")
    assert parsed[1].ca_bundle == CaBundleRef(key="bundle.pem", secret="ca")
    # what a Job's pod mounts to trust it
    assert parsed[1].ca_bundle.volume()["secret"] == {
        "secretName": "ca",
        "items": [{"key": "bundle.pem", "path": "ca.crt"}],
    }


@pytest.mark.parametrize(
    ("clusters", "expected"),
    [
        ([], "spec.clusters must list at least one cluster"),
        ([{"name": "a"}], "spec.clusters[0] (a) needs exactly one of url"),
        ([{"name": "a", "url": "q:6333"}], "spec.clusters[0].url must start with http"),
        ([{"name": "a", "embedded": "x"}] * 2, "'a' appears twice"),
        ([{"name": "a", "url": "https://q", "apiKey": "k"}], "apiKey is not accepted"),
        (
            [{"name": "a", "url": "https://q", "apiKeySecretRef": {"name": "s"}, "apiKeyEnv": "K"}],
            "not both",
        ),
        (
            [{"name": "a", "url": "https://q", "caBundle": {"configMap": "a", "secret": "b"}}],
            "spec.clusters[0].caBundle: set configMap or secret, not both",
        ),
        (
            [{"name": "a", "url": "https://q", "caBundle": {"configMap": "Not_A_Name"}}],
            "'Not_A_Name' is not a valid ConfigMap or Secret name",
        ),
    ],
)
def test_a_fleet_is_validated_like_inline_clusters(
    clusters: list[dict[str, Any]], expected: str
) -> None:
    with pytest.raises(SpecError) as raised:
        parse_fleet_spec({"clusters": clusters}, name="qdrant")
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems


def test_an_invalid_fleet_names_itself_in_the_domainmap_message() -> None:
    with pytest.raises(SpecError) as raised:
        fleet_clusters(_fleet([{"name": "a"}]), "qdrant")
    assert raised.value.problems[0].startswith("QdrantFleet 'qdrant': spec.clusters[0] (a)")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"clusters": CLUSTERS}, "give spec.clusters or spec.fleetRef, not both"),
        ({"fleetRef": None}, "spec.fleetRef is required"),
        ({"fleetRef": {}}, "spec.fleetRef.name is required"),
        ({"source": {"cluster": "mars", "collection": "c"}}, "'mars' is not in QdrantFleet"),
        ({"catalog": {"cluster": "mars"}}, "spec.catalog.cluster 'mars' is not in QdrantFleet"),
        (
            {"specialization": {"targets": [{"cluster": "mars"}]}},
            "targets[0].cluster 'mars' is not in QdrantFleet 'qdrant'",
        ),
    ],
)
def test_exactly_one_of_clusters_and_fleetref_and_names_in_the_fleet(
    changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(SpecError) as raised:
        parse_domainmap_spec(
            _domainmap(**changes), name="books", fleet=fleet_clusters(_fleet(), "qdrant")
        )
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems


def test_a_fleetref_without_its_fleet_is_not_parsed_as_empty() -> None:
    with pytest.raises(SpecError, match="QdrantFleet 'qdrant', which was not read"):
        parse_domainmap_spec(_domainmap(), name="books")
    other = FleetClusters("other", ())
    with pytest.raises(SpecError, match="which was not read"):
        parse_domainmap_spec(_domainmap(), name="books", fleet=other)


def test_ca_bundles_belong_to_a_fleet_only() -> None:
    inline = [{**CLUSTERS[0], "caBundle": {"configMap": "ca"}}]
    with pytest.raises(SpecError, match="caBundle is accepted in a QdrantFleet only"):
        parse_domainmap_spec(
            _domainmap(
                fleetRef=None, clusters=inline, catalog=None, specialize=None, specialization=None
            ),
            name="books",
        )


def test_the_interval_is_read_without_the_fleet() -> None:
    assert domainmap_interval(_domainmap(interval="2m")) == 120
    with pytest.raises(SpecError, match="spec.interval"):
        domainmap_interval(_domainmap(interval="soon"))


def test_inline_clusters_are_deprecated_with_a_warning_condition() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    ready = [{"type": "Ready", "status": "True", "reason": "Analyzed", "message": "ok"}]
    inline = cluster_source_conditions(ready, fleet_ref=None, generation=2, now=now)
    deprecated = next(c for c in inline if c["type"] == "Deprecated")
    assert (deprecated["status"], deprecated["reason"]) == ("True", "InlineClusters")
    assert "QdrantFleet" in deprecated["message"]
    assert "spec.fleetRef" in deprecated["message"]
    assert next(c for c in inline if c["type"] == "Ready")["status"] == "True"
    moved = cluster_source_conditions(inline, fleet_ref="qdrant", generation=3, now=now)
    deprecated = next(c for c in moved if c["type"] == "Deprecated")
    assert (deprecated["status"], deprecated["reason"]) == ("False", "FleetRef")


@pytest.mark.parametrize(
    ("annotation", "fleet_status", "pending"),
    [
        (None, {}, False),
        ("3", {}, True),
        ("3", {"generation": 3}, False),
        ("3", {"generation": 2}, True),
        ("3", {"generation": 2, "handled": "3"}, False),
        ("3", {"generation": None, "handled": "2"}, True),
    ],
)
def test_a_fleet_change_is_pending_until_read_or_handled(
    annotation: str | None, fleet_status: dict[str, Any], pending: bool
) -> None:
    annotations = {"librarian.dev/fleet-generation": annotation} if annotation else {}
    status = {"fleet": fleet_status}
    assert fleet_change_pending(_domainmap(), annotations, status) is pending
    inline = _domainmap(fleetRef=None, clusters=CLUSTERS)
    assert fleet_change_pending(inline, annotations, status) is False


def test_a_fleet_cluster_carries_its_capacity_and_a_policy_entry_wins() -> None:
    """The capacity defined once in the fleet is what a RebalancePolicy judges a cluster
    against, unless the policy's own spec.capacity lists the cluster."""
    clusters = [
        {**CLUSTERS[0], "capacity": {"memory": "8Gi", "maxQueriesPerSecond": 200}},
        {**CLUSTERS[1], "capacity": {"disk": "100Gi", "baselineLatency": "20ms"}},
        {"name": "bulk", "embedded": ".demo/bulk"},
    ]
    general, fast, bulk = parse_fleet_spec({"clusters": clusters}, name="qdrant")
    assert general.capacity == ClusterCapacity(
        "general", memory_bytes=8 * 1024**3, disk_bytes=None, max_qps=200.0, baseline_p95_ms=None
    )
    assert fast.capacity == ClusterCapacity(
        "fast", memory_bytes=None, disk_bytes=100 * 1024**3, max_qps=None, baseline_p95_ms=20.0
    )
    assert bulk.capacity is None
    policy = parse_policy_spec(
        {"domainMap": "packages", "capacity": [{"cluster": "general", "maxQueriesPerSecond": 50}]}
    )
    effective = {c.name: c for c in effective_capacities(policy.capacities, [general, fast, bulk])}
    assert effective["general"].max_qps == 50.0  # the policy's own entry
    assert effective["general"].memory_bytes is None  # whole: not merged field by field
    assert effective["fast"] == fast.capacity  # from the fleet
    assert "bulk" not in effective  # neither says: not limited


def test_a_bad_fleet_capacity_is_named_and_inline_clusters_take_none() -> None:
    bad = [{**CLUSTERS[0], "capacity": {"memory": "lots", "maxQueriesPerSecond": 0}}]
    with pytest.raises(SpecError) as refused:
        parse_fleet_spec({"clusters": bad}, name="qdrant")
    assert "spec.clusters[0].capacity.memory 'lots' is not a quantity" in str(refused.value)
    assert "spec.clusters[0].capacity.maxQueriesPerSecond must be a number > 0" in str(
        refused.value
    )
    inline = [{**CLUSTERS[0], "capacity": {"memory": "1Gi"}}]
    with pytest.raises(SpecError, match="capacity is accepted in a QdrantFleet only"):
        parse_domainmap_spec(
            _domainmap(
                fleetRef=None, clusters=inline, catalog=None, specialize=None, specialization=None
            ),
            name="books",
        )
