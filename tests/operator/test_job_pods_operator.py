"""The operator's Jobs carry the operator-wide pod settings (the chart's ``jobs`` values) and a
ClusterSpecialization's ``spec.job`` override; a bad override is an ``InvalidSpec`` condition.

kopf runs against the emulated API with the settings the operator would have parsed from
``LIBRARIAN_JOB_POD_TEMPLATE``; the analysis and labeling Jobs run as they are created.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from librarian.kube.job_pod import JOB_POD_TEMPLATE_ENV, job_pod_from_env
from librarian.local.emulator import EmulatedCluster, load_crds
from librarian.operator.context import OperatorContext
from librarian.operator.job_pods import JOB_NAME_LABEL
from librarian.testing import operator_against_emulator, wait_for

from .conftest import REPO, ManualClock, labeling_jobs_played
from .test_specialization_operator import JOBS, _ready_domainmap, _status, specialization

OPERATOR_WIDE: dict[str, Any] = {
    "imagePullSecrets": [{"name": "registry"}],
    "nodeSelector": {"workload": "batch"},
    "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
    "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "podLabels": {"team": "search"},
    "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
    "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    "caBundle": {"configMap": "internal-ca", "key": "ca.pem"},
}


@pytest.fixture
async def cluster(clock: ManualClock) -> AsyncIterator[EmulatedCluster]:
    """The operator started with the Job pod settings of a locked-down cluster."""
    job_pod = job_pod_from_env({JOB_POD_TEMPLATE_ENV: json.dumps(OPERATOR_WIDE)})
    context = OperatorContext(progress_interval_s=0.2, clock=clock, job_pod=job_pod)
    async with (
        operator_against_emulator(load_crds(REPO / "crds"), context=context) as api,
        labeling_jobs_played(api),
    ):
        yield api


def _operator_wide(job: dict[str, Any]) -> None:
    """``job``'s pod carries every operator-wide setting."""
    template = job["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["tolerations"] == OPERATOR_WIDE["tolerations"]
    assert template["metadata"]["labels"]["team"] == "search"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["scratch"] == {"name": "scratch", "emptyDir": {}}
    assert volumes["librarian-ca-bundle"]["configMap"]["name"] == "internal-ca"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["scratch"] == "/scratch"
    assert mounts["librarian-ca-bundle"] == "/etc/librarian-ca"
    assert {"name": "LIBRARIAN_CA_BUNDLE", "value": "/etc/librarian-ca/ca.crt"} in container["env"]


async def test_every_job_carries_the_operator_wide_settings_and_the_override(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    domain_map = await _ready_domainmap(cluster, tmp_path)
    # The DomainMap's analysis and labeling Jobs (they ran: the DomainMap is Ready).
    jobs = await cluster.list_objects(JOBS, "default")
    by_component = {j["metadata"]["labels"]["app.kubernetes.io/component"]: j for j in jobs}
    assert {"analysis", "labeling"} <= set(by_component)
    for component in ("analysis", "labeling"):
        job = by_component[component]
        _operator_wide(job)
        pod = job["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"workload": "batch"}
        assert pod["containers"][0]["resources"] == OPERATOR_WIDE["resources"]
        assert job["spec"]["template"]["metadata"]["annotations"] == {
            "sidecar.istio.io/inject": "false"
        }
    # A big domain's migration Job: more memory, a node pool of its own; the rest stays.
    domain = max(domain_map["status"]["domains"], key=lambda d: d["size"])
    override = {
        "resources": {"limits": {"memory": "16Gi"}},
        "nodeSelector": {"pool": "highmem"},
        "podAnnotations": {"team": "search"},
        "tolerations": [{"key": "highmem", "operator": "Exists"}],
    }
    await cluster.create(specialization("biggest", domain["id"], job=override))
    status = await _status(cluster, "biggest", {"Migrating", "Failed"})
    assert status["phase"] == "Migrating", status
    job = await cluster.get(JOBS, "default", status["job"])
    assert job is not None
    template = job["spec"]["template"]
    pod = template["spec"]
    assert pod["nodeSelector"] == {"workload": "batch", "pool": "highmem"}
    assert pod["tolerations"] == [{"key": "highmem", "operator": "Exists"}]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": "1Gi"},
        "limits": {"memory": "16Gi"},
    }
    assert template["metadata"]["annotations"] == {
        "sidecar.istio.io/inject": "false",
        "team": "search",
    }
    assert pod["imagePullSecrets"] == [{"name": "registry"}]  # not overridden: the operator's
    assert {v["name"] for v in pod["volumes"]} >= {"scratch", "librarian-ca-bundle"}
    # The ClusterSpecialization's spec is left as written (the operator writes status only).
    written = await cluster.get(
        "librarian.dev/v1alpha1/clusterspecializations", "default", "biggest"
    )
    assert written is not None
    assert written["spec"]["job"] == override


async def test_a_bad_override_is_an_invalid_spec_condition_and_no_job(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    domain_map = await _ready_domainmap(cluster, tmp_path)
    domain = domain_map["status"]["domains"][0]
    cases = {
        # Within the schema, but over the operator's limit once merged.
        "toobig": (
            {"resources": {"requests": {"memory": "8Gi"}}},
            "spec.job.resources.requests.memory (8Gi) is more than spec.job.resources.limits."
            "memory (3Gi)",
        ),
        "badtoleration": (
            {"tolerations": [{"key": "x", "operator": "Exists", "value": "y"}]},
            "spec.job.tolerations[0].value must be empty with operator Exists",
        ),
        "badquantity": (
            {"resources": {"limits": {"cpu": "two"}}},
            "spec.job.resources.limits.cpu: 'two' is not a quantity",
        ),
    }
    for name, (job, _) in cases.items():
        await cluster.create(specialization(name, domain["id"], job=job))
    for name, (_, message) in cases.items():
        status = await _status(cluster, name, {"Failed", "Migrating"})
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (status["phase"], ready["status"], ready["reason"]) == (
            "Failed",
            "False",
            "InvalidSpec",
        ), (name, ready)
        assert message in ready["message"], (name, ready["message"])
        assert ready["observedGeneration"] == 1
    migration_jobs = [
        j
        for j in await cluster.list_objects(JOBS, "default")
        if j["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
    ]
    assert migration_jobs == []


def _pod(job: str, status: dict[str, Any]) -> dict[str, Any]:
    """A pod of Job ``job`` as the Job controller makes it, in ``status``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-x7k2p",
            "namespace": "default",
            "labels": {JOB_NAME_LABEL: job},
        },
        "spec": {"containers": [{"name": "migrate", "image": "registry.internal/librarian:0.1.0"}]},
        "status": status,
    }


PULL_BACKOFF = {
    "phase": "Pending",
    "containerStatuses": [
        {
            "name": "migrate",
            "ready": False,
            "restartCount": 0,
            "image": "registry.internal/librarian:0.1.0",
            "imageID": "",
            "state": {
                "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": 'Back-off pulling image "registry.internal/librarian:0.1.0"',
                }
            },
        }
    ],
}
RUNNING = {
    "phase": "Running",
    "containerStatuses": [
        {
            "name": "migrate",
            "ready": True,
            "restartCount": 0,
            "image": "registry.internal/librarian:0.1.0",
            "imageID": "registry.internal/librarian@sha256:0",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
        }
    ],
}


async def _condition(
    api: EmulatedCluster, name: str, type_: str, status: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    async def shown() -> tuple[dict[str, Any], dict[str, Any]] | None:
        obj = await api.get("librarian.dev/v1alpha1/clusterspecializations", "default", name)
        current = (obj or {}).get("status") or {}
        for condition in current.get("conditions") or []:
            if condition["type"] == type_ and condition["status"] == status:
                return current, condition
        return None

    return await wait_for(shown, 90)  # type: ignore[no-any-return]


async def test_a_job_whose_pod_cannot_pull_its_image_shows_stalled_until_it_runs(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    """The Job neither fails nor runs while its image cannot be pulled: the specialization
    says so (Stalled, the pod's reason, what to check) and says it no more once the pod runs."""
    domain_map = await _ready_domainmap(cluster, tmp_path)
    domain = domain_map["status"]["domains"][0]
    await cluster.create(specialization("pulling", domain["id"]))
    status = await _status(cluster, "pulling", {"Migrating", "Failed"})
    assert status["phase"] == "Migrating", status
    assert not any(c["type"] == "Stalled" for c in status["conditions"])  # nothing to say yet
    job = status["job"]
    await cluster.create(_pod(job, PULL_BACKOFF))
    status, stalled = await _condition(cluster, "pulling", "Stalled", "True")
    assert stalled["reason"] == "ImagePullBackOff"
    assert f"pod {job}-x7k2p of Job {job} cannot start" in stalled["message"]
    assert "imagePullSecrets" in stalled["message"]
    assert status["message"] == stalled["message"]
    assert status["phase"] == "Migrating"  # still waiting for the Job: not failed
    warnings = [e for e in cluster.events("default") if e.get("reason") == "ImagePullBackOff"]
    assert warnings
    assert warnings[0]["type"] == "Warning"
    await cluster.patch("v1/pods", "default", f"{job}-x7k2p", {"status": RUNNING})
    status, running = await _condition(cluster, "pulling", "Stalled", "False")
    assert running["reason"] == "JobRunning"
    assert status["message"] == f"Job {job} is running"
