"""Playing the Kubernetes Job controller in the emulated API.

Why this exists: nothing executes Jobs in the emulated API, but the demo's
and ``librarian up``'s specializations and rebalancing moves wait for their
migration Jobs. Each Job's own command runs in-process, as a pod of the
operator's image would in a cluster, with the environment its container
declares (API keys read from the Secrets it references), and the Job's status
is patched as the Job controller does. An Indexed Job (the labeling Job: one
index per id range) runs each completion index with ``JOB_COMPLETION_INDEX``
set, one after the other: the entry point's runner captures the process's
output, so its runs cannot overlap; in a cluster the pods run in parallel.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from librarian.local.emulator import EmulatedCluster

__all__ = [
    "COMPLETION_INDEX_ENV",
    "JOBS",
    "CommandRunner",
    "finished",
    "job_environment",
    "play_job_controller",
]

JOBS = "batch/v1/jobs"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
"""Where Kubernetes tells each pod of an Indexed Job its completion index."""
SECRETS = "v1/secrets"

CommandRunner = Callable[[Sequence[str], Mapping[str, str]], tuple[bool, str]]
"""Runs a container's ``args`` with its environment as the image's entry point would:
(succeeded, output).

The entry point (the ``librarian`` command) hands its own runner in, so this
module never imports the command line that imports it.
"""


class JobSetupError(RuntimeError):
    """A Job's environment cannot be built (e.g. a Secret it references is missing)."""


def finished(job: Mapping[str, Any]) -> bool:
    """Whether the Job has completed or failed (a restarted process does not run it again)."""
    status = job.get("status") or {}
    return bool(status.get("succeeded") or status.get("failed"))


async def job_environment(api: EmulatedCluster, job: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment: plain values and ``secretKeyRef`` values (never logged)."""
    namespace = job["metadata"].get("namespace")
    container = job["spec"]["template"]["spec"]["containers"][0]
    environment: dict[str, str] = {}
    for entry in container.get("env") or []:
        if "value" in entry:
            environment[str(entry["name"])] = str(entry["value"])
            continue
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            continue
        secret = await api.get(SECRETS, namespace, str(ref["name"]))
        if secret is None:
            raise JobSetupError(f"Secret {namespace}/{ref['name']} does not exist")
        data, string_data = secret.get("data") or {}, secret.get("stringData") or {}
        if ref["key"] in data:
            environment[str(entry["name"])] = base64.b64decode(data[ref["key"]]).decode()
        elif ref["key"] in string_data:
            environment[str(entry["name"])] = str(string_data[ref["key"]])
        else:
            raise JobSetupError(f"Secret {namespace}/{ref['name']} has no key {ref['key']!r}")
    return environment


def _run_all(
    run: CommandRunner, job: Mapping[str, Any], args: Sequence[str], environment: dict[str, str]
) -> tuple[bool, str, dict[str, Any]]:
    """Run the Job's pods (one, or one per completion index): (succeeded, output, counts)."""
    spec = job["spec"]
    if spec.get("completionMode") != "Indexed":
        ok, output = run(args, environment)
        return ok, output, {"succeeded": 1} if ok else {"failed": 1}
    completed: list[int] = []
    failed: list[tuple[int, str]] = []
    for index in range(int(spec.get("completions") or 1)):
        ok, output = run(args, {**environment, COMPLETION_INDEX_ENV: str(index)})
        if ok:
            completed.append(index)
        else:
            failed.append((index, output))
    counts: dict[str, Any] = {
        "succeeded": len(completed),
        "completedIndexes": ",".join(map(str, completed)),
    }
    if failed:
        counts["failed"] = len(failed)
        index, output = failed[0]
        return False, f"index {index}: {output}", counts
    return True, "", counts


async def play_job_controller(
    api: EmulatedCluster,
    namespace: str | None,
    done: set[str],
    run: CommandRunner,
    *,
    selected: Callable[[Mapping[str, Any]], bool] | None = None,
) -> int:
    """Run each new migration Job's own command in-process and mark the Job complete.

    ``namespace`` ``None`` plays it for every namespace; ``done`` holds the
    ``namespace/name`` of the Jobs already run. Nothing executes Jobs in the
    emulated API; in a cluster, Kubernetes runs the same command in a pod of
    the operator's image. ``selected`` limits it to the Jobs it accepts.
    """
    ran = 0
    for job in await api.list_objects(JOBS, namespace):
        if selected is not None and not selected(job):
            continue
        job_namespace, name = job["metadata"].get("namespace"), job["metadata"]["name"]
        key = f"{job_namespace}/{name}"
        if key in done or finished(job):
            done.add(key)
            continue
        done.add(key)
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        counts: dict[str, Any]
        try:
            environment = await job_environment(api, job)
        except JobSetupError as error:
            ok, output, counts = False, str(error), {"failed": 1}
        else:
            ok, output, counts = await asyncio.to_thread(_run_all, run, job, args, environment)
        condition = {
            "type": "Complete" if ok else "Failed",
            "status": "True",
            "reason": "Completed" if ok else "BackoffLimitExceeded",
            "message": "" if ok else output[-300:],
        }
        await api.patch(
            JOBS, job_namespace, name, {"status": {**counts, "conditions": [condition]}}
        )
        ran += 1
    return ran
