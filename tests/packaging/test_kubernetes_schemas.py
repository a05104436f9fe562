"""Every object we ship or build, validated against the Kubernetes API schemas.

``kubernetes-validate`` carries the OpenAPI schemas of each Kubernetes release;
strict mode refuses unknown fields, so a typo in a template (``livenessprobe``,
``securityContext`` one level off) fails here instead of at ``kubectl apply``.
Objects of our own CRDs (and kopf's peering CRDs) are validated against those
CRDs as the API server would. The oldest Kubernetes the project supports and
the newest schema the package ships are both checked.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from .conftest import (
    REPO,
    helm_template,
    kustomize,
    sample_labeling_job,
    sample_migration_job,
)
from .crd_schema import load_crds, validate
from .prometheus_rule_schema import prometheus_rule_errors

OLDEST_SUPPORTED = "1.30.0"  # CRD validation rules (CEL) are generally available from 1.29
VERSIONS = sorted({OLDEST_SUPPORTED, kubernetes_validate.latest_version()})
CRDS = load_crds()
# Kinds whose schema ships with neither Kubernetes nor this project (checked by shape elsewhere).
NO_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# helm template arguments: the defaults, and values that switch every optional part on.
RENDERS: dict[str, list[str]] = {
    "defaults": [],
    "options": [
        "--set",
        "config.domain_discovery.strategy=kmeans",
        "--set",
        "embedded.enabled=true",
        "--set",
        "embedded.existingClaim=librarian-data",
        "--set",
        "operator.watchNamespaces={team-a,team-b}",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "imagePullSecrets[0].name=registry",
        "--set",
        "serviceAccount.annotations.team=search",
        "--set",
        "operator.env[0].name=QDRANT_KEY",
        "--set",
        "operator.env[0].valueFrom.secretKeyRef.name=qdrant",
        "--set",
        "operator.env[0].valueFrom.secretKeyRef.key=api-key",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "router.domainMap=search/library",
        "--set",
        "router.service.type=LoadBalancer",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.alertLabels.team=search",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "router.replicas=3",
        "--set",
        "router.podDisruptionBudget.enabled=true",
        "--set",
        "router.podDisruptionBudget.minAvailable=2",
        "--set-string",
        "router.podAnnotations.sidecar\\.istio\\.io/inject=false",
        "--set",
        "operator.podLabels.team=search",
        "--set",
        "jobs.caBundle.configMap=internal-ca",
    ],
    "cluster-wide-peering": [
        "--set",
        "rbac.clusterWide=true",
        "--set",
        "replicaCount=3",
        "--set",
        "networkPolicy.enabled=true",
    ],
    "namespaced-peering": ["--set", "replicaCount=2", "--set", "operator.watchNamespaces={a,b}"],
    "minimal": ["--set", "router.enabled=false", "--set", "metrics.enabled=false"],
    "router-of-several-libraries": [
        "--set",
        "router.domainMaps={packages,search/articles}",
        "--set",
        "router.credentialSecrets={qdrant-key,search/articles-key}",
    ],
    "router-of-every-library": [
        "--set",
        "router.allDomainMaps=true",
        "--set",
        "router.allDomainMapsNamespace=search",
        "--set",
        "router.credentialSecrets={qdrant-key}",
    ],
}


def kubernetes_errors(doc: dict[str, Any], version: str) -> list[str]:
    """Why the API server of ``version`` would refuse ``doc`` (empty when it accepts it)."""
    api_version, kind = doc["apiVersion"], doc["kind"]
    where = f"{kind}/{doc.get('metadata', {}).get('name')}"
    crd = CRDS.get((api_version.split("/")[0], kind))
    if crd is not None:
        return [f"{where}: {e}" for e in validate(doc, crd)]
    if (api_version, kind) == ("monitoring.coreos.com/v1", "PrometheusRule"):
        return [f"{where} {e}" for e in prometheus_rule_errors(doc)]
    if (api_version, kind) in NO_SCHEMA:
        return []
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.absolute_path)
        return [f"{where} at {path or '.'}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{where}: {error.message}"]
    return []


def _assert_valid(docs: list[dict[str, Any]], version: str) -> None:
    errors = [e for doc in docs for e in kubernetes_errors(doc, version)]
    assert errors == [], "\n".join(errors)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("render", sorted(RENDERS))
def test_helm_chart_renders_valid_objects(render: str, version: str) -> None:
    docs = helm_template(*RENDERS[render])
    assert docs
    _assert_valid(docs, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_kustomize_base_is_valid(version: str) -> None:
    _assert_valid(kustomize(REPO / "manifests/base"), version)


@pytest.mark.parametrize("version", VERSIONS)
def test_crds_are_valid_customresourcedefinitions(version: str) -> None:
    for crd in CRDS.values():
        kubernetes_validate.validate(crd, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_migration_job_built_in_code_is_valid(version: str) -> None:
    job = sample_migration_job(with_target_secret=True)
    _assert_valid([job], version)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_labeling_job_built_in_code_is_valid(version: str) -> None:
    job = sample_labeling_job()
    assert job["spec"]["completionMode"] == "Indexed"
    _assert_valid([job], version)


def test_a_typo_is_caught() -> None:
    """The check is strict: an unknown field in a container is an error."""
    (deployment, *_) = [d for d in helm_template() if d["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    errors = kubernetes_errors(deployment, VERSIONS[-1])
    assert errors
    assert "livenessprobe" in errors[0]
