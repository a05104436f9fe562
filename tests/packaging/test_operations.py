"""Day-two parts of the chart: the Grafana dashboard, the alerts, the router's PDB, pod metadata.

The dashboard's and the alerts' queries are parsed with a PromQL parser and
every metric they read must be one the code exports (collected from the code's
own registries); the rendered PrometheusRule is validated like the other
objects; the PodDisruptionBudget and the pods' annotations and labels are
read from real ``helm template`` output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, ROUTER_KEYS, helm_template, run, tool
from .exported_metrics import exported_series, metric_names
from .prometheus_rule_schema import prometheus_rule_errors

DASHBOARD = CHART / "dashboards" / "qdrant-librarian.json"
MONITORING = (
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.grafanaDashboard.enabled=true",
)
ALERTS = {
    "LibrarianRouterPartialAnswers",
    "LibrarianRouterCircuitOpen",
    "LibrarianRecallBelowTarget",
    "LibrarianOutboxBacklog",
    "LibrarianMovesFailing",
    "LibrarianDiscoveryDrift",
}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    series = exported_series()
    assert "librarian_router_partial_results_total" in series  # the collection works
    return series


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        p
        for top in dashboard["panels"]
        for p in [top, *top.get("panels", [])]
        if p["type"] != "row"
    ]


def _rules(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    (rule,) = _of_kind(docs, "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_dashboard_reads_only_metrics_the_code_exports(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = _panels(dashboard)
    assert len(panels) >= 12
    read: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']}"
            assert names <= exported, f"{panel['title']}: {sorted(names - exported)} not exported"
            read |= names
    # The figures the alerts are about are all on the dashboard.
    for name in (
        "librarian_router_partial_results_total",
        "librarian_router_circuit_open",
        "librarian_router_estimated_recall",
        "librarian_router_target_recall",
        "librarian_router_outbox_oldest_age_seconds",
        "librarian_rebalance_moves_total",
        "librarian_discovery_max_drift",
    ):
        assert name in read, name
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for query in metric_names(
        dashboard["templating"]["list"][1]["definition"].split("(", 1)[1].split(",")[0]
    ):
        assert query in exported
    assert variables == {"datasource", "namespace"}


def test_dashboard_layout_is_sound() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["description"], panel["title"]
    assert dashboard["uid"] == "qdrant-librarian"


def test_a_metric_the_code_does_not_export_is_caught(exported: set[str]) -> None:
    """The check is real: a misspelt name, or a name read through __name__, is seen."""
    assert metric_names("sum(rate(librarian_router_query_total[$__rate_interval]))") == {
        "librarian_router_query_total"
    }
    assert "librarian_router_query_total" not in exported
    assert metric_names('{__name__="librarian_router_circuit_open", cluster="a"} == 1') == {
        "librarian_router_circuit_open"
    }
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        metric_names("sum(rate(librarian_router_queries_total[5m])")


def test_alerts_read_only_exported_metrics_and_validate(exported: set[str]) -> None:
    docs = helm_template(*MONITORING)
    (rule,) = _of_kind(docs, "PrometheusRule")
    assert prometheus_rule_errors(rule) == []
    rules = _rules(docs)
    assert set(rules) == ALERTS
    for name, alert in rules.items():
        names = metric_names(alert["expr"])
        assert names, name
        assert names <= exported, f"{name}: {sorted(names - exported)} not exported"
        assert alert["labels"]["severity"] in {"warning", "info"}
        assert alert["annotations"]["summary"]
        assert "{{ $labels." in alert["annotations"]["description"]  # left for Prometheus


def test_alerts_select_the_jobs_the_service_monitors_scrape() -> None:
    """A ServiceMonitor's job is its Service's name: each alert selects the router's or the
    operator's metrics Service of this release."""
    docs = helm_template(*MONITORING, "--set", "metrics.serviceMonitor.enabled=true")
    services = {
        s["metadata"]["labels"]["app.kubernetes.io/component"]: s["metadata"]["name"]
        for s in _of_kind(docs, "Service")
        if any(p["name"] == "metrics" for p in s["spec"]["ports"])
    }
    assert set(services) == {"operator", "router"}
    rules = _rules(docs)
    for name, alert in rules.items():
        component = (
            "operator" if name in {"LibrarianMovesFailing", "LibrarianDiscoveryDrift"} else "router"
        )
        assert f'job="{services[component]}", namespace="ops"' in alert["expr"], name


