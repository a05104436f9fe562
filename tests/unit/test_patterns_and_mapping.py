"""Patterns over time (growth, drift, emerging, vanished) and mapping validation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from librarian.core.discovery import Domain
from librarian.core.mapping import (
    ClusterCapacity,
    estimate_memory_bytes,
    validate_domain_mapping,
)
from librarian.core.patterns import discover_patterns


def _domain(domain_id: str, axis: int, size: int, dim: int = 8) -> Domain:
    centroid = np.zeros(dim, dtype=np.float32)
    centroid[axis] = 1.0
    return Domain(
        id=domain_id, name=f"n-{domain_id}", centroid=centroid, radius=0.2, size=size, cohesion=0.8
    )


def test_patterns_report_growth_drift_emerging_and_vanished() -> None:
    before = [_domain("a", 0, 100), _domain("b", 1, 100), _domain("c", 2, 50)]
    tilted = np.array([0.8, 0.6, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    after = [replace(before[0], size=150), replace(before[1], centroid=tilted), _domain("d", 3, 40)]
    report = discover_patterns(before, after, drift_threshold=0.1)
    changes = {c.id: c for c in report.changes}
    assert changes["a"].growth == 0.5
    assert changes["a"].drift == 0.0
    assert changes["b"].drift == np.float32(1 - 0.6) or abs(changes["b"].drift - 0.4) < 1e-6
    assert report.emerging == ["d"]
    assert report.vanished == ["c"]
    assert report.drifted
    assert "emerging" in report.summary()


def test_patterns_stable_and_first_analysis() -> None:
    domains = [_domain("a", 0, 100), _domain("b", 1, 100)]
    assert not discover_patterns(domains, domains).drifted
    first = discover_patterns([], domains)
    assert not first.drifted
    assert first.summary() == "first analysis"


def _mapping_inputs() -> tuple[list[Domain], dict[str, ClusterCapacity]]:
    domains = [_domain("a", 0, 1000), _domain("b", 1, 1000), _domain("c", 2, 1000)]
    clusters = {
        "fast": ClusterCapacity(memory_bytes=2**30, vector_size=8),
        "big": ClusterCapacity(memory_bytes=2**30, vector_size=8),
    }
    return domains, clusters


def test_good_mapping_scores_high() -> None:
    domains, clusters = _mapping_inputs()
    result = validate_domain_mapping(domains, {"a": "fast", "b": "big", "c": "big"}, clusters)
    assert result.valid
    assert result.score >= 0.9


def test_mapping_issues_each_named() -> None:
    domains, clusters = _mapping_inputs()
    clusters["down"] = ClusterCapacity(reachable=False)
    clusters["tiny"] = ClusterCapacity(memory_bytes=1000)
    clusters["wide"] = ClusterCapacity(vector_size=16)
    cases = {
        "not mapped to any cluster": {"a": "fast", "b": "big"},
        "unknown cluster 'nowhere'": {"a": "fast", "b": "big", "c": "nowhere"},
        "'down' (for domain c) is not reachable": {"a": "fast", "b": "big", "c": "down"},
        "needs about": {"a": "fast", "b": "big", "c": "tiny"},
        "16-d vectors but domain c has 8-d": {"a": "fast", "b": "big", "c": "wide"},
        "not among the discovered domains": {"a": "fast", "b": "big", "c": "big", "z": "big"},
    }
    for expected, mapping in cases.items():
        result = validate_domain_mapping(domains, mapping, clusters)
        assert not result.valid
        assert any(expected in issue for issue in result.issues), (expected, result.issues)
        assert result.score < 1.0


def test_imbalance_is_a_recommendation_that_lowers_the_score() -> None:
    domains, clusters = _mapping_inputs()
    piled = validate_domain_mapping(domains, {d.id: "big" for d in domains}, clusters)
    spread = validate_domain_mapping(domains, {"a": "fast", "b": "big", "c": "fast"}, clusters)
    assert piled.valid
    assert piled.score < spread.score
    assert any("spread domains" in r for r in piled.recommendations)


def test_memory_estimate() -> None:
    assert estimate_memory_bytes(1000, 384) == int(1000 * 384 * 4 * 1.5)
