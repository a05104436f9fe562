"""How a Job the operator started is doing: its outcome, and why its pod cannot start.

Why this exists: a Job whose pod cannot pull its image, or that no node can
take, neither fails nor runs: Kubernetes retries the pull (ImagePullBackOff)
or keeps it Pending until the Job's deadline, hours later. Reading only the
Job, the resource that owns it would say "Migrating" or "Analyzing" all that
time. So while a Job runs, the operator also reads its pods and, when one is
stuck for a reason the user must fix (a private registry without pull
Secrets, a node selector no node matches, a Secret or ConfigMap that does not
exist), shows it as the ``Stalled`` condition with the pod's own reason
(``ImagePullBackOff``, ``Unschedulable``, ...) and a message saying what to
check; the condition turns False once the pod runs. Reading pods is best
effort: when the API refuses (RBAC without ``pods`` list) nothing is shown and
the Job's outcome still decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import kopf

from librarian.kube import client as api
from librarian.operator.conditions import ConditionStatus, get_condition, set_condition

__all__ = [
    "JOB_NAME_LABEL",
    "STALLED",
    "PodTrouble",
    "job_outcome",
    "job_pod_trouble",
    "show_stalled",
    "stalled_condition",
    "stuck_pod",
]

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set on a Job's pods by Kubernetes 1.27+
STALLED = "Stalled"
# Waiting reasons that last until someone changes something: the image, its pull Secrets,
# a Secret or ConfigMap the pod refers to. (ContainerCreating and PodInitializing pass.)
STUCK_WAITING = {
    "ImagePullBackOff": "check the image name and that its registry's pull Secrets are set "
    "(chart: jobs.imagePullSecrets or imagePullSecrets; per ClusterSpecialization: "
    "spec.job.imagePullSecrets)",
    "ErrImagePull": "check the image name and that its registry's pull Secrets are set "
    "(chart: jobs.imagePullSecrets or imagePullSecrets; per ClusterSpecialization: "
    "spec.job.imagePullSecrets)",
    "InvalidImageName": "the image reference is malformed: check the chart's image values",
    "CreateContainerConfigError": "a Secret or ConfigMap the pod refers to is missing in "
    "this namespace (an API key Secret, the CA bundle, jobs.extraVolumes)",
    "CreateContainerError": "the container runtime refused the container: see the pod's "
    "events (kubectl describe pod)",
}
UNSCHEDULABLE_HINT = (
    "no node can take the pod: check jobs.nodeSelector, jobs.tolerations, jobs.affinity and "
    "jobs.resources (or the ClusterSpecialization's spec.job)"
)


@dataclass(frozen=True)
class PodTrouble:
    """Why a Job's pod cannot start: the pod's reason (CamelCase) and what to do about it."""

    reason: str
    message: str


def job_outcome(job: Mapping[str, Any]) -> tuple[str, str]:
    """("running" | "succeeded" | "failed", the failure's reason and message)."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded", ""
        if condition.get("type") == "Failed":
            return "failed", f"{condition.get('reason', 'Failed')}: {condition.get('message', '')}"
    completions = int((job.get("spec") or {}).get("completions") or 1)
    if int(status.get("succeeded") or 0) >= completions:  # before the Complete condition lands
        return "succeeded", ""
    return "running", ""


def stuck_pod(job_name: str, pods: Sequence[Mapping[str, Any]]) -> PodTrouble | None:
    """The first of ``pods`` (of Job ``job_name``) stuck for a reason the user must fix.

    A pod that runs, or waits for a passing reason, is not stuck; nor is any pod when one of
    them runs (an Indexed Job's other indexes wait for room, not for a fix).
    """
    mine = [
        p
        for p in pods
        if (p.get("metadata") or {}).get("labels", {}).get(JOB_NAME_LABEL) == job_name
    ]
    if any((p.get("status") or {}).get("phase") in ("Running", "Succeeded") for p in mine):
        return None
    for pod in mine:
        name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        containers = [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
        for container in containers:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in STUCK_WAITING:
                detail = str(waiting.get("message") or "").strip()
                return PodTrouble(
                    reason,
                    f"pod {name} of Job {job_name} cannot start: {reason}"
                    + (f" ({detail})" if detail else "")
                    + f"; {STUCK_WAITING[reason]}",
                )
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                detail = str(condition.get("message") or "").strip()
                return PodTrouble(
                    "Unschedulable",
                    f"pod {name} of Job {job_name} is not scheduled"
                    + (f" ({detail})" if detail else "")
                    + f"; {UNSCHEDULABLE_HINT}",
                )
    return None


async def job_pod_trouble(namespace: str, job_name: str) -> PodTrouble | None:
    """:func:`stuck_pod` of the Job's pods as the API lists them; None when it cannot tell."""
    selector = quote(f"{JOB_NAME_LABEL}={job_name}", safe="")
    try:
        listed = await api.get_json(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
    except api.KubernetesApiError:
        return None  # best effort: without pods' list, the Job's outcome decides
    return stuck_pod(job_name, listed.get("items") or [])


def stalled_condition(
    conditions: Sequence[Mapping[str, Any]], trouble: PodTrouble | None
) -> tuple[ConditionStatus, str, str] | None:
    """The ``Stalled`` condition to set, as (status, reason, message), or None to leave the
    conditions as they are (no trouble, and none shown before)."""
    shown = next((c for c in conditions if c.get("type") == STALLED), None)
    if trouble is not None:
        return "True", trouble.reason, trouble.message
    if shown is not None and shown.get("status") == "True":
        return "False", "JobRunning", "the Job's pods have started"
    return None


async def show_stalled(
    body: kopf.Body, patch: kopf.Patch, namespace: str, job_name: str, now: datetime
) -> PodTrouble | None:
    """Read the running Job's pods and show what stalls them on ``body``: the ``Stalled``
    condition and the status message (patched only when they change; a Warning Event when a
    new trouble appears). The trouble, if any."""
    trouble = await job_pod_trouble(namespace, job_name)
    conditions = list((body.get("status") or {}).get("conditions") or [])
    change = stalled_condition(conditions, trouble)
    shown = get_condition(conditions, STALLED)
    if change is None or (
        shown is not None
        and (shown.get("status"), shown.get("reason"), shown.get("message")) == change
    ):
        return trouble
    status, reason, message = change
    patch.status["conditions"] = set_condition(
        conditions,
        STALLED,
        status,
        reason,
        message,
        observed_generation=body.meta.get("generation"),
        now=now,
    )
    patch.status["message"] = message if trouble is not None else f"Job {job_name} is running"
    if trouble is not None:
        kopf.warn(body, reason=trouble.reason, message=trouble.message)
    return trouble
