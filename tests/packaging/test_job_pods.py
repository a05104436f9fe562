"""The chart's ``jobs`` values, from ``helm template`` to the Jobs the operator builds.

The chart hands the values to the operator as JSON (``LIBRARIAN_JOB_POD_TEMPLATE``);
these tests take that variable from the rendered Deployment, parse it as the
operator does at start, build every kind of Job with it, and check the Jobs
against the Kubernetes schemas and the "restricted" Pod Security Standard. The
CA bundle is mounted into the operator and the router too; malformed values are
refused by ``helm`` with a message naming them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from librarian.kube.job_pod import (
    CA_BUNDLE_FILE,
    JOB_POD_TEMPLATE_ENV,
    job_pod_from_env,
    merge_job_pod,
)
from librarian.kube.spec import parse_specialization_spec
from librarian.operator.jobs import (
    JobSettings,
    build_analysis_job,
    build_labeling_job,
    build_migration_job,
)

from .conftest import CHART, ROUTER_KEYS, helm_template, run, tool
from .test_kubernetes_schemas import VERSIONS, kubernetes_errors
from .test_pod_security import restricted_violations

EVERY_JOBS_VALUE: dict[str, Any] = {
    "imagePullSecrets": [{"name": "registry"}],
    "nodeSelector": {"workload": "batch", "kubernetes.io/arch": "amd64"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"},
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ],
    "affinity": {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "preference": {
                        "matchExpressions": [{"key": "zone", "operator": "In", "values": ["eu-1a"]}]
                    },
                }
            ]
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {
                            "matchLabels": {"app.kubernetes.io/component": "migration"}
                        },
                    },
                }
            ]
        },
    },
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": 4, "memory": "8Gi"}},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "podLabels": {"team": "search"},
    "extraVolumes": [
        {"name": "client-certs", "secret": {"secretName": "qdrant-client-certs"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "5Gi"}},
        {
            "name": "projected",
            "projected": {"sources": [{"configMap": {"name": "extra-config"}}]},
        },
    ],
    "extraVolumeMounts": [
        {"name": "client-certs", "mountPath": "/etc/qdrant-client", "readOnly": True},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "projected", "mountPath": "/etc/extra", "readOnly": True},
    ],
    "caBundle": {"configMap": "internal-ca", "secret": "", "key": "ca-bundle.pem"},
}


def _render(tmp_path: Path, jobs: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"jobs": jobs}))
    return helm_template("-f", str(values), *extra)


def _deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return deployment


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def _jobs_from(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every kind of Job, built as the operator started from this rendering builds them."""
    (operator,) = _deployment(docs, "operator")["spec"]["template"]["spec"]["containers"]
    pod = job_pod_from_env(_env(operator))
    settings = JobSettings(image=operator["image"], pod=pod)
    specialization = {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "ClusterSpecialization",
        "metadata": {"name": "packages-rust", "uid": "0000-1111"},
    }
    domain_map = {**specialization, "kind": "DomainMap", "metadata": {"name": "p", "uid": "2"}}
    common: dict[str, Any] = {"namespace": "search", "args": ["--name", "x"], "settings": settings}
    return [
        build_migration_job(name="m", owner=specialization, **common),
        build_analysis_job(name="a", owner=domain_map, **common),
        build_labeling_job(name="l", owner=domain_map, workers=3, **common),
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_jobs_with_every_value_are_valid_and_restricted(tmp_path: Path, version: str) -> None:
    docs = _render(tmp_path, EVERY_JOBS_VALUE)
    for job in _jobs_from(docs):
        assert kubernetes_errors(job, version) == []
        pod = job["spec"]["template"]["spec"]
        assert restricted_violations(pod) == [], job["metadata"]["name"]
        (container,) = pod["containers"]
        assert pod["nodeSelector"] == EVERY_JOBS_VALUE["nodeSelector"]
        assert pod["tolerations"] == EVERY_JOBS_VALUE["tolerations"]
        assert pod["affinity"] == EVERY_JOBS_VALUE["affinity"]
        assert pod["imagePullSecrets"] == [{"name": "registry"}]
        assert container["resources"] == {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"cpu": "4", "memory": "8Gi"},
        }
        meta = job["spec"]["template"]["metadata"]
        assert meta["annotations"] == {"sidecar.istio.io/inject": "false"}
        assert meta["labels"]["team"] == "search"
        volumes = {v["name"] for v in pod["volumes"]}
        assert {"client-certs", "scratch", "projected", "librarian-ca-bundle"} <= volumes
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/etc/qdrant-client", "/scratch", "/etc/extra", "/etc/librarian-ca"} <= mounts
        assert _env(container)["LIBRARIAN_CA_BUNDLE"] == CA_BUNDLE_FILE


