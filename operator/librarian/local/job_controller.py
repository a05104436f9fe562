"""Playing the Kubernetes Job controller in the emulated API.

Why this exists: nothing executes Jobs in the emulated API, but the demo's
specializations and rebalancing moves wait for their migration Jobs. The demo
runs each Job's own command in-process, as a pod of the operator's image
would in a cluster, and patches the Job's status as the Job controller does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from librarian.local.emulator import EmulatedCluster

__all__ = ["JOBS", "CommandRunner", "play_job_controller"]

JOBS = "batch/v1/jobs"

CommandRunner = Callable[[Sequence[str]], tuple[bool, str]]
"""Runs a container's ``args`` as the image's entry point would: (succeeded, output).

The entry point (the ``librarian`` command) hands its own runner in, so this
module never imports the command line that imports it.
"""


async def play_job_controller(
    api: EmulatedCluster, namespace: str, done: set[str], run: CommandRunner
) -> int:
    """Run each new migration Job's own command in-process and mark the Job complete.

    Nothing executes Jobs in the emulated API; in a cluster, Kubernetes runs
    the same command in a pod of the operator's image.
    """
    ran = 0
    for job in await api.list_objects(JOBS, namespace):
        name = job["metadata"]["name"]
        if name in done:
            continue
        done.add(name)
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        ok, output = await asyncio.to_thread(run, args)
        condition = {
            "type": "Complete" if ok else "Failed",
            "status": "True",
            "reason": "Completed" if ok else "BackoffLimitExceeded",
            "message": "" if ok else output[-300:],
        }
        status = {"succeeded": 1} if ok else {"failed": 1}
        await api.patch(JOBS, namespace, name, {"status": {**status, "conditions": [condition]}})
        ran += 1
    return ran
