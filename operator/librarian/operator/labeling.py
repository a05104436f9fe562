"""The labeling Job of a DomainMap: its manifest, and its progress as the status shows it.

Why this exists: labeling runs in an Indexed Job, one pod per id range (see
:mod:`librarian.services.labeling_job`), not in the operator. The DomainMap
handler starts it once the domains are in the catalog; a timer follows it and
copies the workers' recorded progress (points labelled of the total, per
worker, and the rate) into the status. This module builds the Job and turns
that progress into status fields; the handlers stay in
:mod:`librarian.operator.domainmap`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from librarian.contracts.api import GROUP, VERSION
from librarian.kube.job_pod import JobPodSettings
from librarian.kube.spec import ClusterRef, DomainMapSpec
from librarian.operator.jobs import JobSettings, build_labeling_job
from librarian.services.labeling_job import RangeProgress

__all__ = [
    "labeling_job",
    "labeling_job_name",
    "labeling_progress",
]


def labeling_job_name(name: str, version: int, serial: int = 1) -> str:
    """The ``serial``-th labeling Job of analysis ``version`` (a retry is a new Job)."""
    return f"{name[:40]}-label-v{version}" + (f"-{serial}" if serial > 1 else "")


def labeling_job(
    *,
    body: Mapping[str, Any],
    parsed: DomainMapSpec,
    plan_name: str,
    version: int,
    image: str,
    serial: int = 1,
    pod: JobPodSettings | None = None,
) -> dict[str, Any]:
    """The Job labelling the DomainMap's source by plan ``plan_name``, one pod per range."""
    meta = body["metadata"]
    source: ClusterRef = parsed.cluster(parsed.source_cluster)
    args = ["--name", plan_name]
    if source.url:
        args += ["--source-url", source.url]
    else:
        args += ["--source-embedded", str(source.embedded)]
    args += ["--batch-size", str(parsed.labeling_batch_size)]
    return build_labeling_job(
        name=labeling_job_name(str(meta["name"]), version, serial),
        namespace=str(meta.get("namespace") or "default"),
        owner={
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DomainMap",
            "metadata": {"name": meta["name"], "uid": meta.get("uid")},
        },
        args=args,
        settings=JobSettings(image=image, pod=pod or JobPodSettings()),
        workers=parsed.labeling_workers,
        source_secret=source.secret,
    )


def labeling_progress(
    ranges: Sequence[RangeProgress | None], *, total: int, now: float
) -> dict[str, Any]:
    """Status fields from the workers' progress: labelled of ``total``, per worker, and the
    rate (points per second summed over the workers, each over the time it has run)."""
    workers: list[dict[str, Any]] = []
    rate = 0.0
    for index, progress in enumerate(ranges):
        if progress is None:
            workers.append({"range": index, "labeled": 0, "done": False, "attempts": 0})
            continue
        started = progress.started_at if progress.started_at is not None else now
        ended = progress.updated_at if progress.done and progress.updated_at else now
        if ended > started:
            rate += progress.labeled / (ended - started)
        workers.append(
            {
                "range": index,
                "labeled": progress.labeled,
                "skipped": progress.skipped,
                "done": progress.done,
                "attempts": progress.attempts,
            }
        )
    labeled = sum(w["labeled"] for w in workers)
    return {
        "labeled": labeled,
        "total": total,
        "workersDone": sum(1 for w in workers if w["done"]),
        "pointsPerSecond": round(rate, 1),
        "perWorker": workers,
    }
