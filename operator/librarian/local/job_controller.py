"""Playing the Kubernetes Job controller in the emulated API.

Why this exists: nothing executes Jobs in the emulated API, but the demo's
and ``librarian up``'s specializations and rebalancing moves wait for their
migration Jobs. Each Job's own command runs in-process, as a pod of the
operator's image would in a cluster, with the environment its container
declares (API keys read from the Secrets it references), and the Job's status
is patched as the Job controller does.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from librarian.local.emulator import EmulatedCluster

__all__ = ["JOBS", "CommandRunner", "finished", "job_environment", "play_job_controller"]

JOBS = "batch/v1/jobs"
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


async def play_job_controller(
    api: EmulatedCluster, namespace: str | None, done: set[str], run: CommandRunner
) -> int:
    """Run each new migration Job's own command in-process and mark the Job complete.

    ``namespace`` ``None`` plays it for every namespace; ``done`` holds the
    ``namespace/name`` of the Jobs already run. Nothing executes Jobs in the
    emulated API; in a cluster, Kubernetes runs the same command in a pod of
    the operator's image.
    """
    ran = 0
    for job in await api.list_objects(JOBS, namespace):
        job_namespace, name = job["metadata"].get("namespace"), job["metadata"]["name"]
        key = f"{job_namespace}/{name}"
        if key in done or finished(job):
            done.add(key)
            continue
        done.add(key)
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        try:
            environment = await job_environment(api, job)
        except JobSetupError as error:
            ok, output = False, str(error)
        else:
            ok, output = await asyncio.to_thread(run, args, environment)
        condition = {
            "type": "Complete" if ok else "Failed",
            "status": "True",
            "reason": "Completed" if ok else "BackoffLimitExceeded",
            "message": "" if ok else output[-300:],
        }
        status = {"succeeded": 1} if ok else {"failed": 1}
        await api.patch(
            JOBS, job_namespace, name, {"status": {**status, "conditions": [condition]}}
        )
        ran += 1
    return ran
