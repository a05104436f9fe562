"""Configuration: defaults, file, environment and CLI overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from librarian.settings import ConfigError, Settings, load_settings, settings_as_yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "multi-cluster-managers.yaml"


def test_shipped_file_matches_model_defaults() -> None:
    assert load_settings(CONFIG, environ={}) == Settings()


def test_shipped_file_has_every_seed_key() -> None:
    data = yaml.safe_load(CONFIG.read_text())["multi_cluster_managers"]
    assert data["domain_discovery"]["storage"] == {"persist_domains": True, "cache_ttl": "1h"}
    assert data["cluster_specialization"]["migration"]["parallel_workers"] == 4
    assert data["domain_library_orchestrator"]["fusion_algorithm"] == "semantic_merge"
    assert data["adaptive_rebalancing"]["thresholds"]["latency_degradation"] == "100ms"


def test_durations_are_seconds() -> None:
    settings = load_settings(CONFIG, environ={})
    assert settings.domain_discovery.analysis_interval == 300
    assert settings.adaptive_rebalancing.thresholds.latency_degradation == pytest.approx(0.1)
    assert settings.adaptive_rebalancing.prediction.model_update_interval == 7 * 86400


def test_environment_overrides_file_and_cli_overrides_environment() -> None:
    env = {
        "LIBRARIAN__DOMAIN_DISCOVERY__STRATEGY": "kmeans",
        "LIBRARIAN__CLUSTER_SPECIALIZATION__MIGRATION__PARALLEL_WORKERS": "8",
    }
    settings = load_settings(CONFIG, environ=env)
    assert settings.domain_discovery.strategy == "kmeans"
    assert settings.cluster_specialization.migration.parallel_workers == 8
    settings = load_settings(CONFIG, environ=env, overrides=["domain_discovery.strategy=dbscan"])
    assert settings.domain_discovery.strategy == "dbscan"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("multi_cluster_managers:\n  domain_discovery:\n    batch_size: 7\n")
    settings = load_settings(environ={"LIBRARIAN_CONFIG": str(path)})
    assert settings.domain_discovery.batch_size == 7
    assert settings.domain_discovery.strategy == "hybrid"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("domain_discovery.strategy=spectral", "accepted: 'kmeans', 'dbscan'"),
        ("domain_discovery.colour=blue", "domain_discovery.colour: unknown key; accepted keys"),
        ("domain_discovery.analysis_interval=5 minutes", "e.g. 100ms, 30s, 5m"),
        ("cluster_specialization.migration.parallel_workers=0", "greater than or equal to 1"),
        ("domain_discovery.confidence_threshold=1.5", "confidence_threshold"),
        ("domain_library_orchestrator.fusion_algorithm=max", "'rrf', 'weighted_score'"),
    ],
)
def test_bad_values_name_the_key_and_what_is_accepted(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        load_settings(environ={}, overrides=[override])


def test_unknown_top_level_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("managers: {}\n")
    with pytest.raises(ConfigError, match="exactly one top-level key 'multi_cluster_managers'"):
        load_settings(path, environ={})


def test_unknown_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("multi_cluster_managers:\n  domain_discovery_x: {}\n")
    with pytest.raises(ConfigError, match="accepted keys here: domain_discovery, cluster_spec"):
        load_settings(path, environ={})


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("multi_cluster_managers: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_unknown_environment_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="adaptive_rebalancing.thresholdz"):
        load_settings(environ={"LIBRARIAN__ADAPTIVE_REBALANCING__THRESHOLDZ__X": "1"})


def test_override_without_equals_sign() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_settings(environ={}, overrides=["domain_discovery.strategy"])


def test_effective_settings_round_trip_as_yaml() -> None:
    settings = load_settings(environ={}, overrides=["domain_discovery.batch_size=42"])
    text = settings_as_yaml(settings)
    reloaded = yaml.safe_load(text)["multi_cluster_managers"]
    assert Settings.model_validate(reloaded) == settings
