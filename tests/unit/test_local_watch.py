"""Waiting on the emulated API's objects: woken by each change, bounded by a deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from librarian.local.emulator import emulated_kubernetes
from librarian.local.job_controller import JOBS
from librarian.local.watch import ResourceWatch, WaitTimeout


def _job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"template": {"spec": {"containers": [{"name": "m", "args": ["x"]}]}}},
    }


async def test_a_condition_is_met_by_a_later_change_and_sees_what_existed_before() -> None:
    async with emulated_kubernetes(namespaces=["team"]) as api:
        await api.create(_job("before"))
        watch = ResourceWatch(api)
        assert [j["metadata"]["name"] for j in watch.items(JOBS, "team")] == ["before"]

        def complete() -> dict[str, Any] | None:
            job = watch.get(JOBS, "team", "later")
            return job if job and (job.get("status") or {}).get("succeeded") else None

        waiting = asyncio.ensure_future(watch.until(complete, 30, "Job later complete"))
        await api.create(_job("later"))  # a change, but not the one waited for
        await api.patch(JOBS, "team", "later", {"status": {"succeeded": 1}})
        job = await waiting
        assert job["status"] == {"succeeded": 1}
        await api.delete(JOBS, "team", "before")
        assert watch.get(JOBS, "team", "before") is None
        assert [j["metadata"]["name"] for j in watch.items(JOBS)] == ["later"]


async def test_a_condition_never_met_times_out_naming_it_and_a_raising_check_gives_up() -> None:
    async with emulated_kubernetes(namespaces=["team"]) as api:
        watch = ResourceWatch(api)
        with pytest.raises(WaitTimeout, match="Job never there: not within 0s"):
            await watch.until(lambda: watch.get(JOBS, "team", "never"), 0.05, "Job never there")

        def failed() -> None:
            raise RuntimeError("it failed")

        with pytest.raises(RuntimeError, match="it failed"):
            await watch.until(failed, 30, "never reached")