def test_alert_thresholds_and_labels_come_from_values() -> None:
    docs = helm_template(
        *MONITORING,
        "--set",
        "metrics.prometheusRule.labels.release=kps",
        "--set",
        "metrics.prometheusRule.alertLabels.team=search",
        "--set",
        "metrics.prometheusRule.partialAnswersRatio=0.05",
        "--set",
        "metrics.prometheusRule.recallMargin=0.02",
        "--set",
        "metrics.prometheusRule.outboxBacklogSeconds=600",
    )
    (rule,) = _of_kind(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert prometheus_rule_errors(rule) == []
    rules = _rules(docs)
    assert all(r["labels"]["team"] == "search" for r in rules.values())
    assert rules["LibrarianRouterPartialAnswers"]["expr"].rstrip().endswith("> 0.05")
    assert "- 0.02" in rules["LibrarianRecallBelowTarget"]["expr"]
    assert rules["LibrarianOutboxBacklog"]["expr"].rstrip().endswith("> 600")


def test_the_rule_check_refuses_what_the_operator_or_prometheus_would() -> None:
    (rule,) = _of_kind(helm_template(*MONITORING), "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "10 minutes"
    rule["spec"]["groups"][0]["rules"][1]["expresion"] = "up"
    rule["spec"]["groups"][1]["rules"][0]["expr"] = "increase(x[1h]"
    rule["spec"]["groups"][1]["rules"][1]["record"] = "librarian:drift"
    errors = "\n".join(prometheus_rule_errors(rule))
    assert "10 minutes" in errors
    assert "expresion" in errors
    assert "LibrarianMovesFailing: unclosed left parenthesis" in errors
    assert "is valid under each of" in errors or "is not valid under any" in errors


def test_monitoring_is_opt_in() -> None:
    docs = helm_template()
    assert not _of_kind(docs, "PrometheusRule")
    assert not [
        d for d in _of_kind(docs, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]
    ]


def test_dashboard_config_map_for_the_grafana_sidecar() -> None:
    docs = helm_template(*MONITORING)
    (config_map,) = [
        d for d in _of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "ops"
    assert json.loads(config_map["data"]["qdrant-librarian.json"]) == json.loads(
        DASHBOARD.read_text()
    )

    docs = helm_template(
        *MONITORING,
        "--set",
        "metrics.grafanaDashboard.namespace=monitoring",
        "--set",
        "metrics.grafanaDashboard.annotations.grafana_folder=Search",
    )
    (config_map,) = [
        d for d in _of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Search"}


def _helm_error(*args: str) -> str:
    result = run(tool("helm"), "template", "lib", str(CHART), *ROUTER_KEYS, *args)
    assert result.returncode != 0, result.stdout[-500:]
    return result.stderr


@pytest.mark.parametrize("part", ["prometheusRule", "grafanaDashboard"])
def test_monitoring_without_metrics_is_refused(part: str) -> None:
    error = _helm_error("--set", f"metrics.{part}.enabled=true", "--set", "metrics.enabled=false")
    assert f"metrics.{part}.enabled needs metrics.enabled=true" in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "metrics.prometheusRule.partialAnswersRatio=2"], "partialAnswersRatio"),
        (["--set", "metrics.prometheusRule.partialAnswersRatio=1.5"], "partialAnswersRatio"),
        (["--set", "metrics.prometheusRule.recallMargin=much"], "recallMargin"),
        (["--set", "metrics.prometheusRule.outboxBacklogSeconds=0"], "outboxBacklogSeconds"),
        (["--set", "metrics.prometheusRule.severity=page"], "severity"),
        (["--set", "metrics.grafanaDashboard.namespace=Not A Namespace"], "namespace"),
        (["--set", "router.podDisruptionBudget.minAvailable=0"], "minAvailable"),
        (["--set", "router.podDisruptionBudget.maxUnavailable=150%"], "maxUnavailable"),
        (["--set", "router.podDisruptionBudget.when=always"], "when"),
    ],
)
def test_bad_operations_values_are_rejected_by_the_schema(args: list[str], message: str) -> None:
    assert message in _helm_error(*args)


