"""The operator's Jobs: ``librarian migrate`` for one specialization, ``librarian analyze`` for a
DomainMap's analysis (sampling, discovery, publishing; one pod) and ``librarian label`` for its
labels (an Indexed Job: one completion index per id range, run in parallel).

Why this exists: data moves run outside the operator (a crash or a restart of
the operator must not stop or duplicate them, and they need their own
resources and deadline). The Job uses the operator's image, gets API keys only
as environment variables from Secrets, runs as a numeric non-root user under
the "restricted" Pod Security Standard, and is owned by its
ClusterSpecialization (the analysis and labeling Jobs by their DomainMap) so it is
garbage-collected with it. Where it runs (pull secrets, node selector, tolerations,
affinity), its resources, annotations, extra volumes and CA bundle come from
:class:`~librarian.kube.job_pod.JobPodSettings` (the chart's ``jobs`` values, and a
ClusterSpecialization's ``spec.job``); the operator's own volumes, mounts and labels stay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from librarian.contracts.metadata import DOMAINMAP_LABEL, SPECIALIZATION_LABEL
from librarian.kube.job_pod import CA_BUNDLE_DIR, CA_BUNDLE_FILE, CA_BUNDLE_VOLUME, JobPodSettings
from librarian.kube.spec import SecretRef
from librarian.storage.tls import CA_BUNDLE_ENV

__all__ = [
    "CATALOG_API_KEY_ENV",
    "RESTRICTED_CONTAINER",
    "RESTRICTED_POD",
    "SOURCE_API_KEY_ENV",
    "TARGET_API_KEY_ENV",
    "JobSettings",
    "build_analysis_job",
    "build_labeling_job",
    "build_migration_job",
]

SOURCE_API_KEY_ENV = "LIBRARIAN_SOURCE_API_KEY"
TARGET_API_KEY_ENV = "LIBRARIAN_TARGET_API_KEY"
CATALOG_API_KEY_ENV = "LIBRARIAN_CATALOG_API_KEY"
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class JobSettings:
    image: str
    backoff_limit: int = 6
    active_deadline_s: int = 6 * 3600
    ttl_after_finished_s: int = 24 * 3600
    resources: Mapping[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        }
    )
    service_account: str | None = None
    pod: JobPodSettings = field(default_factory=JobPodSettings)
    """Pull secrets, placement, resources, annotations, volumes and CA bundle (``jobs.*`` of
    the chart, merged with a ClusterSpecialization's ``spec.job``); its resources, when set,
    replace ``resources``."""


def _plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (the manifest is serialised as JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _secret_env(name: str, ref: SecretRef | None) -> list[dict[str, Any]]:
    if ref is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _job(
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    command: str,
    args: Sequence[str],
    settings: JobSettings,
    env: list[dict[str, Any]],
    labels: Mapping[str, str],
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    meta = owner["metadata"]
    pod = settings.pod
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes += [_plain(v) for v in pod.extra_volumes]
    mounts += [_plain(m) for m in pod.extra_volume_mounts]
    env = list(env)
    if pod.ca_bundle is not None:
        # The Job's Qdrant clients trust the internal CA besides the public ones.
        volumes.append(pod.ca_bundle.volume())
        mounts.append({"name": CA_BUNDLE_VOLUME, "mountPath": CA_BUNDLE_DIR, "readOnly": True})
        env.append({"name": CA_BUNDLE_ENV, "value": CA_BUNDLE_FILE})
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The Job talks to Qdrant only, never to the Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
        "securityContext": dict(RESTRICTED_POD),
        "containers": [
            {
                "name": command,
                "image": settings.image,
                "args": [command, *args],
                "env": env,
                "resources": _plain(pod.resources if pod.resources else settings.resources),
                "securityContext": dict(RESTRICTED_CONTAINER),
                "workingDir": "/tmp",
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    if pod.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in pod.image_pull_secrets]
    if pod.node_selector:
        pod_spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        pod_spec["tolerations"] = _plain(pod.tolerations)
    if pod.affinity:
        pod_spec["affinity"] = _plain(pod.affinity)
    # The operator's labels win over jobs.podLabels (which may not name them anyway).
    pod_meta: dict[str, Any] = {"labels": {**(pod.pod_labels or {}), **labels}}
    if pod.pod_annotations:
        pod_meta["annotations"] = dict(pod.pod_annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            **(spec or {}),
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": settings.active_deadline_s,
            "ttlSecondsAfterFinished": settings.ttl_after_finished_s,
            "template": {"metadata": pod_meta, "spec": pod_spec},
        },
    }


def build_migration_job(
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    args: Sequence[str],
    settings: JobSettings,
    source_secret: SecretRef | None = None,
    target_secret: SecretRef | None = None,
    catalog_secret: SecretRef | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Job manifest; ``owner`` is the ClusterSpecialization body (apiVersion, kind, metadata)."""
    job_labels = {**_job_labels("migration", SPECIALIZATION_LABEL, owner), **(labels or {})}
    return _job(
        name=name,
        namespace=namespace,
        owner=owner,
        command="migrate",
        args=args,
        settings=settings,
        env=_secret_env(SOURCE_API_KEY_ENV, source_secret)
        + _secret_env(TARGET_API_KEY_ENV, target_secret)
        + _secret_env(CATALOG_API_KEY_ENV, catalog_secret),
        labels=job_labels,
    )


def _job_labels(component: str, owner_label: str, owner: Mapping[str, Any]) -> dict[str, str]:
    """The labels every Job of the operator carries: what it is and which resource owns it."""
    return {
        "app.kubernetes.io/name": "qdrant-librarian",
        "app.kubernetes.io/component": component,
        owner_label: str(owner["metadata"]["name"]),
    }


def build_labeling_job(
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    args: Sequence[str],
    settings: JobSettings,
    workers: int,
    source_secret: SecretRef | None = None,
) -> dict[str, Any]:
    """The labeling Job: ``workers`` pods at once, pod ``i`` labelling id range ``i`` (Kubernetes
    gives it as ``JOB_COMPLETION_INDEX``); ``owner`` is the DomainMap body.

    A pod that dies is replaced (up to the backoff limit) and resumes its range from the
    last page it committed.
    """
    job_labels = _job_labels("labeling", DOMAINMAP_LABEL, owner)
    return _job(
        name=name,
        namespace=namespace,
        owner=owner,
        command="label",
        args=args,
        settings=settings,
        env=_secret_env(SOURCE_API_KEY_ENV, source_secret),
        labels=job_labels,
        spec={"completionMode": "Indexed", "completions": workers, "parallelism": workers},
    )


def build_analysis_job(
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    args: Sequence[str],
    settings: JobSettings,
    source_secret: SecretRef | None = None,
    catalog_secret: SecretRef | None = None,
) -> dict[str, Any]:
    """The analysis Job: one pod sampling the source, discovering its domains and publishing
    them to the catalog; ``owner`` is the DomainMap body.

    A pod that dies is replaced (up to the backoff limit) and starts the analysis again:
    nothing is published until its last step, which is atomic.
    """
    job_labels = _job_labels("analysis", DOMAINMAP_LABEL, owner)
    return _job(
        name=name,
        namespace=namespace,
        owner=owner,
        command="analyze",
        args=args,
        settings=settings,
        env=_secret_env(SOURCE_API_KEY_ENV, source_secret)
        + _secret_env(CATALOG_API_KEY_ENV, catalog_secret),
        labels=job_labels,
    )
