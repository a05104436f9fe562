"""The emulated API keeps a bounded request log, so a long run does not slow down as it goes."""

from __future__ import annotations

import asyncio

import pytest

from librarian.local.emulator import REQUESTS_KEPT, emulated_kubernetes
from librarian.local.job_controller import JOBS


def _job(name: str) -> dict[str, object]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"template": {"spec": {"containers": [{"name": "m", "args": ["x"]}]}}},
    }


async def test_many_requests_keep_the_log_bounded_and_every_one_is_still_served() -> None:
    async with emulated_kubernetes(namespaces=["team"]) as api:
        served = 5 * REQUESTS_KEPT
        for i in range(served // 2):
            await api.create(_job(f"job-{i}"))
        # concurrent requests: each must still be routed while others are being forgotten
        found = await asyncio.gather(
            *(api.get(JOBS, "team", f"job-{i}") for i in range(served // 2))
        )
        assert [job["metadata"]["name"] for job in found if job] == [
            f"job-{i}" for i in range(served // 2)
        ]
        assert len(await api.list_objects(JOBS, "team")) == served // 2
        assert len(list(api.emulator)) <= 2 * REQUESTS_KEPT  # kmock's own log, bounded


async def test_a_recording_sees_every_request_in_order() -> None:
    async with emulated_kubernetes(namespaces=["team"], record_requests=True) as api:
        before = len(api.requests())  # the CRDs and namespaces set up before
        for i in range(3 * REQUESTS_KEPT):
            await api.create(_job(f"job-{i}"))
        created = [r for r in api.requests()[before:] if r.method.value == "POST"]
        assert [r.data["metadata"]["name"] for r in created] == [
            f"job-{i}" for i in range(3 * REQUESTS_KEPT)
        ]


async def test_auditing_requests_needs_a_recording() -> None:
    async with emulated_kubernetes(namespaces=["team"]) as api:
        with pytest.raises(RuntimeError, match="record_requests=True"):
            api.requests()