def _pdb(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    budgets = _of_kind(docs, "PodDisruptionBudget")
    assert len(budgets) <= 1
    return budgets[0] if budgets else None


def _router_pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    (router,) = [
        d
        for d in _of_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    ]
    labels: dict[str, str] = router["spec"]["template"]["metadata"]["labels"]
    return labels


def test_router_pod_disruption_budget() -> None:
    assert _pdb(helm_template()) is None
    docs = helm_template("--set", "router.podDisruptionBudget.enabled=true")
    budget = _pdb(docs)
    assert budget is not None
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": budget["spec"]["selector"]["matchLabels"]},
    }
    # It selects the router's pods, and only them.
    assert budget["spec"]["selector"]["matchLabels"].items() <= _router_pod_labels(docs).items()
    assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "router"

    docs = helm_template(
        "--set",
        "router.podDisruptionBudget.enabled=true",
        "--set",
        "router.replicas=3",
        "--set",
        "router.podDisruptionBudget.minAvailable=2",
    )
    budget = _pdb(docs)
    assert budget is not None
    assert budget["spec"]["minAvailable"] == 2  # minAvailable wins over maxUnavailable
    assert "maxUnavailable" not in budget["spec"]

    budget = _pdb(
        helm_template(
            "--set",
            "router.podDisruptionBudget.enabled=true",
            "--set",
            "router.podDisruptionBudget.maxUnavailable=50%",
        )
    )
    assert budget is not None
    assert budget["spec"]["maxUnavailable"] == "50%"
    assert (
        _pdb(
            helm_template(
                "--set", "router.podDisruptionBudget.enabled=true", "--set", "router.enabled=false"
            )
        )
        is None
    )


def test_a_budget_that_would_block_every_drain_is_refused(tmp_path: Path) -> None:
    error = _helm_error(
        "--set",
        "router.podDisruptionBudget.enabled=true",
        "--set",
        "router.podDisruptionBudget.minAvailable=1",
    )
    assert (
        "minAvailable=1 with router.replicas=1 leaves no router pod a node drain may evict" in error
    )
    values = tmp_path / "values.yaml"  # numbers from a values file are floats to helm
    values.write_text(
        "router:\n  replicas: 2\n  podDisruptionBudget: {enabled: true, minAvailable: 2}\n"
    )
    assert "minAvailable=2 with router.replicas=2" in _helm_error("-f", str(values))
    error = _helm_error(
        "--set",
        "router.podDisruptionBudget.enabled=true",
        "--set",
        "router.podDisruptionBudget.maxUnavailable=null",
    )
    assert "router.podDisruptionBudget: set minAvailable or maxUnavailable" in error


def test_pod_annotations_and_labels() -> None:
    docs = helm_template(
        "--set-string",
        "operator.podAnnotations.prometheus\\.io/scrape=true",
        "--set",
        "operator.podLabels.team=search",
        "--set-string",
        "router.podAnnotations.sidecar\\.istio\\.io/inject=false",
        "--set",
        "router.podLabels.tier=query",
        "--set",
        "config.domain_discovery.strategy=kmeans",
    )
    pods = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]["metadata"]
        for d in _of_kind(docs, "Deployment")
    }
    assert pods["operator"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pods["operator"]["labels"]["team"] == "search"
    assert "tier" not in pods["operator"]["labels"]
    assert pods["router"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pods["router"]["labels"]["tier"] == "query"
    for component, pod in pods.items():
        assert pod["labels"]["app.kubernetes.io/component"] == component
        assert "checksum/config" in pod["annotations"]  # the configuration's checksum is kept
    # Without any, the pods carry no annotations block at all.
    plain = helm_template()
    for deployment in _of_kind(plain, "Deployment"):
        assert "annotations" not in deployment["spec"]["template"]["metadata"]


@pytest.mark.parametrize("component", ["operator", "router"])
def test_pod_labels_may_not_take_the_selector(component: str) -> None:
    error = _helm_error("--set", f"{component}.podLabels.app\\.kubernetes\\.io/component=other")
    assert f"{component}.podLabels may not set app.kubernetes.io/component" in error


def test_the_guides_list_the_alerts_the_chart_renders() -> None:
    rendered = set(_rules(helm_template(*MONITORING)))
    readme = (CHART.parents[1] / "README.md").read_text()
    section = readme.split("## Monitoring: dashboard and alerts\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert {row.split("`")[1] for row in rows} == rendered
    chart_readme = (CHART / "README.md").read_text()
    assert set(re.findall(r"`(Librarian\w+)`", chart_readme)) == rendered
    # The thresholds the guide quotes are the chart's defaults.
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]["prometheusRule"]
    for key in ("partialAnswersRatio", "recallMargin", "outboxBacklogSeconds"):
        assert f"`{key}`" in section, key
    assert "(1%)" in section
    assert defaults["partialAnswersRatio"] == 0.01
    assert f"`recallMargin` ({defaults['recallMargin']})" in section
    assert f"`outboxBacklogSeconds` ({defaults['outboxBacklogSeconds']})" in section