def test_defaults_give_the_built_in_job_and_the_chart_s_pull_secrets() -> None:
    (job, *_) = _jobs_from(helm_template())
    pod = job["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in pod
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    assert {v["name"] for v in pod["volumes"]} == {"tmp"}
    # jobs.imagePullSecrets empty: the chart's top-level imagePullSecrets are used
    (job, *_) = _jobs_from(helm_template("--set", "imagePullSecrets[0].name=registry"))
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    # ... unless the Jobs get their own
    (job, *_) = _jobs_from(
        helm_template(
            "--set",
            "imagePullSecrets[0].name=registry",
            "--set",
            "jobs.imagePullSecrets[0].name=jobs",
        )
    )
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "jobs"}]


@pytest.mark.parametrize("source", ["configMap", "secret"])
def test_the_ca_bundle_is_mounted_into_the_operator_and_the_router(
    tmp_path: Path, source: str
) -> None:
    docs = _render(tmp_path, {"caBundle": {source: "internal-ca", "key": "root.pem"}})
    for component in ("operator", "router"):
        pod = _deployment(docs, component)["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "librarian-ca-bundle"]
        reference = volume[source]
        assert reference.get("name", reference.get("secretName")) == "internal-ca"
        assert reference["items"] == [{"key": "root.pem", "path": "ca.crt"}]
        container = pod["containers"][0]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "librarian-ca-bundle"]
        assert mount == {
            "name": "librarian-ca-bundle",
            "mountPath": "/etc/librarian-ca",
            "readOnly": True,
        }
        assert _env(container)["LIBRARIAN_CA_BUNDLE"] == CA_BUNDLE_FILE
        for version in VERSIONS:
            assert kubernetes_errors(_deployment(docs, component), version) == []
        assert restricted_violations(pod) == []
    # without a bundle, none of it
    for component in ("operator", "router"):
        pod = _deployment(helm_template(), component)["spec"]["template"]["spec"]
        assert "LIBRARIAN_CA_BUNDLE" not in _env(pod["containers"][0])
        assert all(v["name"] != "librarian-ca-bundle" for v in pod["volumes"])


def test_the_operator_gets_the_values_as_json(tmp_path: Path) -> None:
    docs = _render(tmp_path, EVERY_JOBS_VALUE)
    (operator,) = _deployment(docs, "operator")["spec"]["template"]["spec"]["containers"]
    rendered = json.loads(_env(operator)[JOB_POD_TEMPLATE_ENV])
    assert rendered == EVERY_JOBS_VALUE


def _helm_fails(*args: str) -> str:
    result = run(tool("helm"), "template", "lib", str(CHART), *ROUTER_KEYS, *args)
    assert result.returncode != 0, "helm rendered a malformed value"
    return result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "jobs.colour=blue"], "colour"),
        (["--set", "jobs.resources.limits.memory=lots"], "memory"),
        (["--set", "jobs.nodeSelector.gpu=true"], "gpu"),
        (["--set", "jobs.podAnnotations.bad key=x"], "bad key"),
        (["--set", "jobs.tolerations[0].operator=Sometimes"], "operator"),
        (["--set", "jobs.tolerations[0].effect=Never"], "effect"),
        (["--set", "jobs.affinity.nodeAfinity.x=1"], "nodeAfinity"),
        (["--set", "jobs.imagePullSecrets[0].nom=registry"], "nom"),
        (["--set", "jobs.extraVolumes[0].name=h", "--set", "jobs.extraVolumes[0].hostPath.path=/"], "hostPath"),
        (["--set", "jobs.extraVolumeMounts[0].name=x", "--set", "jobs.extraVolumeMounts[0].mountPath=rel"], "mountPath"),
        (["--set", "jobs.caBundle.file=/etc/ca.pem"], "file"),
        (["--set", "jobs.caBundle.configMap=Not_A_Name"], "configMap"),
    ],
)  # fmt: skip
def test_malformed_values_are_refused_by_the_schema(args: list[str], message: str) -> None:
    assert message in _helm_fails(*args)


