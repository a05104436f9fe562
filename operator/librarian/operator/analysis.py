"""The analysis Job of a DomainMap: its name, request and manifest, and the retry policy its
Jobs (analysis and labeling) follow.

Why this exists: sampling and discovery run in a Job (see
:mod:`librarian.services.analysis_job`), not in the operator. The DomainMap
handler writes the request and creates the Job; a timer follows it, copies its
recorded progress into ``status.analysis`` and, once it has published, fills
the status from the report the Job published with the catalog. A Job that
fails after its own pod retries (its ``backoffLimit``) is created again a few
times with a growing delay; then the DomainMap says how to retry by hand.
This module holds the pure parts; the handlers stay in
:mod:`librarian.operator.domainmap`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from librarian.contracts.api import GROUP, VERSION
from librarian.contracts.metadata import RETRY_ANNOTATION
from librarian.kube.job_pod import JobPodSettings
from librarian.kube.spec import ClusterRef, DomainMapSpec
from librarian.operator.jobs import JobSettings, build_analysis_job
from librarian.services.analysis_job import AnalysisRequest

__all__ = [
    "RetryPolicy",
    "analysis_job",
    "analysis_job_name",
    "analysis_request",
    "needs_secret",
    "retry_hint",
]


def analysis_job_name(name: str, generation: int | None, serial: int) -> str:
    """The ``serial``-th analysis Job of the DomainMap's ``generation`` (a retry is a new Job)."""
    suffix = f"-{serial}" if serial > 1 else ""
    return f"{name[:40]}-analyze-g{generation or 0}{suffix}"


def _cluster_args(flag: str, cluster: ClusterRef) -> list[str]:
    if cluster.url:
        return [f"--{flag}-url", cluster.url]
    return [f"--{flag}-embedded", str(cluster.embedded)]


def analysis_request(
    parsed: DomainMapSpec,
    *,
    owner: str,
    job_name: str,
    version: int,
    generation: int | None,
    vector: str,
) -> AnalysisRequest:
    """What the analysis Job ``job_name`` is asked to do, from the spec."""
    return AnalysisRequest(
        name=job_name,
        owner=owner,
        version=version,
        generation=int(generation or 0),
        source_cluster=parsed.source_cluster,
        source_collection=parsed.source_collection,
        catalog_collection=parsed.catalog_collection,
        vector=vector,
        strategy=parsed.strategy,
        sample_size=parsed.sample_size,
        text_field=parsed.text_field,
        seed=parsed.seed,
        thresholds=dict(parsed.thresholds),
        drift_threshold=parsed.drift_threshold,
        labeling_workers=parsed.labeling_workers if parsed.labeling_enabled else None,
    )


def analysis_job(
    *,
    body: Mapping[str, Any],
    parsed: DomainMapSpec,
    job_name: str,
    image: str,
    pod: JobPodSettings | None = None,
) -> dict[str, Any]:
    """The Job running the analysis request ``job_name`` (one pod)."""
    meta = body["metadata"]
    source = parsed.cluster(parsed.source_cluster)
    catalog = parsed.cluster(parsed.catalog_cluster)
    args = ["--name", job_name, *_cluster_args("source", source)]
    if catalog.name != source.name:
        args += _cluster_args("catalog", catalog)
    return build_analysis_job(
        name=job_name,
        namespace=str(meta.get("namespace") or "default"),
        owner={
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DomainMap",
            "metadata": {"name": meta["name"], "uid": meta.get("uid")},
        },
        args=args,
        settings=JobSettings(image=image, pod=pod or JobPodSettings()),
        source_secret=source.secret,
        catalog_secret=catalog.secret if catalog.name != source.name else None,
    )


def needs_secret(parsed: DomainMapSpec, cluster_names: list[str]) -> ClusterRef | None:
    """The first of ``cluster_names`` a Job cannot reach: its API key comes from the
    operator's environment (``apiKeyEnv``), which a Job's pod does not have."""
    for name in dict.fromkeys(cluster_names):
        cluster = parsed.cluster(name)
        if cluster.url and cluster.api_key_env and not cluster.secret:
            return cluster
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a failed Job is created again: ``retries`` more Jobs
    after the first, the n-th after ``base_s * 2**(n-1)`` seconds (at most ``cap_s``)."""

    retries: int = 3
    base_s: float = 30.0
    cap_s: float = 900.0

    def delay_s(self, attempt: int) -> float | None:
        """Seconds before attempt ``attempt + 1`` after attempt ``attempt`` failed (``None``:
        no retry is left)."""
        if attempt > self.retries:
            return None
        return float(min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


def retry_hint(namespace: str, name: str) -> str:
    """How a user retries by hand once the retries are used up."""
    return (
        f"to retry, fix the cause and run: kubectl annotate domainmap {name} -n {namespace} "
        f"{RETRY_ANNOTATION}=$(date +%s) --overwrite"
    )
