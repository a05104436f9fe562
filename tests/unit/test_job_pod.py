"""Job pod settings: the chart's ``jobs`` values and a ClusterSpecialization's ``spec.job``,
parsed, refused with the bad key named, merged, and applied to every Job the operator builds."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from librarian.kube.job_pod import (
    CA_BUNDLE_FILE,
    JOB_POD_TEMPLATE_ENV,
    OVERRIDABLE,
    JobPodError,
    JobPodSettings,
    job_pod_from_env,
    merge_job_pod,
    parse_job_pod,
    parse_quantity_value,
)
from librarian.kube.spec import SpecError, parse_specialization_spec
from librarian.operator.jobs import (
    JobSettings,
    build_analysis_job,
    build_labeling_job,
    build_migration_job,
)
from librarian.storage.tls import CA_BUNDLE_ENV

OWNER = {
    "apiVersion": "librarian.dev/v1alpha1",
    "kind": "ClusterSpecialization",
    "metadata": {"name": "packages-rust", "uid": "0000-1111"},
}
EVERYTHING: dict[str, Any] = {
    "imagePullSecrets": [{"name": "registry"}],
    "nodeSelector": {"workload": "batch"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"},
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    },
    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "podLabels": {"team": "search"},
    "extraVolumes": [{"name": "certs", "secret": {"secretName": "client-certs"}}],
    "extraVolumeMounts": [{"name": "certs", "mountPath": "/etc/certs", "readOnly": True}],
    "caBundle": {"configMap": "internal-ca", "key": "bundle.pem"},
}


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]
    return pod


def test_empty_and_chart_defaults_keep_the_built_in_pod() -> None:
    plain = build_migration_job(
        name="j", namespace="d", owner=OWNER, args=[], settings=JobSettings(image="i")
    )
    defaults = {
        "imagePullSecrets": [],
        "nodeSelector": {},
        "tolerations": [],
        "affinity": {},
        "podAnnotations": {},
        "podLabels": {},
        "extraVolumes": [],
        "extraVolumeMounts": [],
        "caBundle": {"configMap": "", "secret": "", "key": "ca.crt"},
    }
    for settings in (job_pod_from_env({}), parse_job_pod(defaults)):
        job = build_migration_job(
            name="j", namespace="d", owner=OWNER, args=[], settings=JobSettings("i", pod=settings)
        )
        assert job == plain
    container = _pod(plain)["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "2Gi"


def test_every_setting_reaches_every_kind_of_job() -> None:
    pod = job_pod_from_env({JOB_POD_TEMPLATE_ENV: json.dumps(EVERYTHING)})
    settings = JobSettings(image="i", pod=pod)
    common = {"namespace": "d", "args": [], "settings": settings}
    domain_map = {**OWNER, "kind": "DomainMap"}
    jobs = [
        build_migration_job(name="m", owner=OWNER, **common),
        build_analysis_job(name="a", owner=domain_map, **common),
        build_labeling_job(name="l", owner=domain_map, workers=2, **common),
    ]
    for job in jobs:
        template = _pod(job)
        spec = template["spec"]
        (container,) = spec["containers"]
        assert spec["imagePullSecrets"] == [{"name": "registry"}]
        assert spec["nodeSelector"] == {"workload": "batch"}
        assert spec["tolerations"] == EVERYTHING["tolerations"]
        assert spec["affinity"] == EVERYTHING["affinity"]
        assert container["resources"] == EVERYTHING["resources"]
        assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
        labels = template["metadata"]["labels"]
        assert labels["team"] == "search"
        assert labels["app.kubernetes.io/component"] in ("migration", "analysis", "labeling")
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["certs"] == {"name": "certs", "secret": {"secretName": "client-certs"}}
        assert volumes["librarian-ca-bundle"]["configMap"] == {
            "name": "internal-ca",
            "items": [{"key": "bundle.pem", "path": "ca.crt"}],
        }
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["certs"]["mountPath"] == "/etc/certs"
        assert mounts["librarian-ca-bundle"]["readOnly"] is True
        assert CA_BUNDLE_FILE.startswith(mounts["librarian-ca-bundle"]["mountPath"] + "/")
        assert {"name": CA_BUNDLE_ENV, "value": CA_BUNDLE_FILE} in container["env"]
        assert mounts["tmp"]["mountPath"] == "/tmp"  # the operator's own stay
    # The settings are copied, not shared: editing one manifest leaves the next intact.
    _pod(jobs[0])["spec"]["tolerations"][0]["value"] = "changed"
    assert _pod(jobs[1])["spec"]["tolerations"][0]["value"] == "batch"


def test_a_ca_bundle_from_a_secret() -> None:
    pod = parse_job_pod({"caBundle": {"secret": "internal-ca", "configMap": ""}})
    assert pod.ca_bundle is not None
    assert pod.ca_bundle.volume() == {
        "name": "librarian-ca-bundle",
        "secret": {"secretName": "internal-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"colour": "blue"}, "jobs.colour is unknown"),
        (
            {"nodeSelector": {"gpu": True}},
            "jobs.nodeSelector.gpu must be a string, got True (quote",
        ),
        ({"nodeSelector": {"bad key!": "x"}}, "'bad key!' is not a valid key"),
        ({"nodeSelector": {"pool": "not valid!"}}, "not a valid label value"),
        ({"tolerations": {"key": "x"}}, "jobs.tolerations must be a list"),
        ({"tolerations": [{"key": "a", "operator": "Eq"}]}, "tolerations[0].operator must be"),
        ({"tolerations": [{"operator": "Exists", "value": "v"}]}, "value must be empty"),
        ({"tolerations": [{"operator": "Equal"}]}, "tolerations[0].key is required"),
        ({"tolerations": [{"key": "a", "effect": "Never"}]}, "tolerations[0].effect must be"),
        ({"tolerations": [{"key": "a", "tolerationSeconds": 5}]}, "NoExecute only"),
        ({"tolerations": [{"key": "a", "colour": 1}]}, "tolerations[0].colour is unknown"),
        ({"affinity": {"nodeAfinity": {}}}, "jobs.affinity.nodeAfinity is unknown"),
        ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory: 'lots' is"),
        ({"resources": {"maximum": {}}}, "jobs.resources.maximum is unknown"),
        (
            {"resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "2Gi"}}},
            "requests.memory (4Gi) is more than jobs.resources.limits.memory (2Gi)",
        ),
        ({"podLabels": {"app.kubernetes.io/component": "x"}}, "set by the operator"),
        ({"podLabels": {"batch.kubernetes.io/job-name": "x"}}, "set by the operator"),
        ({"imagePullSecrets": ["Not A Name"]}, "imagePullSecrets[0] must be"),
        (
            {"extraVolumes": [{"name": "h", "hostPath": {"path": "/"}}]},
            "hostPath volumes are not allowed under the restricted Pod Security Standard",
        ),
        ({"extraVolumes": [{"name": "tmp", "emptyDir": {}}]}, "the operator's own volume"),
        ({"extraVolumes": [{"name": "x"}]}, "exactly one volume source, got none"),
        (
            {"extraVolumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]},
            "appears twice",
        ),
        ({"extraVolumeMounts": [{"name": "ghost", "mountPath": "/x"}]}, "not a volume of"),
        (
            {
                "extraVolumes": [{"name": "a", "emptyDir": {}}],
                "extraVolumeMounts": [{"name": "a", "mountPath": "/tmp/a"}],
            },
            "which the operator mounts itself",
        ),
        (
            {
                "extraVolumes": [{"name": "a", "emptyDir": {}}],
                "extraVolumeMounts": [{"name": "a", "mountPath": "relative"}],
            },
            "must be an absolute path",
        ),
        ({"caBundle": {"configMap": "a", "secret": "b"}}, "not both"),
        ({"caBundle": {"configMap": "a", "key": "no/slash"}}, "caBundle.key"),
        ({"caBundle": {"file": "/etc/ca.pem"}}, "jobs.caBundle.file is unknown"),
    ],
)
def test_bad_values_name_the_key(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(JobPodError) as caught:
        parse_job_pod(raw)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(JobPodError) as caught:
        parse_job_pod({"colour": 1, "nodeSelector": {"a": 1}, "tolerations": [{"effect": "x"}]})
    assert len(caught.value.problems) >= 3


def test_the_environment_variable_must_be_json() -> None:
    with pytest.raises(JobPodError, match=f"{JOB_POD_TEMPLATE_ENV} is not JSON"):
        job_pod_from_env({JOB_POD_TEMPLATE_ENV: "{nodeSelector: x"})
    with pytest.raises(JobPodError, match="jobs must be a map"):
        job_pod_from_env({JOB_POD_TEMPLATE_ENV: "[1]"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        (2, Decimal(2)),
        ("512Mi", Decimal(512 * 2**20)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        (".5", Decimal("0.5")),
    ],
)
def test_quantities(text: Any, value: Decimal) -> None:
    assert parse_quantity_value(text) == value


@pytest.mark.parametrize("text", ["", "2 Gi", "-1", "1Gb", "one", True, None])
def test_not_quantities(text: Any) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity_value(text)


def test_an_override_merges_maps_and_replaces_lists() -> None:
    base = parse_job_pod(EVERYTHING)
    override = parse_job_pod(
        {
            "nodeSelector": {"gpu": "yes"},
            "podAnnotations": {"team": "search"},
            "resources": {"limits": {"memory": "16Gi"}},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "imagePullSecrets": [{"name": "other"}],
        },
        where="spec.job",
        allowed=OVERRIDABLE,
    )
    merged = merge_job_pod(base, override)
    assert merged.node_selector == {"workload": "batch", "gpu": "yes"}
    assert merged.pod_annotations == {"sidecar.istio.io/inject": "false", "team": "search"}
    assert merged.resources == {
        "limits": {"memory": "16Gi"},
        "requests": {"cpu": "1", "memory": "1Gi"},
    }
    assert merged.tolerations == ({"key": "gpu", "operator": "Exists"},)
    assert merged.image_pull_secrets == ("other",)
    # what the override does not set stays the operator's
    assert merged.affinity == base.affinity
    assert merged.ca_bundle == base.ca_bundle
    assert merged.extra_volumes == base.extra_volumes
    assert merge_job_pod(base, JobPodSettings()) == base


def test_an_override_that_breaks_requests_within_limits_is_refused() -> None:
    base = parse_job_pod({"resources": {"requests": {"memory": "4Gi"}}})
    override = parse_job_pod({"resources": {"limits": {"memory": "2Gi"}}}, where="spec.job")
    with pytest.raises(JobPodError, match=r"spec.job.resources.requests.memory \(4Gi\)"):
        merge_job_pod(base, override)


def test_the_specialization_spec_takes_only_the_overridable_keys() -> None:
    spec = {
        "domainMap": "packages",
        "domain": "d-1",
        "target": {"cluster": "fast"},
        "job": {"nodeSelector": {"pool": "big"}, "resources": {"limits": {"memory": "8Gi"}}},
    }
    parsed = parse_specialization_spec(spec)
    assert parsed.job.node_selector == {"pool": "big"}
    assert parsed.job.resources == {"limits": {"memory": "8Gi"}}
    assert parse_specialization_spec({**spec, "job": None}).job == JobPodSettings()
    bad = {
        **spec,
        "job": {
            "extraVolumes": [{"name": "x", "emptyDir": {}}],
            "tolerations": [{"operator": "Sometimes"}],
        },
    }
    with pytest.raises(SpecError) as caught:
        parse_specialization_spec(bad)
    problems = caught.value.problems
    assert any(
        p.startswith("spec.job.extraVolumes is unknown; accepted: resources") for p in problems
    )
    assert any(p.startswith("spec.job.tolerations[0].operator must be") for p in problems)


def test_the_operator_refuses_to_start_with_a_bad_value(tmp_path: Any) -> None:
    """A bad jobs value or an unreadable CA bundle stops ``librarian operator`` at once,
    naming the key (before it connects to anything)."""
    from click.testing import CliRunner

    from librarian.cli import main

    bad = json.dumps({"tolerations": [{"key": "a", "operator": "Sometimes"}]})
    result = CliRunner().invoke(main, ["operator"], env={JOB_POD_TEMPLATE_ENV: bad})
    assert result.exit_code == 2
    assert "jobs.tolerations[0].operator must be Equal or Exists" in result.output
    missing = str(tmp_path / "ca.crt")
    result = CliRunner().invoke(
        main, ["operator"], env={JOB_POD_TEMPLATE_ENV: "{}", CA_BUNDLE_ENV: missing}
    )
    assert result.exit_code == 2
    assert f"{CA_BUNDLE_ENV}={missing}: no such file" in result.output
    result = CliRunner().invoke(
        main,
        ["router", "--insecure", "--cluster", "a=http://q:6333", "--source", "a/s",
         "--catalog", "a/c"],
        env={CA_BUNDLE_ENV: missing},
    )  # fmt: skip
    assert result.exit_code == 2
    assert f"{CA_BUNDLE_ENV}={missing}: no such file" in result.output