def test_what_the_schema_cannot_say_the_chart_refuses_with_a_message(tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"caBundle": {"configMap": "a", "secret": "b"}},
            "jobs.caBundle: name a ConfigMap (configMap) or a Secret (secret)",
        ),
        (
            {"extraVolumeMounts": [{"name": "ghost", "mountPath": "/x"}]},
            'jobs.extraVolumeMounts: "ghost" is not a volume of jobs.extraVolumes',
        ),
        (
            {"extraVolumes": [{"name": "tmp", "emptyDir": {}}]},
            'jobs.extraVolumes: the name "tmp" is taken',
        ),
        (
            {"extraVolumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]},
            'jobs.extraVolumes: the name "a" is taken',
        ),
    ]
    for jobs, message in cases:
        values.write_text(yaml.safe_dump({"jobs": jobs}))
        assert message in _helm_fails("-f", str(values)), jobs


def test_the_readme_example_renders_and_gives_restricted_valid_jobs(tmp_path: Path) -> None:
    from .conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Jobs in locked-down clusters\n", 1)[1].split("\n## ", 1)[0]
    chart_values, override = re.findall(r"```yaml\n(.*?)```", section, re.S)
    values = yaml.safe_load(chart_values)
    docs = _render(tmp_path, values["jobs"])
    jobs = _jobs_from(docs)
    for job in jobs:
        assert restricted_violations(job["spec"]["template"]["spec"]) == []
        assert kubernetes_errors(job, VERSIONS[-1]) == []
    # The spec.job example is one a ClusterSpecialization accepts and the operator merges.
    spec = yaml.safe_load(override)["spec"]
    parsed = parse_specialization_spec(
        {"domainMap": "p", "domain": "d", "target": {"cluster": "fast"}, **spec}
    )
    (operator,) = _deployment(docs, "operator")["spec"]["template"]["spec"]["containers"]
    merged = merge_job_pod(job_pod_from_env(_env(operator)), parsed.job)
    assert merged.resources == {
        "limits": {"cpu": "2", "memory": "16Gi"},
        "requests": {"cpu": "500m", "memory": "1Gi"},
    }
    assert merged.node_selector == {"workload": "batch", "pool": "highmem"}


def test_the_plain_manifests_start_the_operator_with_the_built_in_job_pods() -> None:
    from librarian.kube.job_pod import JobPodSettings

    from .conftest import REPO, kustomize

    docs = kustomize(REPO / "manifests/base")
    (operator,) = _deployment(docs, "operator")["spec"]["template"]["spec"]["containers"]
    assert job_pod_from_env(_env(operator)) == JobPodSettings()
    # the commented example there is one the operator accepts
    text = (REPO / "manifests/base/deployment.yaml").read_text()
    (example,) = re.findall(r"#   value: '(.*)'", text)
    assert job_pod_from_env({JOB_POD_TEMPLATE_ENV: example}).node_selector == {"workload": "batch"}


def test_the_operator_admits_exactly_the_volume_kinds_of_the_restricted_profile() -> None:
    from librarian.kube.job_pod import RESTRICTED_VOLUME_SOURCES

    from .test_pod_security import ALLOWED_VOLUMES

    assert set(RESTRICTED_VOLUME_SOURCES) == ALLOWED_VOLUMES
    schema = json.loads((CHART / "values.schema.json").read_text())
    volume = schema["properties"]["jobs"]["properties"]["extraVolumes"]["items"]
    assert set(volume["properties"]) - {"name"} == ALLOWED_VOLUMES
