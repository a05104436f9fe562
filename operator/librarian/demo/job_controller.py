"""Playing the Kubernetes Job controller in the emulated API.

Why this exists: nothing executes Jobs in the emulated API, but the demo's
specializations and rebalancing moves wait for their migration Jobs. The demo
runs each Job's own command in-process, as a pod of the operator's image
would in a cluster, and patches the Job's status as the Job controller does.
"""

from __future__ import annotations

import asyncio

from librarian.k8s.emulator import EmulatedCluster

__all__ = ["JOBS", "play_job_controller"]

JOBS = "batch/v1/jobs"


async def play_job_controller(api: EmulatedCluster, namespace: str, done: set[str]) -> int:
    """Run each new migration Job's own command in-process and mark the Job complete.

    Nothing executes Jobs in the emulated API; in a cluster, Kubernetes runs
    the same command in a pod of the operator's image.
    """
    from click.testing import CliRunner

    from librarian.cli import main as cli

    ran = 0
    for job in await api.list_objects(JOBS, namespace):
        name = job["metadata"]["name"]
        if name in done:
            continue
        done.add(name)
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        result = await asyncio.to_thread(CliRunner().invoke, cli, args)
        ok = result.exit_code == 0
        condition = {
            "type": "Complete" if ok else "Failed",
            "status": "True",
            "reason": "Completed" if ok else "BackoffLimitExceeded",
            "message": "" if ok else result.output[-300:],
        }
        status = {"succeeded": 1} if ok else {"failed": 1}
        await api.patch(JOBS, namespace, name, {"status": {**status, "conditions": [condition]}})
        ran += 1
    return ran
