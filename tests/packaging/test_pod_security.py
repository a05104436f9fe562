"""Every pod we ship or build meets the Pod Security Standard "restricted".

Checked: the operator and router pods of the chart (defaults and every option),
the base manifests, the migration Job the operator builds in code, and the
sidecar container the docs tell people to paste. The rules are those of the
"restricted" profile (which a namespace labelled
``pod-security.kubernetes.io/enforce: restricted`` enforces), plus what this
project promises on top: a numeric user and a read-only root filesystem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .conftest import (
    REPO,
    helm_template,
    kustomize,
    sample_labeling_job,
    sample_migration_job,
)
from .test_helm import _sidecar_snippets
from .test_kubernetes_schemas import RENDERS

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
}


def _pod_violations(pod: dict[str, Any]) -> list[str]:
    """Host namespaces, volume kinds and sysctls: what the pod as a whole may not use."""
    problems: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']} is {sorted(kinds)}")
    for sysctl in (pod.get("securityContext") or {}).get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']}")
    return problems


def _privilege_violations(context: dict[str, Any]) -> list[str]:
    """Privilege, escalation and capabilities of one container."""
    problems: list[str] = []
    if context.get("privileged"):
        problems.append("privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append("capabilities do not drop ALL")
    if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
        problems.append(f"adds capabilities {capabilities['add']}")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("root filesystem is writable")
    if context.get("procMount", "Default") != "Default":
        problems.append(f"procMount {context['procMount']}")
    return problems


def _identity_violations(effective: Callable[[str], Any]) -> list[str]:
    """User, seccomp, SELinux and AppArmor, from the container or else the pod."""
    problems: list[str] = []
    if effective("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    user = effective("runAsUser")
    if not isinstance(user, int) or isinstance(user, bool) or user == 0:
        problems.append(f"runAsUser {user!r} is not a numeric non-root user")
    seccomp = (effective("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"seccompProfile {seccomp!r}")
    selinux = effective("seLinuxOptions") or {}
    if selinux.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t"):
        problems.append(f"seLinuxOptions.type {selinux['type']}")
    if (effective("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append("AppArmor unconfined")
    return problems


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Why ``pod`` (a PodSpec) fails the restricted profile; empty when it passes."""
    problems = _pod_violations(pod)
    pod_context = pod.get("securityContext") or {}
    containers = [
        *(pod.get("initContainers") or []),
        *(pod.get("containers") or []),
        *(pod.get("ephemeralContainers") or []),
    ]
    assert containers, "a pod without containers"
    for container in containers:
        name = container["name"]
        context = container.get("securityContext") or {}

        def effective(key: str, context: dict[str, Any] = context) -> Any:
            return context.get(key, pod_context.get(key))

        found = [*_privilege_violations(context), *_identity_violations(effective)]
        if any(p.get("hostPort") for p in container.get("ports") or []):
            found.append("hostPort")
        problems.extend(f"{name}: {problem}" for problem in found)
    return problems


def _pods(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc["kind"] == "Pod":
            yield doc["metadata"]["name"], spec
        elif doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", spec["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]


def _migration_job() -> dict[str, Any]:
    return sample_migration_job()


@pytest.mark.parametrize("render", sorted(RENDERS))
def test_chart_pods_are_restricted(render: str) -> None:
    pods = dict(_pods(helm_template(*RENDERS[render])))
    assert pods
    for name, pod in pods.items():
        assert restricted_violations(pod) == [], name


def test_chart_renders_the_operator_and_router_pods() -> None:
    components = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in helm_template()
        if d["kind"] == "Deployment"
    }
    assert components == {"operator", "router"}


def test_base_manifest_pods_are_restricted() -> None:
    pods = dict(_pods(kustomize(REPO / "manifests/base")))
    assert len(pods) == 2
    for name, pod in pods.items():
        assert restricted_violations(pod) == [], name


def test_migration_job_is_restricted_and_has_no_api_token() -> None:
    ((_, pod),) = _pods([_migration_job()])
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False  # it never calls the Kubernetes API


def test_labeling_job_is_restricted_and_has_no_api_token() -> None:
    ((_, pod),) = _pods([sample_labeling_job()])
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False


def test_documented_sidecar_is_restricted_on_its_own() -> None:
    """Pasted into an application's pod whose pod-level context we do not know."""
    import yaml

    for text in _sidecar_snippets():
        lines = [line for line in text.splitlines() if line.strip()]
        indent = len(lines[0]) - len(lines[0].lstrip())
        (container,) = yaml.safe_load(
            "\n".join(["- name: librarian-router"] + [line[indent - 2 :] for line in lines])
        )
        assert restricted_violations({"containers": [container]}) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda pod: pod.update(hostNetwork=True), "hostNetwork"),
        (lambda pod: pod.update(hostPID=True), "hostPID"),
        (
            lambda pod: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
            "hostPath",
        ),
        (
            lambda pod: pod["containers"][0]["securityContext"].update(privileged=True),
            "privileged",
        ),
        (
            lambda pod: pod["containers"][0]["securityContext"].update(
                allowPrivilegeEscalation=True
            ),
            "allowPrivilegeEscalation",
        ),
        (
            lambda pod: pod["containers"][0]["securityContext"].update(capabilities={}),
            "drop ALL",
        ),
        (lambda pod: pod["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
        (lambda pod: pod["securityContext"].update(runAsUser="app"), "numeric"),
        (lambda pod: pod["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (
            lambda pod: pod["containers"][0]["securityContext"].update(
                readOnlyRootFilesystem=False
            ),
            "writable",
        ),
    ],
)
def test_the_check_catches_each_violation(change: Any, expected: str) -> None:
    ((_, pod),) = _pods([_migration_job()])
    change(pod)
    assert any(expected in problem for problem in restricted_violations(pod))
